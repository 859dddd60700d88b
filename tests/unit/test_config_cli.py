"""Strict at the door, forgiving at the exit: a bad configuration value never
keeps stop or start from handling guests; it is one error line naming the
value used, and exit 6 at the end. check-config names every problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from libvirt_guests.virt.guest import Guest

from .support import TEST_URI, Driver, Files, libvirt_error


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("libvirt-guests: error: ")]


def test_stop_with_a_bad_value_of_ours_saves_the_guest_and_exits_6(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    files.write_config(STOP_DEADLINE="soon")
    result = run("stop")
    assert result.code == 6
    assert driver.state(guest) == "saved"
    (line,) = _error_lines(result.err)
    assert "STOP_DEADLINE='soon'" in line and "using 0" in line
    assert "Traceback" not in result.err


def test_stop_reads_a_misspelt_on_shutdown_as_suspend(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    files.write_config(ON_SHUTDOWN="shutdwon")
    result = run("stop")
    assert result.code == 6
    assert driver.state(guest) == "saved"
    (line,) = _error_lines(result.err)
    assert "ON_SHUTDOWN='shutdwon'" in line and "using 'suspend'" in line and "original" in line


def test_stop_with_negative_timeout_says_what_the_original_said_and_shuts_down(
    files: Files, driver: Driver, run
) -> None:
    guest = driver.guest()
    files.write_config(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="-5")
    result = run("stop")
    assert result.code == 6
    assert result.out.startswith("SHUTDOWN_TIMEOUT must be equal or greater than 0\n")
    assert driver.state(guest) == "off"
    (line,) = _error_lines(result.err)
    assert "SHUTDOWN_TIMEOUT='-5'" in line and "using 300" in line


def test_six_wins_over_one(files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    # A save that fails (a full disk, say) with a chain that has nothing after it: left running, exit 1.
    # (Before issue 22 a transient guest did it; it is now shut down instead.)
    def failing_save(self: Guest, flags: int) -> None:
        with self.errors():
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, "No space left on device")

    monkeypatch.setattr(Guest, "managed_save", failing_save)
    driver.guest()
    files.write_config(ON_SHUTDOWN="suspend", SAVE_TIMEOUT="x")
    assert run("stop").code == 6
    files.write_config(ON_SHUTDOWN="suspend")
    files.list_file.unlink(missing_ok=True)
    files.state_file.unlink(missing_ok=True)
    assert run("stop").code == 1  # the same run without the bad value


def test_a_command_does_not_fail_on_a_value_it_does_not_use(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    files.write_config(START_DELAY="soon")
    result = run("stop")
    assert result.code == 0
    assert driver.state(guest) == "saved"
    assert not _error_lines(result.err)
    assert "warning: START_DELAY='soon'" in result.err
    files.write_config(SHUTDOWN_TIMEOUT="abc")
    result = run("start")
    assert result.code == 0
    assert driver.state(guest) == "running"
    assert "warning: SHUTDOWN_TIMEOUT='abc'" in result.err and not _error_lines(result.err)


def test_start_with_a_bad_value_it_uses_starts_and_exits_6(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    assert run("stop").code == 0
    files.write_config(START_DELAY="soon", PARALLEL_START="many")
    result = run("start")
    assert result.code == 6
    assert driver.state(guest) == "running"
    assert len(_error_lines(result.err)) == 2


def test_shutdown_command_does_not_use_on_shutdown(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    files.write_config(ON_SHUTDOWN="bogus")
    result = run("shutdown")
    assert result.code == 0
    assert driver.state(guest) == "off"


@pytest.mark.parametrize(("command", "code"), [("status", 3), ("gueststatus", 0), ("plan", 0)])
def test_read_only_commands_answer_with_the_error_on_stderr(files: Files, run, command: str, code: int) -> None:
    files.write_config(ON_BOOT="Start", SHUTDOWN_TIMEOUT="abc")
    result = run(command)
    assert result.code == code
    assert result.out
    assert len(_error_lines(result.err)) == 2


def test_policy_answers_with_a_broken_configuration(files: Files, driver: Driver, run) -> None:
    guest = driver.guest()
    files.write_config(SHUTDOWN_TIMEOUT="abc")
    result = run("policy", guest.name())
    assert result.code == 0
    assert "shutdown_timeout" in result.out and "300" in result.out
    assert len(_error_lines(result.err)) == 1


def test_check_config_names_every_problem_in_one_run(files: Files, run) -> None:
    files.config.write_text(
        f"URIS={TEST_URI}\nON_SHUTDOWN=shutdwon\nthis is not an assignment\nSHUTDOWN_TIMEOUT=abc\n"
        "URIS2=$(id)\nSTOP_DEADLINE=-1\nPARALLEL_SAVE=lots\n"
    )
    result = run("check-config")
    assert result.code == 6
    errors = _error_lines(result.err)
    assert len(errors) == 6, errors
    for needle in ("ON_SHUTDOWN='shutdwon'", ":3: ", "SHUTDOWN_TIMEOUT='abc'", ":5: ", "STOP_DEADLINE='-1'",
                   "PARALLEL_SAVE='lots'"):
        assert any(needle in line for line in errors), needle
    assert "ON_SHUTDOWN" in result.out and "SHUTDOWN_TIMEOUT" in result.out  # the table is still shown


def test_check_config_json_reports_effective_values_and_problems(files: Files, run) -> None:
    files.config.write_text("URIS=default\nON_SHUTDOWN=shutdwon\nSHUTDOWN_TIMEOUT=abc\nSTART_DELAY=1m\n")
    result = run("check-config", "--json")
    assert result.code == 6
    data = json.loads(result.out)
    assert data["valid"] is False
    assert {p["variable"] for p in data["problems"]} == {"ON_SHUTDOWN", "SHUTDOWN_TIMEOUT"}
    problem = next(p for p in data["problems"] if p["variable"] == "SHUTDOWN_TIMEOUT")
    assert problem["value"] == "abc" and problem["used"] == "300" and problem["source"] == "file"
    assert problem["accepts"]
    settings = data["settings"]
    assert set(settings) >= {"URIS", "ON_SHUTDOWN", "STOP_DEADLINE"}
    assert settings["ON_SHUTDOWN"]["value"] == "suspend" and settings["ON_SHUTDOWN"]["source"] == "file"
    assert settings["SHUTDOWN_TIMEOUT"]["value"] == "300"
    assert settings["START_DELAY"]["value"] == "60" and settings["START_DELAY"]["text"] == "1m"
    assert any("START_DELAY='1m'" in note for note in data["notes"])  # non-canonical, not a problem


def test_check_config_notes_are_right(files: Files, run) -> None:
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4", SHUTDOWN_TIMEOUT="120")
    result = run("check-config")
    assert result.code == 0
    assert "one budget" in result.out and "per URI" in result.out
    files.write_config(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="-1")
    result = run("check-config")
    assert result.code == 6
    assert "silently use -1" not in result.out + result.err
    assert "refuses" in result.out


def test_check_config_calls_honoured_values_non_canonical(files: Files, run) -> None:
    files.write_config(SYNC_TIME="yes", BYPASS_CACHE="no", SHUTDOWN_TIMEOUT="+300")
    result = run("check-config")
    assert result.code == 0
    notes = [line for line in result.out.splitlines() if line.startswith("note: ")]
    assert any("BYPASS_CACHE='no'" in note and "on" in note for note in notes)
    assert any("SYNC_TIME='yes'" in note for note in notes)
    assert any("SHUTDOWN_TIMEOUT='+300'" in note for note in notes)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "-inf", "soon"])
def test_lock_wait_must_be_a_finite_number_of_seconds(files: Files, run, monkeypatch: pytest.MonkeyPatch,
                                                      value: str) -> None:
    # Issue 19: stop says it on one line, uses the default and exits 6 (it was a usage error, exit 2).
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_WAIT", value)
    result = run("stop")
    assert result.code == 6 and f"LIBVIRT_GUESTS_LOCK_WAIT='{value}'" in result.err
    assert "using 300, the default" in result.err
    monkeypatch.delenv("LIBVIRT_GUESTS_LOCK_WAIT")
    result = run("--lock-wait", value, "stop")
    assert result.code == 6 and f"--lock-wait='{value}'" in result.err


def _run_with_closed_stdout(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whoever reads has gone, as after `| head -1`
    try:
        return subprocess.run([sys.executable, "-m", "libvirt_guests", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, check=False, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["check-config", "--json"], ["check-config"], ["--help"], ["status"],
                                  ["gueststatus"], ["plan", "stop"], ["bogus"]])
def test_closed_stdout_is_never_a_traceback(files: Files, args: list[str]) -> None:
    result = _run_with_closed_stdout(args, dict(os.environ))
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert "BrokenPipe" not in result.stderr


def test_stop_with_closed_stdout_still_handles_every_guest(files: Files) -> None:
    """test:///default in a fresh process has one running guest, 'test'."""
    result = _run_with_closed_stdout(["stop"], dict(os.environ))
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    (line,) = Path(files.list_file).read_text().splitlines()
    assert line.startswith(f"{TEST_URI} ")
    journal = json.loads(files.state_file.read_text())
    assert journal["phase"] == "stopped"
    assert [g["outcome"] for g in journal["guests"]] == ["saved"]
