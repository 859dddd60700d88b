"""Drop-in parity with Debian's libvirt-guests.sh on real QEMU guests: the
commands, the variables, the messages, and the list file both ways."""

from __future__ import annotations

import re
import time

import pytest

from .support import SYSTEM_URI, Original, Tool, state


@pytest.fixture(scope="module")
def pair(module_guests):
    """Two normal persistent guests shared by the module's tests."""
    return module_guests.create(2)


@pytest.fixture
def running_pair(pair, module_guests, system_conn):
    """The module's guests, running and booted, whatever the last test left."""
    for dom in pair:
        current = state(system_conn, dom)
        if current == "paused":
            dom.resume()
        elif current in ("saved", "off"):
            dom.create()
            if current == "off":
                module_guests.wait_ready(dom)
    return pair


def _names(doms) -> str:
    return ", ".join(d.name() for d in sorted(doms, key=lambda d: d.ID()))


def test_stop_suspend_then_start_restores(running_pair, tool: Tool, system_conn) -> None:
    a, b = running_pair
    tool.configure(ON_SHUTDOWN="suspend", BYPASS_CACHE="1")
    tool.lock_file.touch()
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert f"Running guests on {SYSTEM_URI} URI: {_names(running_pair)}\n" in result.stdout
    assert f"Suspending guests on {SYSTEM_URI} URI...\n" in result.stdout
    for dom in running_pair:
        assert f"Suspending {dom.name()}: done\n" in result.stdout
        assert state(system_conn, dom) == "saved"
    ordered = sorted(running_pair, key=lambda d: d.ID() if d.ID() > 0 else 0)
    assert tool.list_lines()[0][0] == SYSTEM_URI
    assert sorted(tool.list_lines()[0][1:]) == sorted(d.UUIDString() for d in ordered)
    assert not tool.lock_file.exists()
    status = tool.run("status")
    assert (status.returncode, status.stdout.splitlines()[0]) == (3, "stopped, with saved guests")

    result = tool.run("start")
    assert result.returncode == 0, result
    for dom in running_pair:
        assert f"Resuming guest {dom.name()}: done\n" in result.stdout
        assert state(system_conn, dom) == "running"
        assert not dom.hasManagedSaveImage()
    assert not tool.list_file.exists() and tool.lock_file.exists()
    assert (tool.run("status").returncode, tool.run("status").stdout) == (0, "started\n")


def test_start_already_active_and_sync_time_failure_is_not_fatal(running_pair, tool: Tool) -> None:
    a, b = running_pair
    tool.configure(SYNC_TIME="1")
    tool.list_file.write_text(f"{SYSTEM_URI} {a.UUIDString()}\n")
    result = tool.run("start")
    assert result.returncode == 0, result
    assert f"Resuming guest {a.name()}: already active\n" in result.stdout
    assert f"cannot sync the time of guest {a.name()}" in result.stderr  # no guest agent in the tiny guest


def test_shutdown_sequential_with_timeout(guests, tool: Tool, system_conn) -> None:
    normal = guests.create(1)[0]
    stubborn = guests.create(1, mode="stubborn")[0]
    tool.configure(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="6")
    result = tool.run("stop")
    out = result.stdout
    assert f"Shutting down guests on {SYSTEM_URI} URI...\n" in out
    assert f"Starting shutdown on guest: {normal.name()}\n" in out
    assert f"Shutdown of guest {normal.name()} complete.\n" in out
    assert f"Waiting for guest {stubborn.name()} to shut down, " in out
    assert f"Shutdown of guest {stubborn.name()} failed to complete in time.\n" in out
    # A deliberate difference (README): a guest left running makes the exit code 1.
    assert result.returncode == 1
    assert state(system_conn, normal) == "off" and state(system_conn, stubborn) == "running"
    result = tool.run("start")
    assert result.returncode == 0, result
    assert f"Resuming guest {stubborn.name()}: already active\n" in result.stdout
    assert f"Resuming guest {normal.name()}: done\n" in result.stdout
    assert state(system_conn, normal) == "running"


def test_parallel_shutdown_budget_per_uri(guests, tool: Tool, system_conn) -> None:
    doms = guests.create(3)
    stubborn = guests.create(1, mode="stubborn")[0]
    tool.configure(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4", SHUTDOWN_TIMEOUT="8")
    started = time.monotonic()
    result = tool.run("stop")
    took = time.monotonic() - started
    assert "Timeout expired while shutting down domains" in result.stdout
    assert result.returncode == 1
    for dom in doms:
        assert state(system_conn, dom) == "off"
    assert state(system_conn, stubborn) == "running"
    assert took < 8 + 10  # one budget for the URI, not one per guest


def test_on_boot_ignore_forgets_the_list(running_pair, tool: Tool, system_conn) -> None:
    a, b = running_pair
    tool.configure(ON_BOOT="ignore")
    assert tool.run("stop").returncode == 0
    result = tool.run("start")
    assert result.stdout.startswith("libvirt-guests is configured not to start any guests on boot\n")
    assert result.returncode == 0
    assert state(system_conn, a) == "saved"
    assert not tool.list_file.exists() and tool.lock_file.exists()


def test_start_delay_spaces_starts(running_pair, tool: Tool, system_conn) -> None:
    tool.configure(START_DELAY="1.5")
    assert tool.run("stop").returncode == 0
    started = time.monotonic()
    result = tool.run("start")
    assert result.returncode == 0
    assert time.monotonic() - started >= 1.5
    assert all(state(system_conn, d) == "running" for d in running_pair)


def test_misspelt_on_shutdown_suspends_as_the_original_and_exits_6(
    running_pair, tool: Tool, original: Original, system_conn
) -> None:
    """The original reads anything but 'shutdown' as suspend; so do we, and
    say so in one error line, then exit 6 (strict at the door, forgiving at the exit)."""
    original.configure(ON_SHUTDOWN="shutdwon", ON_BOOT="start")
    theirs = original.run("stop")
    assert theirs.returncode == 0, theirs
    assert all(state(system_conn, d) == "saved" for d in running_pair)
    assert original.run("start").returncode == 0
    tool.configure(ON_SHUTDOWN="shutdwon")
    result = tool.run("stop")
    assert result.returncode == 6
    assert f"Suspending guests on {SYSTEM_URI} URI...\n" in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("libvirt-guests: error: ")]
    assert "ON_SHUTDOWN='shutdwon'" in line and "expected" in line and "using 'suspend'" in line
    assert all(state(system_conn, d) == "saved" for d in running_pair)
    assert sorted(tool.list_lines()[0][1:]) == sorted(d.UUIDString() for d in running_pair)


def test_originals_list_file_is_restored_by_us(running_pair, tool: Tool, original: Original, system_conn) -> None:
    original.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    result = original.run("stop")
    assert result.returncode == 0, result
    assert all(state(system_conn, d) == "saved" for d in running_pair)
    lines = original.list_file.read_text().splitlines()
    assert lines[0].split()[0] == "default"
    tool.configure(URIS="default")
    tool.list_file.write_text(original.list_file.read_text())
    result = tool.run("start")
    assert result.returncode == 0, result
    assert all(state(system_conn, d) == "running" for d in running_pair)


def test_our_list_file_is_restored_by_the_original(running_pair, tool: Tool, original: Original, system_conn) -> None:
    tool.configure(URIS="default", ON_SHUTDOWN="suspend")
    assert tool.run("stop").returncode == 0
    assert all(state(system_conn, d) == "saved" for d in running_pair)
    original.configure(ON_BOOT="start")
    original.list_file.write_text(tool.list_file.read_text())
    result = original.run("start")
    assert result.returncode == 0, result
    for dom in running_pair:
        assert f"Resuming guest {dom.name()}: done" in result.stdout
        assert state(system_conn, dom) == "running"


def test_gueststatus_matches_the_original(running_pair, tool: Tool, original: Original) -> None:
    tool.configure(URIS="default")
    ours, theirs = tool.run("gueststatus"), original.run("gueststatus")
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout == theirs.stdout


@pytest.mark.parametrize("setup", ["none", "lock", "list"])
def test_status_matches_the_original(tool: Tool, original: Original, setup: str) -> None:
    if setup == "lock":
        tool.lock_file.touch()
        original.lock_file.touch()
    elif setup == "list":
        for f in (tool.list_file, original.list_file):
            f.write_text("default 00000000-0000-0000-0000-000000000001\n")
    ours, theirs = tool.run("status"), original.run("status")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)


def test_stop_with_leftover_list_is_a_no_op_like_the_original(running_pair, tool: Tool, system_conn) -> None:
    tool.list_file.write_text(f"{SYSTEM_URI} {running_pair[0].UUIDString()}\n")
    result = tool.run("stop")
    assert (result.returncode, result.stdout) == (0, "")
    assert all(state(system_conn, d) == "running" for d in running_pair)


def test_unreachable_uri_is_skipped(running_pair, tool: Tool, system_conn) -> None:
    bad = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    tool.configure(URIS=f"{bad} {SYSTEM_URI}")
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert re.search(rf"^Can't connect to {re.escape(bad)}\. Skipping\.$", result.stdout, re.M)
    assert all(state(system_conn, d) == "saved" for d in running_pair)
    assert tool.run("start").returncode == 0


def test_restart_and_condrestart(running_pair, tool: Tool, system_conn) -> None:
    tool.configure(ON_SHUTDOWN="suspend")
    result = tool.run("condrestart")  # no lock file: nothing
    assert (result.returncode, result.stdout) == (0, "")
    result = tool.run("restart")
    assert result.returncode == 0, result
    assert "Suspending guests on" in result.stdout and "Resuming guests on" in result.stdout
    assert all(state(system_conn, d) == "running" for d in running_pair)
    assert tool.lock_file.exists() and not tool.list_file.exists()
    result = tool.run("try-restart")  # lock file present now: stop, then start
    assert result.returncode == 0 and "Resuming guests on" in result.stdout


@pytest.mark.parametrize(
    ("on_shutdown", "persistent_only", "transient_after"),
    [("suspend", "default", "running"), ("shutdown", "default", "gone"), ("shutdown", "true", "running")],
)
def test_transient_guests_follow_persistent_only(guests, tool: Tool, system_conn, on_shutdown: str,
                                                 persistent_only: str, transient_after: str) -> None:
    (persistent,) = guests.create(1)
    (transient,) = guests.create(1, transient=True)
    tool.configure(ON_SHUTDOWN=on_shutdown, PERSISTENT_ONLY=persistent_only)
    result = tool.run("stop")
    assert result.returncode == 0, result
    if transient_after == "running":
        verb = "suspending" if on_shutdown == "suspend" else "shutting down"
        assert f"Not {verb} transient guests on URI: {SYSTEM_URI}: {transient.name()}" in result.stdout
        assert transient.isActive()
    else:
        assert f"Shutdown of guest {transient.name()} complete." in result.stdout
    recorded = tool.list_lines()[0]
    assert persistent.UUIDString() in recorded
    assert transient.UUIDString() not in recorded  # transient guests are never recorded
    assert tool.run("start").returncode == 0
    assert state(system_conn, persistent) == "running"
