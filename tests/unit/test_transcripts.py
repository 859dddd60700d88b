"""The drop-in promise about messages, held whole: transcripts of stop, start,
status, gueststatus and plan --json on the test driver, compared with the
expected-output files in tests/unit/transcripts/ (as virt-manager's
tests/test_cli.py does with add_compare).

Regenerate after a deliberate change of messages with
``LGT_REGENERATE_TRANSCRIPTS=1 python -m pytest tests/unit/test_transcripts.py``
and read the diff before committing it.

What varies between runs is masked before comparing: durations, temporary
paths, process ids, domain ids, and the order of lines that threads may print
in any order (lines inside one phase of a run are compared as a sorted block).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from .support import Driver, Files, Result

EXPECTED = Path(__file__).parent / "transcripts"
REGENERATE = os.environ.get("LGT_REGENERATE_TRANSCRIPTS") == "1"

# Lines that open a phase of concurrent work: the lines after them, up to the
# next line matching _BOUNDARY, may come in any order and are compared sorted.
_CONCURRENT = re.compile(r"^(Suspending guests on|Shutting down guests on|Resuming guests on)")
_BOUNDARY = re.compile(r"^(\$ |\[exit|--- |libvirt-guests (stop|start):|Suspending guests on|Shutting down guests on|"
                       r"Resuming guests on|Running guests on)")
_MASKS = [
    (re.compile(r"\b\d+\.\d+ s\b"), "N.N s"),
    (re.compile(r"\bin \d+ s\b"), "in N s"),
    (re.compile(r"pid \d+"), "pid N"),
    (re.compile(r'"updated": "[^"]*"'), '"updated": "T"'),
    (re.compile(r'"id": \d+'), '"id": N'),
    # gueststatus tables: domain ids (and so column widths) depend on earlier tests
    (re.compile(r"^ \d+ +(\S+) +", re.M), r" N \1 "),
    (re.compile(r"^ Id +Name +State$", re.M), " Id Name State"),
    (re.compile(r"^-{5,}$", re.M), "-----"),
]

GUESTS = {  # name -> uuid: fixed, so transcripts do not depend on the run
    "alpha": "11111111-1111-1111-1111-111111111111",
    "beta": "22222222-2222-2222-2222-222222222222",
    "gamma": "33333333-3333-3333-3333-333333333333",
}


def mask(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>")
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    out: list[str] = []
    block: list[str] | None = None  # lines of a concurrent phase, sorted when it ends
    for line in text.splitlines():
        if block is not None and _BOUNDARY.match(line):
            out += sorted(block)
            block = None
        if block is None:
            out.append(line)
            if _CONCURRENT.match(line):
                block = []
        else:
            block.append(line)
    out += sorted(block or [])
    return "\n".join(out) + "\n"


def define(driver: Driver, name: str, policy: str | None = None, running: bool = True) -> libvirt.virDomain:
    xml = f"""<domain type='test'><name>{name}</name><uuid>{GUESTS[name]}</uuid><memory>65536</memory>
        <vcpu>1</vcpu><os><type>hvm</type></os></domain>"""
    dom = driver.conn.defineXML(xml)
    if running:
        dom.create()
    if policy is not None:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if running else 0)
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, policy, "guests", "urn:libvirt-guests:policy:1", flags)
    return dom


class Transcript:
    """Runs commands in-process and collects what a terminal would show."""

    def __init__(self, run: Callable[..., Result], tmp: Path) -> None:
        self.run = run
        self.tmp = tmp
        self.parts: list[str] = []

    def __call__(self, *args: str) -> int:
        result = self.run(*args)
        self.parts.append(f"$ libvirt-guests {' '.join(args)}\n[exit {result.code}]\n--- stdout\n{result.out}"
                          f"--- stderr\n{result.err}")
        return result.code

    def compare(self, name: str) -> None:
        actual = mask("".join(self.parts), self.tmp)
        path = EXPECTED / f"{name}.txt"
        if REGENERATE or not path.exists():
            EXPECTED.mkdir(exist_ok=True)
            path.write_text(actual)
            if not REGENERATE:
                pytest.fail(f"{path} did not exist and was written: check it and commit it")
            return
        assert actual == path.read_text(), f"transcript {name} differs (LGT_REGENERATE_TRANSCRIPTS=1 rewrites it)"


@pytest.fixture
def transcript(run: Callable[..., Result], tmp_path: Path) -> Transcript:
    return Transcript(run, tmp_path)


def test_suspend_then_resume(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "beta", policy='<policy order="2"/>')
    define(driver, "gamma", running=False)
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start")
    transcript("status")
    transcript("gueststatus")
    transcript("plan", "stop", "--json")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript("status", "--json")
    transcript("plan", "start", "--json")
    transcript("start")
    transcript("status")
    transcript("gueststatus", "--json")
    transcript.compare("suspend_then_resume")


def test_shutdown_chain_and_ignore_on_boot(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "beta", policy='<policy on_shutdown="shutdown poweroff" shutdown_timeout="5"/>')
    files.write_config(ON_SHUTDOWN="shutdown", ON_BOOT="ignore", PARALLEL_SHUTDOWN="2", SHUTDOWN_TIMEOUT="10")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript("start")
    transcript("status")
    transcript.compare("shutdown_chain_and_ignore_on_boot")


def test_stop_twice_and_restart(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start")
    transcript("start")
    transcript("stop")
    transcript("stop")  # the original's no-op: a completed stop's list is still there
    transcript("start")
    transcript("condrestart")
    transcript("gueststatus")
    transcript.compare("stop_twice_and_restart")
