"""State files: the list format, atomic writes, the journal, the lock file in a
world-writable directory, and the run lock between two invocations."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libvirt_guests.state.files import StateError
from libvirt_guests.state.journal import GuestRecord, Journal
from libvirt_guests.state.listfile import format_list, parse_list, read_list, write_list
from libvirt_guests.state.lock import RunLock, marker_exists, touch_marker

from .support import Files

NOBODY = 65534
UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def test_list_format_is_the_originals() -> None:
    entries = [("default", [UUID, "aaaaaaaa-f6a4-8304-79aa-97f2502e193f"]), ("lxc:///system", [UUID])]
    text = format_list(entries)
    assert text == f"default {UUID} aaaaaaaa-f6a4-8304-79aa-97f2502e193f\nlxc:///system {UUID}\n"
    assert parse_list(text) == entries
    # what `read uri list` makes of extra blanks
    assert parse_list(f"  default   {UUID}  \n\n") == [("default", [UUID])]


def test_write_list_is_atomic_private_and_empty_removes(tmp_path: Path) -> None:
    path = tmp_path / "list"
    assert write_list(path, [("default", [UUID])])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list"]  # no temporary file left behind
    assert not write_list(path, [("default", [])])
    assert not path.exists()


def test_symlinked_list_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text(f"default {UUID}\n")
    (tmp_path / "list").symlink_to(target)
    with pytest.raises(StateError, match="symbolic link"):
        read_list(tmp_path / "list")


def test_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    Journal(path, "stopping").save()
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(StateError, match="refusing to trust"):
        Journal.load(path)


def test_journal_round_trip_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "state"
    journal = Journal(path, "stopping")
    journal.add(GuestRecord("default", UUID, "g1"))
    journal.update("default", UUID, outcome="saved")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Journal.load(path)
    assert loaded is not None and loaded.phase == "stopping"
    assert loaded.get("default", UUID).outcome == "saved"
    path.write_text("{not json")
    with pytest.raises(StateError, match="damaged"):
        Journal.load(path)


def test_marker_in_sticky_world_writable_dir(tmp_path: Path) -> None:
    lockdir = tmp_path / "lock"
    lockdir.mkdir()
    lockdir.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    marker = lockdir / "libvirt-guests"
    marker.symlink_to(victim)
    assert not marker_exists(marker)  # a planted symlink does not count as "started"
    touch_marker(marker)
    assert victim.read_text() == "precious\n"  # not followed
    assert not marker.is_symlink() and marker_exists(marker)
    marker.unlink()
    marker.write_text("")
    os.chown(marker, NOBODY, NOBODY)  # planted by another user
    assert not marker_exists(marker)
    touch_marker(marker)
    assert marker.stat().st_uid == os.geteuid()


def test_planted_run_lock_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    path.symlink_to(tmp_path / "target")
    with pytest.raises(StateError):
        RunLock(path).acquire(1, lambda _msg: None)


def test_config_writable_by_others_warns(files: Files, run) -> None:
    files.config.chmod(0o666)
    result = run("status")
    assert "can be changed by users other than root" in result.err


def test_second_invocation_waits_then_gives_up(files: Files, tmp_path: Path) -> None:
    """Two invocations never interleave: the second waits, says so, and gives up."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from libvirt_guests.state.lock import RunLock;"
        f"l = RunLock(__import__('pathlib').Path({str(files.state_file) + '.lock'!r}));"
        "l.acquire(5, print); print('held', flush=True); time.sleep(30)"
    )], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "libvirt_guests", "--lock-wait", "1.5", "stop"],
                                capture_output=True, text=True, env=os.environ.copy(), check=False, timeout=60)
        waited = time.monotonic() - started
        assert result.returncode == 1
        assert f"waiting for another libvirt-guests (pid {holder.pid}) to finish" in result.stderr
        assert "gave up waiting after 1.5 s" in result.stderr
        assert waited >= 1.5
        assert not files.list_file.exists()  # it did nothing
    finally:
        holder.kill()
        holder.wait()
