"""The migration primitives' logic on libvirt's test driver (no migration
there: the peer is the same in-process driver, so every guest "clashes")."""

from __future__ import annotations

import time

import libvirt
import pytest

from libvirt_guests.virt import migrate
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor

from .support import TEST_URI, Driver


def test_check_peer_reports_memory_and_a_running_twin(driver: Driver, hv: Hypervisor) -> None:
    dom = driver.guest()  # 64 MiB; the test driver reports 3 MiB free
    guest = hv.lookup(dom.UUIDString())
    assert guest is not None
    peer = migrate.open_peer(TEST_URI, 1)
    try:
        assert migrate.check_peer(guest, peer) == [
            "the guest needs 64 MiB, the peer has 3 MiB free",
            f"a guest with this UUID already runs on the peer ({guest.name})",
        ]
        assert migrate.running_on_peer(peer, guest.uuid)
        assert not migrate.running_on_peer(peer, "6695eb01-0000-0000-0000-000000000000")
        dom.destroy()
        assert migrate.check_peer(guest, peer) == ["the guest needs 64 MiB, the peer has 3 MiB free"]
        assert not migrate.running_on_peer(peer, guest.uuid)
    finally:
        peer.close()


def test_unreachable_peer(driver: Driver, hv: Hypervisor) -> None:
    guest = hv.lookup(driver.guest().UUIDString())
    assert guest is not None
    with pytest.raises(VirtError) as err:
        migrate.open_peer("test:///nonexistent/lgt-peer.xml", 1)
    assert err.value.disconnected
    never = Hypervisor("qemu+tcp://192.0.2.1/system")
    assert migrate.check_peer(guest, never) == ["cannot reach the peer qemu+tcp://192.0.2.1/system"]
    out = migrate.migrate_live(guest, never, timeout=5)
    assert (out.result, out.running_here, out.state_here) == (migrate.FAILED, True, "running")
    assert out.reason == "not connected to the peer qemu+tcp://192.0.2.1/system"
    with pytest.raises(VirtError):
        migrate.running_on_peer(never, guest.uuid)


def test_open_peer_bounded_by_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that never answers costs the timeout (plus a second), not TCP's minutes."""
    monkeypatch.setattr(libvirt, "openAuth", lambda *_args: time.sleep(30))
    t0 = time.monotonic()
    with pytest.raises(VirtError, match="no answer from libvirt within 0.5 s"):
        migrate.open_peer("qemu+tcp://192.0.2.1/system", 0.5)
    assert time.monotonic() - t0 < 3


def test_autostart_bookkeeping(driver: Driver, hv: Hypervisor) -> None:
    on, off = driver.guest(), driver.guest()
    on.setAutostart(1)
    g_on, g_off = hv.lookup(on.UUIDString()), hv.lookup(off.UUIDString())
    assert g_on is not None and g_off is not None
    assert (migrate.disable_autostart_here(g_on), migrate.disable_autostart_here(g_off)) == (True, False)
    assert (on.autostart(), off.autostart()) == (0, 0)
    migrate.restore_autostart(g_on, True)
    migrate.restore_autostart(g_off, False)
    assert (on.autostart(), off.autostart()) == (1, 0)


def test_transient_guest_has_no_autostart_to_disable(driver: Driver, hv: Hypervisor) -> None:
    guest = hv.lookup(driver.guest(transient=True).UUIDString())
    assert guest is not None
    assert migrate.disable_autostart_here(guest) is False
    migrate.restore_autostart(guest, False)
