"""The start side and the state files under faults (issue 10): planted lock
files, damaged or untrusted state files, a start that dies half-way, junk in
the list file, guests started meanwhile, stale pause flags, temporary files
left by a kill, ON_BOOT=ignore, and a start summary that says what happened."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import libvirt
import pytest

from libvirt_guests.start import pacing as pacing_module
from libvirt_guests.start import run as start_module
from libvirt_guests.state import files as state_files
from libvirt_guests.state import journal as state_module
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest

from .support import TEST_URI, Driver, Files

NOBODY = 65534
UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/sock"


def _list(files: Files) -> list[list[str]]:
    return [line.split() for line in files.list_file.read_text().splitlines()]


def _journal(files: Files) -> dict:
    return json.loads(files.state_file.read_text())


def _write_private(path: Path, data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(0o600)


def _set_aside(path: Path) -> list[Path]:
    """Files a run set aside instead of path: NAME.damaged-STAMP or NAME.untrusted-STAMP."""
    pattern = rf"{re.escape(path.name)}\.(damaged|untrusted)-\S+"
    return sorted(p for p in path.parent.iterdir() if re.fullmatch(pattern, p.name))


# --- fault 2: whatever sits at the lock path, start and stop go on --------------------------------------------


def _plant(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "full directory":
        path.mkdir()
        (path / "junk").write_text("x")
    elif kind == "symlink":
        victim = tmp_path / "victim"
        victim.write_text("precious\n")
        path.symlink_to(victim)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "foreign file":
        path.write_text("")
        os.chown(path, NOBODY, NOBODY)


PLANTED = ["directory", "full directory", "symlink", "dangling symlink", "fifo", "foreign file"]


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_lock_path_does_not_change_start(files: Files, driver: Driver, run, tmp_path: Path,
                                                 kind: str) -> None:
    a = driver.guest()
    a.managedSave(0)
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()}\n")
    _plant(kind, files.lock_file, tmp_path)
    result = run("start")
    assert result.code == 0, result
    assert f"Resuming guest {a.name()}: done" in result.out
    assert driver.state(a) == "running"
    assert "Traceback" not in result.err
    assert len([line for line in result.err.splitlines() if str(files.lock_file) in line]) <= 1
    assert run("status").out == "started\n"
    if kind == "symlink":
        assert (tmp_path / "victim").read_text() == "precious\n"


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_lock_path_does_not_change_start_without_list(files: Files, run, tmp_path: Path,
                                                              kind: str) -> None:
    _plant(kind, files.lock_file, tmp_path)
    result = run("start")
    assert result.code == 0, result
    assert run("status").out == "started\n"


@pytest.mark.parametrize("kind", PLANTED)
def test_planted_lock_path_does_not_change_stop(files: Files, driver: Driver, run, tmp_path: Path,
                                                kind: str) -> None:
    a = driver.guest()
    _plant(kind, files.lock_file, tmp_path)
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved"
    assert _list(files) == [[TEST_URI, a.UUIDString()]]
    assert len([line for line in result.err.splitlines() if str(files.lock_file) in line]) <= 1
    assert run("status").out.splitlines()[0] == "stopped, with saved guests"


# --- fault 4: damaged, newer or untrusted state files ---------------------------------------------------------


DAMAGED = {
    "garbage": b"{not json",
    "newer version": json.dumps({"version": 3, "phase": "stopping", "guests": [
        {"uri": TEST_URI, "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f", "name": "g", "a_new_field": 1}]}).encode(),
    "unknown phase": json.dumps({"version": 1, "phase": "frobnicating", "guests": []}).encode(),
    "not an object": b"[1, 2, 3]",
    "invalid utf-8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_damaged_journal_without_list_is_set_aside_at_stop(files: Files, driver: Driver, run,
                                                          damage: str) -> None:
    a = driver.guest()
    _write_private(files.state_file, DAMAGED[damage])
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved"
    assert re.search(r"warning: .*state.*set aside", result.err), result.err
    kept = _set_aside(files.state_file)
    assert [p.read_bytes() for p in kept] == [DAMAGED[damage]]
    assert _journal(files)["phase"] == "stopped"


@pytest.mark.parametrize("damage", ["garbage", "newer version"])
def test_damaged_journal_with_list_at_stop_handles_running_guests(files: Files, driver: Driver, run,
                                                                 damage: str) -> None:
    """The journal cannot say whether the last stop completed: every running
    guest is handled (never harmful), the list keeps the guests it named."""
    saved, running = driver.guest(), driver.guest()
    saved.managedSave(0)
    files.list_file.write_text(f"{TEST_URI} {saved.UUIDString()}\n")
    _write_private(files.state_file, DAMAGED[damage])
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(running) == "saved"
    assert _list(files) == [[TEST_URI, saved.UUIDString(), running.UUIDString()]]
    assert len(_set_aside(files.state_file)) == 1
    assert run("start").code == 0
    assert driver.state(saved) == driver.state(running) == "running"


@pytest.mark.parametrize("damage", ["garbage", "newer version"])
def test_damaged_journal_with_list_at_start(files: Files, driver: Driver, run, damage: str) -> None:
    a = driver.guest()
    a.managedSave(0)
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()}\n")
    _write_private(files.state_file, DAMAGED[damage])
    result = run("start")
    assert result.code == 0, result
    assert driver.state(a) == "running"
    assert "set aside" in result.err
    assert not files.list_file.exists() and not files.state_file.exists()
    assert len(_set_aside(files.state_file)) == 1


def _untrust(kind: str, path: Path, tmp_path: Path, text: str) -> None:
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text(text)
        path.symlink_to(target)
    elif kind == "foreign":
        path.write_text(text)
        os.chown(path, NOBODY, NOBODY)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", ["symlink", "foreign", "directory"])
def test_untrusted_list_file_at_stop_still_handles_guests(files: Files, driver: Driver, run, tmp_path: Path,
                                                         kind: str) -> None:
    a = driver.guest()
    _untrust(kind, files.list_file, tmp_path, f"{TEST_URI} 00000000-0000-0000-0000-00000000abcd\n")
    result = run("stop")
    assert driver.state(a) == "saved"
    assert _list(files) == [[TEST_URI, a.UUIDString()]]
    assert result.code == 1  # loud: an admin must look at the file set aside
    assert re.search(r"error: .*list.*set aside as", result.err), result.err
    assert len(_set_aside(files.list_file)) == 1
    if kind == "symlink":
        assert (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("which", ["list_file", "state_file"])
def test_fifo_at_a_state_path_does_not_hang_stop(files: Files, driver: Driver, run, which: str) -> None:
    """Opening a FIFO for reading waits for a writer: the stop must not."""
    a = driver.guest()
    fifo = getattr(files, which)
    os.mkfifo(fifo, 0o600)
    results: list = []
    worker = threading.Thread(target=lambda: results.append(run("stop")), daemon=True)
    worker.start()
    worker.join(20)
    hung = worker.is_alive()
    if hung:  # let the old code go: a writer unblocks its open()
        os.close(os.open(fifo, os.O_WRONLY))
        worker.join(20)
    assert not hung, "stop waited on the FIFO"
    assert driver.state(a) == "saved"
    assert results[0].code == 1 and "set aside" in results[0].err


@pytest.mark.parametrize("kind", ["symlink", "foreign"])
def test_untrusted_journal_at_stop_still_handles_guests(files: Files, driver: Driver, run, tmp_path: Path,
                                                       kind: str) -> None:
    a = driver.guest()
    _untrust(kind, files.state_file, tmp_path, json.dumps({"version": 1, "phase": "stopped", "guests": []}))
    result = run("stop")
    assert driver.state(a) == "saved"
    assert result.code == 1
    assert "set aside" in result.err
    assert _journal(files)["phase"] == "stopped"


@pytest.mark.parametrize("kind", ["symlink", "foreign"])
def test_untrusted_list_file_at_start_is_not_acted_on(files: Files, driver: Driver, run, tmp_path: Path,
                                                     kind: str) -> None:
    a = driver.guest()
    a.managedSave(0)
    _untrust(kind, files.list_file, tmp_path, f"{TEST_URI} {a.UUIDString()}\n")
    result = run("start")
    assert result.code == 1
    assert "set aside" in result.err
    assert driver.state(a) == "saved"  # not started from a file we cannot trust
    assert run("status").out == "started\n"
    # and the next stop is a real stop, not the original's no-op
    b = driver.guest()
    assert run("stop").code == 0
    assert driver.state(b) == "saved"


# --- fault 5: a start that dies half-way never turns the next stop into a no-op --------------------------------


def _stopped_pair(files: Files, driver: Driver, run) -> tuple[libvirt.virDomain, libvirt.virDomain]:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0
    assert _journal(files)["phase"] == "stopped"
    return a, b


def test_start_dying_on_a_full_disk_leaves_the_next_stop_to_handle_every_guest(
        files: Files, driver: Driver, run) -> None:
    a, b = _stopped_pair(files, driver, run)
    real_write = state_files.atomic_write

    def full_disk_for_the_list(path: Path, data: bytes) -> None:
        if path == files.list_file:
            raise state_files.StateError(f"cannot write {path}: No space left on device")
        real_write(path, data)

    real_start = Guest.start

    def start_or_fail(self: Guest, flags: int = 0) -> None:
        if self.uuid == b.UUIDString():
            raise VirtError("no memory for this one")
        real_start(self, flags)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_files, "atomic_write", full_disk_for_the_list)
        patch.setattr(Guest, "start", start_or_fail)
        result = run("start")  # a retained guest forces the list to be rewritten: the disk is full
    assert result.code == 1
    assert "No space left on device" in result.err
    assert driver.state(a) == "running"
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved", result.out  # the started guest is handled, not killed at shutdown
    assert run("start").code == 0
    assert driver.state(a) == driver.state(b) == "running"


def test_start_dying_on_an_unexpected_error_leaves_the_next_stop_to_handle_every_guest(
        files: Files, driver: Driver, run) -> None:
    a, b = _stopped_pair(files, driver, run)

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug after the guests were started")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(start_module, "write_list", boom)
        result = run("start")
    assert result.code == 1
    assert "Traceback" not in result.err and "a bug after the guests were started" in result.err
    assert driver.state(a) == driver.state(b) == "running"
    assert run("status").out.startswith("stopped, with saved guests")
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == driver.state(b) == "saved"
    assert "start did not complete" in result.out


def test_start_on_a_disk_full_from_the_first_write_removes_the_list(files: Files, driver: Driver, run) -> None:
    """Neither 'starting' nor the rewritten list can be written: the list is
    removed (unlink works on a full disk), so that the next stop is not the
    original's no-op; the guest left unstarted is named."""
    a, b = _stopped_pair(files, driver, run)
    real_start = Guest.start

    def full(path: Path, data: bytes) -> None:
        raise state_files.StateError(f"cannot write {path}: No space left on device")

    def b_fails(self: Guest, flags: int = 0) -> None:
        if self.uuid == b.UUIDString():
            raise VirtError("not now")
        real_start(self, flags)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_files, "atomic_write", full)
        patch.setattr(Guest, "start", b_fails)
        result = run("start")
    assert result.code == 1
    assert "if this start is interrupted" in result.err
    assert b.UUIDString() in result.err and "removed the list file" in result.err
    assert not files.list_file.exists()
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved"


def test_missing_lock_directory_does_not_change_start(files: Files, driver: Driver, run,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_FILE", str(tmp_path / "no-such-dir" / "lock"))
    a = driver.guest()
    assert run("stop").code == 0
    result = run("start")
    assert result.code == 0, result
    assert driver.state(a) == "running"
    assert len([line for line in result.err.splitlines() if "no-such-dir" in line]) == 1


def test_start_records_starting_before_it_acts(files: Files, driver: Driver, run,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What a SIGKILL after the first guest leaves behind: the journal says 'starting'."""
    _stopped_pair(files, driver, run)
    seen: list[str] = []
    real_start = Guest.start

    def spy(self: Guest, flags: int = 0) -> None:
        seen.append(_journal(files)["phase"])
        real_start(self, flags)

    monkeypatch.setattr(Guest, "start", spy)
    assert run("start").code == 0
    assert seen == ["starting", "starting"]


# --- fault 6: junk in the list file ----------------------------------------------------------------------------


def test_junk_in_the_list_file_is_dropped_and_the_good_guests_start(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    a.managedSave(0)
    b.managedSave(0)
    junk = b"bad\x00uuid not-a-uuid " + b"f" * 100_000 + b" \xff\xfe-invalid-utf8"
    _write_private(files.list_file, (f"{TEST_URI} {a.UUIDString()} ".encode() + junk
                                     + f" {b.UUIDString()}\n".encode() + b"\x00\x01 " + junk + b"\n"))
    result = run("start")
    assert result.code == 0, result
    assert driver.state(a) == driver.state(b) == "running"
    assert "Traceback" not in result.err
    warnings = [line for line in result.err.splitlines() if "list file" in line]
    assert warnings and all(len(line) < 400 for line in warnings)
    assert "\x00" not in result.err + result.out
    assert not files.list_file.exists()


def test_junk_in_the_list_file_at_stop(files: Files, driver: Driver, run) -> None:
    """An interrupted stop's list with junk: the junk is dropped, not a traceback."""
    a = driver.guest()
    _write_private(files.list_file, f"{TEST_URI} bad\x00uuid {a.UUIDString()}\n")
    _write_private(files.state_file, json.dumps({"version": 1, "phase": "stopping", "guests": []}))
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved"
    assert _list(files) == [[TEST_URI, a.UUIDString()]]


def test_duplicate_uuid_in_the_list_starts_once(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    a.managedSave(0)
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()} {a.UUIDString().upper()}\n")
    result = run("start")
    assert result.code == 0, result
    assert result.out.count(f"Resuming guest {a.name()}: done") == 1


def test_libvirt_error_on_one_guest_while_planning_stays_with_that_guest(
        files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0
    real = Guest.has_managed_save

    def flaky(self: Guest) -> bool:
        if self.uuid == a.UUIDString():
            raise VirtError("cannot read the save image")
        return real(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Guest, "has_managed_save", flaky)
        result = run("start")
    assert result.code == 1
    assert driver.state(b) == "running"
    assert f"Resuming guest {b.name()}: done" in result.out
    assert _list(files) == [[TEST_URI, a.UUIDString()]]  # kept for the next start
    assert run("start").code == 0
    assert driver.state(a) == "running"


def test_unexpected_error_on_one_guest_stays_with_that_guest(files: Files, driver: Driver, run,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0
    real_start = Guest.start

    def buggy(self: Guest, flags: int = 0) -> None:
        if self.uuid == a.UUIDString():
            raise RuntimeError("unexpected")
        real_start(self, flags)

    monkeypatch.setattr(Guest, "start", buggy)
    result = run("start")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"Resuming guest {a.name()}: failed" in result.out
    assert driver.state(b) == "running"
    assert _list(files) == [[TEST_URI, a.UUIDString()]]


# --- fault 7: a guest started meanwhile is 'already active' ---------------------------------------------------


def test_guest_started_after_planning_is_already_active(files: Files, driver: Driver, run,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0
    real_plan = start_module.plan_start

    def plan_then_admin_starts_a(*args: object, **kwargs: object):  # noqa: ANN202
        plan = real_plan(*args, **kwargs)
        driver.conn.lookupByUUIDString(a.UUIDString()).create()
        return plan

    monkeypatch.setattr(start_module, "plan_start", plan_then_admin_starts_a)
    result = run("start")
    assert result.code == 0, result
    assert f"Resuming guest {a.name()}: already active" in result.out
    assert driver.state(a) == driver.state(b) == "running"
    assert not files.list_file.exists()


def test_guest_started_at_the_same_moment_is_already_active(files: Files, driver: Driver, run,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    a = driver.guest()
    assert run("stop").code == 0
    real_start = Guest.start

    def autostart_wins(self: Guest, flags: int = 0) -> None:
        driver.conn.lookupByUUIDString(self.uuid).create()  # libvirt's autostart got there first
        real_start(self, flags)

    monkeypatch.setattr(Guest, "start", autostart_wins)
    result = run("start")
    assert result.code == 0, result
    assert f"Resuming guest {a.name()}: already active" in result.out


# --- fault 9: pause flags of an earlier stop do not outlive the start -----------------------------------------


def test_pause_flags_are_cleared_once_a_guest_is_started(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0  # PAUSE_BEFORE_SAVE: both paused by us, then saved
    real_start = Guest.start

    def b_fails(self: Guest, flags: int = 0) -> None:
        if self.uuid == b.UUIDString():
            raise VirtError("not now")
        real_start(self, flags)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Guest, "start", b_fails)
        assert run("start").code == 1  # b retained: the journal lives on
    assert driver.state(a) == "running"
    records = {g["uuid"]: g for g in _journal(files)["guests"]}
    assert not records[a.UUIDString()]["paused_by_us"]
    driver.conn.lookupByUUIDString(a.UUIDString()).suspend()  # its user pauses it on purpose
    plan = json.loads(run("plan", "stop", "--json").out)
    entry = next(e for group in plan["uris"][0]["groups"] for e in group if e["name"] == a.name())
    assert entry["paused"] is True  # saved paused, restored paused
    assert run("stop").code == 0
    assert driver.state(a) == "saved"
    records = {g["uuid"]: g for g in _journal(files)["guests"]}
    assert records[a.UUIDString()]["was_paused"] is True


# --- fault 16: temporary files of a killed run; remove() is durable --------------------------------------------


def test_temporary_files_left_by_a_kill_are_cleaned(files: Files, driver: Driver, run) -> None:
    driver.guest()
    stale = [files.list_file.parent / f".{files.list_file.name}.4242.0badf00d",
             files.state_file.parent / f".{files.state_file.name}.77.deadbeef"]
    for path in stale:
        _write_private(path, "half-written")
    unrelated = [files.list_file.parent / f".{files.list_file.name}.notours",
                 files.list_file.parent / f".{files.list_file.name}.12.xyz"]
    for path in unrelated:
        _write_private(path, "keep")
    assert run("stop").code == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in unrelated)
    for path in stale:
        _write_private(path, "half-written")
    assert run("start").code == 0
    assert not any(p.exists() for p in stale)


def test_remove_syncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    synced: list[Path] = []
    monkeypatch.setattr(state_files, "_fsync_dir", lambda d: synced.append(Path(d)))
    state_module.remove(path)
    assert not path.exists()
    assert synced == [tmp_path]
    state_module.remove(path)  # absent: nothing to sync
    assert synced == [tmp_path]


# --- ON_BOOT=ignore does what the original does ------------------------------------------------------------------


def test_on_boot_ignore_is_one_message(files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    files.write_config(URIS=f"{TEST_URI} {UNREACHABLE}", ON_BOOT="ignore", SYNC_TIME="1", CONNECT_TIMEOUT="30")
    a, b = driver.guest(), driver.guest()
    a.managedSave(0)
    other = "6695eb01-f6a4-8304-79aa-97f2502e193f"
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()} {b.UUIDString()}\n{UNREACHABLE} {other}\n"
                               f"lxc:///gone {other}\n")
    synced: list[str] = []
    monkeypatch.setattr(Guest, "sync_time", lambda self: synced.append(self.name))
    result = run("start")
    assert result.code == 0, result
    assert result.out.splitlines() == [
        "libvirt-guests is configured not to start any guests on boot",
        f"Can't connect to {UNREACHABLE}. Skipping.",
    ]
    assert result.err == ""
    assert synced == []
    assert driver.state(a) == "saved"
    assert not files.list_file.exists() and not files.state_file.exists()
    assert run("status").out == "started\n"


def test_on_boot_ignore_starts_only_guests_whose_policy_says_start(files: Files, driver: Driver, run) -> None:
    files.write_config(ON_BOOT="ignore")
    keen = driver.guest(policy='<policy on_boot="start"/>')
    idle = driver.guest()
    assert run("stop").code == 0
    result = run("start")
    assert result.code == 0, result
    assert driver.state(keen) == "running"
    assert driver.state(idle) == "saved"
    assert result.out.splitlines()[0] == "libvirt-guests is configured not to start any guests on boot"
    assert f"Resuming guest {keen.name()}: done" in result.out
    assert idle.name() not in result.out
    assert not files.list_file.exists()
    assert run("status").out == "started\n"


# --- issue 14 item 4: the summary separates restored from booted ----------------------------------------------


def test_start_summary_separates_restored_from_booted(files: Files, driver: Driver, run) -> None:
    saved, off = driver.guest(), driver.guest()
    files.write_config(ON_SHUTDOWN="suspend")
    assert run("stop").code == 0
    driver.conn.lookupByUUIDString(off.UUIDString()).managedSaveRemove(0)  # as after a shutdown
    result = run("start")
    assert result.code == 0, result
    assert f"Resuming guest {saved.name()}: done" in result.out
    assert f"Resuming guest {off.name()}: done" in result.out
    summary = result.out.splitlines()[-1]
    assert "1 restored" in summary and "1 booted" in summary, summary


# --- fault 1, start half: a huge start_delay never kills start --------------------------------------------------


def test_huge_start_delay_in_a_policy_does_not_kill_start(files: Files, driver: Driver, run,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = driver.guest(policy=f'<policy order="1" start_delay="{"9" * 25}"/>')
    second = driver.guest(policy='<policy order="2"/>')
    assert run("stop").code == 0
    monkeypatch.setattr(pacing_module, "MAX_DELAY", 0.05, raising=False)
    result = run("start")
    assert result.code == 0, result
    assert driver.state(first) == driver.state(second) == "running"
    assert "start_delay" in result.err or "delay" in result.err


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 1e25, 3.0])
def test_bounded_delay(value: float) -> None:
    bounded, note = pacing_module.bounded_delay(value, 10.0)
    assert 0 <= bounded <= 10
    assert (note is None) == (value == 3.0)


def test_plan_reads_a_damaged_journal_without_setting_it_aside(files: Files, driver: Driver, run) -> None:
    """plan is a report: it answers (exit 0), moves no file, and does not
    announce the original's no-op when the next stop would handle every guest."""
    dom = driver.guest()
    files.list_file.write_text(f"test:///default {dom.UUIDString()}\n")
    files.state_file.write_text("{not json")
    for which in ("stop", "start"):
        result = run("plan", which)
        assert result.code == 0, result.err
    assert files.state_file.read_text() == "{not json"
    assert sorted(p.name for p in files.state_file.parent.iterdir() if "damaged" in p.name) == []
    assert "does nothing" not in run("plan", "stop").out
