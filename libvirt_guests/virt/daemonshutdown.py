"""libvirt's own shutdown handling (the QEMU driver's ``auto_shutdown_*``
settings in qemu.conf, libvirt 11.2 and later): is it on for a URI's daemon,
which guests does it act on, does it restore them at its next start.

The daemon acts when logind announces a host shutdown (PrepareForShutdown),
never on ``systemctl stop``: see virt/logind.py. The rules, from libvirt
11.3's qemu.conf:

* each of ``auto_shutdown_try_save``, ``auto_shutdown_try_shutdown`` and
  ``auto_shutdown_poweroff`` is ``none``, ``persistent``, ``transient`` or
  ``all`` (which guests it applies to); they are tried in that order, each on
  the guests the previous ones did not take down. ``try_save`` refuses
  ``transient`` and ``all`` (libvirt does not load such a file);
* the handling is *on* when any of the three is not ``none``;
  ``auto_shutdown_restore`` (default 1) alone does nothing: it marks the
  guests the daemon took down to be started once at its next start;
* system daemon (``qemu:///system``, /etc/libvirt/qemu.conf): all three
  default to ``none``. Session daemon (``qemu:///session``, the user's
  ``$XDG_CONFIG_HOME/libvirt/qemu.conf``, else ``~/.config/...``): save
  ``persistent``, shutdown ``all``, poweroff ``all``: on by default;
* any other URI (remote, another driver, a socket of its own): unknown.

The daemon read its file when it started: a file changed since then says
nothing certain about the settings in use (unknown).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import libvirt

from libvirt_guests.output import shown, shown_uri
from libvirt_guests.virt.daemonproc import system_daemon_started
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.virtconf import ConfSyntaxError, Value, parse

SCOPES = ("none", "persistent", "transient", "all")
ACTIONS = ("save", "shutdown", "poweroff")  # the daemon's order
KEYS = {"save": "auto_shutdown_try_save", "shutdown": "auto_shutdown_try_shutdown",
        "poweroff": "auto_shutdown_poweroff"}
WAIT_KEY, RESTORE_KEY = "auto_shutdown_wait", "auto_shutdown_restore"
FIRST_VERSION = 11_002_000  # libvirt 11.2.0 added the settings; older daemons ignore them
SYSTEM_CONF = Path("/etc/libvirt/qemu.conf")
ENV_QEMU_CONF = "LIBVIRT_GUESTS_QEMU_CONF"  # the system daemon's qemu.conf (tests)
MAX_CONF_BYTES = 1024 * 1024
BUILTIN_WAIT = 30  # auto_shutdown_wait = 0 means this
# A process's start is known to the second only (/proc/stat's btime is whole seconds): a file written in the
# second before the daemon started (a restart right after the edit) must not count as changed since.
START_SLACK = 1.5


@dataclass(frozen=True)
class Settings:
    """The daemon's auto-shutdown settings, checked as libvirt checks them."""

    save: str = "none"
    shutdown: str = "none"
    poweroff: str = "none"
    wait: int = BUILTIN_WAIT
    restore: bool = True

    def scope(self, action: str) -> str:
        return str(getattr(self, action))

    @property
    def on(self) -> bool:
        return any(self.scope(a) != "none" for a in ACTIONS)

    def text(self) -> str:
        return ", ".join([*(f"{KEYS[a]}={self.scope(a)}" for a in ACTIONS),
                          f"{WAIT_KEY}={self.wait}", f"{RESTORE_KEY}={int(self.restore)}"])


SYSTEM_DEFAULTS = Settings()
SESSION_DEFAULTS = Settings(save="persistent", shutdown="all", poweroff="all")


class SettingsError(ValueError):
    """A value libvirt refuses: the daemon does not load such a file."""


def covered(scope: str, persistent: bool) -> bool:
    return scope == "all" or scope == ("persistent" if persistent else "transient")


def settings_from_text(text: str, defaults: Settings) -> Settings:
    """The settings a file gives over ``defaults``; SettingsError (ConfSyntaxError included) when libvirt would
    refuse the file."""
    try:
        entries = parse(text)
    except ConfSyntaxError as err:
        raise SettingsError(f"not valid libvirt configuration syntax ({err})") from None
    found: dict[str, tuple[Value, int]] = {}
    for name, value, line in entries:
        if name in (*KEYS.values(), WAIT_KEY, RESTORE_KEY):
            if name in found and found[name][0] != value:
                raise SettingsError(f"{name} is set twice, differently (lines {found[name][1]} and {line})")
            found.setdefault(name, (value, line))
    values: dict[str, object] = {}
    for action, key in KEYS.items():
        if key not in found:
            continue
        value, line = found[key]
        if not isinstance(value, str) or value not in SCOPES:
            raise SettingsError(f"{key} = {shown(str(value))} (line {line}) is not one of {', '.join(SCOPES)}")
        if action == "save" and value in ("transient", "all"):
            raise SettingsError(f"{key} = {value!r} (line {line}): libvirt refuses it (no managed save of "
                                "transient guests)")
        values[action] = value
    if WAIT_KEY in found:
        value, line = found[WAIT_KEY]
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise SettingsError(f"{WAIT_KEY} = {shown(str(value))} (line {line}) is not a number of seconds")
        values["wait"] = value or BUILTIN_WAIT
    if RESTORE_KEY in found:
        value, line = found[RESTORE_KEY]
        if value not in (0, 1) or isinstance(value, str):
            raise SettingsError(f"{RESTORE_KEY} = {shown(str(value))} (line {line}) is not 0 or 1")
        values["restore"] = bool(value)
    return Settings(**{**defaults.__dict__, **values})  # type: ignore[arg-type]


@dataclass(frozen=True)
class DaemonShutdown:
    """What a URI's daemon does at a host shutdown: ``state`` is "on", "off" or "unknown"; ``reason`` says
    why in one line (the file read or the defaults, or what makes it unknown)."""

    uri: str
    state: str
    reason: str
    settings: Settings | None = None

    def actions_for(self, persistent: bool) -> tuple[str, ...] | None:
        """The daemon's actions that apply to such a guest, in its order (None: unknown)."""
        if self.settings is None or self.state == "unknown":
            return None
        return tuple(a for a in ACTIONS if covered(self.settings.scope(a), persistent))

    def covers(self, persistent: bool) -> bool | None:
        actions = self.actions_for(persistent)
        return None if actions is None else bool(actions)

    def restores(self, persistent: bool) -> bool | None:
        """Will the daemon start such a guest itself after taking it down (autostart once)?"""
        covers = self.covers(persistent)
        if covers is None or self.settings is None:
            return None
        return covers and persistent and self.settings.restore  # transient guests are gone once off


def daemon_kind(uri: str) -> str | None:
    """"system" or "session" for a local QEMU URI that names the daemon plainly, else None."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme not in ("qemu", "qemu+unix") or parts.netloc or parts.query or parts.fragment:
        return None
    return {"/system": "system", "/session": "session"}.get(parts.path)


def conf_path(kind: str, environ: Mapping[str, str] | None = None) -> Path:
    """The qemu.conf the daemon of that kind reads (the session's: of the user running this)."""
    env = os.environ if environ is None else environ
    if kind == "system":
        return Path(env.get(ENV_QEMU_CONF) or SYSTEM_CONF)
    config_home = env.get("XDG_CONFIG_HOME") or ""
    if not config_home.startswith("/"):
        home = env.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir
        config_home = f"{home}/.config"
    return Path(config_home) / "libvirt" / "qemu.conf"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def classify(uri: str, *, version: int | None = None, conf: Path | None = None,
             daemon_started: float | None = None, environ: Mapping[str, str] | None = None) -> DaemonShutdown:
    """What ``uri``'s daemon does at a host shutdown.

    ``version``: the daemon's libvirt version (None: not known, the file is judged alone); ``conf``: the file
    to read instead of the daemon's own; ``daemon_started``: when the running daemon started (epoch seconds;
    None: not running or not known), to tell a file changed since."""
    kind = daemon_kind(uri)
    if kind is None:
        return DaemonShutdown(uri, "unknown", f"{shown_uri(uri)} is not a local qemu:///system or qemu:///session "
                              "URI: its daemon's configuration cannot be read from here")
    defaults = SYSTEM_DEFAULTS if kind == "system" else SESSION_DEFAULTS
    if version is not None and version < FIRST_VERSION:
        return DaemonShutdown(uri, "off", f"libvirt {version // 1_000_000}.{version // 1000 % 1000}."
                              f"{version % 1000} has no shutdown handling of its own (added in 11.2)")
    path = conf or conf_path(kind, environ)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONF_BYTES + 1)
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        settings, source, mtime = defaults, f"{shown(str(path))} does not exist: the {kind} daemon's defaults", 0.0
    except OSError as err:
        return DaemonShutdown(uri, "unknown", f"{shown(str(path))} cannot be read: {shown(err.strerror or '')}")
    else:
        if len(data) > MAX_CONF_BYTES:
            return DaemonShutdown(uri, "unknown", f"{shown(str(path))} is over {MAX_CONF_BYTES} bytes: not read")
        try:
            settings = settings_from_text(data.decode("utf-8", errors="surrogateescape"), defaults)
        except SettingsError as err:
            return DaemonShutdown(uri, "unknown", f"{shown(str(path))}: {err}; libvirt does not load it")
        source = shown(str(path))
    if daemon_started is not None and mtime > daemon_started + START_SLACK:
        return DaemonShutdown(uri, "unknown", f"{source} changed at {_stamp(mtime)}, after the daemon started "
                              f"({_stamp(daemon_started)}): the settings it uses are not known", settings)
    state = "on" if settings.on else "off"
    return DaemonShutdown(uri, state, f"{source}: {settings.text()}", settings)


def qemu_driver(uri: str) -> bool:
    """A URI of the QEMU driver (local or remote): the only driver with such a handling of its own."""
    try:
        return urlsplit(uri).scheme.split("+")[0] == "qemu"
    except ValueError:
        return False


def of_daemon(uri: str, version: int | None) -> DaemonShutdown:
    """``classify`` for the daemon that serves ``uri`` now (its start time read from /proc for qemu:///system,
    unless another file stands for its qemu.conf: LIBVIRT_GUESTS_QEMU_CONF, in tests)."""
    own_file = not os.environ.get(ENV_QEMU_CONF)
    started = system_daemon_started() if daemon_kind(uri) == "system" and own_file else None
    return classify(uri, version=version, daemon_started=started)


def who_acts(daemon: DaemonShutdown, persistent: bool) -> str:
    """Who takes such a guest down at a host shutdown through logind: "libvirtd" (we wait for it, then act if
    it still runs), "us", or "unknown" (we act, and it may too)."""
    covers = daemon.covers(persistent)
    return "unknown" if covers is None else "libvirtd" if covers else "us"


def local_version() -> int | None:
    """This host's libvirt library version (the daemon's, where it is installed with it), without connecting."""
    try:
        return int(libvirt.getVersion())
    except (libvirt.libvirtError, TypeError, ValueError):
        return None


def of_hypervisor(hv: Hypervisor) -> DaemonShutdown | None:
    """The handling of the daemon behind a connection (``default`` resolved; the daemon's own version), or
    None for a driver that has none (not QEMU)."""
    uri = hv.connected_uri() or hv.uri
    if not qemu_driver(uri):
        return None
    try:
        version: int | None = int(hv.conn.getLibVersion()) if hv.conn is not None else None
    except libvirt.libvirtError:
        version = None
    return of_daemon(uri, version)
