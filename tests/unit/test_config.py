"""Configuration: the settings table, lenient loading (every problem collected,
the value used named), sources, and the environment override."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import pytest

from libvirt_guests.config.load import Config, Paths, load
from libvirt_guests.config.problems import Problem
from libvirt_guests.config.settings import SETTINGS


def _load(path: Path, text: str, environ: dict[str, str] | None = None, flavour: str | None = None) -> Config:
    path.write_text(text)
    return load(Paths.resolve(config=str(path), environ={}), environ=environ or {}, flavour=flavour)


def _problem(cfg: Config, name: str) -> Problem:
    found = [p for p in cfg.problems if p.variable == name]
    assert len(found) == 1, (name, cfg.problems)
    return found[0]


def test_table_and_config_fields_match() -> None:
    fields = {f.name for f in dataclasses.fields(Config)} - {"sources", "texts", "warnings", "flavour", "problems"}
    assert fields == {s.attr for s in SETTINGS}


def test_every_setting_says_which_commands_use_it() -> None:
    for setting in SETTINGS:
        assert setting.used_by, setting.name
        assert set(setting.used_by) <= {"stop", "start"}, setting.name
    by_name = {s.name: set(s.used_by) for s in SETTINGS}
    assert by_name["SHUTDOWN_TIMEOUT"] == {"stop"}
    assert by_name["START_DELAY"] == {"start"}
    assert by_name["URIS"] == {"stop", "start"}


def test_upstream_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "")
    assert cfg.uris == ("default",)
    assert cfg.on_boot == "start"
    assert cfg.on_shutdown == ("suspend",)
    assert cfg.shutdown_timeout == 300
    assert cfg.parallel_shutdown == 0
    assert cfg.start_delay == 0
    assert cfg.bypass_cache is False and cfg.sync_time is False
    assert cfg.persistent_only == "default"
    assert set(cfg.sources.values()) == {"default"}
    assert cfg.problems == ()


def test_debian_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "", flavour="debian")
    assert cfg.on_boot == "ignore"
    assert cfg.on_shutdown == ("shutdown",)


def test_file_values_quotes_comments_export(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", (
        "# comment\n"
        "URIS='default lxc:///system'\n"
        'ON_SHUTDOWN="suspend shutdown poweroff"  # chain\n'
        "export SHUTDOWN_TIMEOUT=120\n"
        "START_DELAY=0.5\n"
        "BYPASS_CACHE=1\n"
    ))
    assert cfg.uris == ("default", "lxc:///system")
    assert cfg.on_shutdown == ("suspend", "shutdown", "poweroff")
    assert cfg.shutdown_timeout == 120
    assert cfg.start_delay == 0.5
    assert cfg.bypass_cache is True
    assert cfg.sources["URIS"] == "file"
    assert cfg.problems == ()


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "ON_SHUTDOWN=suspend\n", environ={"ON_SHUTDOWN": "shutdown"})
    assert cfg.on_shutdown == ("shutdown",)
    assert cfg.sources["ON_SHUTDOWN"] == "environment"


def test_file_is_never_run_as_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cfg = _load(tmp_path / "c", f"URIS=\"$(touch {marker})\"\nON_BOOT=ignore\n")
    assert not marker.exists()
    line = _problem(cfg, "URIS")
    assert "command substitution" in line.text() and "skipped" in line.text()
    assert cfg.uris == ("default",)  # the line is skipped ...
    assert cfg.on_boot == "ignore"  # ... and the rest of the file still counts


# (line, variable, the value used instead, how the original reads it)
BAD_VALUES = [
    ("ON_SHUTDOWN=shutdwon", "ON_SHUTDOWN", ("suspend",), "original"),
    ("ON_SHUTDOWN=Shutdown", "ON_SHUTDOWN", ("suspend",), "original"),
    ("ON_SHUTDOWN=", "ON_SHUTDOWN", ("suspend",), "original"),
    ("ON_SHUTDOWN='suspend suspend'", "ON_SHUTDOWN", ("suspend",), "original"),
    ("SHUTDOWN_TIMEOUT=abc", "SHUTDOWN_TIMEOUT", 300, "default"),
    ("SHUTDOWN_TIMEOUT=1.5", "SHUTDOWN_TIMEOUT", 300, "default"),
    ("SHUTDOWN_TIMEOUT=-1", "SHUTDOWN_TIMEOUT", 300, "default"),
    ("SHUTDOWN_TIMEOUT=" + "9" * 30, "SHUTDOWN_TIMEOUT", 300, "default"),
    ("ON_BOOT=Start", "ON_BOOT", "ignore", "original"),
    ("ON_BOOT=", "ON_BOOT", "ignore", "original"),
    ("START_DELAY=-1", "START_DELAY", 0, "default"),
    ("START_DELAY=", "START_DELAY", 0, "default"),
    ("START_DELAY=inf", "START_DELAY", 0, "default"),
    ("START_DELAY=soon", "START_DELAY", 0, "default"),
    ("PARALLEL_SHUTDOWN=four", "PARALLEL_SHUTDOWN", 0, "original"),
    ("PERSISTENT_ONLY=yes", "PERSISTENT_ONLY", "default", "original"),
    ("SAVE_TIMEOUT=-3", "SAVE_TIMEOUT", 0, "default"),
    ("STOP_DEADLINE=soon", "STOP_DEADLINE", 0, "default"),
    ("PARALLEL_SAVE=-1", "PARALLEL_SAVE", 8, "default"),
    ("PAUSE_BEFORE_SAVE=yes", "PAUSE_BEFORE_SAVE", True, "default"),
    ("CONNECT_TIMEOUT=" + "9" * 30, "CONNECT_TIMEOUT", 30, "default"),
]


@pytest.mark.parametrize(("line", "name", "used", "why"), BAD_VALUES)
def test_bad_value_is_one_problem_and_a_value_used(tmp_path: Path, line: str, name: str, used: object,
                                                   why: str) -> None:
    cfg = _load(tmp_path / "c", line + "\n")
    assert getattr(cfg, name.lower()) == used
    problem = _problem(cfg, name)
    assert len(cfg.problems) == 1
    text = problem.text()
    assert "\n" not in text
    assert text.startswith(name + "=")
    assert "expected" in text and "using" in text
    assert problem.source == "file"
    assert problem.where == f"{tmp_path / 'c'}:1"
    assert ("as the original script reads it" in text) == (why == "original")


def test_every_problem_is_collected_in_one_load(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", (
        "ON_SHUTDOWN=shutdwon\nSHUTDOWN_TIMEOUT=abc\nSTOP_DEADLINE=soon\nthis is a command\n"
        "PARALLEL_SAVE=-1\nURIS=`hostname`\nON_BOOT=Start\n"
    ))
    # in the file's order
    assert [p.variable for p in cfg.problems] == [
        "ON_SHUTDOWN", "SHUTDOWN_TIMEOUT", "STOP_DEADLINE", None, "PARALLEL_SAVE", "URIS", "ON_BOOT"]
    assert cfg.on_shutdown == ("suspend",) and cfg.shutdown_timeout == 300 and cfg.stop_deadline == 0
    assert cfg.parallel_save == 8 and cfg.on_boot == "ignore" and cfg.uris == ("default",)
    assert "c:4: " in cfg.problems[3].text() and "would run" in cfg.problems[3].text()


def test_negative_shutdown_timeout_keeps_the_originals_message(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "SHUTDOWN_TIMEOUT=-1\n")
    problem = _problem(cfg, "SHUTDOWN_TIMEOUT")
    assert problem.original_message == "SHUTDOWN_TIMEOUT must be equal or greater than 0"
    assert cfg.shutdown_timeout == 300
    other = _load(tmp_path / "d", "SHUTDOWN_TIMEOUT=abc\n")
    assert _problem(other, "SHUTDOWN_TIMEOUT").original_message is None


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("SYNC_TIME=yes", "sync_time", True),
        ("SYNC_TIME=no", "sync_time", True),  # the original: anything but 0 is on
        ("SYNC_TIME=", "sync_time", True),
        ("SYNC_TIME=' 0'", "sync_time", True),
        ("SYNC_TIME=0", "sync_time", False),
        ("BYPASS_CACHE=true", "bypass_cache", True),
        ("BYPASS_CACHE=2", "bypass_cache", True),
        ("BYPASS_CACHE=0", "bypass_cache", False),
        ("START_DELAY=1m", "start_delay", 60.0),
        ("START_DELAY=0.5", "start_delay", 0.5),
        ("START_DELAY=.5s", "start_delay", 0.5),
        ("START_DELAY=2h", "start_delay", 7200.0),
        ("START_DELAY=1d", "start_delay", 86400.0),
        ("START_DELAY='1m 30s'", "start_delay", 90.0),
        ("START_DELAY=1e1", "start_delay", 10.0),
        ("START_DELAY=0x10", "start_delay", 16.0),
        ("SHUTDOWN_TIMEOUT=+300", "shutdown_timeout", 300),
        ("SHUTDOWN_TIMEOUT=' 120 '", "shutdown_timeout", 120),
        ("PARALLEL_SHUTDOWN=+4", "parallel_shutdown", 4),
        ("URIS=", "uris", ()),
        ("URIS=''", "uris", ()),
    ],
)
def test_values_the_original_honoured_are_not_problems(tmp_path: Path, line: str, name: str, value: object) -> None:
    cfg = _load(tmp_path / "c", line + "\n")
    assert getattr(cfg, name) == value
    assert cfg.problems == ()


def test_start_delay_reads_as_gnu_sleep_does(tmp_path: Path) -> None:
    """Parity with /bin/sleep: what it refuses we call a problem; what it takes we take."""
    words = ["0", "0.01", ".01", "1e-2", "+0.01", "0x0.01p0", "0.0001m", "0.01s", "0.00001h", "1e-7d",
             "abc", "-1", "1x", "1ms", "s", "0x", "1e", "1 2x", "0.01 0.02", "--1", "1.2.3", "nan"]
    for word in words:
        sleep = os.spawnvp(os.P_WAIT, "timeout", ["timeout", "5", "sleep", *word.split()])
        cfg = _load(tmp_path / "c", f"START_DELAY='{word}'\n")
        assert (cfg.problems == ()) == (sleep == 0), (word, sleep, cfg.problems)
    cfg = _load(tmp_path / "c", "START_DELAY='0.01 0.02'\n")
    assert math.isclose(cfg.start_delay, 0.03)


def test_missing_or_unreadable_file_is_a_problem_not_a_refusal(tmp_path: Path) -> None:
    cfg = load(Paths.resolve(config=str(tmp_path / "nope"), environ={}), environ={})
    assert cfg.uris == ("default",)
    (problem,) = cfg.problems
    assert "does not exist" in problem.text() and "defaults" in problem.text()
    folder = tmp_path / "dir"
    folder.mkdir()
    cfg = load(Paths.resolve(config=str(folder), environ={}), environ={})
    (problem,) = cfg.problems
    assert "cannot read" in problem.text()


def test_bad_defaults_flavour_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("")
    cfg = load(Paths.resolve(config=str(tmp_path / "c"), environ={}), environ={"LIBVIRT_GUESTS_DEFAULTS": "debain"})
    assert cfg.flavour == "upstream"
    (problem,) = cfg.problems
    assert "LIBVIRT_GUESTS_DEFAULTS='debain'" in problem.text()


def test_unknown_and_obsolete_variables_warn_helpers_do_not(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "ON_SHUTDWON=shutdown\nCONNECT_RETRIES=5\nT=90\nSHUTDOWN_TIMEOUT=$T\n")
    assert any("did you mean ON_SHUTDOWN" in w for w in cfg.warnings)
    assert any("CONNECT_RETRIES is ignored" in w for w in cfg.warnings)
    assert not any(re.search(r"unknown variable T\b", w) for w in cfg.warnings), cfg.warnings
    assert cfg.shutdown_timeout == 90


def test_paths_default_to_the_originals() -> None:
    paths = Paths.resolve(environ={})
    assert str(paths.list_file) == "/var/lib/libvirt/libvirt-guests"
    assert str(paths.lock_file) == "/var/lock/libvirt-guests"
    assert str(paths.state_file) == "/var/lib/libvirt/libvirt-guests.state"


def test_paths_follow_environment_and_options(tmp_path: Path) -> None:
    env = {"LIBVIRT_GUESTS_LIST_FILE": str(tmp_path / "l"), "LIBVIRT_GUESTS_LOCK_FILE": str(tmp_path / "k")}
    paths = Paths.resolve(lock_file=str(tmp_path / "opt"), environ=env)
    assert paths.list_file == tmp_path / "l"
    assert paths.lock_file == tmp_path / "opt"
    assert paths.state_file == tmp_path / "l.state"


def test_environment_file_copy_of_the_file_reads_as_the_file(tmp_path: Path) -> None:
    """systemd's EnvironmentFile= keeps an inline comment in the value; the file's own reading wins then."""
    cfg = _load(tmp_path / "c", "ON_SHUTDOWN=shutdown # saves time\n",
                environ={"ON_SHUTDOWN": "shutdown # saves time"})
    assert cfg.on_shutdown == ("shutdown",)
    assert cfg.sources["ON_SHUTDOWN"] == "file"
