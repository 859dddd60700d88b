"""Fast tests of the logic against libvirt's in-process test driver
(test:///default), whose state is shared by every connection of this process.
The helpers themselves are in support.py; these are the fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_guests.cli.main import main
from libvirt_guests.config.settings import SETTINGS
from libvirt_guests.virt.hypervisor import Hypervisor

from .support import TEST_URI, Driver, Files, Result

__all__ = ["TEST_URI", "Driver", "Files", "Result"]  # older tests import them from here


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    """Every path the tool uses, in a temporary folder; no stray variables."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name in ("LIBVIRT_DEFAULT_URI", "JOURNAL_STREAM", "NOTIFY_SOCKET", "LIBVIRT_GUESTS_DEFAULTS"):
        monkeypatch.delenv(name, raising=False)
    f = Files(tmp_path / "libvirt-guests.conf", tmp_path / "list", tmp_path / "lock", tmp_path / "list.state")
    monkeypatch.setenv("LIBVIRT_GUESTS_CONFIG", str(f.config))
    monkeypatch.setenv("LIBVIRT_GUESTS_LIST_FILE", str(f.list_file))
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_FILE", str(f.lock_file))
    monkeypatch.setenv("LIBVIRT_GUESTS_STATE_FILE", str(f.state_file))
    monkeypatch.setenv("LIBVIRT_GUESTS_QEMU_CONF", str(tmp_path / "qemu.conf"))  # never the host's
    f.write_config()
    return f


@pytest.fixture
def driver() -> Iterator[Driver]:
    drv = Driver()
    yield drv
    drv._wipe()
    drv.conn.close()


@pytest.fixture
def hv(driver: Driver) -> Iterator[Hypervisor]:
    """Our own connection to the test driver, as the engines open it."""
    hyper = Hypervisor(TEST_URI)
    hyper.connect()
    yield hyper
    hyper.close()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def call(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call
