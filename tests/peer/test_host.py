"""The peer host itself: it answers over TCP with its own host UUID, and its
teardown leaves nothing running (no other peer runs meanwhile: this module
uses no ``peer`` fixture)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.peer.host import PeerHost


def test_peer_answers_and_teardown_leaves_no_process(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        import pytest

        pytest.fail("the peer host needs root", pytrace=False)
    host = PeerHost(tmp_path / "peer")
    try:
        host.start()
        caps = host.virsh("-c", host.uri, "capabilities", local=False).stdout
        assert f"<uuid>{host.host_uuid}</uuid>" in caps
        pid1 = host.box.pid1
        assert pid1 is not None
        libvirtd = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_namespace_of(p, pid1)]
        assert libvirtd
    finally:
        host.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid1}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid1}").exists(), "the container's systemd outlived the teardown"
    assert not (tmp_path / "peer").exists()


def _in_namespace_of(proc: Path, pid1: int) -> bool:
    try:
        return os.readlink(proc / "ns/pid") == os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return False
