"""Issue 19, section 2, on real guests: what made stop handle no guest (a
state file nested 100,000 deep, a 5000-digit SHUTDOWN_TIMEOUT, a bad
LIBVIRT_GUESTS_LOCK_WAIT) now leaves the guests' fate as the configuration
says, with one line about the fault."""

from __future__ import annotations

import re
import time

from .support import SYSTEM_URI, Tool, state

HUGE = "9" * 5000
ZEROS_4 = "0" * 5000 + "4"  # 4, as dash's `[ "$SHUTDOWN_TIMEOUT" -gt 0 ]` reads it


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("libvirt-guests: error: ")]


def test_a_state_file_nested_100000_deep_is_set_aside(guests, tool: Tool, system_conn) -> None:
    (guest,) = guests.create(1)
    tool.state_file.write_text("[" * 100_000 + "]" * 100_000)
    tool.state_file.chmod(0o600)
    result = tool.run("status")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert state(system_conn, guest) == "saved"
    assert tool.list_lines() == [[SYSTEM_URI, guest.UUIDString()]]
    assert "is damaged (nested too deep)" in result.stderr
    aside = [p.name for p in tool.state_file.parent.iterdir() if re.fullmatch(r".*\.state\.damaged-\S+", p.name)]
    assert len(aside) == 1
    result = tool.run("status")
    assert result.returncode == 3 and "stopped, with saved guests" in result.stdout, result
    result = tool.run("start")
    assert result.returncode == 0, result
    assert state(system_conn, guest) == "running"
    assert tool.run("status").returncode == 0


def test_a_5000_digit_shutdown_timeout_at_stop(guests, tool: Tool, system_conn) -> None:
    """Out of range: one error line, the default (suspend saves the guest), exit 6."""
    (guest,) = guests.create(1)
    tool.configure(SHUTDOWN_TIMEOUT=HUGE)
    result = tool.run("stop")
    assert result.returncode == 6, result
    assert state(system_conn, guest) == "saved"
    (error,) = _errors(result.stderr)
    assert "SHUTDOWN_TIMEOUT='9999" in error and "(5000 characters)" in error and len(error) < 400
    assert tool.run("start").returncode == 0 and state(system_conn, guest) == "running"


def test_a_zero_padded_5001_digit_shutdown_timeout_is_4_seconds(guests, tool: Tool, system_conn) -> None:
    """000...0004 is 4, as the original's test reads it: a guest that ignores
    the power button is powered off about 4 s after it was asked."""
    (stubborn,) = guests.create(1, mode="stubborn")
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT=ZEROS_4)
    began = time.monotonic()
    result = tool.run("stop")
    took = time.monotonic() - began
    assert result.returncode == 0, result
    assert f"Shutdown of guest {stubborn.name()} failed to complete in time." in result.stdout
    assert state(system_conn, stubborn) == "off"
    assert took < 60, took
    assert tool.run("start").returncode == 0 and state(system_conn, stubborn) == "running"


def test_a_bad_lock_wait_at_stop_saves_the_guests(guests, tool: Tool, system_conn) -> None:
    guest, other = guests.create(2)
    result = tool.run("stop", env={"LIBVIRT_GUESTS_LOCK_WAIT": "5s"})
    assert result.returncode == 6, result
    assert state(system_conn, guest) == state(system_conn, other) == "saved"
    (error,) = _errors(result.stderr)
    assert "LIBVIRT_GUESTS_LOCK_WAIT='5s' is not valid" in error and "using 300, the default" in error
    result = tool.run("start", "--lock-wait", "5s")
    assert result.returncode == 6, result
    assert state(system_conn, guest) == state(system_conn, other) == "running"
