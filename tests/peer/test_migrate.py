"""The migration primitives (libvirt_guests.migrate) against a real peer host:
tiny TCG guests on the host's qemu:///system moved live to a libvirtd in a
container, and every fallback leaving the guest running here.

Run under the test bed's lock: ``flock /tmp/realguest.lock .venv/bin/python
-m pytest -q tests/peer``."""

from __future__ import annotations

import time

import libvirt
import pytest

from libvirt_guests import migrate
from libvirt_guests.virt import Guest, Hypervisor
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
    assert "persistent" not in peer.virsh("dominfo", guest.name).stdout or \
        "Persistent:     yes" in peer.virsh("dominfo", guest.name).stdout
    assert migrate.running_on_peer(peer_hv, guest.uuid)
    assert old is True
    assert dom.autostart() == 0
    state, reason = dom.state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)
    print(f"migrated in {out.seconds:.1f} s, {len(seen)} progress reports")
