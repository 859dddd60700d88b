"""The migration primitives (libvirt_guests.virt.migrate) against a real peer host:
tiny TCG guests on the host's qemu:///system moved live to a libvirtd in a
container, and every fallback leaving the guest running here.

Run under the test bed's lock: ``flock /tmp/realguest.lock .venv/bin/python
-m pytest -q tests/peer``."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from libvirt_guests.virt import migrate
from libvirt_guests.virt.guest import Guest
from libvirt_guests.virt.hypervisor import Hypervisor
from tests.peer.host import PeerHost, closed_port
from tests.testbed.guests import GuestFactory

DATA_URI = "tcp://127.0.0.1"


def guest_of(hv: Hypervisor, dom: libvirt.virDomain) -> Guest:
    found = hv.lookup(dom.UUIDString())
    assert found is not None
    return found


def test_live_migration_keeps_the_guest_running_on_the_peer(
        guests: GuestFactory, here: Hypervisor, peer: PeerHost, peer_hv: Hypervisor) -> None:
    (dom,) = guests.create(1)
    dom.setAutostart(1)
    guest = guest_of(here, dom)
    assert migrate.check_peer(guest, peer_hv) == []
    assert not migrate.running_on_peer(peer_hv, guest.uuid)

    old = migrate.disable_autostart_here(guest)
    seen: list[migrate.MigrateProgress] = []
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=120, on_progress=seen.append)

    assert out.result == migrate.MIGRATED, out
    assert out.migrated and out.reason == ""
    assert not out.running_here and out.state_here == "shut off"
    assert peer.domstate(guest.name) == "running (migrated)"
    assert "Persistent:     yes" in peer.virsh("dominfo", guest.name).stdout
    assert migrate.running_on_peer(peer_hv, guest.uuid)
    assert old is True
    assert dom.autostart() == 0
    state, reason = dom.state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)
    print(f"migrated in {out.seconds:.1f} s, {len(seen)} progress reports")


def test_undefine_source_removes_the_definition_here(
        guests: GuestFactory, here: Hypervisor, peer: PeerHost, peer_hv: Hypervisor) -> None:
    (dom,) = guests.create(1)
    guest = guest_of(here, dom)
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=120, undefine_source=True)
    assert out.result == migrate.MIGRATED, out
    assert out.state_here == "vanished" and not out.running_here
    assert here.lookup(guest.uuid) is None
    assert peer.domstate(guest.name) == "running (migrated)"


def test_autostart_bookkeeping_round_trip(guests: GuestFactory, here: Hypervisor) -> None:
    on, off = guests.create(2, start=False)
    on.setAutostart(1)
    g_on, g_off = guest_of(here, on), guest_of(here, off)
    assert migrate.disable_autostart_here(g_on) is True
    assert migrate.disable_autostart_here(g_off) is False
    assert (on.autostart(), off.autostart()) == (0, 0)
    migrate.restore_autostart(g_on, True)
    migrate.restore_autostart(g_off, False)
    assert (on.autostart(), off.autostart()) == (1, 0)


def assert_still_here(out: migrate.MigrateOutcome, dom: libvirt.virDomain, peer: PeerHost) -> None:
    assert out.running_here and out.state_here == "running", out
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert peer.domstate(dom.name()) in ("", "shut off (migrated)", "shut off (failed)", "shut off (destroyed)"), \
        peer.domstate(dom.name())


# -- fallbacks: each leaves the guest running here ---------------------------------------------------------


def test_peer_unreachable(guests: GuestFactory, here: Hypervisor) -> None:
    (dom,) = guests.create(1)
    guest = guest_of(here, dom)
    uri = f"qemu+tcp://127.0.0.1:{closed_port()}/system"
    t0 = time.monotonic()
    with pytest.raises(migrate.VirtError) as err:
        migrate.open_peer(uri, 2)
    waited = time.monotonic() - t0
    print(f"open_peer: {err.value} after {waited:.1f} s")
    assert err.value.disconnected and "Connection refused" in str(err.value)
    assert 1.5 <= waited < 6
    never = Hypervisor(uri)  # never connected: what a caller holds after a failed open
    assert migrate.check_peer(guest, never) == [f"cannot reach the peer {uri}"]
    out = migrate.migrate_live(guest, never, DATA_URI, timeout=30)
    assert out.result == migrate.FAILED and "not connected" in out.reason
    assert out.running_here and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_data_uri_unresolvable(guests: GuestFactory, here: Hypervisor, peer: PeerHost, peer_hv: Hypervisor) -> None:
    """Without a data URI the stream goes to the peer's host name, which does not resolve here."""
    (dom,) = guests.create(1)
    guest = guest_of(here, dom)
    out = migrate.migrate_live(guest, peer_hv, None, timeout=60)
    print(f"no data URI: {out}")
    assert out.result == migrate.FAILED and "lgt-peer" in out.reason
    assert_still_here(out, dom, peer)


def test_data_uri_swallowing_the_stream(guests: GuestFactory, here: Hypervisor, peer: PeerHost,
                                        peer_hv: Hypervisor) -> None:
    """A data URI whose port something else listens on: the stream goes there, nothing
    answers, and only the timeout ends the migration."""
    import socket

    (dom,) = guests.create(1)
    guest = guest_of(here, dom)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = migrate.migrate_live(guest, peer_hv, f"tcp://127.0.0.1:{port}", timeout=10)
    print(f"data port taken: {out}")
    assert out.result == migrate.ABORTED and out.reason == "timeout", out
    assert_still_here(out, dom, peer)


def test_peer_refuses_a_name_it_has(guests: GuestFactory, here: Hypervisor, peer: PeerHost,
                                    peer_hv: Hypervisor) -> None:
    """The peer defines another guest (other UUID) with the same name."""
    (dom,) = guests.create(1)
    guest = guest_of(here, dom)
    other = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(guest.uuid, "11111111-2222-3333-4444-555555555555")
    peer.box.write("/root/clash.xml", other)
    peer.virsh("define", "/root/clash.xml")
    reasons = migrate.check_peer(guest, peer_hv)
    assert reasons == [f"another guest named '{guest.name}' is defined on the peer "
                       "(UUID 11111111-2222-3333-4444-555555555555)"]
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=60)
    print(f"name clash: {out}")
    assert out.result == migrate.FAILED and guest.name in out.reason
    assert out.running_here and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert peer.domstate(guest.name) == "shut off (unknown)"


def throttled(guests: GuestFactory, here: Hypervisor) -> tuple[libvirt.virDomain, Guest]:
    """A 256 MiB guest with 184 MiB of data, its migration capped at 1 MiB/s (minutes, not seconds)."""
    (dom,) = guests.create(1, memory_mib=256, dirty_mib=184)
    dom.migrateSetMaxSpeed(1, 0)
    return dom, guest_of(here, dom)


def test_too_slow_is_aborted_at_the_timeout(guests: GuestFactory, here: Hypervisor, peer: PeerHost,
                                            peer_hv: Hypervisor) -> None:
    dom, guest = throttled(guests, here)
    seen: list[migrate.MigrateProgress] = []
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=8, on_progress=seen.append)
    print(f"timeout: {out}; progress {[(p.processed >> 20, p.total >> 20) for p in seen]}")
    assert out.result == migrate.ABORTED and out.reason == "timeout", out
    assert 8 <= out.seconds < 8 + migrate.ABORT_GRACE
    assert seen and seen[-1].processed < seen[-1].total
    assert_still_here(out, dom, peer)
    assert not migrate.running_on_peer(peer_hv, guest.uuid)


def test_deadline_aborts_too(guests: GuestFactory, here: Hypervisor, peer: PeerHost, peer_hv: Hypervisor) -> None:
    dom, guest = throttled(guests, here)
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=600, deadline_at=time.monotonic() + 5)
    print(f"deadline: {out}")
    assert out.result == migrate.ABORTED and out.reason == "deadline", out
    assert_still_here(out, dom, peer)


def test_peer_libvirtd_killed_mid_migration(guests: GuestFactory, here: Hypervisor, peer: PeerHost,
                                            peer_hv: Hypervisor) -> None:
    dom, guest = throttled(guests, here)
    killed: list[int | None] = []

    def kill_soon() -> None:
        time.sleep(4)
        killed.append(peer.kill_libvirtd())

    killer = threading.Thread(target=kill_soon)
    killer.start()
    out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=90)
    killer.join()
    print(f"peer libvirtd {killed} killed: {out}")
    assert killed and killed[0] is not None
    assert out.result == migrate.FAILED, out
    assert out.seconds < 4 + 10
    assert out.running_here and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    peer.wait_answers()
    assert not migrate.running_on_peer(migrate.open_peer(peer.uri, 10), guest.uuid)


def test_peer_libvirtd_hung_mid_migration(guests: GuestFactory, here: Hypervisor, peer: PeerHost,
                                          peer_hv: Hypervisor) -> None:
    """A stopped (SIGSTOP) peer daemon: its QEMU keeps taking the stream; the connection's
    keepalive gives up (about 20 s) and the job is aborted then, not at the timeout."""
    dom, guest = throttled(guests, here)
    stopped: list[int | None] = []

    def stop_soon() -> None:
        time.sleep(3)
        stopped.append(peer.signal_libvirtd("SIGSTOP"))

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    try:
        out = migrate.migrate_live(guest, peer_hv, DATA_URI, timeout=90)
    finally:
        stopper.join()
        peer.signal_libvirtd("SIGCONT")
    print(f"peer libvirtd {stopped} stopped: {out}")
    assert stopped and stopped[0] is not None
    assert out.result == migrate.FAILED and out.reason.startswith(migrate.PEER_LOST), out
    assert out.seconds < 60
    assert out.running_here and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


# -- check_peer ---------------------------------------------------------------------------------------------


def test_check_peer_reports_memory_the_peer_lacks(guests: GuestFactory, here: Hypervisor,
                                                   peer_hv: Hypervisor) -> None:
    (dom,) = guests.create(1, memory_mib=4 * 2**20, start=False)  # 4 TiB, defined only
    reasons = migrate.check_peer(guest_of(here, dom), peer_hv)
    assert len(reasons) == 1 and reasons[0].startswith("the guest needs 4194304 MiB, the peer has "), reasons


def test_check_peer_reports_a_cpu_the_peer_lacks(guests: GuestFactory, here: Hypervisor,
                                                 peer_hv: Hypervisor) -> None:
    (dom,) = guests.create(1, start=False)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
        "</vcpu>", "</vcpu>\n  <cpu mode='custom' match='exact'><model>qemu64</model>"
        "<feature policy='require' name='avx512f'/></cpu>")
    dom = here.conn.defineXML(xml)
    reasons = migrate.check_peer(guest_of(here, dom), peer_hv)
    assert reasons == ["the peer's CPU is incompatible with the guest's (qemu64)"], reasons
    plain = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace("avx512f", "sse2")
    dom = here.conn.defineXML(plain)
    assert migrate.check_peer(guest_of(here, dom), peer_hv) == []
