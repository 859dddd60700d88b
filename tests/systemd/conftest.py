"""Fixtures of the systemd end-to-end tests: the .deb, and containers that
live for a whole module so scenarios share boots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd import harness
from tests.systemd.root import missing_tools


@pytest.fixture(scope="session")
def systemd_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd container tests need root (systemd-nspawn, mount, debootstrap)")
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run tests/testbed/setup.sh (as root) to install them")


@pytest.fixture(scope="session")
def deb(systemd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our .deb, built once per session from the work tree."""
    return harness.build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def make_container(systemd_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    boxes: list[harness.Container] = []

    def make(name: str) -> harness.Container:
        box = harness.Container(tmp_path_factory.mktemp(f"nspawn-{name}"), name)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()
