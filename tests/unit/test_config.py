"""Configuration: the settings table, strict parsing, sources, and errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from libvirt_guests.config import Config, ConfigError, Paths, load
from libvirt_guests.settings import SETTINGS


def _load(path: Path, text: str, environ: dict[str, str] | None = None, flavour: str | None = None) -> Config:
    path.write_text(text)
    return load(Paths.resolve(config=str(path), environ={}), environ=environ or {}, flavour=flavour)


def test_table_and_config_fields_match() -> None:
    fields = {f.name for f in dataclasses.fields(Config)} - {"sources", "texts", "warnings", "flavour"}
    assert fields == {s.attr for s in SETTINGS}


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


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "ON_SHUTDOWN=suspend\n", environ={"ON_SHUTDOWN": "shutdown"})
    assert cfg.on_shutdown == ("shutdown",)
    assert cfg.sources["ON_SHUTDOWN"] == "environment"


def test_file_is_never_run_as_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cfg = _load(tmp_path / "c", f"URIS=\"$(touch {marker})\"\n")
    assert not marker.exists()
    assert any("not expanded" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("ON_SHUTDOWN=shutdwon", "ON_SHUTDOWN"),
        ("ON_SHUTDOWN=Shutdown", "ON_SHUTDOWN"),
        ("ON_SHUTDOWN=", "ON_SHUTDOWN"),
        ("ON_SHUTDOWN='suspend suspend'", "ON_SHUTDOWN"),
        ("SHUTDOWN_TIMEOUT=abc", "SHUTDOWN_TIMEOUT"),
        ("SHUTDOWN_TIMEOUT=1.5", "SHUTDOWN_TIMEOUT"),
        ("ON_BOOT=Start", "ON_BOOT"),
        ("START_DELAY=-1", "START_DELAY"),
        ("START_DELAY=", "START_DELAY"),
        ("PARALLEL_SHUTDOWN=four", "PARALLEL_SHUTDOWN"),
        ("BYPASS_CACHE=no", "BYPASS_CACHE"),
        ("SYNC_TIME=yes", "SYNC_TIME"),
        ("PERSISTENT_ONLY=yes", "PERSISTENT_ONLY"),
        ("SAVE_TIMEOUT=-3", "SAVE_TIMEOUT"),
    ],
)
def test_misread_values_are_refused(tmp_path: Path, line: str, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path / "c", line + "\n")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(name + "=")
    assert "expected" in message


def test_negative_shutdown_timeout_keeps_original_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^SHUTDOWN_TIMEOUT must be equal or greater than 0$"):
        _load(tmp_path / "c", "SHUTDOWN_TIMEOUT=-1\n")


def test_unparsable_line_is_an_error_with_its_line_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c:2: cannot parse"):
        _load(tmp_path / "c", "URIS=default\nthis is not an assignment\n")


def test_unknown_and_obsolete_variables_warn(tmp_path: Path) -> None:
    cfg = _load(tmp_path / "c", "ON_SHUTDWON=shutdown\nCONNECT_RETRIES=5\n")
    assert any("did you mean ON_SHUTDOWN" in w for w in cfg.warnings)
    assert any("CONNECT_RETRIES is ignored" in w for w in cfg.warnings)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(Paths.resolve(config=str(tmp_path / "nope"), environ={}), environ={})


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
