"""Fixtures of the real-guest tests: temporary paths for our tool and for a
copy of Debian's script, and a guard that no guest but the test bed's runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from .support import Original, Tool


@pytest.fixture(autouse=True)
def only_test_guests(system_conn: libvirt.virConnect) -> Iterator[None]:
    """stop acts on every running guest: refuse to run beside foreign ones."""
    foreign = [d.name() for d in system_conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
               if not d.name().startswith("lgt-")]
    if foreign:
        pytest.fail(f"guests not made by the test bed are running ({', '.join(foreign)}); "
                    "the real-guest tests would save or shut them down", pytrace=False)
    yield


@pytest.fixture
def tool(tmp_path: Path) -> Tool:
    return Tool(tmp_path / "ours")


@pytest.fixture
def original(tmp_path: Path) -> Original:
    return Original(tmp_path / "debian")


@pytest.fixture(scope="session")
def session_uri(libvirtd: bool) -> Iterator[str]:
    """A second libvirt URI with guests of its own (a session-mode daemon)."""
    from tests.testbed import session

    uri = session.ensure_session_daemon()
    yield uri
    session.stop_session_daemon()
