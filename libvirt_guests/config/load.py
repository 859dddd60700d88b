"""Loading the configuration: the file read as the original's /bin/sh reads
it (never run), then the process environment, over the defaults of
settings.SETTINGS.

Strict at the door, forgiving at the exit: loading never fails. Every value
that is not valid is collected as a Problem naming the value used instead
(the original's reading where it has one, else the default); check-config
reports them all and exits 6, stop and start handle the guests anyway and
exit 6 at the end for those they use."""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libvirt_guests.config import shellfile
from libvirt_guests.config.problems import Problem
from libvirt_guests.config.settings import BY_NAME, OBSOLETE, SETTINGS, Setting, SettingError, default_for

CONFIG_CANDIDATES = (Path("/etc/sysconfig/libvirt-guests"), Path("/etc/default/libvirt-guests"))
DEFAULT_LIST_FILE = Path("/var/lib/libvirt/libvirt-guests")
DEFAULT_LOCK_FILE = Path("/var/lock/libvirt-guests")

ENV_CONFIG = "LIBVIRT_GUESTS_CONFIG"
ENV_LIST_FILE = "LIBVIRT_GUESTS_LIST_FILE"
ENV_LOCK_FILE = "LIBVIRT_GUESTS_LOCK_FILE"
ENV_STATE_FILE = "LIBVIRT_GUESTS_STATE_FILE"
ENV_HISTORY_FILE = "LIBVIRT_GUESTS_HISTORY_FILE"
ENV_REFUSALS_FILE = "LIBVIRT_GUESTS_REFUSALS_FILE"
ENV_DEFAULTS = "LIBVIRT_GUESTS_DEFAULTS"
FLAVOURS = ("upstream", "debian")
# The most read of a configuration file: the original's is a few KiB; a
# larger one is not a configuration (a 2 GB file, /dev/zero) and is not read.
MAX_CONFIG_BYTES = 1024 * 1024
# A value quoted in a problem's line is cut to this many characters.

# What the original script has set when it sources the file (besides its
# defaults), so that `$sysconfdir` in the file reads as it did there.
ORIGINAL_SCRIPT_VARIABLES = {
    "sysconfdir": "/etc",
    "localstatedir": "/var",
    "libvirtd": "/usr/sbin/libvirtd",
    "TEXTDOMAIN": "libvirt",
    "TEXTDOMAINDIR": "/usr/share/locale",
}



@dataclass(frozen=True)
class Paths:
    """Every file the tool touches; all overridable for tests and packagers."""

    config: Path | None  # None: no configuration file exists
    list_file: Path
    lock_file: Path
    state_file: Path
    run_lock: Path
    # What happened to each guest (read by reports and predictions only), and
    # which guests' saves were refused (read by the next stop's plan).
    history_file: Path = Path("/dev/null")
    refusals_file: Path = Path("/dev/null")

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
        historyf = Path(env.get(ENV_HISTORY_FILE) or f"{listf}.history")
        refusalsf = Path(env.get(ENV_REFUSALS_FILE) or f"{listf}.refused")
        return cls(config_path, listf, lockf, statef, Path(f"{statef}.lock"), historyf, refusalsf)


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
    save_reserve: int
    save_priority: tuple[str, ...]
    parallel_start: int
    save_timeout: int
    stop_deadline: int
    nut_ups: str
    nut_reserve: int
    connect_timeout: int
    migrate_uri: str
    migrate_data_uri: str
    parallel_migrate: int
    migrate_timeout: int
    migrate_undefine: bool
    migrate_back: bool
    migrate_back_data_uri: str
    guest_policy: bool
    policy_max_shutdown_timeout: int | None  # None: SHUTDOWN_TIMEOUT's value
    policy_max_save_timeout: int | None
    policy_max_start_delay: int | None
    policy_max_start_delay_total: int | None
    migrate_peers: tuple[str, ...]
    migrate_data_uris: tuple[str, ...]
    # Where each value came from ('default', 'file', 'environment') and its
    # text as read there (before parsing; a problem's value is used instead).
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    texts: dict[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    flavour: str = "upstream"
    problems: tuple[Problem, ...] = field(default=(), compare=False)

    def allowed_peers(self) -> tuple[str, ...]:
        """The peers stop and start may open: MIGRATE_URI, then MIGRATE_PEERS."""
        return tuple(dict.fromkeys(u for u in (self.migrate_uri, *self.migrate_peers) if u))

    def allowed_data_uris(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u for u in (self.migrate_data_uri, *self.migrate_data_uris) if u))

    def persistent_only_for(self, chain: tuple[str, ...]) -> bool:
        """PERSISTENT_ONLY for a chain: default means true when it begins with
        suspend (a transient guest cannot be saved), false otherwise (one that
        begins with migrate moves transient guests too)."""
        if self.persistent_only == "default":
            return chain[0] == "suspend"
        return self.persistent_only == "true"


@dataclass
class FileReading:
    """The configuration file as the shell reads it, and as systemd passes it on."""

    path: Path | None = None
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    environment_file: dict[str, str] = field(default_factory=dict)  # what EnvironmentFile= makes of it
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def original_scope(flavour: str, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The variables the original's shell has when it sources the file: the
    environment, its own variables, then its defaults."""
    scope = dict(environ)
    scope.update(ORIGINAL_SCRIPT_VARIABLES)
    scope.update({s.name: default_for(s, flavour) for s in SETTINGS if s.preset(flavour)})
    return scope


def _read_bounded(path: Path) -> bytes:
    """The bytes of a configuration file; OSError (its strerror the reason)
    for anything that is not a file to read whole: a directory, a FIFO (which
    would block the stop), a device, more than MAX_CONFIG_BYTES."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(0, "it is a directory")
        if not (stat.S_ISREG(mode) or path == Path(os.devnull)):
            raise OSError(0, "it is not a regular file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(0, f"it is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    return data


def read_file(path: Path, flavour: str = "upstream", environ: Mapping[str, str] | None = None) -> FileReading:
    """Read a configuration file as the original's /bin/sh would (nothing is run)."""
    env = os.environ if environ is None else environ
    reading = FileReading(path)
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        reading.problems.append(Problem("file", str(path), f"configuration file {path} does not exist; "
                                        "using the defaults (and the environment)"))
        return reading
    except OSError as err:
        reading.problems.append(Problem("file", str(path), f"cannot read configuration file {path}: "
                                        f"{err.strerror or err}; using the defaults (and the environment)"))
        return reading
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" in text and "\ufffd" not in raw.decode("utf-8", errors="ignore"):
        line = text[:text.index("\ufffd")].count("\n") + 1
        reading.warnings.append(f"{path}:{line}: not valid UTF-8; read with the bad bytes replaced")
    if text.startswith("\ufeff"):
        text = text[1:]
        reading.problems.append(Problem("line", f"{path}:1", "starts with a byte order mark, which the original "
                                        "script would run as part of a command; read without it"))
    if "\r\n" in text:
        line = text[:text.index("\r\n")].count("\n") + 1
        text = text.replace("\r\n", "\n")
        reading.problems.append(Problem("line", f"{path}:{line}", "has DOS line ends (CR LF): the original script "
                                        "reads a CR at the end of every value; read without them"))
    reading.environment_file = shellfile.environment_file_values(text)
    # The file's own lines that systemd's EnvironmentFile= passed on are not
    # the environment the original saw before the file: leave them out.
    env_before = {k: v for k, v in env.items() if reading.environment_file.get(k) != v}
    shell = shellfile.read_shell(text, original_scope(flavour, env_before))
    reading.values, reading.lines = shell.values, shell.lines
    source_lines = text.split("\n")
    seen_lines: set[int] = set()
    for skipped in shell.skipped:
        if skipped.line in seen_lines:
            continue  # one problem per line
        seen_lines.add(skipped.line)
        line_text = source_lines[skipped.line - 1].strip() if skipped.line <= len(source_lines) else skipped.text
        line_text = line_text if len(line_text) <= 200 else line_text[:200] + "..."
        ours = [name for name in skipped.names if name in BY_NAME]
        reading.problems.append(Problem(
            "line", f"{path}:{skipped.line}", f"{line_text!r} {skipped.reason}"
            + ("" if "skipped" in skipped.reason else "; the line is skipped"),
            variable=ours[0] if len(ours) == 1 else None,
        ))
    for line, name, what in shell.differences:
        # an error where one of our variables depends on it (a helper read differently makes the
        # variables read from it differ too: each is named); a warning for a helper variable
        line_text = source_lines[line - 1].strip()[:200] if line <= len(source_lines) else ""
        text = f"{line_text!r}: dash and bash (as /bin/sh) read {name} differently ({what})"
        if name in BY_NAME:
            reading.problems.append(Problem("line", f"{path}:{line}", text, variable=name))
        else:
            reading.warnings.append(f"{path}:{line}: {text}")
    for line, name in dict.fromkeys(shell.unset):
        reading.warnings.append(f"{path}:{line}: ${name} is not set; it reads as empty")
    reading.warnings += _unknown_warnings([n for n in reading.values if n not in shell.referenced], path)
    return reading


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
    if not stat.S_ISREG(st.st_mode):  # /dev/null (the one device read): writing to it changes nothing
        return []
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != 0:
        mode = stat.S_IMODE(st.st_mode)
        return [f"{path} can be changed by users other than root (owner uid {st.st_uid}, mode {mode:04o})"]
    return []


def _same_as_file(name: str, env_text: str, reading: FileReading) -> bool:
    """True when an environment value is the file's own line as systemd's
    EnvironmentFile= passed it on (no $ expansion, an inline '# comment'
    kept, a skipped line passed literally), or just what the file says:
    the file's reading is the one meant then."""
    if reading.environment_file.get(name) == env_text:
        return True
    return reading.values.get(name) == env_text


def _value(setting: Setting, text: str, source: str, where: str, flavour: str) -> tuple[object, Problem | None]:
    """The value of a setting's text; for a text it refuses, the value used
    instead (the original's reading, else the default) and the problem."""
    try:
        return setting.parse(text), None
    except SettingError as err:
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - a fault of one parser must not keep a stop from its guests
        reason = f"it cannot be read ({type(err).__name__}); expected {setting.accepts}"
    try:
        legacy = setting.legacy(text) if setting.legacy else None
    except Exception:  # noqa: BLE001 - as above: the default is used
        legacy = None
    used = legacy if legacy is not None else default_for(setting, flavour)
    negative_timeout = setting.name == "SHUTDOWN_TIMEOUT" and re.fullmatch(r"\s*-[0-9]+\s*", text)
    return setting.parse(used), Problem(
        "value", where, reason, variable=setting.name, value=text, source=source, accepts=setting.accepts,
        used=used, as_original=legacy is not None,
        original_message="SHUTDOWN_TIMEOUT must be equal or greater than 0" if negative_timeout else None,
    )


def load(paths: Paths, environ: dict[str, str] | None = None, flavour: str | None = None) -> Config:
    """The effective configuration. Never raises: every problem is in .problems."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    chosen = flavour or env.get(ENV_DEFAULTS) or "upstream"
    if chosen not in FLAVOURS:
        problems.append(Problem("value", "the environment", "expected upstream or debian", variable=ENV_DEFAULTS,
                                value=chosen, source="environment", accepts="upstream or debian", used="upstream"))
        chosen = "upstream"
    reading = FileReading()
    warnings: list[str] = []
    if paths.config is not None:
        try:
            reading = read_file(paths.config, chosen, env)
        except Exception as err:  # noqa: BLE001 - a fault of the reader: the defaults, and say so
            reading = FileReading(paths.config, problems=[Problem(
                "file", str(paths.config), f"cannot read configuration file {paths.config} "
                f"({type(err).__name__}); using the defaults (and the environment)")])
        problems += reading.problems
        warnings += reading.warnings
        if os.geteuid() == 0 and not reading.problems:
            warnings += _insecure_warning(paths.config)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    texts: dict[str, str] = {}
    value_problems: list[tuple[int, Problem]] = []
    for order, setting in enumerate(SETTINGS):
        name = setting.name
        if name in env and not _same_as_file(name, env[name], reading):
            text, source, where = env[name], "environment", "the environment"
        elif name in reading.values:
            text, source, where = reading.values[name], "file", f"{paths.config}:{reading.lines[name]}"
        else:
            text, source, where = default_for(setting, chosen), "default", "the defaults"
        value, problem = _value(setting, text, source, where, chosen)
        if problem is not None:
            line = reading.lines.get(name, 0) if source == "file" else 10**9 + order
            value_problems.append((line, problem))
        values[setting.attr] = value
        sources[name] = source
        texts[name] = text
    # In the file's order (the lines the shell skipped among them), then the environment's.
    line_of = {id(p): int(p.where.rsplit(":", 1)[1]) if p.where.rsplit(":", 1)[-1].isdigit() else 0
               for p in problems}
    ordered = sorted([(line_of[id(p)], p) for p in problems] + value_problems, key=lambda item: item[0])
    return Config(**values, sources=sources, texts=texts, warnings=tuple(warnings),  # type: ignore[arg-type]
                  flavour=chosen, problems=tuple(p for _, p in ordered))
