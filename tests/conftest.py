"""Shared pytest fixtures, including the real-libvirt test bed.

Real-guest fixtures (``libvirtd``, ``images``, ``system_conn``, ``guests``,
``module_guests``) need root and the packages of ``tests/testbed/setup.sh``.
Where they cannot work the tests using them FAIL (never skip), so CI cannot
silently lose its real-guest coverage.  Tests using them get the
``realguest`` marker automatically (deselect with ``-m "not realguest"``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import libvirt

    from tests.testbed.guests import GuestFactory
    from tests.testbed.images import Images

REALGUEST_FIXTURES = frozenset({"libvirtd", "images", "system_conn", "guests", "module_guests"})


# folder -> the marker every test in it gets
FOLDER_MARKERS = {"tests/systemd/": "systemd", "tests/peer/": "peer"}
MARKERS = {
    "realguest": "needs the real libvirtd (qemu:///system) and QEMU guests of tests/testbed",
    "packaging": "builds and installs the packages (.deb, .rpm) and checks the units; slow, changes /usr",
    "systemd": "boots Debian 12 and 13 systemd containers (systemd-nspawn, root)",
    "peer": "boots a peer libvirtd in a systemd-nspawn container (root)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-guest fixture as ``realguest``, and
    every test of a container folder with that folder's marker."""
    for item in items:
        if REALGUEST_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realguest)
        for folder, marker in FOLDER_MARKERS.items():
            if folder in str(item.path):
                item.add_marker(getattr(pytest.mark, marker))


def _require_testbed() -> None:
    """Fail (not skip) with a clear message if the test bed cannot run here."""
    if os.geteuid() != 0:
        pytest.fail(
            "real-guest test bed needs root (it starts libvirtd and QEMU guests); "
            'run the tests as root or deselect them with -m "not realguest"',
            pytrace=False,
        )
    missing = [tool for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64") if shutil.which(tool) is None]
    if missing or not os.path.exists("/bin/busybox"):
        pytest.fail(
            f"real-guest test bed: missing {', '.join(missing) or '/bin/busybox'}; "
            "run `bash tests/testbed/setup.sh` as root first",
            pytrace=False,
        )
    try:
        import libvirt  # noqa: F401
    except ImportError as err:
        pytest.fail(f"real-guest test bed: libvirt-python not importable ({err})", pytrace=False)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[bool]:
    """Make sure libvirtd answers on qemu:///system; yields True if we started it.

    Daemons started here are stopped at session end; running ones are left.
    """
    _require_testbed()
    from tests.testbed import daemons

    try:
        started = daemons.ensure_libvirtd()
    except Exception as err:  # noqa: BLE001 - turn any start-up error into a clear failure
        pytest.fail(f"real-guest test bed: cannot start libvirtd: {err}", pytrace=False)
    yield started
    if started:
        daemons.stop_started_daemons()


@pytest.fixture(scope="session")
def images() -> Images:
    """The cached guest kernel and initramfs (built on first use)."""
    _require_testbed()
    from tests.testbed.images import ensure_images

    try:
        return ensure_images()
    except Exception as err:  # noqa: BLE001 - turn any build error into a clear failure
        pytest.fail(f"real-guest test bed: cannot build guest images: {err}", pytrace=False)


@pytest.fixture(scope="session")
def system_conn(libvirtd: bool, images: Images) -> Iterator[libvirt.virConnect]:
    """A qemu:///system connection; leftover ``lgt-`` guests are swept first.

    If a test restarts libvirtd the connection is reopened in place before the
    next test (domain objects from before the restart stay dead: look them up
    again).
    """
    import libvirt

    from tests.testbed.daemons import URI
    from tests.testbed.guests import sweep_leftovers

    conn = libvirt.open(URI)
    sweep_leftovers(conn)
    yield conn
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


@pytest.fixture(autouse=True)
def _revive_system_conn(request: pytest.FixtureRequest) -> None:
    """Reopen ``system_conn`` if an earlier test restarted libvirtd."""
    if "system_conn" in request.fixturenames:
        from tests.testbed.guests import revive_connection

        revive_connection(request.getfixturevalue("system_conn"))


@contextlib.contextmanager
def _factory(conn: libvirt.virConnect, images: Images) -> Iterator[GuestFactory]:
    """A GuestFactory on ``conn`` whose guests are removed at the end, pass or fail."""
    from tests.testbed.guests import GuestFactory

    factory = GuestFactory(conn, images)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def guests(system_conn: libvirt.virConnect, images: Images) -> Iterator[GuestFactory]:
    """A GuestFactory whose guests are removed after the test."""
    with _factory(system_conn, images) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_guests(system_conn: libvirt.virConnect, images: Images) -> Iterator[GuestFactory]:
    """A GuestFactory shared by a module's tests, cleaned up at module end."""
    with _factory(system_conn, images) as factory:
        yield factory
