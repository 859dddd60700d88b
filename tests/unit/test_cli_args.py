"""Reading the command line (issue 14 item 2): every usage error keeps exit 2
and the original's usage line, and says on one line what was wrong; --help,
help and -h are one text with an options section; --version; every option
is accepted wherever the man page allows it (anywhere)."""

from __future__ import annotations

import json

import pytest

from libvirt_guests import __version__

from .support import TEST_URI, Driver, Files

ORIGINAL_USAGE = ("Usage: libvirt-guests {start|stop|status|restart|condrestart|try-restart|reload|force-reload|"
                  "gueststatus|shutdown}")


@pytest.mark.parametrize(("argv", "reason"), [
    (["statsu"], "unknown command 'statsu' (did you mean status?)"),
    (["plan", "sotp"], "plan takes stop or start, not 'sotp' (did you mean stop?)"),
    (["--defaults", "debain", "status"], "--defaults='debain' is not valid: expected upstream or debian "
                                         "(did you mean debian?)"),
    # start, stop and the restarts go on without what they cannot use (issue 19): test_robust_cli.
    (["--lock-wait", "abc", "status"], "--lock-wait='abc' is not valid: expected a number of seconds"),
    (["--lock-wait=nan", "plan"], "--lock-wait='nan' is not valid"),
    (["--lock-wait", "-1", "gueststatus"], "--lock-wait='-1' is not valid"),
    (["policy", "gamma", "--bogus", "1"], "policy: unknown option --bogus"),
    (["policy"], "policy needs a guest name"),
    (["policy", "gamma", "--order", "x"], "--order='x' is not valid: expected a whole number"),
    (["policy", "gamma", "--skip"], "policy: --skip needs a value"),
    (["policy", "gamma", "delta"], "policy takes one guest, got 'gamma' and 'delta'"),
    ([], "no command given"),
    (["status", "extra"], "status takes no arguments (got 'extra')"),
    (["reload", "reload"], "reload takes no arguments (got 'reload')"),
    (["status", "--bogus"], "unknown option --bogus"),
    (["--bogus", "status"], "unknown option --bogus"),
    (["status", "--jsno"], "unknown option --jsno (did you mean --json?)"),
    (["--config"], "--config needs a value (FILE)"),
    (["--json=1", "status"], "--json takes no value"),
    (["reload", "--json"], "--json applies to status, gueststatus, report, plan, policy, check-config; not to reload"),
    (["check-config", "a", "b"], "check-config takes one configuration file at most"),
    (["--stauts"], "unknown option --stauts"),
])
def test_usage_error_says_why(files: Files, run, argv: list[str], reason: str) -> None:
    result = run(*argv)
    assert result.code == 2
    lines = result.out.splitlines()
    assert lines[0] == ORIGINAL_USAGE
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith("libvirt-guests: error: ")
    assert reason in result.err
    assert result.err.rstrip().endswith("see libvirt-guests --help")


def test_usage_errors_touch_nothing(files: Files, driver: Driver, run) -> None:
    """A refused command line is refused before anything is read or done
    (only the commands that do not act on guests refuse one: issue 19)."""
    dom = driver.guest()
    for argv in (["plan", "--lock-wait", "abc"], ["--defaults", "debain", "status"], ["gueststatus", "now"]):
        assert run(*argv).code == 2
    assert driver.state(dom) == "running"
    assert not files.list_file.exists() and not files.state_file.exists()


def test_usage_lists_the_new_commands_after_the_original_line(files: Files, run) -> None:
    lines = run("bogus").out.splitlines()
    assert lines[0] == ORIGINAL_USAGE
    assert lines[1] == ("       libvirt-guests [OPTIONS] "
                        "{report|plan [stop|start]|policy GUEST [SETTINGS]|check-config [FILE]|man|help}")
    assert len(lines) == 2


def test_help_has_an_options_section_and_help_is_the_same(files: Files, run) -> None:
    result = run("--help")
    assert result.code == 0
    assert result.out.splitlines()[0] == ORIGINAL_USAGE
    assert "plan [stop|start]" in result.out.splitlines()[1]
    section = result.out.split("\nOptions", 1)[1].split("\n\n", 1)[0]
    for flag in ("--config FILE", "--defaults upstream|debian", "--lock-wait SECONDS", "--json", "--list-file FILE",
                 "--lock-file FILE", "--state-file FILE", "--version"):
        assert f"\n  {flag} " in section, flag
    for name in ("CONFIG", "LIST_FILE", "LOCK_FILE", "STATE_FILE", "DEFAULTS", "LOCK_WAIT"):
        assert f"[LIBVIRT_GUESTS_{name}]" in section
    for argv in (["help"], ["-h"], ["status", "--help"], ["--help", "plan"]):
        assert run(*argv).out == result.out, argv
        assert run(*argv).code == 0


def test_version_prints_the_program_name_and_version(files: Files, run) -> None:
    result = run("--version")
    assert (result.code, result.out, result.err) == (0, f"libvirt-guests {__version__}\n", "")


def test_json_is_accepted_before_between_and_after(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    outputs = [run(*argv) for argv in (["--json", "plan", "stop"], ["plan", "--json", "stop"],
                                       ["plan", "stop", "--json"])]
    assert [r.code for r in outputs] == [0, 0, 0]
    assert outputs[0].out == outputs[1].out == outputs[2].out
    data = json.loads(outputs[0].out)
    assert dom.name() in [e["name"] for g in data["uris"][0]["groups"] for e in g]
    for command in ("status", "gueststatus"):
        assert run("--json", command).out == run(command, "--json").out
    assert json.loads(run("--json", "policy", dom.name()).out) == json.loads(run("policy", dom.name(), "--json").out)
    assert json.loads(run("--json", "check-config").out)["valid"] is True


def test_path_options_are_accepted_after_the_command(files: Files, run, tmp_path) -> None:  # noqa: ANN001
    other = tmp_path / "other"
    other.mkdir()
    (other / "lock").touch()
    for argv in (["--lock-file", str(other / "lock"), "status"], ["status", "--lock-file", str(other / "lock")],
                 ["status", f"--lock-file={other / 'lock'}"]):
        assert (run(*argv).code, run(*argv).out) == (0, "started\n"), argv
    (other / "c").write_text(f"URIS={TEST_URI}\nON_SHUTDOWN=shutdown\n")
    first = run("--config", str(other / "c"), "check-config", "--json")
    last = run("check-config", "--json", "--config", str(other / "c"))
    assert first.out == last.out
    assert json.loads(first.out)["settings"]["ON_SHUTDOWN"]["value"] == "shutdown"
    assert run("plan", "--defaults", "debian", "--json").code == 0
    assert json.loads(run("plan", "--defaults", "debian", "--json").out)["defaults"] == "debian"


def test_lock_wait_option_is_honoured_after_the_command(files: Files, run) -> None:
    """--lock-wait after the command is the same option (a short wait, no holder: it just runs)."""
    result = run("stop", "--lock-wait", "0.5")
    assert result.code == 0, result
