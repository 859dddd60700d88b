"""The fixed cost of a command (issue 13): what it imports and what it writes
when there is nothing to do. Never timed: each test counts work (modules
imported, fsyncs) that would make a `stop` with no guest slower.

The import tests run the command in a fresh interpreter and look at
sys.modules: a module another module begins to import at the top (a
dataclass, a `from .start import ...` in cli.py, `import dotenv`) makes them
fail and names it."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_guests.config import shellfile

from .support import Driver, Files, Result

REPO = Path(__file__).resolve().parents[2]

# Imported by no command: the standard library's heavy modules the package
# no longer uses (dataclasses compiles source per class and imports inspect;
# dotenv/__init__ imports dotenv.main, logging, tempfile...).
NEVER = {"dataclasses", "inspect", "dotenv", "dotenv.main", "logging", "tempfile", "secrets", "random", "hashlib"}
# What a stop with no guest needs: the stop engine's listing, none of its actions.
NOT_FOR_STOP = NEVER | {
    "libvirt_guests.start.run", "libvirt_guests.start.groups", "libvirt_guests.start.units",
    "libvirt_guests.start.ledger", "libvirt_guests.reports.status", "libvirt_guests.config.checkconfig",
    "libvirt_guests.cli.manpage",
    "libvirt_guests.start.peers", "libvirt_guests.stop.actions.base", "libvirt_guests.stop.chains",
    "xml.etree.ElementTree",  # a guest's policy, a peer's CPU: not read without guests
    "socket",  # sd_notify, only with NOTIFY_SOCKET
    "difflib",  # "did you mean": only for a word not understood
    "json",  # the journal (none written without a guest) and --json
}
# Commands that need no hypervisor load no libvirt and no engine.
NOT_WITHOUT_LIBVIRT = NEVER | {
    "libvirt", "libvirt_guests.virt.hypervisor", "libvirt_guests.engine", "libvirt_guests.stop.run",
    "libvirt_guests.start.run",
    "libvirt_guests.stop.plan", "libvirt_guests.state.journal", "libvirt_guests.reports.status", "json", "socket",
}

# Run with -S, its import path given (this checkout, then the interpreter's
# site-packages): what the site module and the .pth files import at start-up
# (an editable install's finder, json for a CA bundle's hook...) would
# otherwise hide the same imports by the command.
PROBE = """
import sys
before = set(sys.modules)
sys.path[:0] = sys.argv.pop(1).split(":")
from libvirt_guests.cli.main import main
code = main(sys.argv[1:])
sys.stdout.flush()
new = sorted(set(sys.modules) - before)
import json
print("\\n" + json.dumps({"code": code, "new": new}))
"""


def site_packages(python: str) -> list[str]:
    """Where python finds libvirt and dotenv (its venv's site-packages, if any)."""
    if python == sys.executable:
        return site.getsitepackages()
    return json.loads(subprocess.run([python, "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
                                     capture_output=True, text=True, check=True).stdout)


def imported_by(argv: list[str], tmp_path: Path, config: str, python: str = sys.executable,
                env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """Run the command line in a fresh interpreter, on an empty test node;
    its exit code, the modules it imported (beyond the interpreter's own at
    start-up) and its output."""
    node = tmp_path / "node.xml"
    node.write_text("<node>\n</node>\n")
    conf = tmp_path / "probe.conf"
    conf.write_text(config.replace("NODE", f"test://{node}"))
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("LIBVIRT_GUESTS_") and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    clean.update({
        "LIBVIRT_GUESTS_CONFIG": str(conf), "LIBVIRT_GUESTS_LIST_FILE": str(tmp_path / "probe.list"),
        "LIBVIRT_GUESTS_LOCK_FILE": str(tmp_path / "probe.lock"), "LC_ALL": "C", **(env or {}),
    })
    done = subprocess.run([python, "-S", "-c", PROBE, ":".join([str(REPO), *site_packages(python)]), *argv],
                          capture_output=True, text=True, env=clean, cwd=tmp_path,
                          timeout=120, check=False)
    head, _, last = done.stdout.rstrip("\n").rpartition("\n")
    assert last.startswith("{"), done.stdout + done.stderr
    report = json.loads(last)
    return report["code"], set(report["new"]), head + done.stderr


def test_stop_with_no_guest_imports_no_action_start_status_or_heavy_module(tmp_path: Path) -> None:
    code, new, output = imported_by(["stop"], tmp_path, 'URIS="NODE"\nON_SHUTDOWN=suspend\n')
    assert code == 0, output
    assert "no running guests" in output
    assert "libvirt_guests.stop.run" in new and "libvirt" in new  # it did run the stop
    assert "libvirt_guests._dotenv_parser" in new or "dotenv.parser" in new  # the file was read by python-dotenv
    assert sorted(new & NOT_FOR_STOP) == []


def test_shutdown_with_no_guest_imports_no_action_either(tmp_path: Path) -> None:
    code, new, output = imported_by(["shutdown"], tmp_path, 'URIS="NODE"\n')
    assert code == 0, output
    assert sorted(new & NOT_FOR_STOP) == []


def test_the_configuration_is_read_with_python_dotenv_without_its_package_init(tmp_path: Path) -> None:
    """A value quoted over two lines is one of python-dotenv's lines: the
    configuration went through its parser, yet dotenv/__init__ never ran."""
    code, new, output = imported_by(["check-config"], tmp_path, 'URIS="NODE"\nPARALLEL_SHUTDOWN="2\n3"\n')
    assert code == 6, output  # "2\n3" is not a number: read as one value, over two lines
    assert "PARALLEL_SHUTDOWN" in output and "probe.conf:2" in output
    assert "libvirt_guests._dotenv_parser" in new
    assert sorted(new & NEVER) == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["check-config"], ["man"], ["reload"]])
def test_commands_without_a_hypervisor_load_no_libvirt(tmp_path: Path, argv: list[str]) -> None:
    code, new, output = imported_by(argv, tmp_path, 'URIS="NODE"\n')
    assert code == 0, output
    assert sorted(new & NOT_WITHOUT_LIBVIRT) == []


def test_status_loads_no_stop_or_start_engine(tmp_path: Path) -> None:
    code, new, output = imported_by(["status"], tmp_path, 'URIS="NODE"\n')
    assert code in (0, 3), output  # 3: not started, as the original
    assert sorted(new & (NEVER | {"libvirt_guests.stop.run", "libvirt_guests.stop.chains",
                                  "libvirt_guests.stop.actions.base",
                                  "libvirt_guests.start.run", "libvirt_guests.start.groups"})) == []


DEBIAN_PYTHON = "/usr/bin/python3"


def _has_debian_dotenv() -> bool:
    return shutil.which(DEBIAN_PYTHON) is not None and subprocess.run(
        [DEBIAN_PYTHON, "-c", "import dotenv, libvirt"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _has_debian_dotenv(), reason="needs Debian's python3 with python3-dotenv and python3-libvirt")
def test_as_packaged_with_debians_python_dotenv(tmp_path: Path) -> None:
    """The .deb runs on Debian's python3 with python3-dotenv (0.21 on
    Debian 12), laid out as python-dotenv lays itself out: its parser is
    found and loaded on its own there too."""
    code, new, output = imported_by(["stop"], tmp_path, 'URIS="NODE"\nON_SHUTDOWN="shut\\\ndown"\n',
                                    python=DEBIAN_PYTHON, env={"PYTHONPATH": str(REPO), "PYTHONNOUSERSITE": "1"})
    assert code == 0, output
    assert "no running guests" in output
    assert "libvirt_guests._dotenv_parser" in new
    assert sorted(new & NOT_FOR_STOP) == []
    where = subprocess.run(
        [DEBIAN_PYTHON, "-c",
        "from libvirt_guests.config.shellfile import _dotenv_parser; print(_dotenv_parser().__file__)"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()
    assert where.startswith("/usr/lib/python3/dist-packages/dotenv/"), where


def test_dotenv_parser_falls_back_to_the_ordinary_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A python-dotenv whose parser cannot be found on its own (another
    layout): the ordinary import, and the file is still read."""
    import importlib.util

    for name in ("dotenv.parser", shellfile._PARSER_MODULE):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    module = shellfile._dotenv_parser()
    assert module.__name__ == "dotenv.parser"
    chunks = shellfile._chunks('A="1\n2"\nB=3\n')
    assert chunks == [(1, 'A="1\n2"\n'), (3, "B=3\n")]


def test_dotenv_parser_loaded_on_its_own_is_python_dotenvs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dotenv.parser", shellfile._PARSER_MODULE):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = shellfile._dotenv_parser()
    assert module.__name__ == shellfile._PARSER_MODULE
    assert Path(module.__file__).parent.name == "dotenv" and Path(module.__file__).name == "parser.py"
    assert sys.modules[shellfile._PARSER_MODULE] is module
    assert shellfile._dotenv_parser() is module  # loaded once


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
