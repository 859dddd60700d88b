"""A start that dies half-way, and guests started behind its back, on real
guests: after a SIGKILL in the middle of a start the next stop still saves
every guest (a no-op there would let the host's shutdown kill them)."""

from __future__ import annotations

import libvirt

from .support import SYSTEM_URI, Tool, kill, state
from .test_faults import _read_until


def test_sigkill_during_start_then_stop_saves_every_guest(guests, tool: Tool, system_conn) -> None:
    doms = guests.create(3)
    tool.configure(ON_SHUTDOWN="suspend", START_DELAY="10")
    assert tool.run("stop").returncode == 0
    assert all(state(system_conn, d) == "saved" for d in doms)
    proc = tool.spawn("start")
    lines = _read_until(proc, ": done")  # the first guest is back; start now waits START_DELAY
    kill(proc)
    first = lines[-1].split(":")[0].removeprefix("Resuming guest ")
    assert state(system_conn, system_conn.lookupByName(first)) == "running"
    ((uri, *uuids),) = tool.list_lines()
    assert uri == SYSTEM_URI and sorted(uuids) == sorted(d.UUIDString() for d in doms)

    result = tool.run("stop")
    assert result.returncode == 0, result
    assert "An earlier start did not complete" in result.stdout
    assert all(state(system_conn, d) == "saved" for d in doms), result.stdout

    tool.configure(ON_SHUTDOWN="suspend")
    result = tool.run("start")
    assert result.returncode == 0, result
    assert all(state(system_conn, d) == "running" for d in doms)
    assert not tool.list_file.exists() and not tool.state_file.exists()


def test_guest_started_by_hand_during_start_is_already_active(guests, tool: Tool, system_conn) -> None:
    doms = guests.create(2)
    tool.configure(ON_SHUTDOWN="suspend", START_DELAY="8")
    assert tool.run("stop").returncode == 0
    proc = tool.spawn("start")
    first = _read_until(proc, ": done")[-1].split(":")[0].removeprefix("Resuming guest ")
    (other,) = [d for d in doms if d.name() != first]
    system_conn.lookupByUUIDString(other.UUIDString()).create()  # an admin, or libvirt's autostart
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"Resuming guest {other.name()}: already active" in out
    assert "1 restored, 0 booted, 1 already active" in out
    assert all(state(system_conn, d) == "running" for d in doms)
    assert not tool.list_file.exists()


def test_start_summary_says_restored_and_booted(guests, tool: Tool, system_conn) -> None:
    saved, off = guests.create(2)
    tool.configure(ON_SHUTDOWN="suspend")
    assert tool.run("stop").returncode == 0
    system_conn.lookupByUUIDString(off.UUIDString()).managedSaveRemove(0)
    result = tool.run("start")
    assert result.returncode == 0, result
    assert f"Resuming guest {saved.name()}: done" in result.stdout
    assert f"Resuming guest {off.name()}: done" in result.stdout
    assert "2 guests" in result.stdout and "1 restored, 1 booted" in result.stdout
    conn = libvirt.open(SYSTEM_URI)
    try:
        assert state(conn, saved) == state(conn, off) == "running"
    finally:
        conn.close()
