"""Issue 19, section 2: no value of the configuration, the environment, the
command line or a state file keeps a stop from its guests.

Each test names the fault it covers; each failed on the code before the fix."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from libvirt_guests.cli import main as cli
from libvirt_guests.config import load as config
from libvirt_guests.config import settings
from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.settings import SETTINGS, SettingError

from .support import TEST_URI, Driver, Files

HUGE = "9" * 5000
ZEROS_5 = "0" * 5000 + "5"  # 5 as dash's test reads it
_NUMERIC = [s for s in SETTINGS
            if s.parse in (settings.parse_seconds, settings.parse_timeout, settings.parse_count,
                           settings.parse_shell_count, settings.parse_switch)]


def _paths(files: Files) -> Paths:
    return Paths.resolve(str(files.config), str(files.list_file), str(files.lock_file), str(files.state_file))


def _set_aside(path: Path) -> list[Path]:
    pattern = rf"{re.escape(path.name)}\.(damaged|untrusted)-\S+"
    return sorted(p for p in path.parent.iterdir() if re.fullmatch(pattern, p.name))


# --- 1. numbers past Python's int-conversion limit ---------------------------------------------------------------


def test_every_numeric_setting_is_a_whole_setting() -> None:
    assert {s.name for s in _NUMERIC} >= {"SHUTDOWN_TIMEOUT", "PARALLEL_SHUTDOWN", "PARALLEL_SAVE", "SAVE_TIMEOUT",
                                          "STOP_DEADLINE", "CONNECT_TIMEOUT", "PAUSE_BEFORE_SAVE", "MIGRATE_BACK"}


@pytest.mark.parametrize("setting", _NUMERIC, ids=lambda s: s.name)
@pytest.mark.parametrize("source", ["file", "environment"])
def test_thousands_of_digits_never_raise(files: Files, monkeypatch: pytest.MonkeyPatch, setting: settings.Setting,
                                         source: str) -> None:
    """000...0005 (5001 digits) is 5, as dash's `[ "$X" -gt 0 ]` reads it;
    5000 nines are out of range: one problem, the default used (for a
    switch, any whole number but 0 is on)."""
    switch = setting.parse is settings.parse_switch
    for text, expect_problem in ((ZEROS_5, False), (HUGE, not switch)):
        if source == "file":
            files.write_config(**{setting.name: text})
        else:
            monkeypatch.setenv(setting.name, text)
        cfg = load(_paths(files))
        value = getattr(cfg, setting.attr)
        problems = [p for p in cfg.problems if p.variable == setting.name]
        if expect_problem:
            assert len(problems) == 1 and value == setting.parse(settings.default_for(setting, "upstream"))
            assert len(problems[0].text()) < 400  # the value is cut in its line
        else:
            assert problems == [] and value == (True if switch else 5)


def test_signed_and_zero_padded_timeout_as_the_shell_reads_it() -> None:
    assert settings.parse_timeout("+" + ZEROS_5) == 5
    assert settings.parse_timeout("  +005 ") == 5
    assert settings.parse_shell_count("+" + "0" * 6000 + "2") == 2
    for text in (HUGE, "-" + HUGE, "+" + HUGE, "-" + ZEROS_5, "2147483648", "0" * 4000 + "2147483648"):
        with pytest.raises(SettingError):
            settings.parse_timeout(text)
    assert settings.parse_timeout("0" * 4000 + "2147483647") == 2**31 - 1


def test_stop_with_a_5000_digit_timeout_saves_the_guest(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    files.write_config(SHUTDOWN_TIMEOUT=HUGE, PARALLEL_SAVE=HUGE)
    result = run("stop")
    assert result.code == 6, result.err
    assert driver.state(dom) == "saved"
    assert "SHUTDOWN_TIMEOUT='9999" in result.err and "(5000 characters)" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("command", [["check-config"], ["status"], ["plan", "stop"], ["check-config", "--json"]])
def test_reports_answer_with_a_5000_digit_value(files: Files, driver: Driver, run, command: list[str]) -> None:
    files.write_config(SHUTDOWN_TIMEOUT=HUGE, STOP_DEADLINE=ZEROS_5)
    result = run(*command)
    assert result.code in (0, 3, 6) and "SHUTDOWN_TIMEOUT" in result.err + result.out


@pytest.mark.parametrize("where", ["option", "environment"])
def test_stop_with_a_5000_digit_lock_wait_saves_the_guest(files: Files, driver: Driver, run,
                                                          monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    dom = driver.guest()
    if where == "environment":
        monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_WAIT", HUGE)
        result = run("stop")
    else:
        result = run("stop", "--lock-wait", HUGE)
    assert result.code == 6 and driver.state(dom) == "saved"


# --- load() cannot fail on any value ---------------------------------------------------------------------------


def _failing_parser(original: settings.Setting) -> settings.Setting:
    def parse(text: str) -> object:
        if text != original.default:
            raise OverflowError("injected")
        return original.parse(text)

    return replace(original, parse=parse)


def test_a_parser_that_fails_unexpectedly_is_one_problem(files: Files, driver: Driver, run,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: whatever a parser of the table raises, the variable
    gets its default, one error line, and the guests are handled (exit 6)."""
    table = tuple(_failing_parser(s) if s.name == "SHUTDOWN_TIMEOUT" else s for s in SETTINGS)
    monkeypatch.setattr(config, "SETTINGS", table)
    files.write_config(SHUTDOWN_TIMEOUT="5")
    cfg = load(_paths(files))
    assert cfg.shutdown_timeout == 300
    (problem,) = cfg.problems
    assert problem.variable == "SHUTDOWN_TIMEOUT" and "OverflowError" in problem.text()
    dom = driver.guest()
    result = run("stop")
    assert result.code == 6 and driver.state(dom) == "saved"
    assert result.err.count("SHUTDOWN_TIMEOUT='5'") == 1


def test_a_reader_that_fails_unexpectedly_gives_the_defaults(files: Files, driver: Driver, run,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> object:
        raise RecursionError("injected")

    monkeypatch.setattr(config.shellfile, "read_shell", boom)
    monkeypatch.setenv("URIS", TEST_URI)
    cfg = load(_paths(files))
    assert cfg.uris == (TEST_URI,) and any("RecursionError" in p.text() for p in cfg.problems)
    dom = driver.guest()
    result = run("stop")
    assert result.code == 6 and driver.state(dom) == "saved"  # the file could not be read: exit 6
    assert "RecursionError" in result.err and "Traceback" not in result.err


# --- 5. a configuration path that is not a configuration file -------------------------------------------------


def _make(kind: str, path: Path) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "2 GB file":
        with open(path, "wb") as handle:
            handle.truncate(2 * 1024**3)  # sparse
    elif kind == "NUL and bad UTF-8":
        path.write_bytes(b"URIS=" + TEST_URI.encode() + b"\nSHUTDOWN_TIMEOUT=5\0\nON_BOOT=\xff\xfe\n")


@pytest.mark.parametrize("kind", ["directory", "fifo", "/dev/zero", "2 GB file", "NUL and bad UTF-8"])
def test_stop_handles_the_guests_whatever_the_configuration_path_is(
        files: Files, driver: Driver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    """In a child process, bounded: on the old code a FIFO blocked the stop
    for ever, /dev/zero filled the memory, a 2 GB file took minutes."""
    path = Path("/dev/zero") if kind == "/dev/zero" else tmp_path / "conf"
    if kind != "/dev/zero":
        _make(kind, path)
    env = {**os.environ, "LIBVIRT_GUESTS_CONFIG": str(path), "URIS": TEST_URI}
    script = "import sys; from libvirt_guests.cli.main import main; sys.exit(main(['stop']))"
    result = subprocess.run([sys.executable, "-c", _limited(script)], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode in (0, 6), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "cannot read configuration file" in result.stderr or kind == "NUL and bad UTF-8"


def _limited(script: str) -> str:
    """script with its address space capped at 2 GiB (a runaway read fails, not the machine)."""
    return ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); " + script)


# --- 2. a damaged state journal ----------------------------------------------------------------------------------

_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
_GOOD = {"uri": TEST_URI, "uuid": _UUID, "name": "x", "outcome": "pending"}


def _journal(guests: object, **top: object) -> str:
    return json.dumps({"version": 1, "phase": "stopping", "guests": guests, **top})


DAMAGE = {
    "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "nested objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "5000-digit version": '{"version": ' + HUGE + ', "phase": "stopping", "guests": []}',
    "5000-digit field": _journal([{**_GOOD}]).replace('"x"', HUGE),
    "NaN version": '{"version": NaN, "phase": "stopping", "guests": []}',
    "NaN flag": _journal([{**_GOOD, "persistent": float("nan")}]),
    "phase a list": _journal([], phase=["stopping"]),
    "guests an object": _journal({"a": 1}),
    "guest a list": _journal([[1, 2]]),
    "name a number": _journal([{**_GOOD, "name": 5}]),
    "outcome an object": _journal([{**_GOOD, "outcome": {"a": 1}}]),
    "detail a list": _journal([{**_GOOD, "detail": ["a"]}]),
    "uuid a number": _journal([{**_GOOD, "uuid": 5}]),
    "uuid junk": _journal([{**_GOOD, "uuid": "../../x"}]),
    "flag a string": _journal([{**_GOOD, "recorded": "yes"}]),
    "autostart a number": _journal([{**_GOOD, "autostart_here": 1.5}]),
    "invalid UTF-8": b'{"version": 1, "phase": "stopping", "guests": [{"uri": "\xff\xfe"}]}',
    "a NUL": '{"version": 1, "phase": "stop\0ping", "guests": []}',
}


def _write_private(path: Path, data: str | bytes) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_journal_is_set_aside_and_the_guests_handled(files: Files, driver: Driver, run,
                                                                damage: str) -> None:
    """stop saves the guest, status answers, start restores it, whatever the damage."""
    dom = driver.guest()
    _write_private(files.state_file, DAMAGE[damage])
    status = run("status")
    assert status.code in (0, 3) and "Traceback" not in status.err
    result = run("stop")
    assert result.code == 0, result.err
    assert driver.state(dom) == "saved"
    assert len(_set_aside(files.state_file)) == 1 and "is damaged" in result.err
    assert run("status").code == 3
    assert run("start").code == 0 and driver.state(dom) == "running"


def test_a_journal_log_nested_deep_is_set_aside(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    _write_private(files.state_file, json.dumps({"version": 2, "phase": "stopping", "log": "abc", "guests": []}))
    log = files.state_file.with_name(files.state_file.name + ".log")
    header = json.dumps({"format": "libvirt-guests journal log", "version": 2, "log": "abc"})
    _write_private(log, header + "\n" + "[" * 100_000 + "\n")
    assert run("status").code == 3
    result = run("stop")
    assert result.code == 0 and driver.state(dom) == "saved"
    assert "nested too deep" in result.err
    assert run("start").code == 0 and driver.state(dom) == "running"


@pytest.mark.parametrize("which", ["state", "log", "list"])
def test_a_file_of_a_gigabyte_is_not_read_whole(files: Files, driver: Driver, run, which: str) -> None:
    """A 1 GB (sparse) state file, log or list file: at most MAX_STATE_BYTES
    are read, it is set aside, the guest is handled."""
    dom = driver.guest()
    path = {"state": files.state_file, "list": files.list_file,
            "log": files.state_file.with_name(files.state_file.name + ".log")}[which]
    if which == "log":
        _write_private(files.state_file, json.dumps({"version": 2, "phase": "stopping", "log": "abc",
                                                     "guests": []}))
    with open(path, "wb") as handle:
        handle.write(b'{"format": "libvirt-guests journal log", "version": 2, "log": "abc"}\n[')
        handle.truncate(1024**3)
    path.chmod(0o600)
    assert run("status").code == 3
    if which == "list":  # a list left by a stop: start sets it aside, then the next stop goes on
        result = run("start")
        assert result.code == 0 and "larger than 64 MiB" in result.err and _set_aside(path)
    result = run("stop")
    assert result.code == 0, result.err
    assert driver.state(dom) == "saved"
    if which != "list":
        assert "larger than 64 MiB" in result.err and _set_aside(path)
    assert run("start").code == 0 and driver.state(dom) == "running"


# --- 3. the command line of start and stop -----------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "code", "line"), [
    (["stop", "--lock-wait", "5s"], 6, "--lock-wait='5s' is not valid: expected a number of seconds, 0 or more; "
                                       "using 300, the default"),
    (["--defaults", "debain", "stop"], 6, "--defaults='debain' is not valid: expected upstream or debian "
                                          "(did you mean debian?); using the defaults upstream ("),
    (["stop", "now"], 2, "stop takes no arguments (got 'now'); ignored"),
    (["stop", "--bogus"], 2, "unknown option --bogus; ignored"),
    (["stop", "--json"], 2, "not to stop; ignored"),
    (["stop", "--lock-wait"], 2, "--lock-wait needs a value (SECONDS); ignored"),
    (["--json=1", "stop"], 2, "--json takes no value; ignored"),
    (["shutdown", "--lock-wait=nan"], 6, "--lock-wait='nan' is not valid"),
])
def test_stop_handles_the_guests_whatever_its_command_line(files: Files, driver: Driver, run,
                                                           argv: list[str], code: int, line: str) -> None:
    """The original read only its first word: the unit's command line never
    keeps the guests from being handled. Each fault is one error line; the
    code at the end is 6 for a value, 2 for a word."""
    dom = driver.guest()
    result = run(*argv)
    assert result.code == code, result.err
    assert driver.state(dom) in ("saved", "off")
    assert line in result.err and len([x for x in result.err.splitlines() if "error:" in x]) == 1
    assert not result.out.startswith("Usage:")


def test_stop_with_a_bad_lock_wait_in_the_environment_saves_the_guest(
        files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = driver.guest()
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_WAIT", "5s")
    result = run("stop")
    assert result.code == 6 and driver.state(dom) == "saved"
    assert "LIBVIRT_GUESTS_LOCK_WAIT='5s' is not valid: expected a number of seconds, 0 or more; using 300" \
        in result.err
    # A valid option over a bad environment value: the option is used, the environment's still said.
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_WAIT", "10")
    result = run("start", "--lock-wait", "x")
    assert result.code == 6 and "using 10, from LIBVIRT_GUESTS_LOCK_WAIT" in result.err
    assert driver.state(dom) == "running"


def test_restart_with_a_bad_option_value_stops_and_starts(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    result = run("restart", "--lock-wait=soon")
    assert result.code == 6 and driver.state(dom) == "running"
    assert "Suspending" in result.out or "saved" in result.out


def test_reports_keep_their_usage_errors(files: Files, run) -> None:
    for argv in (["status", "--lock-wait", "5s"], ["check-config", "--defaults", "x"], ["plan", "--bogus"]):
        result = run(*argv)
        assert result.code == 2 and result.out.startswith("Usage:")


# --- 4. a signal while the configuration is read ----------------------------------------------------------------


def _load_then(signum: int, monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    real = config.load

    def load_interrupted(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signum)  # delivered at once, in the middle of reading
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "load", load_interrupted)


class _Escaped(Exception):
    """The signal reached the test's own handler: the run had none installed."""


def _guarded(run, *argv: str):  # type: ignore[no-untyped-def]
    """run(*argv), with SIGTERM and SIGINT turned into a test failure if the
    run does not handle them itself (else SIGTERM would end the test session)."""
    def escaped(signum: int, _frame: object) -> None:
        raise _Escaped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, escaped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(*argv)
    except (_Escaped, KeyboardInterrupt) as err:
        pytest.fail(f"the signal escaped the run: {err!r}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_stop_reads_the_configuration(files: Files, driver: Driver, run,
                                                     monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """No traceback; as for a signal before the first action: the running
    guests are recorded (the next stop finishes, the next start starts
    them), none is touched, exit 128 + N."""
    dom = driver.guest()
    _load_then(signum, monkeypatch, cli)
    result = _guarded(run, "stop")
    assert result.code == 128 + signum, result.err
    assert driver.state(dom) == "running"
    assert "Traceback" not in result.err and "received" in result.err
    assert dom.UUIDString() in files.list_file.read_text()
    monkeypatch.setattr(cli, "load", config.load)
    result = run("stop")  # the interrupted stop is finished
    assert result.code == 0 and driver.state(dom) == "saved"


@pytest.mark.parametrize("command", [["status"], ["gueststatus"], ["plan", "stop"], ["check-config"]])
def test_ctrl_c_while_a_report_reads_the_configuration(files: Files, driver: Driver, run,
                                                       monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    from libvirt_guests.config import checkconfig

    _load_then(signal.SIGINT, monkeypatch, checkconfig if command == ["check-config"] else cli)
    try:
        result = run(*command)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped")
    assert result.code == 130 and "interrupted" in result.err


# --- 5. a state path that names something no run may move --------------------------------------------------------


def _device(path: Path) -> None:
    """A character device like /dev/null, in the test's own folder (so the old
    code's damage is done to this copy only)."""
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize("which", ["list_file", "state_file", "lock_file"])
def test_a_device_at_a_state_path_is_never_renamed_replaced_or_removed(files: Files, driver: Driver, run,
                                                                         which: str) -> None:
    """LIBVIRT_GUESTS_LIST_FILE=/dev/null: the old code renamed the device,
    then wrote a regular file in its place (or unlinked it)."""
    dom = driver.guest()
    path = getattr(files, which)
    _device(path)
    for command in ("stop", "start", "stop"):
        result = run(command)
        assert "Traceback" not in result.err
        assert stat.S_ISCHR(os.lstat(path).st_mode), f"{command} replaced the device"
        assert not _set_aside(path)
    assert driver.state(dom) == "saved"


def test_a_directory_that_is_not_empty_at_the_list_path_is_left_alone(files: Files, driver: Driver, run) -> None:
    """LIBVIRT_GUESTS_LIST_FILE=/var/lib/libvirt: never renamed (an empty one
    still goes aside, as before)."""
    dom = driver.guest()
    files.list_file.mkdir()
    (files.list_file / "images").write_text("precious")
    result = run("stop")
    assert driver.state(dom) == "saved"
    assert (files.list_file / "images").read_text() == "precious" and not _set_aside(files.list_file)
    assert result.code == 1 and "left alone" in result.err


def test_ctrl_c_before_main_notes_it_is_no_traceback() -> None:
    """A SIGINT before main() installs anything (while modules load): the
    entry point ends with 130 and one line."""
    script = ("import os, signal; from libvirt_guests.cli import main as cli; "
              "cli.main = lambda: os.kill(os.getpid(), signal.SIGINT) or 0; cli.run()")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert result.stderr == "libvirt-guests: error: interrupted\n"


def test_a_nul_in_a_uri_of_uris_is_one_unreachable_uri(files: Files, driver: Driver, run) -> None:
    """libvirt-python raised ValueError (embedded null character) in the
    opening thread: a traceback, then the stop waited CONNECT_TIMEOUT (30 s)
    for an answer that never came."""
    dom = driver.guest()
    files.write_config(URIS=f"{TEST_URI} qemu:///x\0y")
    began = time.monotonic()
    result = run("stop")
    assert time.monotonic() - began < 10
    assert driver.state(dom) == "saved" and "Traceback" not in result.err
    assert "Can't connect to qemu:///x" in result.out


LIST_JUNK = {
    "NUL bytes": b"test:///default \0\0\0\n\0\n",
    "invalid UTF-8": b"test:///default \xff\xfe" + _UUID.encode() + b"\n\xc3\n",
    "a line of a megabyte": b"test:///default " + b"x" * 1024 * 1024 + b"\n",
    "nested brackets": b"[" * 100_000 + b"\n",
    "a URI of 5000 digits": HUGE.encode() + b" " + _UUID.encode() + b"\n",
    "random bytes": bytes(range(256)) * 64,
}


@pytest.mark.parametrize("junk", list(LIST_JUNK))
def test_a_list_file_of_junk_never_stops_a_run(files: Files, driver: Driver, run, junk: str) -> None:
    """What the list file survived already (checked, not changed): the junk
    is dropped word by word, start and stop go on, status answers."""
    dom = driver.guest()
    _write_private(files.list_file, LIST_JUNK[junk])
    assert run("status").code == 3
    result = run("start")
    assert result.code in (0, 1) and "Traceback" not in result.err
    assert run("stop").code == 0 and driver.state(dom) == "saved"
    assert run("start").code == 0 and driver.state(dom) == "running"


def test_a_bad_defaults_option_over_a_bad_environment_says_upstream(files: Files, driver: Driver, run,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dom = driver.guest()
    monkeypatch.setenv("LIBVIRT_GUESTS_DEFAULTS", "bogus")
    result = run("--defaults", "x", "stop")
    assert result.code == 6 and driver.state(dom) == "saved"
    assert "--defaults='x' is not valid: expected upstream or debian; using the defaults upstream (the " \
        "environment's is not valid)" in result.err
    assert "LIBVIRT_GUESTS_DEFAULTS='bogus'" in result.err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_for_the_run_lock_ends_the_wait(files: Files, driver: Driver, run,
                                                               signum: int) -> None:
    """Signals are noted from before the configuration is read: the wait for
    another run's lock must look at them too (else it went on for
    --lock-wait seconds). No guest is touched; exit 128 + N."""
    dom = driver.guest()
    lock_path = Path(f"{files.state_file}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signum))
    try:
        timer.start()
        began = time.monotonic()
        result = _guarded(run, "stop", "--lock-wait", "60")
        took = time.monotonic() - began
    finally:
        timer.cancel()
        os.close(fd)
    assert result.code == 128 + signum, result.err
    assert took < 10 and driver.state(dom) == "running"
    assert "interrupted while waiting" in result.err


def test_dev_null_as_the_configuration_is_no_warning(files: Files, run, monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/null (read as an empty file) is mode 0666 but holds nothing anyone
    could change: no 'can be changed by users other than root' warning."""
    monkeypatch.setenv("LIBVIRT_GUESTS_CONFIG", "/dev/null")
    result = run("check-config")
    assert "can be changed by users other than root" not in result.out + result.err, result
