"""`status` tells the truth (issue 14 item 3, issue 10 fault 14): the
original's first line and exit code, then a line while a stop runs; as a
non-root monitoring user the answer comes from the files' existence (or
exit 4, 'unknown'), never a wrong 'stopped'; and a broken configuration
does not stop status, gueststatus, plan or policy from answering."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import TEST_URI, Driver, Files

NOBODY = "nobody"


def _hold_run_lock(path: Path, *argv: str) -> subprocess.Popen[str]:
    """Another process holding the run lock as RunLock does (flock, pid written), its command line ending in argv."""
    code = ("import fcntl, os, sys, time; "
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600); fcntl.flock(fd, fcntl.LOCK_EX); "
            "os.ftruncate(fd, 0); os.write(fd, b'%d\\n' % os.getpid()); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def test_status_says_a_stop_is_running(files: Files, run) -> None:
    files.lock_file.touch()
    holder = _hold_run_lock(Path(f"{files.state_file}.lock"), "stop")
    try:
        result = run("status")
        assert (result.code, result.out) == (0, f"started\na stop is running (pid {holder.pid})\n")
        data = json.loads(run("status", "--json").out)
        assert data["running"] == {"command": "stop", "pid": holder.pid}
        assert data["state"] == "started" and data["exit_code"] == 0
    finally:
        _end(holder)
    # the lock file stays behind, unheld: nothing is running any more
    assert Path(f"{files.state_file}.lock").exists()
    assert (run("status").code, run("status").out) == (0, "started\n")
    assert json.loads(run("status", "--json").out)["running"] is None


def test_status_names_a_running_start_and_a_holder_it_cannot_name(files: Files, run) -> None:
    files.list_file.write_text(f"{TEST_URI} 00000000-0000-0000-0000-000000000001\n")
    holder = _hold_run_lock(Path(f"{files.state_file}.lock"), "--config", "x", "start")
    try:
        result = run("status")
        assert (result.code, result.out) == (3, f"stopped, with saved guests\na start is running (pid {holder.pid})\n")
    finally:
        _end(holder)
    # flock(1) holds it without writing a pid: the pid comes from /proc/locks
    holder = subprocess.Popen(["flock", "-x", f"{files.state_file}.lock", "sleep", "60"])
    try:
        for _ in range(100):
            result = run("status")
            if len(result.out.splitlines()) > 1:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert result.out == f"stopped, with saved guests\nanother libvirt-guests is running (pid {holder.pid})\n"
    finally:
        holder.kill()
        holder.wait()


def test_status_reads_no_lock_it_would_have_to_create(files: Files, run) -> None:
    assert run("status").out == "stopped, with no saved guests\n"
    assert not Path(f"{files.state_file}.lock").exists()


# --- as a non-root monitoring user ----------------------------------------------------------------------------


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[Files]:
    """The tool's files in a folder other users may enter (pytest's tmp_path is 0700), created by root."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the tool as another user")
    folder = Path(tempfile.mkdtemp(prefix="lgt-status-"))
    folder.chmod(0o755)
    f = Files(folder / "libvirt-guests.conf", folder / "list", folder / "lock", folder / "list.state")
    f.write_config()
    f.config.chmod(0o644)
    try:
        yield f
    finally:
        shutil.rmtree(folder)


def as_nobody(f: Files, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "LIBVIRT_GUESTS_CONFIG": str(f.config), "LIBVIRT_GUESTS_LIST_FILE": str(f.list_file),
           "LIBVIRT_GUESTS_LOCK_FILE": str(f.lock_file), "LIBVIRT_GUESTS_STATE_FILE": str(f.state_file),
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    user = pwd.getpwnam(NOBODY)
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                           sys.executable, "-m", "libvirt_guests", *args],
                          capture_output=True, text=True, env=env, check=False, timeout=60, cwd="/")


def _private(path: Path, text: str = "") -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_non_root_status_answers_from_the_files_existence(shared: Files) -> None:
    f = shared
    result = as_nobody(f, "status")
    assert (result.returncode, result.stdout) == (3, "stopped, with no saved guests\n"), result
    _private(f.lock_file)  # root's 0600 lock file: the service is started
    result = as_nobody(f, "status")
    assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "")
    _private(f.list_file, f"{TEST_URI} 00000000-0000-0000-0000-000000000001\n")
    _private(f.state_file, json.dumps({"version": 1, "phase": "stopped", "guests": []}))
    result = as_nobody(f, "status")
    assert (result.returncode, result.stdout, result.stderr) == (3, "stopped, with saved guests\n", "")
    data = json.loads(as_nobody(f, "status", "--json").stdout)
    assert data["state"] == "stopped-with-saved-guests" and data["exit_code"] == 3
    assert data["list"] is None and data["pending"] is None  # not ours to read: not shown, not guessed


def test_non_root_status_with_an_unreadable_configuration_still_answers(shared: Files) -> None:
    f = shared
    _private(f.lock_file)
    f.config.chmod(0o600)
    result = as_nobody(f, "status")
    assert (result.returncode, result.stdout) == (0, "started\n")
    assert "cannot read configuration file" in result.stderr


def test_non_root_status_cannot_tell_when_the_folder_is_closed(shared: Files) -> None:
    f = shared
    closed = f.list_file.parent / "closed"
    closed.mkdir(mode=0o700)
    f.lock_file.touch()
    result = as_nobody(f, "--list-file", str(closed / "list"), "status")
    assert result.returncode == 4
    assert result.stdout.startswith("status unknown: cannot examine ") and "Permission denied" in result.stdout


def test_non_root_status_sees_a_running_stop(shared: Files) -> None:
    f = shared
    _private(f.lock_file)
    holder = _hold_run_lock(Path(f"{f.state_file}.lock"), "stop")
    try:
        result = as_nobody(f, "status")
        assert (result.returncode, result.stdout) == (0, f"started\na stop is running (pid {holder.pid})\n")
    finally:
        _end(holder)


def test_a_lock_file_planted_by_another_user_still_does_not_count(shared: Files) -> None:
    """Sibling: trusting root's files must not make other users' files count (the lock is in /run/lock)."""
    f = shared
    f.lock_file.touch()
    os.chown(f.lock_file, 1, 1)  # 'daemon': neither root nor the caller
    assert as_nobody(f, "status").stdout == "stopped, with no saved guests\n"


# --- a broken configuration -----------------------------------------------------------------------------------


def test_reports_answer_with_a_broken_configuration(files: Files, driver: Driver, run,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dom = driver.guest()
    monkeypatch.setenv("URIS", TEST_URI)
    files.config.write_text("ON_BOOT=Start\n")
    files.lock_file.touch()
    result = run("status")
    assert (result.code, result.out) == (0, "started\n")
    assert "ON_BOOT" in result.err and "Start" in result.err
    result = run("gueststatus")
    assert result.code == 0 and dom.name() in result.out and "ON_BOOT" in result.err
    result = run("plan", "stop")
    assert result.code == 0 and f"{dom.name()}: suspend" in result.out and "ON_BOOT" in result.err
    result = run("policy", dom.name())
    assert result.code == 0 and f"policy of {dom.name()}" in result.out and "ON_BOOT" in result.err
    for command in ("status", "gueststatus", "plan"):
        json.loads(run(command, "--json").out)  # standard output stays JSON: the problem is on stderr


def test_reports_keep_the_file_s_good_values_when_one_is_broken(files: Files, driver: Driver, run) -> None:
    """Sibling: a broken ON_BOOT must not make plan look at another URI or other settings than the file's."""
    dom = driver.guest()
    files.write_config(ON_BOOT="Start", ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="42")
    result = run("plan", "stop")
    assert result.code == 0
    assert f"{dom.name()}: shutdown (shutdown timeout 42 per guest)" in result.out
    assert "ON_BOOT" in result.err
    files.config.write_text(f"URIS={TEST_URI}\nthis line is not NAME=value\nON_SHUTDOWN=shutdown\n")
    result = run("plan", "stop")
    assert result.code == 0 and f"{dom.name()}: shutdown" in result.out


@pytest.mark.parametrize("planted", ["symlink", "fifo", "directory"])
def test_status_of_a_list_file_it_refuses_to_read_is_unknown(files: Files, run, planted: str) -> None:
    """A list path the engines refuse (a symbolic link, a FIFO, a directory)
    cannot be told as saved guests or none: LSB 'unknown' (exit 4) with the
    reason, never exit 1 with nothing on standard output; the path is left
    as it is (status only reads)."""
    target = files.list_file.parent / "elsewhere"
    target.write_text(f"{TEST_URI} 00000000-0000-0000-0000-000000000001\n")
    if planted == "symlink":
        files.list_file.symlink_to(target)
    elif planted == "fifo":
        os.mkfifo(files.list_file)
    else:
        files.list_file.mkdir()
    result = run("status")
    assert result.code == 4, result
    assert result.out.startswith(f"status unknown: {files.list_file} ") and "Traceback" not in result.err, result
    data = json.loads(run("status", "--json").out)
    assert (data["state"], data["exit_code"]) == ("unknown", 4)
    assert os.path.lexists(files.list_file) and target.exists()
