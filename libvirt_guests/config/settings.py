"""The configuration variables, one declarative entry each.

This table is the single source for parsing, validation, ``--help``, the
sample configuration file, ``check-config`` and the man page.  Each entry
says how the variable is read strictly (what we accept), how the original
shell script would have read the same text (so ``check-config`` can flag
values the original silently misread), and its upstream and Debian defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTIONS = ("migrate", "suspend", "shutdown", "poweroff")
CHAIN_WORDS = "one or more of migrate, suspend, shutdown, poweroff"


class SettingError(ValueError):
    """A value that does not parse; the message says what is accepted."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def parse_uris(text: str) -> tuple[str, ...]:
    return _words(text)


_PEER_URI = re.compile(r"[a-z][a-z0-9+.-]*:[\x21-\x7e]*")


def parse_peer_uri(text: str) -> str:
    """One libvirt URI (qemu+ssh://peer/system), or empty for none."""
    text = text.strip()
    if text and not (_PEER_URI.fullmatch(text) and "://" in text):
        raise SettingError("expected one URI such as qemu+ssh://peer/system, or nothing")
    return text


def parse_data_uri(text: str) -> str:
    """Where a migration stream goes (tcp://10.0.0.2, tcp://[::1]:49152), or empty."""
    text = text.strip()
    if text and not (_PEER_URI.fullmatch(text) and "://" in text):
        raise SettingError("expected one URI such as tcp://10.0.0.2, or nothing")
    return text


def parse_peer_list(text: str) -> tuple[str, ...]:
    """MIGRATE_PEERS: libvirt URIs separated by spaces (or nothing)."""
    words = _words(text)
    for word in words:
        if not (_PEER_URI.fullmatch(word) and "://" in word):
            raise SettingError(f"expected libvirt URIs such as qemu+ssh://peer/system, separated by spaces; "
                               f"{word[:60]!r} is not one")
    return words


def parse_data_uri_list(text: str) -> tuple[str, ...]:
    """MIGRATE_DATA_URIS: URIs separated by spaces (or nothing)."""
    words = _words(text)
    for word in words:
        if not (_PEER_URI.fullmatch(word) and "://" in word):
            raise SettingError(f"expected URIs such as tcp://10.0.0.2, separated by spaces; {word[:60]!r} is not one")
    return words


# NUT's name of a UPS (upsname[@hostname[:port]], RFC 9271 section 5.1), the
# host in brackets when it is an IPv6 address.
_NUT_UPS = re.compile(r"(?P<name>[A-Za-z0-9_.-]{1,64})"
                      r"(@(?P<host>[A-Za-z0-9_.-]{1,253}|\[(?P<ip6>[0-9A-Fa-f:.]{2,45})\])(:(?P<port>[0-9]{1,5}))?)?")
NUT_PORT = 3493


def split_nut_ups(text: str) -> tuple[str, str, int] | None:
    """(ups name, host, port) of a NUT_UPS value, None if it is not one."""
    match = _NUT_UPS.fullmatch(text.strip())
    if match is None:
        return None
    port = int(match["port"] or NUT_PORT)
    if not 0 < port < 65536:
        return None
    return match["name"], match["ip6"] or match["host"] or "localhost", port


def parse_nut_ups(text: str) -> str:
    """NUT_UPS: a UPS as NUT names it (ups@host[:port]), or nothing."""
    text = text.strip()
    if text and split_nut_ups(text) is None:
        raise SettingError("expected a UPS as NUT names it, such as ups@localhost or ups@10.0.0.5:3493, or nothing")
    return text


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise SettingError("expected " + " or ".join(choices))
        return text

    return parse


def parse_chain(text: str) -> tuple[str, ...]:
    """An action chain: one or more of migrate, suspend, shutdown, poweroff, in order."""
    chain = _words(text)
    if not chain or any(word not in ACTIONS for word in chain):
        raise SettingError(f"expected {CHAIN_WORDS}, separated by spaces")
    if len(set(chain)) != len(chain):
        raise SettingError("expected each action at most once")
    return chain


_INT = re.compile(r"[0-9]+")
_SIGNED_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")

# The longest wait any setting may ask for: every timer of the standard
# library takes it, and a larger number is a typo, not a wish.
MAX_SECONDS = 2**31 - 1
# START_DELAY above this is taken for "wait forever", which the original's
# sleep would do and a boot must not.
MAX_START_DELAY = 86400 * 365


def _whole(text: str, signed: bool = False) -> int | None:
    """A whole number as the shell's test reads it (surrounding blanks, leading
    zeros and, if signed, a sign taken), or None for any other text. Its
    digits are counted before int() sees them: int() refuses more than 4,300
    (ValueError), and any value past 10 digits is out of every range here
    anyway, so one is returned that is (dash's test refuses such a number
    too, "Illegal number", unless its digits past the tenth are leading zeros)."""
    match = (_SIGNED_INT if signed else _INT).fullmatch(text.strip())
    if match is None:
        return None
    digits = match[0].lstrip("+-").lstrip("0") or "0"
    sign = -1 if match[0].startswith("-") else 1
    if len(digits) > len(str(MAX_SECONDS)):
        return sign * (MAX_SECONDS + 1)
    return sign * int(digits)


def parse_seconds(text: str) -> int:
    """Whole seconds, 0 or more."""
    value = _whole(text)
    if value is None or value > MAX_SECONDS:
        raise SettingError(f"expected a whole number of seconds, 0 to {MAX_SECONDS}")
    return value


def parse_timeout(text: str) -> int:
    """SHUTDOWN_TIMEOUT: whole seconds, 0 or more; a leading + as the shell's test takes it."""
    value = _whole(text, signed=True)
    if value is None or not 0 <= value <= MAX_SECONDS:
        raise SettingError(f"expected a whole number of seconds, 0 to {MAX_SECONDS}")
    return value


def parse_delay(text: str) -> float:
    """Seconds, 0 or more, fractions allowed (GNU sleep took them)."""
    if not _DECIMAL.fullmatch(text.strip()) or float(text) > MAX_START_DELAY:
        raise SettingError(f"expected a number of seconds, 0 to {MAX_START_DELAY} (fractions allowed)")
    return float(text)


# One argument of GNU sleep: a number as strtod(3) reads it (decimal or hex,
# with an exponent), then at most one unit letter.
_SLEEP_WORD = re.compile(
    r"(?P<number>[+-]?(?:"
    r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|(?i:inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)))(?P<unit>[smhd]?)",
)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _sleep_total(text: str) -> float | None:
    """What `sleep $START_DELAY` would wait (inf included); None where sleep refuses it."""
    words = text.split()
    if not words:
        return None
    total = 0.0
    for word in words:
        match = _SLEEP_WORD.fullmatch(word)
        if match is None:
            return None
        number = match["number"]
        try:
            value = float.fromhex(number) if "x" in number.lower() else float(number)
        except (ValueError, OverflowError):
            value = math.inf
        if not value >= 0:  # negative or NaN: sleep refuses it
            return None
        total += value * _UNITS[match["unit"]]
    return total


def parse_sleep(text: str) -> float:
    """START_DELAY as the original's unquoted `sleep $START_DELAY` reads it:
    one or more numbers (fractions, exponents, hex), each with an optional
    unit s, m, h or d, added up."""
    total = _sleep_total(text)
    if total is None:
        raise SettingError("expected what sleep(1) takes: seconds, or a number with s, m, h or d "
                           "(1m, 0.5, 2h); several are added up")
    if total > MAX_START_DELAY:  # inf included: sleep would wait for ever
        raise SettingError(f"expected at most {MAX_START_DELAY} seconds; more is waiting for ever")
    return total


def parse_ceiling(text: str) -> int | None:
    """A POLICY_MAX_... ceiling: whole seconds, 0 (no ceiling) or more; empty: the host's own value (None)."""
    if not text.strip():
        return None
    if not _INT.fullmatch(text.strip()) or int(text) > MAX_SECONDS:
        raise SettingError(f"expected nothing or a whole number of seconds, 0 to {MAX_SECONDS}")
    return int(text)


def parse_count(text: str) -> int:
    value = _whole(text)
    if value is None or value > MAX_SECONDS:
        raise SettingError("expected a whole number, 0 or more")
    return value


def parse_shell_count(text: str) -> int:
    """PARALLEL_SHUTDOWN: a whole number, 0 or more, as the shell's test reads it (leading + taken)."""
    value = _whole(text, signed=True)
    if value is None or not 0 <= value <= MAX_SECONDS:
        raise SettingError("expected a whole number, 0 or more")
    return value


_SIZE = re.compile(r"([0-9]+)([KMGT]?)(i?B)?", re.I)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_SIZE = 1024**6  # an exbibyte: more is a typo


def parse_size(text: str) -> int:
    """SAVE_RESERVE: bytes, or a whole number with K, M, G or T (powers of 1024; KiB, MB... taken too)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or len(match[1]) > 19 or int(match[1]) * _SIZE_UNITS[match[2].upper()] > MAX_SIZE:
        raise SettingError("expected a size: bytes, or a whole number with K, M, G or T (512M, 2G)")
    return int(match[1]) * _SIZE_UNITS[match[2].upper()]


def parse_guest_names(text: str) -> tuple[str, ...]:
    """SAVE_PRIORITY: guest names or UUIDs separated by spaces, each at most once."""
    words = _words(text)
    if len(set(words)) != len(words):
        raise SettingError("expected guest names or UUIDs separated by spaces, each at most once")
    return words


def parse_switch(text: str) -> bool:
    """One of our own switches: 0 is off, any other whole number is on."""
    value = _whole(text)
    if value is None:
        raise SettingError("expected 0 (off) or 1 (on)")
    return value != 0


def parse_original_switch(text: str) -> bool:
    """BYPASS_CACHE, SYNC_TIME: the original tests `"x$VAR" = x0`, so
    anything but exactly 0 (empty, no, off included) is on."""
    return text != "0"


# How the original reads a value we refuse: the text to use instead; None
# where the original refuses it or waits for ever (the default is used then).
def _as_original(text_to_use: str) -> Callable[[str], str | None]:
    return lambda _text: text_to_use


# What the original does with a value we refuse, for check-config.
def _explain_timeout(text: str) -> str:
    if re.fullmatch(r"\s*-[0-9]+\s*", text):
        return ("the original script refuses to shut guests down with it (exit 6, 'SHUTDOWN_TIMEOUT must be "
                "equal or greater than 0'); with suspend it does not read it")
    return "the original script waits for ever for each guest it shuts down (its test fails on this text)"


def _explain_sleep(text: str) -> str:
    if _sleep_total(text) is None:
        return "the original script's sleep fails on it: guests start with no delay, after an error message"
    return "the original script's sleep would wait for ever before the second guest"


def _explain_parallel(_text: str) -> str:
    return "the original script's test fails on it: guests are shut down one after another"


def _words_are(*allowed: str) -> Callable[[str], bool]:
    return lambda text: text in allowed


def _is_digits(text: str) -> bool:
    return bool(_INT.fullmatch(text))


def _is_decimal(text: str) -> bool:
    return bool(_DECIMAL.fullmatch(text))


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    accepts: str
    doc: str
    debian_default: str | None = None
    # For a value `parse` refuses: the text to use, as the original reads it;
    # None (or no legacy at all): the default is used.
    legacy: Callable[[str], str | None] | None = None
    since_original: bool = True  # False: our own addition
    # Which operations read it ("stop", "start"): a bad value fails only those.
    used_by: tuple[str, ...] = ()
    # False for a text `parse` takes but the documentation does not write so
    # (check-config notes it); None: everything parse takes is canonical.
    canonical: Callable[[str], bool] | None = None
    # The original's own defaults that its script sets before it sources the
    # file (so `$NAME` there sees them); None: both flavours do, if since_original.
    preset_in: tuple[str, ...] | None = None
    # What the original does with a value `parse` refuses (check-config note).
    explain: Callable[[str], str] | None = None

    @property
    def attr(self) -> str:
        return self.name.lower()

    def preset(self, flavour: str) -> bool:
        """True when the original script of this flavour sets it before reading the file."""
        return self.since_original and (self.preset_in is None or flavour in self.preset_in)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="URIS", default="default", parse=parse_uris, accepts="URIs separated by spaces",
        doc="URIs to check for running guests, handled all at once. 'default' is "
        "libvirt's default URI (LIBVIRT_DEFAULT_URI, libvirt.conf, or "
        "qemu:///system for root). Example: URIS='default lxc:///system'",
        used_by=("stop", "start"),
    ),
    Setting(
        name="ON_BOOT", default="start", parse=parse_choice("start", "ignore"), accepts="start or ignore",
        doc="Action on host boot. start: every guest that was running at shutdown "
        "is started (restored from its saved state if it has one), whatever its "
        "autostart flag. ignore: no guest is started by libvirt-guests; guests "
        "marked autostart are still started by libvirtd.",
        debian_default="ignore", legacy=_as_original("ignore"), used_by=("start",),
    ),
    Setting(
        name="START_DELAY", default="0", parse=parse_sleep, accepts="seconds, 0 or more",
        doc="Seconds to wait between starting two guests. 0 starts guests in "
        "parallel (up to PARALLEL_START at once); more than 0 starts them one "
        "after another with this gap. Read as sleep(1) reads it: 1m, 0.5, 2h, '1m 30s'.",
        used_by=("start",), canonical=_is_decimal, explain=_explain_sleep,
    ),
    Setting(
        name="ON_SHUTDOWN", default="suspend", parse=parse_chain,
        accepts=CHAIN_WORDS,
        doc="Action on host shutdown, or a chain of actions tried in order until one "
        "works. migrate: move the running guest live to the peer host MIGRATE_URI "
        "(it keeps running there; see MIGRATE_TIMEOUT). "
        "suspend: managed save (the guest's memory is written to disk and "
        "restored on start). shutdown: ask the guest to shut down (ACPI or guest "
        "agent) and wait up to SHUTDOWN_TIMEOUT. poweroff: pull the plug. "
        "Example: ON_SHUTDOWN='suspend shutdown poweroff' or 'migrate suspend shutdown'. "
        "A guest that ignores shutdown requests stays running unless the chain ends with poweroff.",
        debian_default="shutdown", legacy=_as_original("suspend"), used_by=("stop",),
    ),
    Setting(
        name="PARALLEL_SHUTDOWN", default="0", parse=parse_shell_count, accepts="a whole number, 0 or more",
        doc="How many guests of one URI are shut down at once. 0 and 1 shut guests "
        "down one after another, each with its own SHUTDOWN_TIMEOUT; with more "
        "than 1, SHUTDOWN_TIMEOUT is one budget for all guests of the URI.",
        legacy=_as_original("0"), used_by=("stop",), canonical=_is_digits, explain=_explain_parallel,
    ),
    Setting(
        name="SHUTDOWN_TIMEOUT", default="300", parse=parse_timeout, accepts="seconds, 0 or more",
        doc="Seconds to wait for a guest to shut down (per URI when PARALLEL_SHUTDOWN "
        "is more than 1). 0 waits forever: use with care, a guest may ignore the "
        "request. When it expires the guest moves to the next action of its chain.",
        used_by=("stop",), canonical=_is_digits, explain=_explain_timeout,
    ),
    Setting(
        name="BYPASS_CACHE", default="0", parse=parse_original_switch, accepts="0 or 1",
        doc="1: bypass the host's file system cache when saving and restoring guests "
        "(may be slower on some file systems). As in the original, anything but 0 is on.",
        used_by=("stop", "start"), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="SYNC_TIME", default="0", parse=parse_original_switch, accepts="0 or 1",
        doc="1: set the guest's clock from the host's after it is resumed. Needs a "
        "guest agent with time synchronisation running in the guest; a failure "
        "is reported, not fatal. As in the original, anything but 0 is on.",
        used_by=("start",), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="PERSISTENT_ONLY", default="default", parse=parse_choice("default", "true", "false"),
        accepts="default, true or false",
        doc="Which guests are handled on shutdown. true: persistent guests only. "
        "false: transient guests too (a transient guest cannot be saved, so with "
        "suspend it moves to the next action of its chain). default: true when "
        "the first action is suspend, false otherwise (a chain that starts with "
        "migrate moves transient guests too).",
        legacy=_as_original("default"), used_by=("stop",), preset_in=("upstream",),
    ),
    Setting(
        name="PARALLEL_SAVE", default="8", parse=parse_count, accepts="a whole number, 0 or more",
        doc="How many managed saves of one URI run at once (0 and 1: one at a time). "
        "Saving several guests at once is usually much faster than one after another.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="PAUSE_BEFORE_SAVE", default="1", parse=parse_switch, accepts="0 or 1",
        doc="1: pause every guest about to be saved before the first save starts, so "
        "none keeps dirtying memory or taking CPU while others are written. A "
        "guest paused this way comes back running; one its user had paused comes "
        "back paused; one whose save fails is resumed.",
        since_original=False, used_by=("stop",), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="SAVE_RESERVE", default="512M", parse=parse_size, accepts="a size such as 512M or 2G",
        doc="Room kept free in the file system of libvirt's save directory (/var/lib/libvirt/qemu/save "
        "for qemu:///system): before the first save, stop adds up the most each guest's save can "
        "write (its memory and device state) and saves only the guests that fit in the free space "
        "less this reserve; the others take the next action of their chain. Keep room here for "
        "the rest of the host, and for our list and state files when they share that file system.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="SAVE_PRIORITY", default="", parse=parse_guest_names, accepts="guest names or UUIDs, or empty",
        doc="Which guests get the room and the time to be saved first, highest first; the "
        "guests not named come after them, smaller first (so that as many as possible are saved). "
        "A guest's own policy cannot change its rank.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="PARALLEL_START", default="8", parse=parse_count, accepts="a whole number, 0 or more",
        doc="With START_DELAY=0, how many guests of one URI are started or restored "
        "at once (0 and 1: one at a time).",
        since_original=False, used_by=("start",),
    ),
    Setting(
        name="SAVE_TIMEOUT", default="0", parse=parse_seconds, accepts="seconds, 0 or more",
        doc="Seconds a managed save may take before it is aborted and the guest moves "
        "to the next action of its chain (0: no limit). An aborted save leaves "
        "no image behind.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="STOP_DEADLINE", default="0", parse=parse_seconds, accepts="seconds, 0 or more",
        doc="Seconds the whole stop may take (0: no limit). At the deadline every "
        "guest not yet done gets the last action of its chain at once.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="NUT_UPS", default="", parse=parse_nut_ups, accepts="a UPS as NUT names it (ups@host[:port]), or nothing",
        doc="A UPS served by NUT's upsd (ups@localhost). When stop begins and it reports being on battery "
        "(ups.status OB), the stop's deadline becomes the smaller of STOP_DEADLINE and its battery.runtime "
        "less NUT_RESERVE. The query takes at most about 2 s; if it fails, STOP_DEADLINE is used. Empty: off.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="NUT_RESERVE", default="60", parse=parse_seconds, accepts="seconds, 0 or more",
        doc="Seconds of battery runtime kept for the rest of the host's shutdown when NUT_UPS is on battery.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="CONNECT_TIMEOUT", default="30", parse=parse_seconds, accepts="seconds, 0 or more",
        doc="Seconds to keep retrying a URI whose daemon does not answer yet (at boot, "
        "or after libvirtd restarted in the middle of a stop) before it is skipped.",
        since_original=False, used_by=("stop", "start"),
    ),
    Setting(
        name="GUEST_POLICY", default="1", parse=parse_switch, accepts="0 or 1",
        doc="1: each guest's own policy (the <policy> element of its metadata, see the "
        "policy command) may change how it is handled, within the POLICY_MAX_... ceilings and "
        "MIGRATE_PEERS. 0: the metadata is not read at all; every guest gets the host-wide settings. "
        "The metadata is written by whoever may edit a domain's XML, not by the host's admin.",
        since_original=False, used_by=("stop", "start"), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="POLICY_MAX_SHUTDOWN_TIMEOUT", default="", parse=parse_ceiling,
        accepts="seconds, 0 or more, or empty",
        doc="The longest shutdown_timeout a guest's own policy may ask for; a longer one is cut "
        "to it. Empty: SHUTDOWN_TIMEOUT (a guest may shorten its wait, not lengthen it). 0: no "
        "ceiling. A guest's shutdown_timeout=0 means the host's rule, never 'wait for ever'.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="POLICY_MAX_SAVE_TIMEOUT", default="", parse=parse_ceiling, accepts="seconds, 0 or more, or empty",
        doc="The longest save_timeout a guest's own policy may ask for; a longer one is cut to it. "
        "Empty: SAVE_TIMEOUT (0 there: no limit, so no ceiling). 0: no ceiling. A guest's "
        "save_timeout=0 means SAVE_TIMEOUT, never 'no limit'.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="POLICY_MAX_START_DELAY", default="", parse=parse_ceiling, accepts="seconds, 0 or more, or empty",
        doc="The longest start_delay a guest's own policy may ask for; a longer one is cut to it. "
        "Empty: START_DELAY. 0: no ceiling (a day at most).",
        since_original=False, used_by=("start",),
    ),
    Setting(
        name="POLICY_MAX_START_DELAY_TOTAL", default="", parse=parse_ceiling,
        accepts="seconds, 0 or more, or empty",
        doc="The most start may wait, per URI, for the start_delay of guests' own policies, "
        "all order groups together; once it is spent the next groups start without waiting. "
        "Empty: POLICY_MAX_START_DELAY's value. 0: no bound but each guest's ceiling.",
        since_original=False, used_by=("start",),
    ),
    Setting(
        name="MIGRATE_URI", default="", parse=parse_peer_uri, accepts="one libvirt URI, or empty",
        doc="The peer host the migrate action moves guests to, e.g. qemu+ssh://peer/system or "
        "qemu+tcp://10.0.0.2/system (empty: no peer; a guest's own policy may choose one of "
        "MIGRATE_PEERS with migrate_to). The guest is migrated live and defined on the peer; here its "
        "autostart is turned off (and remembered) so it never runs on two hosts. Before "
        "starting a listed guest, start asks the peer and leaves alone one that runs there.",
        since_original=False, used_by=("stop", "start"),
    ),
    Setting(
        name="MIGRATE_DATA_URI", default="", parse=parse_data_uri, accepts="one URI, or empty",
        doc="Where the migration stream goes, e.g. tcp://10.0.0.2 (a dedicated migration "
        "network). Empty: the peer names its own host name, which must resolve here.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="MIGRATE_PEERS", default="", parse=parse_peer_list, accepts="libvirt URIs separated by spaces, or empty",
        doc="The peers a guest's own policy may choose with migrate_to, besides MIGRATE_URI "
        "(always allowed). A guest's migrate_to must be one of these strings exactly; any other is "
        "refused with a warning and the guest takes the next action of its chain. Only these "
        "strings are ever opened, by stop and by start (which asks a guest's peer before starting "
        "it); a guest the last stop recorded on a peer no longer allowed is not started. "
        "Set it when guests name their own peers.",
        since_original=False, used_by=("stop", "start"),
    ),
    Setting(
        name="MIGRATE_DATA_URIS", default="", parse=parse_data_uri_list, accepts="URIs separated by spaces, or empty",
        doc="The migration stream destinations a guest's own policy may choose with "
        "migrate_data_uri, besides MIGRATE_DATA_URI. Any other value is refused with a warning and "
        "MIGRATE_DATA_URI is used.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="PARALLEL_MIGRATE", default="2", parse=parse_count, accepts="a whole number, 0 or more",
        doc="How many guests of one URI are migrated at once (0 and 1: one at a time).",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="MIGRATE_TIMEOUT", default="300", parse=parse_seconds, accepts="seconds, 0 or more",
        doc="Seconds one guest's migration may take (0: no limit). On expiry the migration is "
        "aborted, the guest keeps running here and moves to the next action of its chain. "
        "At STOP_DEADLINE a migration under way is aborted too.",
        since_original=False, used_by=("stop",),
    ),
    Setting(
        name="MIGRATE_UNDEFINE", default="0", parse=parse_switch, accepts="0 or 1",
        doc="1: remove a migrated guest's definition here (it lives on the peer only). 0: keep "
        "it here, shut off with autostart off, so the guest is not lost if the peer is.",
        since_original=False, used_by=("stop",), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="MIGRATE_BACK", default="0", parse=parse_switch, accepts="0 or 1",
        doc="1: with ON_BOOT=start, start brings the guests the last stop migrated back from "
        "the peer, live, and restores their autostart flag. 0: they stay on the peer.",
        since_original=False, used_by=("start",), canonical=_words_are("0", "1"),
    ),
    Setting(
        name="MIGRATE_BACK_DATA_URI", default="", parse=parse_data_uri, accepts="one URI, or empty",
        doc="With MIGRATE_BACK=1: where the stream of a guest coming back goes (this host's "
        "address on the migration network, e.g. tcp://10.0.0.1). Empty: this host's name, "
        "which must resolve on the peer.",
        since_original=False, used_by=("start",),
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
