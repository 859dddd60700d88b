"""The fixed cost of a command (issue 13): what it writes when there is
nothing to do, and an entry point that ends at once. Never timed here: the
start-up time is measured by bench/startup.py (issue 20 retired the tests
that pinned which modules a command imports, with the tricks they guarded:
records.py instead of dataclasses, python-dotenv's parser loaded alone,
imports inside functions)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .support import Driver, Files, Result


def _count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counting(fd: int, _real: Callable[[int], None] = real, _name: str = name) -> None:
            calls.append(_name)
            _real(fd)

        monkeypatch.setattr(os, name, counting)
    return calls


@pytest.mark.parametrize("command", ["stop", "shutdown"])
def test_a_stop_with_no_guest_writes_no_journal(files: Files, driver: Driver, run: Callable[..., Result],
                                                monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Nothing to record, nothing written: the journal's fsyncs were most of
    a stop with no guest (the original writes nothing either)."""
    syncs = _count_syncs(monkeypatch)
    result = run(command)
    assert result.code == 0, result.err
    assert "no running guests" in result.out
    assert syncs == []
    assert not files.state_file.exists() and not files.list_file.exists()


def test_a_stop_with_a_guest_still_keeps_its_journal(files: Files, driver: Driver, run: Callable[..., Result],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side: one guest, and its journal and list file are synced."""
    files.write_config(ON_SHUTDOWN="shutdown")
    dom = driver.guest()
    syncs = _count_syncs(monkeypatch)
    result = run("stop")
    assert result.code == 0, result.err
    assert driver.state(dom) == "off"
    assert len(syncs) >= 2
    assert files.list_file.read_text().split()[1] == dom.UUIDString()


ENTRY = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("interpreter teardown\\n"))
from libvirt_guests.cli.main import run
run()
"""


@pytest.mark.parametrize(("argv", "code", "expected"), [
    (["stop"], 0, "libvirt-guests stop: 0 guests"),
    (["--version"], 0, "libvirt-guests "),
    (["bogus"], 2, "Usage: "),
    (["check-config"], 0, "# configuration file: "),
])
def test_the_entry_point_ends_at_once_with_its_output_and_exit_code(tmp_path: Path, argv: list[str], code: int,
                                                                    expected: str) -> None:
    """run() ends the process without the interpreter's teardown (an atexit
    handler never runs), yet what was written reaches a file (block-buffered
    standard output) whole, and the exit code is the command's."""
    node = tmp_path / "node.xml"
    node.write_text("<node>\n</node>\n")
    conf = tmp_path / "probe.conf"
    conf.write_text(f'URIS="test://{node}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBVIRT_GUESTS_") and k != "NOTIFY_SOCKET"}
    env.update({"LIBVIRT_GUESTS_CONFIG": str(conf), "LIBVIRT_GUESTS_LIST_FILE": str(tmp_path / "list"),
                "LIBVIRT_GUESTS_LOCK_FILE": str(tmp_path / "lock"), "LC_ALL": "C"})
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        done = subprocess.run([sys.executable, "-c", ENTRY, *argv], stdout=stdout, stderr=stderr, env=env,
                              timeout=120, check=False)
    assert done.returncode == code, err.read_text()
    assert expected in out.read_text()
    assert out.read_text().endswith("\n")
    assert "interpreter teardown" not in err.read_text()
