"""Fixtures of the systemd end-to-end tests: the .deb of each release, and
containers that live for a whole module so scenarios share boots.

A test runs on both releases (Debian 12 and 13) with ``@BOTH`` and on one with
``@DEBIAN12`` (or ``@DEBIAN13``): each parametrizes its module's container
fixture indirectly, so pytest groups a module's tests by release and each
release's container is booted once per module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.systemd import harness
from tests.systemd.root import RELEASES, missing_tools

#: pytest ids of the releases: ``debian12``, ``debian13``.
RELEASE_IDS = {name: f"debian{version}" for name, version in RELEASES.items()}


def on(*releases: str, fixture: str) -> pytest.MarkDecorator:
    """Run a test once per release, on the module's container fixture ``fixture`` of that release."""
    return pytest.mark.parametrize(fixture, list(releases), indirect=True, ids=[RELEASE_IDS[r] for r in releases])


@pytest.fixture(scope="session")
def systemd_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd container tests need root (systemd-nspawn, mount, debootstrap)")
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run tests/testbed/setup.sh (as root) to install them")


@pytest.fixture(scope="session")
def debs(systemd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Our .deb for a release, built once per session from the work tree inside that release's root."""
    built: dict[str, Path] = {}

    def get(release: str) -> Path:
        if release not in built:
            built[release] = harness.build_deb(tmp_path_factory.mktemp(f"deb-{release}"), release)
        return built[release]

    return get


@pytest.fixture(scope="module")
def make_container(systemd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    boxes: list[harness.Container] = []

    def make(name: str, release: str = harness.DEFAULT_RELEASE) -> harness.Container:
        box = harness.Container(tmp_path_factory.mktemp(f"nspawn-{name}-{release}"), name, release)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()
