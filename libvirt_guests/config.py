"""Loading the configuration: file (read with python-dotenv, never run as
shell), then process environment, over the defaults of settings.SETTINGS."""

from __future__ import annotations

import difflib
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

from .settings import BY_NAME, OBSOLETE, SETTINGS, SettingError, default_for

CONFIG_CANDIDATES = (Path("/etc/sysconfig/libvirt-guests"), Path("/etc/default/libvirt-guests"))
DEFAULT_LIST_FILE = Path("/var/lib/libvirt/libvirt-guests")
DEFAULT_LOCK_FILE = Path("/var/lock/libvirt-guests")

ENV_CONFIG = "LIBVIRT_GUESTS_CONFIG"
ENV_LIST_FILE = "LIBVIRT_GUESTS_LIST_FILE"
ENV_LOCK_FILE = "LIBVIRT_GUESTS_LOCK_FILE"
ENV_STATE_FILE = "LIBVIRT_GUESTS_STATE_FILE"
ENV_DEFAULTS = "LIBVIRT_GUESTS_DEFAULTS"
FLAVOURS = ("upstream", "debian")


class ConfigError(Exception):
    """A configuration that cannot be used: exit 6 (LSB 'not configured')."""


@dataclass(frozen=True)
class Paths:
    """Every file the tool touches; all overridable for tests and packagers."""

    config: Path | None  # None: no configuration file exists
    list_file: Path
    lock_file: Path
    state_file: Path
    run_lock: Path

    @classmethod
    def resolve(
        cls,
        config: str | None = None,
        list_file: str | None = None,
        lock_file: str | None = None,
        state_file: str | None = None,
        environ: dict[str, str] | None = None,
    ) -> Paths:
        env = os.environ if environ is None else environ
        config = config or env.get(ENV_CONFIG)
        if config:
            config_path: Path | None = Path(config)
        else:
            config_path = next((p for p in CONFIG_CANDIDATES if p.exists()), None)
        listf = Path(list_file or env.get(ENV_LIST_FILE) or DEFAULT_LIST_FILE)
        lockf = Path(lock_file or env.get(ENV_LOCK_FILE) or DEFAULT_LOCK_FILE)
        statef = Path(state_file or env.get(ENV_STATE_FILE) or f"{listf}.state")
        return cls(config_path, listf, lockf, statef, Path(f"{statef}.lock"))


@dataclass(frozen=True)
class Config:
    """The effective settings. Field names are the variables, lower-cased."""

    uris: tuple[str, ...]
    on_boot: str
    start_delay: float
    on_shutdown: tuple[str, ...]
    parallel_shutdown: int
    shutdown_timeout: int
    bypass_cache: bool
    sync_time: bool
    persistent_only: str
    parallel_save: int
    pause_before_save: bool
    parallel_start: int
    save_timeout: int
    stop_deadline: int
    connect_timeout: int
    # Where each value came from ('default', 'file', 'environment') and its text.
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    texts: dict[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    flavour: str = "upstream"

    def persistent_only_for(self, chain: tuple[str, ...]) -> bool:
        if self.persistent_only == "default":
            return chain[0] == "suspend"
        return self.persistent_only == "true"


def read_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """Variables of a configuration file, and warnings.

    A line that python-dotenv cannot parse is an error (exit 6), not a
    silently skipped line as in dotenv_values()."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"configuration file {path} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read configuration file {path}: {err}") from err
    values: dict[str, str] = {}
    warnings: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip()
            raise ConfigError(f"{path}:{binding.original.line}: cannot parse {line!r}: expected NAME=value")
        if binding.key is None:
            continue
        value = binding.value or ""
        if "$" in value or "`" in value:
            warnings.append(
                f"{path}:{binding.original.line}: {binding.key} contains shell syntax that is not expanded: {value!r}"
            )
        values[binding.key] = value
    return values, warnings


def _unknown_warnings(names: list[str], path: Path) -> list[str]:
    warnings = []
    for name in names:
        if name in BY_NAME:
            continue
        if name in OBSOLETE:
            warnings.append(f"{path}: {name} is ignored ({OBSOLETE[name]})")
            continue
        near = difflib.get_close_matches(name, list(BY_NAME), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        warnings.append(f"{path}: unknown variable {name}{hint}")
    return warnings


def _insecure_warning(path: Path) -> list[str]:
    try:
        st = path.stat()
    except OSError:
        return []
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != 0:
        mode = stat.S_IMODE(st.st_mode)
        return [f"{path} can be changed by users other than root (owner uid {st.st_uid}, mode {mode:04o})"]
    return []


def _same_as_file(name: str, env_text: str, file_values: dict[str, str]) -> bool:
    """True when an environment value is the file's own line as systemd's
    EnvironmentFile= passed it on: systemd keeps an inline '# comment' that
    python-dotenv strips, and the file's reading is the one meant."""
    if name not in file_values:
        return False
    bindings = list(parse_stream(io.StringIO(f"{name}={env_text}\n")))
    return bool(bindings) and not bindings[0].error and (bindings[0].value or "") == file_values[name]


def load(paths: Paths, environ: dict[str, str] | None = None, flavour: str | None = None) -> Config:
    """Build the effective configuration; raise ConfigError on any bad value."""
    env = os.environ if environ is None else environ
    flavour = flavour or env.get(ENV_DEFAULTS) or "upstream"
    if flavour not in FLAVOURS:
        raise ConfigError(f"{ENV_DEFAULTS}={flavour!r} is not valid: expected upstream or debian")
    file_values: dict[str, str] = {}
    warnings: list[str] = []
    if paths.config is not None:
        file_values, warnings = read_file(paths.config)
        warnings += _unknown_warnings(list(file_values), paths.config)
        if os.geteuid() == 0:
            warnings += _insecure_warning(paths.config)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    texts: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in env and not _same_as_file(setting.name, env[setting.name], file_values):
            text, source = env[setting.name], "environment"
        elif setting.name in file_values:
            text, source = file_values[setting.name], "file"
        else:
            text, source = default_for(setting, flavour), "default"
        if setting.name == "SHUTDOWN_TIMEOUT" and text.strip().startswith("-") and text.strip()[1:].isdigit():
            # The original's own message for this case (spec 1.5 step 2).
            raise ConfigError("SHUTDOWN_TIMEOUT must be equal or greater than 0")
        try:
            values[setting.attr] = setting.parse(text)
        except SettingError as err:
            where = {"environment": "the environment", "file": str(paths.config), "default": "the defaults"}[source]
            raise ConfigError(f"{setting.name}={text!r} (from {where}) is not valid: {err}") from None
        sources[setting.name] = source
        texts[setting.name] = text
    return Config(**values, sources=sources, texts=texts, warnings=tuple(warnings), flavour=flavour)  # type: ignore[arg-type]
