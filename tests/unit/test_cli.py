"""The command line: usage, exit codes, help, man page, sample config, check-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_guests.cli.main import COMMANDS, LSB_COMMANDS
from libvirt_guests.cli.manpage import render_sample_config
from libvirt_guests.config.settings import SETTINGS

from .support import Files

USAGE_TAIL = " {start|stop|status|restart|condrestart|try-restart|reload|force-reload|gueststatus|shutdown}\n"


# start and stop no longer refuse extra words (issue 19): see test_robust_cli.
@pytest.mark.parametrize("argv", [[], ["bogus"], ["status", "extra"], ["reload", "reload"], ["status", "--bogus"]])
def test_usage_errors_exit_2_with_the_original_usage_line(files: Files, run, argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == 2
    assert result.out.startswith("Usage: ") and result.out.splitlines(keepends=True)[0].endswith(USAGE_TAIL)


def test_help_exits_0_and_starts_with_usage(files: Files, run) -> None:
    result = run("--help")
    assert result.code == 0
    assert result.out.splitlines()[0].endswith(USAGE_TAIL.strip())
    for setting in SETTINGS:
        assert setting.name in result.out


@pytest.mark.parametrize("command", ["reload", "force-reload"])
def test_reload_is_a_no_op(files: Files, run, command: str) -> None:
    assert (run(command).code, run(command).out) == (0, "")


def test_condrestart_without_lock_does_nothing(files: Files, run) -> None:
    files.list_file.write_text("test:///default 00000000-0000-0000-0000-000000000001\n")
    result = run("condrestart")
    assert (result.code, result.out) == (0, "")
    assert files.list_file.exists()


def test_status_three_states_and_json(files: Files, run) -> None:
    assert (run("status").code, run("status").out) == (3, "stopped, with no saved guests\n")
    files.lock_file.touch()
    assert (run("status").code, run("status").out) == (0, "started\n")
    files.list_file.write_text("default 00000000-0000-0000-0000-000000000001\n")
    assert (run("status").code, run("status").out) == (3, "stopped, with saved guests\n")
    data = json.loads(run("status", "--json").out)
    assert data["state"] == "stopped-with-saved-guests" and data["exit_code"] == 3
    assert data["list"] == [{"uri": "default", "uuids": ["00000000-0000-0000-0000-000000000001"]}]


def test_bad_config_value_fails_only_the_commands_that_use_it(files: Files, run) -> None:
    """ON_BOOT is read by start alone: start exits 6 (after doing its work),
    stop and shutdown only warn, the read-only commands answer as usual."""
    files.write_config(ON_BOOT="Start")
    for command, code in (("start", 6), ("stop", 0), ("shutdown", 0), ("restart", 6)):  # status & co.: test_status.py
        result = run(command)
        assert result.code == code, command
        assert "ON_BOOT='Start'" in result.err, command
        assert len([line for line in result.err.splitlines() if "ON_BOOT" in line]) == 1, command


def test_negative_timeout_prints_the_original_message(files: Files, run) -> None:
    files.write_config(SHUTDOWN_TIMEOUT="-5")
    result = run("shutdown")
    assert (result.code, result.out.splitlines()[0]) == (6, "SHUTDOWN_TIMEOUT must be equal or greater than 0")


def test_environment_overrides_file_in_a_run(files: Files, run, monkeypatch: pytest.MonkeyPatch) -> None:
    files.write_config(ON_BOOT="Start")  # broken in the file, fixed by the environment
    monkeypatch.setenv("ON_BOOT", "ignore")
    assert run("status").code == 3


def test_sample_config_is_generated_from_the_table() -> None:
    sample = Path(__file__).parents[2] / "sysconfig" / "libvirt-guests"
    assert sample.read_text() == render_sample_config(), (
        "regenerate with: python -m libvirt_guests.cli.manpage sample-config > sysconfig/libvirt-guests")
    for setting in SETTINGS:
        assert f"#{setting.name}={setting.default}\n" in sample.read_text()


def test_bash_completion_is_generated_from_the_tables() -> None:
    from libvirt_guests.cli import completion
    from libvirt_guests.cli.commandline import OPTIONS, POLICY_OPTIONS

    script = Path(__file__).parents[2] / "packaging" / "bash-completion" / "libvirt-guests"
    assert script.read_text() == completion.render(), (
        "regenerate with: python -m libvirt_guests.cli.completion > packaging/bash-completion/libvirt-guests")
    for word in [*COMMANDS, *(o.flag for o in OPTIONS), *POLICY_OPTIONS]:
        assert f" {word}" in script.read_text() or f'"{word}' in script.read_text(), word


def test_man_page_lists_every_command_variable_and_exit_code(files: Files, run) -> None:
    result = run("man")
    assert result.code == 0
    text = result.out.replace("\\-", "-")
    for name in [*COMMANDS, *(s.name for s in SETTINGS)]:
        assert f".B {name}" in text, name
    for code in (0, 1, 2, 3, 6):
        assert f".B {code}\n" in text
    assert set(LSB_COMMANDS) <= set(COMMANDS)


def test_check_config_flags_misreads_and_sources(files: Files, run, monkeypatch: pytest.MonkeyPatch) -> None:
    files.config.write_text("URIS=default\nON_SHUTDWON=shutdown\nSHUTDOWN_TIMEOUT=abc\n")
    result = run("check-config")
    assert result.code == 6
    assert "SHUTDOWN_TIMEOUT='abc'" in result.err
    assert "the original script waits for ever for each guest it shuts down" in result.out
    files.config.write_text("URIS=default\nON_SHUTDWON=shutdown\nON_SHUTDOWN='suspend poweroff'\n")
    monkeypatch.setenv("SHUTDOWN_TIMEOUT", "60")
    result = run("check-config", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["settings"]["SHUTDOWN_TIMEOUT"] == {"value": "60", "source": "environment"}
    assert data["settings"]["URIS"]["source"] == "file"
    assert data["settings"]["ON_BOOT"]["source"] == "default"
    notes = "\n".join(data["notes"])
    assert "did you mean ON_SHUTDOWN" in notes
    assert "the original script would use suspend" in notes
    assert "ON_BOOT is not set" in notes  # Debian and upstream differ


def test_check_config_flags_dueling_qemu_conf(files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: libvirt's own shutdown handling on a URI we handle is a problem (exit 6), not a note; a
    commented-out line is nothing; a file libvirt would refuse cannot be told, a problem too."""
    from libvirt_guests.config.checkconfig import daemon_shutdown_checks
    from libvirt_guests.config.load import Paths, load

    conf = tmp_path / "qemu.conf"
    monkeypatch.setenv("LIBVIRT_GUESTS_QEMU_CONF", str(conf))
    files.write_config(URIS="qemu:///system test:///default")
    config = load(Paths.resolve())

    def v11_3() -> int:
        return 11_003_000

    conf.write_text('#auto_shutdown_try_save = "persistent"\nauto_shutdown_poweroff = "none"\n')
    assert daemon_shutdown_checks(config, version_of=v11_3) == ([], [])
    conf.write_text('#auto_shutdown_try_save = "all"\nauto_shutdown_try_shutdown = "all"\n')
    (problem,), notes = daemon_shutdown_checks(config, version_of=v11_3)
    assert "auto_shutdown_try_shutdown=all" in problem.text() and "qemu:///system" in problem.text()
    assert daemon_shutdown_checks(config, version_of=lambda: 9_000_000) == ([], [])  # 9.0 has no such thing
    conf.write_text('auto_shutdown_try_shutdown = all\n')
    (problem,), notes = daemon_shutdown_checks(config, version_of=v11_3)
    assert "cannot be told" in problem.text() and "syntax" in problem.text()
    files.write_config(URIS="qemu+ssh://h/system")
    assert daemon_shutdown_checks(load(Paths.resolve()), version_of=v11_3)[1]  # a remote daemon's: a note
    files.write_config(URIS="qemu:///system")
    conf.write_text('auto_shutdown_try_save = "persistent"\n')
    result = subprocess.run([sys.executable, "-m", "libvirt_guests", "check-config"], capture_output=True,
                            text=True, env={**os.environ}, check=False)
    import libvirt  # the command judges by this host's libvirt: on from 11.2
    if libvirt.getVersion() >= 11_002_000:
        assert result.returncode == 6 and "libvirt's own shutdown handling is on" in result.stderr, result
    else:
        assert result.returncode == 0 and "shutdown handling" not in result.stderr, result


def test_module_entry_point_runs(tmp_path: Path) -> None:
    env = {**os.environ, "LIBVIRT_GUESTS_CONFIG": str(tmp_path / "none")}
    result = subprocess.run([sys.executable, "-m", "libvirt_guests", "--help"], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0 and "Usage: libvirt-guests {start|" in result.stdout


def test_bad_lock_wait_environment_is_one_error_line(files: Files, run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: no longer a usage error for stop; the default is used, exit 6."""
    monkeypatch.setenv("LIBVIRT_GUESTS_LOCK_WAIT", "soon")
    result = run("stop")
    assert result.code == 6 and "LIBVIRT_GUESTS_LOCK_WAIT='soon'" in result.err


def test_policy_of_a_missing_guest_and_plan_of_an_unreachable_uri(files: Files, run) -> None:
    files.write_config(URIS="test:///default")
    result = run("policy", "no-such-guest")
    assert result.code == 1 and "no guest 'no-such-guest'" in result.err
    files.write_config(URIS="qemu+unix:///system?socket=/nonexistent")
    result = run("plan", "stop", "--json")
    assert result.code == 0 and "Can't connect to" in result.err
    assert json.loads(result.out)["unreachable"] == ["qemu+unix:///system?socket=/nonexistent"]
