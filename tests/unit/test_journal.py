"""The state journal's event log: its cost per event, its crash guarantees
(a torn last record is ignored, a damaged one is damage), the journal of the
previous version, concurrent writers, a writer killed mid-append."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from libvirt_guests.state import eventlog as state_module
from libvirt_guests.state import files as state_files
from libvirt_guests.state.files import DamagedState, StateError, UntrustedState
from libvirt_guests.state.journal import GuestRecord, Journal, remove
from libvirt_guests.state.previous import load_previous

NOBODY = 65534
URI = "test:///default"


def uuid(n: int) -> str:
    return f"6695eb01-f6a4-8304-79aa-{n:012x}"


def log_of(path: Path) -> Path:
    return Path(f"{path}.log")


def journal_of(path: Path, count: int, phase: str = "stopping") -> Journal:
    journal = Journal(path, phase)
    for n in range(count):
        journal.add(GuestRecord(URI, uuid(n), f"g{n}"))
    journal.save()
    return journal


def outcomes(path: Path) -> dict[str, str]:
    loaded = Journal.load(path)
    assert loaded is not None
    return {g.uuid: g.outcome for g in loaded.guests.values()}


def lines_of(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (all threads)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


# --- what it costs ----------------------------------------------------------------------------------------------


def test_updates_cost_bytes_linear_in_their_number(tmp_path: Path) -> None:
    """2000 guests, 2000 updates: a constant number of bytes each (the old
    journal rewrote all 2000 guests at every update: ~500 MB in all)."""
    count = 2000
    journal = journal_of(tmp_path / "state", count)
    before = written_bytes()
    for n in range(count):
        journal.update(URI, uuid(n), outcome="saved")
    per_update = (written_bytes() - before) / count
    assert per_update < 400, f"{per_update:.0f} bytes written per update"
    assert set(outcomes(tmp_path / "state").values()) == {"saved"}


def test_events_of_concurrent_threads_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 threads update at once while the first fsync is held back until
    all 16 records are written: two fsyncs at most cover them all (group
    commit), not one per update (nor two, as the old journal's rewrites)."""
    path = tmp_path / "state"
    journal = journal_of(path, 16)
    syncs: list[int] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    log_lines = 1 + 16

    def held(real):  # noqa: ANN001, ANN202
        def sync(fd: int) -> None:
            if not syncs:  # the first: wait until every thread has written (bounded, should it never be)
                end = time.monotonic() + 5
                while time.monotonic() < end and lines_of(log_of(path)) < log_lines:
                    time.sleep(0.005)
            syncs.append(fd)
            real(fd)
        return sync

    monkeypatch.setattr(os, "fsync", held(real_fsync))
    monkeypatch.setattr(os, "fdatasync", held(real_fdatasync))
    threads = [threading.Thread(target=journal.update, args=(URI, uuid(n)), kwargs={"outcome": "saved"})
               for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    assert len(syncs) <= 2, f"{len(syncs)} fsyncs for 16 concurrent updates"
    assert set(outcomes(path).values()) == {"saved"}


def test_updates_from_16_threads_are_all_recorded(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal = journal_of(path, 16 * 20)
    steps = 5

    def work(thread: int) -> None:
        for step in range(steps):
            for n in range(thread * 20, thread * 20 + 20):
                journal.update(URI, uuid(n), outcome=f"step-{step}", detail=f"thread {thread}")
            journal.update(URI, uuid(16 * 20 - 1 - thread), paused_by_us=True)  # another thread's guest too

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert journal.write_error is None
    loaded = Journal.load(path)
    assert loaded is not None
    assert {k: (g.outcome, g.paused_by_us) for k, g in loaded.guests.items()} == {
        k: (g.outcome, g.paused_by_us) for k, g in journal.guests.items()}
    assert {g.outcome for g in loaded.guests.values()} == {f"step-{steps - 1}"}
    assert sum(g.paused_by_us for g in loaded.guests.values()) == 16


# --- crashes ------------------------------------------------------------------------------------------------------


def test_torn_last_record_is_ignored_at_every_offset(tmp_path: Path) -> None:
    """Cut the log at every byte of its last record: it loads, without that
    record until the record is whole (its newline included)."""
    path = tmp_path / "state"
    journal = journal_of(path, 3)
    journal.update(URI, uuid(0), outcome="saved")
    journal.update(URI, uuid(1), outcome="saved", detail="a longer detail: é ☃ \\ \" {}")
    journal.close()
    whole = log_of(path).read_bytes()
    start = whole.rindex(b"\n", 0, len(whole) - 1) + 1  # the last record's first byte
    assert whole[start:].startswith(b'{"guest"')
    for cut in range(start, len(whole) + 1):
        log_of(path).write_bytes(whole[:cut])
        expected = "saved" if cut == len(whole) else "pending"
        assert outcomes(path) == {uuid(0): "saved", uuid(1): expected, uuid(2): "pending"}, cut


def test_zeros_after_the_last_record_are_ignored(tmp_path: Path) -> None:
    """What a power cut can leave at the end of a file being appended to."""
    path = tmp_path / "state"
    journal = journal_of(path, 2)
    journal.update(URI, uuid(0), outcome="saved")
    with log_of(path).open("ab") as log:
        log.write(b"\0" * 4096)
    assert outcomes(path) == {uuid(0): "saved", uuid(1): "pending"}


def test_a_torn_log_is_never_appended_to(tmp_path: Path) -> None:
    """The next run's first write rewrites the journal: what it appends
    after follows a whole record, not the torn one."""
    path = tmp_path / "state"
    journal = journal_of(path, 2)
    journal.update(URI, uuid(0), outcome="saved")
    journal.close()
    with log_of(path).open("ab") as log:
        log.write(b'{"guest":{"uri":"test:///default","uu')
    loaded = Journal.load(path)
    assert loaded is not None
    loaded.update(URI, uuid(1), outcome="shutdown")
    loaded.update(URI, uuid(0), outcome="started")
    assert outcomes(path) == {uuid(0): "started", uuid(1): "shutdown"}
    assert b'"uu\n' not in log_of(path).read_bytes() and b'"uu{' not in log_of(path).read_bytes()


def test_sigkill_in_the_middle_of_appending_leaves_a_journal_that_loads(tmp_path: Path) -> None:
    """A child appends large records as fast as it can and is killed at
    once (a real SIGKILL, several times): the journal loads, and holds
    every update the child saw return."""
    path = tmp_path / "state"
    child = (
        "import sys; from pathlib import Path;"
        "from libvirt_guests.state.journal import GuestRecord, Journal;"
        f"j = Journal(Path({str(path)!r}), 'stopping');"
        f"[j.add(GuestRecord({URI!r}, '6695eb01-f6a4-8304-79aa-%012x' % n, 'g%d' % n)) for n in range(8)];"
        "j.save('stopping'); print('ready', flush=True); i = 0\n"
        "while True:\n"
        "    i += 1; n = i % 8\n"
        f"    j.update({URI!r}, '6695eb01-f6a4-8304-79aa-%012x' % n, outcome='n%d' % i,"
        "             detail='x' * (i * 7919 % 300000))\n"
        "    print(i, flush=True)\n"
    )
    for attempt in range(6):
        for leftover in tmp_path.iterdir():
            leftover.unlink()
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        acknowledged = [int(proc.stdout.readline()) for _ in range(20 + attempt * 15)]
        proc.send_signal(signal.SIGKILL)
        acknowledged += [int(word) for word in proc.stdout.read().split()]
        proc.wait()
        loaded = Journal.load(path)
        assert loaded is not None and loaded.write_error is None
        assert loaded.phase == "stopping"
        counters = {g.uuid: int(g.outcome[1:]) for g in loaded.guests.values() if g.outcome != "pending"}
        for i in acknowledged[-8:]:  # the last acknowledged update of each guest is there (or a later one)
            assert counters[uuid(i % 8)] >= i, (attempt, i)


# --- damage, versions, trust ---------------------------------------------------------------------------------------


def _damaged_middle(path: Path) -> None:
    journal = journal_of(path, 3)
    for n in range(3):
        journal.update(URI, uuid(n), outcome="saved")
    journal.close()
    lines = log_of(path).read_bytes().split(b"\n")
    lines[2] = lines[2][:-5]  # a record cut short, then others: not what a crash leaves
    log_of(path).write_bytes(b"\n".join(lines))


def test_damaged_record_before_the_last_is_damage(tmp_path: Path) -> None:
    _damaged_middle(tmp_path / "state")
    with pytest.raises(DamagedState, match=r"state\.log is damaged"):
        Journal.load(tmp_path / "state")


def test_damaged_log_is_set_aside_with_its_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    _damaged_middle(path)
    damaged_log = log_of(path).read_bytes()
    warnings: list[str] = []
    previous = load_previous(tmp_path / "list", path, warnings.append, pytest.fail)
    assert previous.journal is None and previous.journal_lost and previous.phase == "unknown"
    assert len(warnings) == 1 and "set aside" in warnings[0], warnings
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("state.damaged-") and names[1].startswith("state.log.damaged-")
    assert (tmp_path / names[1]).read_bytes() == damaged_log


@pytest.mark.parametrize("header, message", [
    ({"format": "libvirt-guests journal log", "version": 3, "log": "x"}, "newer version"),
    ({"format": "libvirt-guests journal log", "version": 0, "log": "x"}, "damaged"),
    ({"format": "something else", "version": 2, "log": "x"}, "damaged"),
])
def test_log_of_unknown_version_or_format(tmp_path: Path, header: dict, message: str) -> None:
    path = tmp_path / "state"
    journal_of(path, 1).close()
    log_of(path).write_text(json.dumps(header) + "\n")
    with pytest.raises(DamagedState, match=message):
        Journal.load(path)


def test_state_file_of_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text(json.dumps({"version": 3, "phase": "stopping", "log": "x", "guests": []}))
    with pytest.raises(DamagedState, match="newer version"):
        Journal.load(path)


def test_garbage_log_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal_of(path, 1).close()
    log_of(path).write_bytes(b"\xff\xfe garbage\nmore garbage\n")
    with pytest.raises(DamagedState, match="damaged"):
        Journal.load(path)


def test_previous_versions_journal_loads_and_is_carried_on(tmp_path: Path) -> None:
    """The upgrade case: a stop interrupted by the previous version (one
    JSON document, format 1), finished by this one."""
    path = tmp_path / "state"
    old = {"version": 1, "phase": "stopping", "updated": "2024-05-01T10:00:00+0000", "guests": [
        {"uri": URI, "uuid": uuid(0), "name": "g0", "persistent": True, "recorded": True, "was_paused": False,
         "paused_by_us": True, "outcome": "saved", "detail": ""},
        {"uri": URI, "uuid": uuid(1), "name": "g1", "persistent": True, "recorded": True, "was_paused": True,
         "paused_by_us": False, "outcome": "pending", "detail": ""},
    ]}
    path.write_text(json.dumps(old, indent=1))
    path.chmod(0o600)
    journal = Journal.load(path)
    assert journal is not None and journal.phase == "stopping"
    assert journal.get(URI, uuid(0)).paused_by_us and journal.get(URI, uuid(1)).was_paused
    assert [g.outcome for g in journal.pending()] == ["saved", "pending"]
    journal.update(URI, uuid(1), outcome="saved")
    journal.save("stopped")
    assert outcomes(path) == {uuid(0): "saved", uuid(1): "saved"}
    assert json.loads(path.read_text())["version"] == 2


def test_log_of_an_earlier_state_file_is_ignored(tmp_path: Path) -> None:
    """A crash between the new state file and its new log leaves the old
    log: its events are in the state file already, and are not replayed."""
    path = tmp_path / "state"
    journal = journal_of(path, 1)
    journal.update(URI, uuid(0), outcome="paused")
    stale = log_of(path).read_bytes()
    journal.update(URI, uuid(0), outcome="saved")
    journal.save("stopped")
    log_of(path).write_bytes(stale)
    loaded = Journal.load(path)
    assert loaded is not None and loaded.phase == "stopped" and loaded.get(URI, uuid(0)).outcome == "saved"


def test_state_file_is_a_whole_document_with_the_phase(tmp_path: Path) -> None:
    """What other tools (and the tests) read: the state file alone says the
    phase, whatever the log holds."""
    path = tmp_path / "state"
    journal = journal_of(path, 2, "starting")
    journal.settle(URI, uuid(0), "g0", "started")
    assert json.loads(path.read_text())["phase"] == "starting"
    journal.save("start-incomplete")
    data = json.loads(path.read_text())
    assert data["phase"] == "start-incomplete"
    assert {g["uuid"]: g["outcome"] for g in data["guests"]} == {uuid(0): "started", uuid(1): "pending"}


def test_log_is_private_and_never_followed(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal = journal_of(path, 1)
    journal.update(URI, uuid(0), outcome="saved")
    assert stat.S_IMODE(log_of(path).stat().st_mode) == 0o600
    journal.close()
    elsewhere = tmp_path / "elsewhere"
    log_of(path).rename(elsewhere)
    log_of(path).symlink_to(elsewhere)
    with pytest.raises(UntrustedState, match="symbolic link"):
        Journal.load(path)
    errors: list[str] = []
    previous = load_previous(tmp_path / "list", path, pytest.fail, errors.append)
    assert previous.untrusted and previous.journal is None and len(errors) == 1
    assert not os.path.lexists(log_of(path)) and elsewhere.exists()
    fresh = Journal(path)
    fresh.add(GuestRecord(URI, uuid(0), "g0"))
    fresh.update(URI, uuid(0), outcome="saved")  # a new log, not written through a link
    assert not log_of(path).is_symlink() and outcomes(path) == {uuid(0): "saved"}


def test_log_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal = journal_of(path, 1)
    journal.update(URI, uuid(0), outcome="saved")
    journal.close()
    os.chown(log_of(path), NOBODY, NOBODY)
    with pytest.raises(StateError, match="refusing to trust"):
        Journal.load(path)


def test_remove_takes_the_log_with_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal = journal_of(path, 1)
    journal.update(URI, uuid(0), outcome="saved")
    journal.close()
    remove(path)
    assert sorted(tmp_path.iterdir()) == []
    unrelated = tmp_path / "list.log"  # someone's file beside the list file: not a journal log, kept
    unrelated.write_text("kept\n")
    (tmp_path / "list").write_text("")
    remove(tmp_path / "list")
    assert unrelated.read_text() == "kept\n"


def test_log_left_without_its_state_file_is_removed_by_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal_of(path, 1).close()
    path.unlink()  # a crash between the two removals
    previous = load_previous(tmp_path / "list", path, pytest.fail, pytest.fail)
    assert previous.journal is None and not previous.journal_lost
    assert not log_of(path).exists()


# --- a full disk --------------------------------------------------------------------------------------------------


def test_full_disk_mid_append_keeps_the_first_error_and_no_torn_record(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way: the update still returns, the first
    error is kept, and once there is room again the journal loads whole
    (no half record left in the middle of the log)."""
    path = tmp_path / "state"
    journal = journal_of(path, 3)
    journal.update(URI, uuid(0), outcome="saved")
    real_write = os.write
    full = {"on": True}

    def half_then_full(fd: int, data: bytes) -> int:
        if full["on"] and fd == journal._log.fd:  # type: ignore[union-attr]
            if len(data) > 10:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    journal.update(URI, uuid(1), outcome="saved")
    monkeypatch.undo()
    assert journal.write_error is not None and "No space left on device" in journal.write_error
    first = journal.write_error
    assert outcomes(path)[uuid(0)] == "saved"  # the log as it was: the half record was cut off
    log = log_of(path).read_bytes()
    assert log.count(b"\n") == 2 and log.endswith(b"\n"), log  # the header and the first update, whole

    def no_room(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def no_room_at_all(path: Path, data: bytes) -> None:
        raise StateError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(state_module, "_write_all", no_room)
    monkeypatch.setattr(state_files, "atomic_write", no_room_at_all)
    journal.update(URI, uuid(2), outcome="shutdown")  # still no room: the error is not replaced
    monkeypatch.undo()
    assert journal.write_error == first
    journal.update(URI, uuid(2), outcome="saved")  # room again: the whole journal is written afresh
    assert outcomes(path) == {uuid(0): "saved", uuid(1): "saved", uuid(2): "saved"}


def test_failed_fsync_is_reported_and_the_next_write_starts_afresh(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state"
    journal = journal_of(path, 2)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", eio)
    journal.update(URI, uuid(0), outcome="saved")
    monkeypatch.undo()
    assert journal.write_error is not None and "Input/output error" in journal.write_error
    name = json.loads(path.read_text())["log"]
    journal.update(URI, uuid(1), outcome="saved")
    assert json.loads(path.read_text())["log"] != name  # rewritten whole: nothing lost with the failed fsync
    assert outcomes(path) == {uuid(0): "saved", uuid(1): "saved"}
