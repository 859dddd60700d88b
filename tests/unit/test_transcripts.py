"""The drop-in promise about messages, held whole: transcripts of every
command on the test driver (stop, start, status, gueststatus, plan, policy,
check-config, usage and help), one scenario per expected-output file in
tests/unit/transcripts/ (as virt-manager's tests/test_cli.py does with
add_compare). Each file holds, per command: the command line, its exit code,
its standard output and its standard error. Recorded before issue 20's
reshaping, they must come out byte-identical after it; so this file names no
module of the package (the `run` fixture calls the entry point).

Regenerate after a deliberate change of messages with
``LGT_REGENERATE_TRANSCRIPTS=1 python -m pytest tests/unit/test_transcripts.py``
and read the diff before committing it.

What varies between runs is masked before comparing, and nothing else:
measured durations, temporary paths, process ids, domain ids, the time stamp
of a file set aside, and the order of lines that threads may print in any
order (lines inside one phase of a run are compared as a sorted block).
Scenarios whose later commands list guests after starting several of them
set PARALLEL_START=1, since guests get their domain ids (and so their list
order) in the order they came up.

Faults the test driver cannot play are declared per scenario (Faults) and
injected at the libvirt-python call, never in the package.
"""

from __future__ import annotations

import difflib
import fcntl
import gettext
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from .support import TEST_URI, Driver, Files, Result, libvirt_error, peer_uri

EXPECTED = Path(__file__).parent / "transcripts"
REGENERATE = os.environ.get("LGT_REGENERATE_TRANSCRIPTS") == "1"

# Lines that open a phase of concurrent work: the lines after them, up to the
# next line matching _BOUNDARY, may come in any order and are compared sorted.
_CONCURRENT = re.compile(r"^(Suspending guests on|Shutting down guests on|Resuming guests on)")
_BOUNDARY = re.compile(r"^(\$ |\[exit|--- |libvirt-guests (stop|start):|Suspending guests on|Shutting down guests on|"
                       r"Resuming guests on|Running guests on)")
_MASKS = [
    # durations measured by the run (a setting such as "wait 0.25 s" is not masked)
    (re.compile(r"\bin \d+\.\d+ s\b"), "in N.N s"),
    (re.compile(r"\bin \d+ s\b"), "in N s"),
    (re.compile(r"\bafter \d+(\.\d+)? s\b"), "after N s"),
    (re.compile(r"pid \d+"), "pid N"),
    (re.compile(r'"pid": \d+'), '"pid": N'),
    (re.compile(r'"updated": "[^"]*"'), '"updated": "T"'),
    (re.compile(r"\.(damaged|untrusted)-\d{8}T\d{6}(\.\d+)?\b"), r".\1-STAMP"),  # files set aside
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
    "delta": "44444444-4444-4444-4444-444444444444",
    "web server": "55555555-5555-5555-5555-555555555555",  # a space: quoted, escaped or split wrongly?
    "café": "66666666-6666-6666-6666-666666666666",  # not ASCII
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


def domain_xml(name: str) -> str:
    return f"""<domain type='test'><name>{name}</name><uuid>{GUESTS[name]}</uuid><memory>65536</memory>
        <vcpu>1</vcpu><os><type>hvm</type></os></domain>"""


def define(driver: Driver, name: str, policy: str | None = None, running: bool = True) -> libvirt.virDomain:
    dom = driver.conn.defineXML(domain_xml(name))
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
        expected = path.read_text()
        if actual != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                                f"{name}.txt", "this run"))
            pytest.fail(f"transcript {name} differs (LGT_REGENERATE_TRANSCRIPTS=1 rewrites it):\n{diff}")


@pytest.fixture
def transcript(run: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Transcript:
    if gettext.find("libvirt", "/usr/share/locale"):  # the messages were translated when the package was loaded
        pytest.skip("libvirt's messages are translated under this locale: the transcripts are in C (LC_ALL=C)")
    monkeypatch.setenv("LIBVIRT_GUESTS_PROGRAM_NAME", "libvirt-guests")  # not pytest's argv[0]
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


# -- the contract before issue 20's reshaping: one scenario per file ---------
#
# Faults the test driver cannot play (a guest that ignores the power button, a
# save that fails or runs until it is aborted, an image that cannot be
# restored) are declared per scenario and injected at the libvirt-python call
# (libvirt.virDomain), never below it and never in the package: the package
# makes its real calls, the test driver does everything else.

ABORTED = libvirt.VIR_ERR_OPERATION_ABORTED
PEER_PASSWORD_URI = "test+tcp://admin:s3cret@127.0.0.1:1/default"  # nothing listens on port 1


class Faults:
    """Declared faults, per guest name, at the libvirt-python boundary."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> None:
        self.monkeypatch = monkeypatch
        self.release = release  # set at the test's end: frees any call still held
        self.healed: set[str] = set()  # guests whose faults are over

    def heal(self, name: str) -> None:
        """The fault of `name` is repaired: its calls work again."""
        self.healed.add(name)

    def _faulty(self, dom: libvirt.virDomain, names: tuple[str, ...]) -> bool:
        name = dom.name()
        return name in names and name not in self.healed

    def ignore_shutdown(self, *names: str) -> None:
        """A guest that ignores the power button: the request is accepted, nothing happens."""
        real = libvirt.virDomain.shutdown

        def shutdown(dom: libvirt.virDomain) -> int:
            return 0 if self._faulty(dom, names) else real(dom)

        self.monkeypatch.setattr(libvirt.virDomain, "shutdown", shutdown)

    def fail_save(self, name: str, message: str) -> None:
        """The managed save of `name` fails at once (a full disk)."""
        real = libvirt.virDomain.managedSave

        def managed_save(dom: libvirt.virDomain, flags: int = 0) -> int:
            if self._faulty(dom, (name,)):
                raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, message)
            return real(dom, flags)

        self.monkeypatch.setattr(libvirt.virDomain, "managedSave", managed_save)

    def save_until_aborted(self, name: str) -> None:
        """The managed save of `name` runs until its job is aborted, then
        fails as QEMU's does (a slow save on a slow disk)."""
        real_save, real_abort = libvirt.virDomain.managedSave, libvirt.virDomain.abortJob
        aborted = threading.Event()

        def managed_save(dom: libvirt.virDomain, flags: int = 0) -> int:
            if not self._faulty(dom, (name,)):
                return real_save(dom, flags)
            end = time.monotonic() + 30
            while not aborted.wait(0.1):
                if self.release.is_set() or time.monotonic() > end:
                    raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "the test's save was never aborted")
            raise libvirt_error(ABORTED, "operation aborted: job 'domain save' canceled by client")

        def abort_job(dom: libvirt.virDomain) -> int:
            if not self._faulty(dom, (name,)):
                return real_abort(dom)
            aborted.set()
            return 0

        self.monkeypatch.setattr(libvirt.virDomain, "managedSave", managed_save)
        self.monkeypatch.setattr(libvirt.virDomain, "abortJob", abort_job)

    def fail_start(self, name: str, message: str) -> None:
        """Starting `name` fails (its managed save image is damaged)."""
        real = libvirt.virDomain.createWithFlags

        def create(dom: libvirt.virDomain, flags: int = 0) -> int:
            if self._faulty(dom, (name,)):
                raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, message)
            return real(dom, flags)

        self.monkeypatch.setattr(libvirt.virDomain, "createWithFlags", create)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    release = threading.Event()
    yield Faults(monkeypatch, release)
    release.set()


def test_stop_suspend(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "web server")
    define(driver, "café")
    define(driver, "delta").suspend()  # paused by its admin: saved paused, not paused by us
    define(driver, "beta", running=False)
    # one start at a time: the guests get their domain ids (gueststatus's order) in list order
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start", PARALLEL_START="1")
    transcript("stop")
    transcript("status")
    transcript("status", "--json")
    transcript("gueststatus")
    transcript("start")
    transcript("gueststatus")
    transcript.compare("stop_suspend")


def test_stop_shutdown(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "café")
    # one start at a time: the guests get their domain ids (the next stop's list order) in list order
    files.write_config(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="30", PARALLEL_START="1")
    transcript("stop")
    transcript("status")
    transcript("start")
    files.write_config(ON_SHUTDOWN="suspend", PARALLEL_START="1")  # the shutdown command overrides it
    transcript("shutdown")
    transcript("status")
    transcript.compare("stop_shutdown")


def test_stop_chain_fallback(files: Files, driver: Driver, transcript: Transcript, faults: Faults) -> None:
    """Every guest reaches a later action of its chain: a save that fails, a
    save aborted at its SAVE_TIMEOUT, a shutdown out of time."""
    faults.fail_save("alpha", "operation failed: injected fault: cannot write the save image: No space left on device")
    faults.save_until_aborted("web server")
    faults.ignore_shutdown("café")
    define(driver, "alpha", policy='<policy order="3"/>')
    define(driver, "web server", policy='<policy order="2" save_timeout="1"/>')
    define(driver, "café", policy='<policy order="1" on_shutdown="shutdown poweroff" shutdown_timeout="1"/>')
    files.write_config(ON_SHUTDOWN="suspend shutdown")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript.compare("stop_chain_fallback")


def test_stop_chain_exhausted(files: Files, driver: Driver, transcript: Transcript, faults: Faults) -> None:
    """A guest left running: every action of its chain failed; a transient
    guest whose only action is suspend."""
    faults.ignore_shutdown("café")
    define(driver, "café", policy='<policy order="2" on_shutdown="shutdown" shutdown_timeout="1"/>')
    driver.conn.createXML(domain_xml("delta"), 0)
    define(driver, "alpha", policy='<policy order="1"/>')
    files.write_config(ON_SHUTDOWN="suspend", PERSISTENT_ONLY="false")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript.compare("stop_chain_exhausted")


def test_stop_deadline(files: Files, driver: Driver, transcript: Transcript, faults: Faults) -> None:
    """STOP_DEADLINE reached: a stubborn guest gets its last action at once
    (poweroff), the save under way is aborted and its guest left running, a
    guest still waiting for the only save slot (PARALLEL_SAVE=1, queued
    after delta) is not saved any more."""
    faults.ignore_shutdown("alpha")
    faults.save_until_aborted("delta")
    define(driver, "alpha", policy='<policy on_shutdown="shutdown poweroff" shutdown_timeout="0"/>')
    define(driver, "delta")
    define(driver, "café")
    files.write_config(ON_SHUTDOWN="suspend", PARALLEL_SAVE="1", STOP_DEADLINE="3")
    transcript("stop")
    transcript("status")
    transcript("gueststatus")
    transcript.compare("stop_deadline")


def test_stop_migrate_without_peer(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "café")
    files.write_config(ON_SHUTDOWN="migrate suspend")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript.compare("stop_migrate_without_peer")


def test_stop_migrate_unreachable_peer(files: Files, driver: Driver, transcript: Transcript) -> None:
    """The peer's URI carries a password: it must never be printed (issue 19)."""
    define(driver, "alpha")
    define(driver, "web server", policy='<policy on_shutdown="migrate shutdown"/>')
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=PEER_PASSWORD_URI, CONNECT_TIMEOUT="1")
    transcript("plan", "stop")
    transcript("stop")
    transcript("status", "--json")
    transcript.compare("stop_migrate_unreachable_peer")


def test_stop_migrate_peer_cannot_take(files: Files, driver: Driver, transcript: Transcript,
                                       tmp_path: Path) -> None:
    """The peer already runs a guest of the same name (another UUID)."""
    peer = peer_uri(tmp_path, domains="""<domain type='test'><name>alpha</name>
        <uuid>99999999-9999-9999-9999-999999999999</uuid><memory>65536</memory><vcpu>1</vcpu>
        <os><type>hvm</type></os></domain>""")
    define(driver, "alpha")
    define(driver, "café")
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=peer)
    transcript("plan", "stop")
    transcript("plan", "stop", "--json")
    transcript("stop")
    transcript("start")
    transcript.compare("stop_migrate_peer_cannot_take")


def test_start_restores(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha", policy='<policy order="1"/>')
    define(driver, "web server")
    define(driver, "café", policy='<policy order="2"/>')
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start")
    transcript("stop")
    transcript("plan", "start")
    transcript("start")
    transcript("status")
    transcript("gueststatus")
    transcript.compare("start_restores")


def test_start_boots(files: Files, driver: Driver, transcript: Transcript) -> None:
    """Shut down at stop, booted at start; a guest whose policy says
    on_boot=ignore stays off."""
    define(driver, "alpha")
    define(driver, "café", policy='<policy on_boot="ignore"/>')
    define(driver, "delta", policy='<policy order="5"/>')
    files.write_config(ON_SHUTDOWN="shutdown", ON_BOOT="start")
    transcript("stop")
    transcript("plan", "start")
    transcript("plan", "start", "--json")
    transcript("start")
    transcript("status")
    transcript("gueststatus")
    transcript.compare("start_boots")


def test_start_ignore(files: Files, driver: Driver, transcript: Transcript) -> None:
    """ON_BOOT=ignore: nothing is started, but a guest whose own policy says
    on_boot=start."""
    define(driver, "alpha")
    define(driver, "café", policy='<policy on_boot="start"/>')
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="ignore")
    transcript("stop")
    transcript("plan", "start")
    transcript("start")
    transcript("status")
    transcript("gueststatus")
    transcript.compare("start_ignore")


def test_start_failures(files: Files, driver: Driver, transcript: Transcript, faults: Faults) -> None:
    """A damaged save image, a guest undefined since the stop, a guest an
    admin started meanwhile; the failed one stays listed and is started by
    the next start."""
    define(driver, "alpha")
    beta = define(driver, "beta")
    define(driver, "café")
    delta = define(driver, "delta")
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start")
    transcript("stop")
    beta.managedSaveRemove(0)
    beta.undefine()
    delta.create()
    faults.fail_start("café", "operation failed: injected fault: cannot restore the saved image: it is damaged")
    transcript("plan", "start")
    transcript("start")
    transcript("status")
    transcript("status", "--json")
    faults.heal("café")
    transcript("start")
    transcript("status")
    transcript.compare("start_failures")


def test_status_each_state(files: Files, driver: Driver, transcript: Transcript, faults: Faults) -> None:
    """Stopped with none, started, stopped with saved guests, started with
    a guest still pending (its start failed). A stop running: its own file."""
    define(driver, "alpha")
    define(driver, "café", policy='<policy order="1"/>')  # started first: ids in list order
    files.write_config(ON_SHUTDOWN="shutdown", ON_BOOT="start")
    transcript("status")
    transcript("status", "--json")
    transcript("start")
    transcript("status")
    transcript("status", "--json")
    transcript("stop")
    transcript("status")
    transcript("status", "--json")
    transcript("start")
    transcript("status")
    transcript("stop")
    faults.fail_start("alpha", "operation failed: injected fault: cannot start the guest")
    transcript("start")
    transcript("status")
    transcript("status", "--json")
    transcript.compare("status_each_state")


def test_status_while_a_stop_runs(files: Files, driver: Driver, transcript: Transcript, tmp_path: Path) -> None:
    """A real stop in another process holds the run lock: it waits for a
    daemon that accepted its connection and does not answer (a socket here)."""
    sock_path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(sock_path))
    silent.listen(8)
    files.write_config(URIS=f"qemu+unix:///system?socket={sock_path}", CONNECT_TIMEOUT="30")
    env = dict(os.environ)
    stop = subprocess.Popen([sys.executable, "-m", "libvirt_guests", "stop"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_run_lock(files.state_file.with_name(files.state_file.name + ".lock"), held=True)
        transcript("status")
        transcript("status", "--json")
    finally:
        silent.close()
        try:
            stop.wait(30)
        finally:
            if stop.poll() is None:
                stop.kill()
                stop.wait()
    transcript("status")
    transcript.compare("status_while_a_stop_runs")


def _wait_for_run_lock(path: Path, held: bool, limit: float = 20.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return
        finally:
            os.close(fd)
        time.sleep(0.05)
    pytest.fail(f"{path} was not locked within {limit} s")


def test_unreachable_and_repeated_uris(files: Files, driver: Driver, transcript: Transcript, tmp_path: Path) -> None:
    """One URI cannot be reached (its guests are not lost for the others);
    one daemon named twice is handled once."""
    define(driver, "alpha")
    define(driver, "café")
    files.write_config(URIS=f"test:///default test://{tmp_path}/no-such-node.xml test:///default",
                       ON_SHUTDOWN="suspend", CONNECT_TIMEOUT="1", PARALLEL_START="1")  # ids in list order
    transcript("plan", "stop")
    transcript("stop")
    transcript("status")
    transcript("start")
    transcript("gueststatus")
    transcript.compare("unreachable_and_repeated_uris")


def test_state_files_damaged(files: Files, driver: Driver, transcript: Transcript, tmp_path: Path) -> None:
    """Junk in the list file and a damaged journal: the good entries are
    used, the journal is set aside; a list file that is a symbolic link is
    not read."""
    define(driver, "alpha")
    define(driver, "café")
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start", PARALLEL_START="1")  # ids in list order
    transcript("stop")
    with files.list_file.open("a") as listed:
        listed.write(f"{TEST_URI} not-a-uuid {GUESTS['gamma']}\nno-uri-here {GUESTS['delta']}\n")
    files.state_file.write_text('{"phase": "stopped", "guests": [')
    transcript("status")
    transcript("start")
    transcript("stop")
    real = tmp_path / "elsewhere"
    files.list_file.rename(real)
    files.list_file.symlink_to(real)
    transcript("status")
    transcript("start")
    transcript("gueststatus")
    transcript.compare("state_files_damaged")


CONFIG_WITH_PROBLEMS = """\
# an admin's file, with a problem on most lines
URIS="test:///default test+tcp://root:hunter2@127.0.0.1:1/default"
ON_SHUTDOWN=suspnd
ON_BOOT=maybe
SHUTDOWN_TIMEOUT=-5
PARALLEL_SHUTDOWN=+4
START_DELAY='1m 30s'
SYNC_TIME=no
STOP_DEADLINE=soon
SHUTDWON_TIMEOUT=60
MIGRATE_URI={peer}
T=$UNSET_HELPER
echo hello
PERSISTENT_ONLY="$(cat /etc/hostname)"
"""


def test_check_config_with_problems(files: Files, transcript: Transcript) -> None:
    files.config.write_text(CONFIG_WITH_PROBLEMS.format(peer=PEER_PASSWORD_URI))
    transcript("check-config")
    transcript("check-config", "--json")
    files.config.write_text('URIS="test:///default"\nON_SHUTDOWN="migrate shutdown"\nMIGRATE_BACK=1\nON_BOOT=ignore\n')
    transcript("check-config")  # migrate without a peer
    files.write_config(ON_SHUTDOWN="shutdown poweroff", ON_BOOT="ignore")
    transcript("check-config")
    transcript("check-config", str(files.config.with_name("missing.conf")))
    transcript.compare("check_config_with_problems")


def test_stop_and_start_with_invalid_values(files: Files, driver: Driver, transcript: Transcript) -> None:
    """Strict at the door, forgiving at the exit: the guests are handled
    with the value used instead, and the exit code is 6."""
    define(driver, "alpha")
    files.config.write_text("URIS=test:///default\nON_SHUTDOWN=shutdwn\nSHUTDOWN_TIMEOUT=-1\nSTOP_DEADLINE=soon\n"
                            "START_DELAY=inf\nON_BOOT=yes please\nbogus line $(reboot)\n")
    transcript("--lock-wait", "nan", "stop")  # a bad option value too: the default used, the guests handled
    transcript("start")
    transcript("status")
    transcript.compare("stop_and_start_with_invalid_values")


def test_plan_stop(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha", policy='<policy order="10" on_shutdown="shutdown poweroff" shutdown_timeout="60"/>')
    define(driver, "web server", policy='<policy skip="yes"/>')
    define(driver, "café", policy='<policy order="nope" save_timeout="30"/>')
    paused = define(driver, "delta")
    paused.suspend()
    driver.conn.createXML(domain_xml("gamma"), 0)
    define(driver, "beta", running=False)
    files.write_config(ON_SHUTDOWN="suspend shutdown", SHUTDOWN_TIMEOUT="120", PARALLEL_SHUTDOWN="2",
                       SAVE_TIMEOUT="600")
    transcript("plan")
    transcript("plan", "stop")
    transcript("plan", "stop", "--json")
    transcript.compare("plan_stop")


def test_plan_start(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha", policy='<policy order="1" start_delay="0.25"/>')
    define(driver, "web server", policy='<policy on_shutdown="shutdown"/>')
    define(driver, "café", policy='<policy on_boot="ignore"/>')
    beta = define(driver, "beta")
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start")
    transcript("plan", "start")  # nothing recorded
    transcript("stop")
    beta.managedSaveRemove(0)
    beta.undefine()
    transcript("plan", "start")
    transcript("plan", "start", "--json")
    transcript.compare("plan_start")


def test_policy_show(files: Files, driver: Driver, transcript: Transcript) -> None:
    define(driver, "alpha")
    define(driver, "café", policy='<policy on_shutdown="shutdown poweroff" order="3" shutdown_timeout="bad"/>')
    files.write_config(ON_SHUTDOWN="suspend", SHUTDOWN_TIMEOUT="90")
    transcript("policy", "alpha")
    transcript("policy", "café")
    transcript("policy", "café", "--json")
    transcript("policy", "alpha", "--order", "5", "--skip", "no")
    transcript("policy", "alpha")
    transcript("policy", "alpha", "--clear")
    transcript("policy", "alpha", "--order", "many")
    transcript("policy", "nobody")
    transcript.compare("policy_show")


def test_gueststatus(files: Files, driver: Driver, transcript: Transcript, tmp_path: Path) -> None:
    define(driver, "alpha")
    define(driver, "web server")
    paused = define(driver, "café")
    paused.suspend()
    driver.conn.createXML(domain_xml("gamma"), 0)
    define(driver, "beta", running=False)
    files.write_config(URIS=f"test:///default test://{tmp_path}/no-such-node.xml")
    transcript("gueststatus")
    transcript("gueststatus", "--json")
    transcript.compare("gueststatus")


def test_usage_errors_and_help(files: Files, transcript: Transcript) -> None:
    transcript()
    transcript("frobnicate")
    transcript("--bogus", "status")
    transcript("status", "extra")
    transcript("plan", "sideways")
    transcript("policy")
    transcript("--lock-wait", "nan", "status")  # stop forgives it: see test_stop_and_start_with_invalid_values
    transcript("help")
    transcript("--help")
    transcript.compare("usage_errors_and_help")


HISTORY_EVENTS = [  # as a stop and a start record them (state/history.py's format, written here by hand)
    {"when": 1765000000.0, "kind": "stop", "uri": "qemu+ssh://admin:s3cret@host/system?keyfile=/k&password=pw",
     "uuid": GUESTS["web server"], "name": "web server\x1b[31m", "action": "shutdown", "planned": "suspend",
     "reason": "room", "result": "done", "seconds": 12.25, "bytes_written": None, "memory_bytes": 1 << 30},
    {"when": 1765000100.0, "kind": "start", "uri": "qemu+ssh://admin:s3cret@host/system?keyfile=/k&password=pw",
     "uuid": GUESTS["web server"], "name": "web server\x1b[31m", "action": "boot", "planned": "boot", "reason": "",
     "result": "done", "seconds": 0.5, "bytes_written": None, "memory_bytes": None},
    {"when": 1765000000.0, "kind": "stop", "uri": TEST_URI, "uuid": GUESTS["café"], "name": "café\u202e",
     "action": "poweroff", "planned": "suspend", "reason": "failed: internal error: qemu+tcp://u:pw@x/ said no",
     "result": "powered-off", "seconds": 3.0, "bytes_written": None, "memory_bytes": 65536 * 1024},
    {"when": 1765000000.0, "kind": "stop", "uri": TEST_URI, "uuid": GUESTS["alpha"], "name": "alpha",
     "action": "suspend", "planned": "suspend", "reason": "", "result": "saved", "seconds": 4.0,
     "bytes_written": 812345678, "memory_bytes": 1 << 30},
]
HISTORY_STOPS = [{"when": 1765000000.0, "uri": TEST_URI, "saved": 1, "bytes_saved": 812345678, "save_seconds": 4.0,
                  "parallel_save": 8, "pause_before_save": True, "bypass_cache": False}]


def test_report(files: Files, transcript: Transcript, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report` from a history file: names escaped, URIs and reasons redacted;
    none yet; a damaged one (exit 1, nothing set aside)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    history = Path(f"{files.list_file}.history")
    try:
        transcript("report")
        history.write_text(json.dumps({"version": 1, "events": HISTORY_EVENTS, "stops": HISTORY_STOPS}))
        transcript("report")
        transcript("report", "--json")
        history.write_bytes(b'{"version": 1, "events": [{"when": "yesterday"}]}')
        transcript("report")
        transcript("report", "--json")
        transcript("report", "extra")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert history.read_bytes() == b'{"version": 1, "events": [{"when": "yesterday"}]}'
    transcript.compare("report")
