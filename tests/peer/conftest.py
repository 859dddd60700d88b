"""Fixtures of the migration tests: one peer host (a libvirtd in a
systemd-nspawn container, see :mod:`tests.peer.host`) per module, always torn
down, and a connection to it for the primitives of libvirt_guests.virt.migrate.

These tests create guests on the host's qemu:///system: run them under the
test bed's lock (``flock /tmp/realguest.lock``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.migrate import open_peer
from tests.peer.host import PeerHost
from tests.systemd.root import missing_tools


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerHost]:
    """A booted peer host; ``peer.uri`` is its qemu+tcp URI, ``peer.run``/``peer.virsh`` act inside it."""
    if os.geteuid() != 0:
        pytest.fail("the peer host needs root (systemd-nspawn, mount)", pytrace=False)
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run tests/testbed/setup.sh (as root)", pytrace=False)
    host = PeerHost(tmp_path_factory.mktemp("peer"))
    try:
        host.start()
        yield host
    finally:
        host.close()


@pytest.fixture
def peer_hv(peer: PeerHost) -> Iterator[Hypervisor]:
    """An open connection to the peer; the peer's guests are removed after the test."""
    peer.wait_answers()  # a test may have killed its libvirtd
    hv = open_peer(peer.uri, 10)
    try:
        yield hv
    finally:
        hv.close()
        peer.wait_answers()
        peer.remove_guests()


@pytest.fixture
def here(libvirtd: bool) -> Iterator[Hypervisor]:
    """Our own Hypervisor on the host's qemu:///system (the guests' source)."""
    from tests.testbed.daemons import URI

    hv = Hypervisor(URI)
    hv.connect(retry_for=10)
    try:
        yield hv
    finally:
        hv.close()
