"""start/daemonstart.py against libvirt's test driver: a guest the daemon marked
"autostart once" is left to it while it starts it, and started by us only if
it does not within the bound; an unmarked one is ours at once."""

from __future__ import annotations

import threading
import time

import pytest

from libvirt_guests.start import daemonstart
from libvirt_guests.virt.hypervisor import Hypervisor

from .support import TEST_URI, Driver


@pytest.fixture
def hv() -> Hypervisor:
    h = Hypervisor(TEST_URI)
    h.connect()
    yield h
    h.close()


def test_running_guest_is_the_daemons(hv: Hypervisor, driver: Driver) -> None:
    dom = driver.guest(running=True)
    assert daemonstart.started_by_daemon(hv.lookup(dom.UUIDString()), timeout=0.5) is True


def test_unmarked_guest_is_ours_at_once(hv: Hypervisor, driver: Driver) -> None:
    dom = driver.guest(running=False)
    guest = hv.lookup(dom.UUIDString())
    assert daemonstart.marked_autostart_once(guest) is False  # the test driver has no such flag: never marked
    t0 = time.monotonic()
    assert daemonstart.started_by_daemon(guest, timeout=5) is False
    assert time.monotonic() - t0 < 1


def test_marked_guest_waits_for_the_daemon(hv: Hypervisor, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = driver.guest(running=False)
    guest = hv.lookup(dom.UUIDString())
    monkeypatch.setattr(daemonstart, "marked_autostart_once", lambda g: True)
    threading.Timer(0.5, dom.create).start()  # "the daemon" starts it
    t0 = time.monotonic()
    assert daemonstart.started_by_daemon(guest, timeout=10) is True
    assert time.monotonic() - t0 < 5


def test_marked_guest_the_daemon_never_starts_is_ours_at_the_bound(
        hv: Hypervisor, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = driver.guest(running=False)
    guest = hv.lookup(dom.UUIDString())
    monkeypatch.setattr(daemonstart, "marked_autostart_once", lambda g: True)
    t0 = time.monotonic()
    assert daemonstart.started_by_daemon(guest, timeout=1.5) is False
    assert 1.4 < time.monotonic() - t0 < 4
