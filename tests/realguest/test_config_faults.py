"""Strict at the door, forgiving at the exit, on a real guest: a broken
configuration value never keeps a host shutdown from saving the guests."""

from __future__ import annotations

from .support import SYSTEM_URI, Tool, state


def test_stop_with_broken_values_saves_a_real_guest_and_exits_6(guests, tool: Tool, system_conn) -> None:
    (guest,) = guests.create(1)
    tool.configure(ON_SHUTDOWN="shutdwon", STOP_DEADLINE="soon", START_DELAY="later")
    result = tool.run("stop")
    assert result.returncode == 6, result
    assert state(system_conn, guest) == "saved"  # a misspelt ON_SHUTDOWN is suspend, as in the original
    assert tool.list_lines() == [[SYSTEM_URI, guest.UUIDString()]]
    errors = [line for line in result.stderr.splitlines() if line.startswith("libvirt-guests: error: ")]
    assert len(errors) == 2, result.stderr  # START_DELAY is not stop's: a warning
    assert "ON_SHUTDOWN='shutdwon'" in errors[0] and "STOP_DEADLINE='soon'" in errors[1]
    assert "Traceback" not in result.stderr
    result = tool.run("start")
    assert result.returncode == 6, result  # START_DELAY is start's
    assert state(system_conn, guest) == "running"
