"""Bounded, concurrent stop and start on real guests: action chains, save
timeouts, the stop deadline, the PARALLEL_* caps, paused guests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import libvirt

from .support import SYSTEM_URI, Tool, state

SAVE_DIR = Path("/var/lib/libvirt/qemu/save")


class JobCounter:
    """Counts, from a connection of its own, how many guests run a job at once."""

    def __init__(self, conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> None:
        self.conn, self.uuids = conn, [d.UUIDString() for d in doms]
        self.peak = 0
        self.busy_now = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            busy = 0
            for uuid in self.uuids:
                try:
                    dom = self.conn.lookupByUUIDString(uuid)
                    if dom.jobInfo()[0] not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED):
                        busy += 1
                except libvirt.libvirtError:
                    pass
            self.busy_now = busy
            self.peak = max(self.peak, busy)
            self.samples += 1
            time.sleep(0.03)

    def __enter__(self) -> JobCounter:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_chain_stubborn_guest_is_powered_off(guests, tool: Tool, system_conn) -> None:
    normal = guests.create(1)[0]
    stubborn = guests.create(1, mode="stubborn")[0]
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="4")
    result = tool.run("stop")
    assert result.returncode == 0, result
    out = result.stdout
    assert f"Shutdown of guest {normal.name()} complete." in out
    assert f"Shutdown of guest {stubborn.name()} failed to complete in time." in out
    assert f"Powering off guest {stubborn.name()}" in out
    assert "1 shut down, 1 powered off" in out
    assert state(system_conn, normal) == state(system_conn, stubborn) == "off"
    assert tool.run("start").returncode == 0
    assert state(system_conn, normal) == state(system_conn, stubborn) == "running"


def test_save_timeout_aborts_a_large_save_and_moves_on(guests, tool: Tool, system_conn) -> None:
    # Big enough that its save outlasts SAVE_TIMEOUT=1 on an idle machine too.
    (big,) = guests.create(1, memory_mib=2048, dirty_mib=1800)
    tool.configure(ON_SHUTDOWN="suspend shutdown", SAVE_TIMEOUT="1")
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert f"Suspending {big.name()}: aborting the save after 1 s" in result.stdout
    assert f"Shutdown of guest {big.name()} complete." in result.stdout
    assert state(system_conn, big) == "off"
    assert not big.hasManagedSaveImage()
    assert not (SAVE_DIR / f"{big.name()}.save").exists()  # no partial image left behind
    assert tool.list_lines() == [[SYSTEM_URI, big.UUIDString()]]


def test_stop_deadline_bounds_the_whole_stop(guests, tool: Tool, system_conn) -> None:
    stubborn = guests.create(3, mode="stubborn")
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="0", STOP_DEADLINE="5")
    started = time.monotonic()
    result = tool.run("stop")
    took = time.monotonic() - started
    assert result.returncode == 0, result
    assert "Stop deadline reached" in result.stdout
    assert all(state(system_conn, d) == "off" for d in stubborn)
    assert 5 <= took < 5 + 8


def test_parallel_save_cap_is_respected(guests, tool: Tool, system_conn) -> None:
    doms = guests.create(4)
    tool.configure(ON_SHUTDOWN="suspend", PARALLEL_SAVE="2")
    with JobCounter(system_conn, doms) as counter:
        result = tool.run("stop")
    assert result.returncode == 0, result
    assert counter.samples > 10
    assert counter.peak == 2  # never more than the cap, and the cap is used
    assert all(state(system_conn, d) == "saved" for d in doms)
    with JobCounter(system_conn, doms):
        assert tool.run("start").returncode == 0
    assert all(state(system_conn, d) == "running" for d in doms)


def test_parallel_shutdown_cap_is_respected(guests, tool: Tool, system_conn) -> None:
    """Four guests that each take 3 s to power off, two at a time. A guest is in
    flight from the moment its console reports the power button (the request
    reached it) until it is off; never more than two may be."""
    doms = guests.create(4, mode="slow", slow_seconds=3)
    tool.configure(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="2", SHUTDOWN_TIMEOUT="60")
    pressed: set[str] = set()
    off: set[str] = set()
    peak = 0
    proc = tool.spawn("stop")
    while proc.poll() is None or len(off) < len(doms):
        for dom in doms:
            name = dom.name()
            if name not in pressed and "LGT-POWER-BUTTON" in guests.serial_log(name).read_text(errors="replace"):
                pressed.add(name)
            if name not in off and not system_conn.lookupByName(name).isActive():
                off.add(name)
        peak = max(peak, len(pressed - off))
        if proc.poll() is not None and len(off) < len(doms):
            break
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stdout.read()
    assert off == {d.name() for d in doms}
    assert peak == 2


def test_user_paused_guest_comes_back_paused(guests, tool: Tool, system_conn) -> None:
    running, paused = guests.create(2)
    paused.suspend()
    tool.configure(ON_SHUTDOWN="suspend", PAUSE_BEFORE_SAVE="1")
    assert tool.run("stop").returncode == 0
    assert state(system_conn, running) == state(system_conn, paused) == "saved"
    assert tool.run("start").returncode == 0
    assert state(system_conn, running) == "running"  # paused by us before the save: back running
    assert state(system_conn, paused) == "paused"  # paused by its user: back paused
