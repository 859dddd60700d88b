"""Tests of the real-libvirt test bed itself, with raw libvirt-python calls."""

from __future__ import annotations

import time

import libvirt
import pytest

from tests.testbed.guests import (
    GuestFactory,
    domain_state,
    serial_log_path,
    wait_ready,
    wait_running,
    wait_shutoff,
)
from tests.testbed.images import READY_MARKER

pytestmark = pytest.mark.realguest


def test_two_guests_boot_in_parallel(guests: GuestFactory, system_conn: libvirt.virConnect) -> None:
    """Two normal guests boot together, print the marker, and clean up."""
    t0 = time.monotonic()
    doms = guests.create(2)
    elapsed = time.monotonic() - t0
    print(f"2 guests booted in parallel in {elapsed:.1f} s")
    names = [d.name() for d in doms]
    assert len(set(names)) == 2
    for dom in doms:
        assert dom.name().startswith("lgt-")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.isPersistent() == 1
        assert READY_MARKER in serial_log_path(dom.name()).read_text()

    assert sorted(guests.cleanup()) == sorted(names)
    remaining = {d.name() for d in system_conn.listAllDomains(0)}
    assert not remaining.intersection(names)
    assert not any(serial_log_path(n).exists() for n in names)


def test_acpi_shutdown_normal_and_stubborn(guests: GuestFactory) -> None:
    """A normal guest obeys the power button, a stubborn one ignores it."""
    (normal,) = guests.create(1, wait=False)
    (stubborn,) = guests.create(1, mode="stubborn", wait=False)
    wait_ready([normal, stubborn])

    t0 = time.monotonic()
    normal.shutdown()
    stubborn.shutdown()
    assert wait_shutoff(normal, 30), "normal guest did not power off within 30 s"
    print(f"normal guest off {time.monotonic() - t0:.1f} s after shutdown()")
    assert normal.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF

    remaining = 8 - (time.monotonic() - t0)
    assert not wait_shutoff(stubborn, max(remaining, 0)), "stubborn guest powered off"
    assert stubborn.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert "LGT-POWER-BUTTON ignored" in serial_log_path(stubborn.name()).read_text()


def test_slow_guest_takes_its_time(guests: GuestFactory) -> None:
    """A slow guest is still up 1 s after the request and off some seconds later."""
    (slow,) = guests.create(1, mode="slow", slow_seconds=3)
    t0 = time.monotonic()
    slow.shutdown()
    time.sleep(1.0)
    assert slow.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert wait_shutoff(slow, 30), "slow guest did not power off within 30 s"
    elapsed = time.monotonic() - t0
    print(f"slow guest (3 s) off {elapsed:.1f} s after shutdown()")
    assert elapsed >= 3.0


def test_transient_guest(module_guests: GuestFactory) -> None:
    """A transient guest is not persistent and vanishes when destroyed."""
    (dom,) = module_guests.create(1, transient=True)
    assert dom.isPersistent() == 0
    assert dom.isActive() == 1
    dom.destroy()
    assert domain_state(dom) is None


def test_managed_save_and_restore(module_guests: GuestFactory) -> None:
    """managedSave writes an image; create() restores it, consuming the image."""
    (dom,) = module_guests.create(1, dirty_mib=16)
    t0 = time.monotonic()
    dom.managedSave(0)
    print(f"managed save {time.monotonic() - t0:.1f} s")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert dom.hasManagedSaveImage(0) == 1

    t0 = time.monotonic()
    dom.create()
    assert wait_running(dom, 30)
    print(f"restore {time.monotonic() - t0:.1f} s")
    assert dom.hasManagedSaveImage(0) == 0
    # The serial log starts over on restore: no new marker, the guest just runs.
    assert READY_MARKER not in serial_log_path(dom.name()).read_text()
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_RESTORED]
