"""A Debian 12 systemd host (systemd-nspawn) powers off with guests running
and boots them back: our .deb (Debian's unit + our drop-in) and, for
comparison, Debian's original script, in the same harness.

Each module-scoped container is booted several times; the tests of a module
run in order and share it (a boot costs a second, guests cost more).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.systemd import harness
from tests.systemd.harness import Container

BIG = {"count": 8, "memory_mib": 512, "dirty_mib": 384}  # issue 11, item 1
RESTORED = "running (restored)"


class StatusPoller:
    """Collect the distinct StatusText values of libvirt-guests.service while a poweroff runs."""

    def __init__(self, box: Container) -> None:
        self.box, self.seen = box, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.box.pid1:
            try:
                text = self.box.run("systemctl", "show", "-P", "StatusText", "libvirt-guests",
                                    check=False, timeout=5).stdout.strip()
            except Exception:  # noqa: BLE001 - the container is going away under us
                return
            if text and text not in self.seen:
                self.seen.append(text)
            time.sleep(0.05)

    def __enter__(self) -> StatusPoller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(10)


def last_boot(box: Container) -> tuple[list, str]:
    entries = box.journal()
    return entries, harness.boot_ids(entries)[-1]


def last(events: list[tuple[float, str, str]], unit: str, prefix: str) -> float:
    """When systemd last logged ``prefix`` for ``unit`` (the poweroff's, not the restart's)."""
    times = [ts for ts, u, msg in events if u == unit and msg.startswith(prefix)]
    assert times, f"no '{prefix}' line for {unit}"
    return times[-1]


def remove_guests(box: Container, keep: int = 0) -> None:
    """Destroy and undefine the container's guests (their save images too), but the first ``keep`` running ones."""
    names = box.run("virsh", "list", "--name", "--all").stdout.split()
    running = box.run("virsh", "list", "--name").stdout.split()
    for name in names:
        if name in running[:keep]:
            continue
        box.run("virsh", "-q", "destroy", name, check=False)
        box.run("virsh", "-q", "undefine", "--managed-save", name)


def cycle(box: Container, names: list[str], restart_libvirtd: bool = True) -> dict:
    """restart libvirtd (as a package upgrade does), poweroff, boot; what happened."""
    if restart_libvirtd:
        box.run("systemctl", "restart", "libvirtd")
    with StatusPoller(box) as poller:
        halt = box.poweroff()
    entries, boot = last_boot(box)
    events = harness.unit_events(entries, boot)
    lines = harness.service_lines(entries, boot=boot)
    t0 = time.monotonic()
    box.boot()
    states, _ = box.wait_states(names, RESTORED, timeout=120)
    return {"halt": halt, "up": time.monotonic() - t0, "events": events, "lines": lines, "states": states,
            "statuses": poller.seen}


# -- ours: Debian's unit running our script through the .deb, with our drop-in ---------------------------------


@pytest.fixture(scope="module")
def ours(make_container, deb) -> Container:
    box = make_container("ours")
    box.boot()
    box.install_deb(deb)
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    return box


def test_ours_saves_eight_dirty_guests_before_libvirtd_stops_and_restores_them(ours: Container) -> None:
    names = ours.define_guests(**BIG)
    ours.wait_ready(names, timeout=600)
    result = cycle(ours, names)
    events, lines = result["events"], result["lines"]

    assert result["states"] == {n: RESTORED for n in names}
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and f"{len(names)} saved" in summary[-1] and " 0 failed" in summary[-1], lines
    assert not [msg for _, prio, msg in lines if prio <= 4], "error or warning lines at poweroff"
    # the journal parsed our <N> prefixes into priorities
    assert not any(msg.startswith("<") for _, _, msg in lines)
    assert {prio for _, prio, _ in lines} == {6}
    # every guest saved before libvirtd, virtlogd, machined and the machine scopes went away
    guests_done = last(events, "libvirt-guests.service", "Stopped ")
    for unit in ("libvirtd.service", "virtlogd.service", "systemd-machined.service"):
        assert last(events, unit, "Stopping ") >= guests_done, unit
    scopes = [(ts, u) for ts, u, msg in events if u.startswith("machine-qemu") and msg.startswith("Stopped ")]
    assert len(scopes) == len(names)  # each scope ended when its QEMU ended, after its save
    # STATUS= progress reached systemd while the stop ran
    assert any(s.startswith("Stopping guests") for s in result["statuses"]), result["statuses"]
    # and after the boot the unit's status names what start did
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "active (exited)" in status
    assert "libvirt-guests start: 8 guests" in status
    remove_guests(ours)


def test_failed_start_still_saves_at_the_next_poweroff(ours: Container) -> None:
    """Issue 10: a failed start must never cancel the next stop (ExecStart=- in our drop-in)."""
    names = ours.define_guests(2, prefix="lgt-fail-")
    ours.wait_ready(names)
    ours.poweroff()
    # the second guest's save image is damaged while the host is off: its restore fails at boot
    image = ours.path(f"/var/lib/libvirt/qemu/save/{names[1]}.save")
    assert image.exists()
    image.write_bytes(b"\0" * 4096)
    ours.boot()
    ours.wait_states(names[:1], RESTORED, timeout=60)
    entries, boot = last_boot(ours)
    lines = harness.service_lines(entries, boot=boot)
    errors = [msg for _, prio, msg in lines if prio <= 4]  # the failed guest's line is a warning
    assert any(names[1] in msg for msg in errors), lines
    show = ours.run("systemctl", "show", "-P", "ActiveState", "-P", "ExecMainStatus", "libvirt-guests").stdout
    assert show.split() == ["1", "active"] or show.split() == ["active", "1"], show
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "status=1/FAILURE" in status and " 1 failed" in status, status
    assert "active (exited)" in status
    # the next poweroff still runs our stop: the guest that did come back is saved
    ours.poweroff()
    entries, boot = last_boot(ours)
    summary = [msg for _, _, msg in harness.service_lines(entries, boot=boot) if msg.startswith("libvirt-guests stop:")]
    assert summary and "1 saved" in summary[-1], summary
    ours.boot()
    assert ours.domstates(names[:1]) == {names[0]: RESTORED}
    remove_guests(ours)


def test_restart_reload_and_status(ours: Container) -> None:
    names = ours.define_guests(1, prefix="lgt-rr-")
    ours.wait_ready(names)
    ours.run("systemctl", "reload", "libvirt-guests")  # ExecReload: nothing to do, guests untouched
    assert ours.domstates(names) == {names[0]: "running (booted)"}
    ours.run("systemctl", "restart", "libvirt-guests")  # stop saves, start restores
    assert ours.domstates(names) == {names[0]: RESTORED}
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "active (exited)" in status and "libvirt-guests start: 1 guests" in status
    assert ours.run("libvirt-guests", "status").stdout == "started\n"
    remove_guests(ours)


def test_stubborn_guest_is_powered_off_and_the_deadline_bounds_the_poweroff(ours: Container) -> None:
    ours.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="300", STOP_DEADLINE="15", ON_BOOT="ignore")
    normal = ours.define_guests(1, prefix="lgt-acpi-")
    stubborn = ours.define_guests(1, prefix="lgt-stubborn-", mode="stubborn")
    ours.wait_ready(normal + stubborn)
    halt = ours.poweroff()
    assert halt < 15 + 10, f"poweroff took {halt:.1f} s with STOP_DEADLINE=15"
    entries, boot = last_boot(ours)
    lines = harness.service_lines(entries, boot=boot)
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and "1 shut down" in summary[-1] and "1 powered off" in summary[-1], lines
    ours.boot()
    assert all(s.startswith("shut off") for s in ours.domstates(normal + stubborn).values())
    remove_guests(ours)
    ours.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
