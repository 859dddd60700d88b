"""The configuration variables, one declarative entry each.

This table is the single source for parsing, validation, ``--help``, the
sample configuration file, ``check-config`` and the man page.  Each entry
says how the variable is read strictly (what we accept), how the original
shell script would have read the same text (so ``check-config`` can flag
values the original silently misread), and its upstream and Debian defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTIONS = ("suspend", "shutdown", "poweroff")


class SettingError(ValueError):
    """A value that does not parse; the message says what is accepted."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def parse_uris(text: str) -> tuple[str, ...]:
    return _words(text)


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise SettingError("expected " + " or ".join(choices))
        return text

    return parse


def parse_chain(text: str) -> tuple[str, ...]:
    """An action chain: one or more of suspend, shutdown, poweroff, in order."""
    chain = _words(text)
    if not chain or any(word not in ACTIONS for word in chain):
        raise SettingError("expected one or more of suspend, shutdown, poweroff, separated by spaces")
    if len(set(chain)) != len(chain):
        raise SettingError("expected each action at most once")
    return chain


_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_seconds(text: str) -> int:
    """Whole seconds, 0 or more."""
    if not _INT.fullmatch(text.strip()):
        raise SettingError("expected a whole number of seconds, 0 or more")
    return int(text)


def parse_delay(text: str) -> float:
    """Seconds, 0 or more, fractions allowed (GNU sleep took them)."""
    if not _DECIMAL.fullmatch(text.strip()):
        raise SettingError("expected a number of seconds, 0 or more (fractions allowed)")
    return float(text)


def parse_count(text: str) -> int:
    if not _INT.fullmatch(text.strip()):
        raise SettingError("expected a whole number, 0 or more")
    return int(text)


def parse_switch(text: str) -> bool:
    """0 is off, any other whole number is on (the original's 'non-zero')."""
    if not _INT.fullmatch(text.strip()):
        raise SettingError("expected 0 (off) or 1 (on)")
    return int(text) != 0


# How the original script reads the same text: used only to explain, in
# check-config, what the original would have done with a value.
def _legacy_exact(word: str, yes: str, no: str) -> Callable[[str], str]:
    return lambda text: yes if text == word else no


def _legacy_switch(text: str) -> str:
    return "off" if text == "0" else "on"


def _legacy_timeout(text: str) -> str:
    if re.fullmatch(r"-?[0-9]+", text.strip()):
        return text.strip()
    return "no timeout (the shell test fails on a non-number)"


def _legacy_parallel(text: str) -> str:
    if re.fullmatch(r"-?[0-9]+", text.strip()):
        return "parallel" if int(text) > 1 else "one after another"
    return "one after another (the shell test fails on a non-number)"


def _legacy_persistent_only(text: str) -> str:
    return text if text in ("true", "false") else "default"


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    accepts: str
    doc: str
    debian_default: str | None = None
    legacy: Callable[[str], str] | None = None
    since_original: bool = True  # False: our own addition

    @property
    def attr(self) -> str:
        return self.name.lower()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "URIS", "default", parse_uris, "URIs separated by spaces",
        "URIs to check for running guests, handled all at once. 'default' is "
        "libvirt's default URI (LIBVIRT_DEFAULT_URI, libvirt.conf, or "
        "qemu:///system for root). Example: URIS='default lxc:///system'",
    ),
    Setting(
        "ON_BOOT", "start", parse_choice("start", "ignore"), "start or ignore",
        "Action on host boot. start: every guest that was running at shutdown "
        "is started (restored from its saved state if it has one), whatever its "
        "autostart flag. ignore: no guest is started by libvirt-guests; guests "
        "marked autostart are still started by libvirtd.",
        debian_default="ignore", legacy=_legacy_exact("start", "start", "ignore"),
    ),
    Setting(
        "START_DELAY", "0", parse_delay, "seconds, 0 or more",
        "Seconds to wait between starting two guests. 0 starts guests in "
        "parallel (up to PARALLEL_START at once); more than 0 starts them one "
        "after another with this gap.",
    ),
    Setting(
        "ON_SHUTDOWN", "suspend", parse_chain,
        "one or more of suspend, shutdown, poweroff",
        "Action on host shutdown, or a chain of actions tried in order until one "
        "works. suspend: managed save (the guest's memory is written to disk and "
        "restored on start). shutdown: ask the guest to shut down (ACPI or guest "
        "agent) and wait up to SHUTDOWN_TIMEOUT. poweroff: pull the plug. "
        "Example: ON_SHUTDOWN='suspend shutdown poweroff'. A guest that ignores "
        "shutdown requests stays running unless the chain ends with poweroff.",
        debian_default="shutdown",
        legacy=_legacy_exact("shutdown", "shutdown", "suspend"),
    ),
    Setting(
        "PARALLEL_SHUTDOWN", "0", parse_count, "a whole number, 0 or more",
        "How many guests of one URI are shut down at once. 0 and 1 shut guests "
        "down one after another, each with its own SHUTDOWN_TIMEOUT; with more "
        "than 1, SHUTDOWN_TIMEOUT is one budget for all guests of the URI.",
        legacy=_legacy_parallel,
    ),
    Setting(
        "SHUTDOWN_TIMEOUT", "300", parse_seconds, "seconds, 0 or more",
        "Seconds to wait for a guest to shut down (per URI when PARALLEL_SHUTDOWN "
        "is more than 1). 0 waits forever: use with care, a guest may ignore the "
        "request. When it expires the guest moves to the next action of its chain.",
        legacy=_legacy_timeout,
    ),
    Setting(
        "BYPASS_CACHE", "0", parse_switch, "0 or 1",
        "1: bypass the host's file system cache when saving and restoring guests "
        "(may be slower on some file systems).",
        legacy=_legacy_switch,
    ),
    Setting(
        "SYNC_TIME", "0", parse_switch, "0 or 1",
        "1: set the guest's clock from the host's after it is resumed. Needs a "
        "guest agent with time synchronisation running in the guest; a failure "
        "is reported, not fatal.",
        legacy=_legacy_switch,
    ),
    Setting(
        "PERSISTENT_ONLY", "default", parse_choice("default", "true", "false"),
        "default, true or false",
        "Which guests are handled on shutdown. true: persistent guests only. "
        "false: transient guests too (a transient guest cannot be saved, so with "
        "suspend it moves to the next action of its chain). default: true when "
        "the first action is suspend, false otherwise.",
        legacy=_legacy_persistent_only,
    ),
    Setting(
        "PARALLEL_SAVE", "8", parse_count, "a whole number, 0 or more",
        "How many managed saves of one URI run at once (0 and 1: one at a time). "
        "Saving several guests at once is usually much faster than one after another.",
        since_original=False,
    ),
    Setting(
        "PAUSE_BEFORE_SAVE", "1", parse_switch, "0 or 1",
        "1: pause every guest about to be saved before the first save starts, so "
        "none keeps dirtying memory or taking CPU while others are written. A "
        "guest paused this way comes back running; one its user had paused comes "
        "back paused; one whose save fails is resumed.",
        since_original=False,
    ),
    Setting(
        "PARALLEL_START", "8", parse_count, "a whole number, 0 or more",
        "With START_DELAY=0, how many guests of one URI are started or restored "
        "at once (0 and 1: one at a time).",
        since_original=False,
    ),
    Setting(
        "SAVE_TIMEOUT", "0", parse_seconds, "seconds, 0 or more",
        "Seconds a managed save may take before it is aborted and the guest moves "
        "to the next action of its chain (0: no limit). An aborted save leaves "
        "no image behind.",
        since_original=False,
    ),
    Setting(
        "STOP_DEADLINE", "0", parse_seconds, "seconds, 0 or more",
        "Seconds the whole stop may take (0: no limit). At the deadline every "
        "guest not yet done gets the last action of its chain at once.",
        since_original=False,
    ),
    Setting(
        "CONNECT_TIMEOUT", "30", parse_seconds, "seconds, 0 or more",
        "Seconds to keep retrying a URI whose daemon does not answer yet (at boot, "
        "or after libvirtd restarted in the middle of a stop) before it is skipped.",
        since_original=False,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Variables older versions of the original knew and that are now ignored.
OBSOLETE = {name: "removed from libvirt-guests in 2019" for name in ("CONNECT_RETRIES", "RETRIES_SLEEP")}


def default_for(setting: Setting, flavour: str) -> str:
    """The default text of a setting for a defaults flavour (upstream or debian)."""
    if flavour == "debian" and setting.debian_default is not None:
        return setting.debian_default
    return setting.default
