"""Reading the command line: the commands, the options (accepted anywhere on
the line), the usage lines, and the one-line reason given with exit 2.

One table per thing (commands.Command, OPTIONS, POLICY_OPTIONS) drives the parser,
--help, the man page, the README check and the bash completion test."""

from __future__ import annotations

import difflib
import math
import os
import sys
from dataclasses import dataclass, field

from libvirt_guests.config.commands import Command
from libvirt_guests.config.flavour import Flavour, resolve
from libvirt_guests.config.load import CONFIG_CANDIDATES, DEFAULT_LIST_FILE, DEFAULT_LOCK_FILE, ENV_DEFAULTS, FLAVOURS
from libvirt_guests.config.policy import ATTRIBUTES, BY_ATTRIBUTE
from libvirt_guests.config.settings import SettingError
from libvirt_guests.output import tr

ENV_LOCK_WAIT = "LIBVIRT_GUESTS_LOCK_WAIT"
# Not in --help: the bash completion asks for guest names with it.
COMPLETE_GUESTS = "__complete-guests"


@dataclass(frozen=True)
class Option:
    flag: str
    metavar: str | None  # None: a switch
    dest: str
    env: str | None
    text: str

    @property
    def synopsis(self) -> str:
        return f"{self.flag} {self.metavar}" if self.metavar else self.flag


OPTIONS: tuple[Option, ...] = (
    Option("--config", "FILE", "config", "LIBVIRT_GUESTS_CONFIG",
           "Configuration file. Default: the first of " + ", ".join(str(p) for p in CONFIG_CANDIDATES)
           + " that exists."),
    Option("--list-file", "FILE", "list_file", "LIBVIRT_GUESTS_LIST_FILE",
           f"List file of the guests to start at boot. Default: {DEFAULT_LIST_FILE}."),
    Option("--lock-file", "FILE", "lock_file", "LIBVIRT_GUESTS_LOCK_FILE",
           f"Lock file marking 'started'. Default: {DEFAULT_LOCK_FILE}."),
    Option("--state-file", "FILE", "state_file", "LIBVIRT_GUESTS_STATE_FILE",
           "Per-guest state journal. Default: the list file followed by .state; its run lock is that name "
           "followed by .lock."),
    Option("--defaults", "upstream|debian", "defaults", ENV_DEFAULTS,
           "Whose defaults apply to variables the configuration leaves unset: upstream's (ON_BOOT=start, "
           "ON_SHUTDOWN=suspend) or Debian's (ON_BOOT=ignore, ON_SHUTDOWN=shutdown). Default: the choice built "
           "in by the package that installed this copy (Debian's package: debian), else upstream."),
    Option("--lock-wait", "SECONDS", "lock_wait", ENV_LOCK_WAIT,
           "How long start and stop wait for another running invocation before giving up with exit 1. "
           "Default: 300."),
    Option("--json", None, "json", None,
           "Machine-readable output (one JSON object) for "
           + ", ".join(c for c in Command if c.takes_json()) + "."),
    Option("--help", None, "help", None, "Print the help and exit 0 (also -h, and the help command)."),
    Option("--version", None, "version", None, "Print the program name and version and exit 0."),
)
BY_FLAG = {option.flag: option for option in OPTIONS} | {"-h": OPTIONS[-2]}
POLICY_OPTIONS: dict[str, str | None] = {  # flag -> metavar (None: a switch)
    "--uri": "URI",
    **{"--" + a.name.replace("_", "-"): a.name.upper() for a in ATTRIBUTES},
    "--clear": None,
}


class UsageError(Exception):
    """Exit 2: the original's usage line, then this reason."""


@dataclass(frozen=True)
class Fault:
    """Something on the command line that cannot be used. A command that
    acts on guests (stop above all: it runs once, unattended, at shutdown)
    says it on one line and goes on without it; any other refuses (exit 2)."""

    message: str
    value: bool = False  # an option's value (the run exits 6), else a word (exit 2)
    dest: str = ""  # the option whose value it is


@dataclass
class PolicyArgs:
    guest: str
    uri: str | None = None
    changes: dict[str, str] = field(default_factory=dict)  # attribute -> text, each already valid
    clear: bool = False


@dataclass
class Invocation:
    """What the command line asks for. `defaults` is the flavour in force,
    whatever set it (see flavour.resolve)."""

    command: str | None = None
    args: list[str] = field(default_factory=list)
    config: str | None = None
    list_file: str | None = None
    lock_file: str | None = None
    state_file: str | None = None
    defaults: str | None = None
    flavour: Flavour | None = None
    lock_wait: float | None = None
    json: bool = False
    help: bool = False
    version: bool = False
    which: str = "stop"  # plan
    check_file: str | None = None  # check-config
    policy: PolicyArgs | None = None
    # What cannot be used (only ever set for a command that acts on guests).
    faults: list[Fault] = field(default_factory=list)


def program_name() -> str:
    """What the usage line calls us: the original printed its $0 (a wrapper
    such as Debian's diverted libvirt-guests.sh passes its own)."""
    if os.environ.get("LIBVIRT_GUESTS_PROGRAM_NAME"):
        return os.environ["LIBVIRT_GUESTS_PROGRAM_NAME"]
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "libvirt-guests"
    return "libvirt-guests" if name in ("__main__.py", "-c", "") else sys.argv[0]


def usage_lines() -> list[str]:
    """The original's usage line, unchanged (log readers and translations
    rely on it), then a line of its own for the commands it did not have."""
    name = program_name()
    first = tr(
        "Usage: $program_name {start|stop|status|restart|condrestart|try-restart|reload|force-reload|"
        "gueststatus|shutdown}",
        program_name=name,
    )
    indent = " " * max(first.find(name), 0)
    ours = "|".join(["report", "plan [stop|start]", "policy GUEST [SETTINGS]", "check-config [FILE]", "man", "help"])
    return [first, f"{indent}{name} [OPTIONS] {{{ours}}}"]


def _near(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def parse_lock_wait(text: str, what: str = "--lock-wait") -> float:
    """Seconds, 0 or more, finite: 'nan' would never time out."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{what}={text!r} is not valid: expected a number of seconds, 0 or more")
    return value


def _split_options(argv: list[str], inv: Invocation) -> list[str]:
    """Take the global options out of argv, wherever they are; the other
    words, in order, are the command and its arguments. What cannot be used
    goes to inv.faults (the option is then left unset)."""
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            rest += argv[i:]
            break
        flag, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        option = BY_FLAG.get(flag)
        if option is None:
            rest.append(word)
            continue
        try:
            taken, i = _option_value(flag, option.metavar, eq, value, argv, i)
        except UsageError as err:  # a switch given a value, a value missing
            inv.faults.append(Fault(str(err)))
            continue
        if taken is None:
            setattr(inv, option.dest, True)
            continue
        value = taken
        if option.dest == "defaults" and value not in FLAVOURS:
            inv.faults.append(Fault(f"--defaults={value!r} is not valid: expected upstream or debian"
                                    + _near(value, list(FLAVOURS)), value=True, dest="defaults"))
            continue
        if option.dest == "lock_wait":
            try:
                inv.lock_wait = parse_lock_wait(value)
            except UsageError as err:
                inv.faults.append(Fault(str(err), value=True, dest="lock_wait"))
            continue
        setattr(inv, option.dest, value)
    return rest


def _option_value(flag: str, metavar: str | None, eq: str, value: str, words: list[str], i: int,
                  what: str = "") -> tuple[str | None, int]:
    """An option's value, from FLAG=VALUE or the next word (None for a
    switch), and the index of the word after it."""
    if metavar is None:
        if eq:
            raise UsageError(f"{flag} takes no value")
        return None, i
    if eq:
        return value, i
    if i >= len(words):
        raise UsageError(f"{what}{flag} needs a value ({metavar})")
    return words[i], i + 1


def _no_arguments(command: str, args: list[str]) -> None:
    if args and args[0].startswith("-"):
        raise UsageError(f"unknown option {args[0]}" + _near(args[0], [o.flag for o in OPTIONS]))
    if args:
        raise UsageError(f"{command} takes no arguments (got {' '.join(args)!r})")


def _parse_policy(args: list[str]) -> PolicyArgs:
    guest: str | None = None
    uri: str | None = None
    changes: dict[str, str] = {}
    clear = False
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if not word.startswith("--"):
            if guest is not None:
                raise UsageError(f"policy takes one guest, got {guest!r} and {word!r}")
            guest = word
            continue
        flag, eq, value = word.partition("=")
        if flag not in POLICY_OPTIONS:
            raise UsageError(f"policy: unknown option {flag}" + _near(flag, list(POLICY_OPTIONS)))
        taken, i = _option_value(flag, POLICY_OPTIONS[flag], eq, value, args, i, "policy: ")
        if taken is None:
            clear = True
            continue
        value = taken
        if flag == "--uri":
            uri = value
            continue
        name = flag[2:].replace("-", "_")
        try:
            BY_ATTRIBUTE[name].parse(value)
        except SettingError as err:
            raise UsageError(f"{flag}={value!r} is not valid: {err}") from None
        changes[name] = value
    if guest is None:
        raise UsageError("policy needs a guest name: policy GUEST [SETTINGS]")
    if clear and changes:
        raise UsageError("policy: --clear removes the whole policy; give it alone, then set what you want")
    return PolicyArgs(guest, uri, changes, clear)


def _refuse(inv: Invocation) -> None:
    """Exit 2 for the first fault: for a command that does not act on guests."""
    if inv.faults:
        raise UsageError(inv.faults[0].message)


def _acting(inv: Invocation, verb: Command, args: list[str]) -> Invocation:
    """start, stop, shutdown and the restarts: what cannot be used is a fault
    each (said on one line, then ignored), never a reason to leave the guests
    unhandled: at host shutdown that would have them killed. The original
    read only its first word."""
    assert inv.flavour is not None
    faults = []
    for fault in inv.faults:
        if fault.dest == "defaults":
            used = (inv.flavour.describe() if inv.flavour.name in FLAVOURS
                    else "upstream (the environment's is not valid)")
            fault = Fault(f"{fault.message}; using the defaults {used}", value=True, dest="defaults")
        elif not fault.value:
            fault = Fault(f"{fault.message}; ignored")
        faults.append(fault)
    if inv.json:
        json_commands = ", ".join(c for c in Command if c.takes_json())
        faults.append(Fault(f"--json applies to {json_commands}; not to {verb}; ignored"))
        inv.json = False
    try:
        _no_arguments(verb, args)
    except UsageError as err:
        faults.append(Fault(f"{err}; ignored"))
    inv.faults = faults
    return inv


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """The invocation argv asks for; UsageError (exit 2) with the reason. For
    a command that acts on guests, what cannot be used is in .faults instead."""
    inv = Invocation()
    rest = _split_options(argv, inv)
    inv.flavour = resolve(inv.defaults, environ)
    inv.defaults = inv.flavour.name
    if inv.help or inv.version:
        _refuse(inv)
        return inv
    if not rest:
        _refuse(inv)
        raise UsageError("no command given")
    command, args = rest[0], rest[1:]
    inv.command, inv.args = command, args
    if command == COMPLETE_GUESTS:  # [--uri URI]: never an error, the shell shows none
        uri = args[args.index("--uri") + 1] if args[:-1].count("--uri") else None
        inv.policy = PolicyArgs("", uri)
        inv.faults = []
        return inv
    try:
        verb = Command(command)
    except ValueError:
        _refuse(inv)
        if command.startswith("-"):
            raise UsageError(f"unknown option {command}" + _near(command, [o.flag for o in OPTIONS])) from None
        raise UsageError(f"unknown command {command!r}" + _near(command, list(Command))) from None
    inv.command = verb
    if verb.operations():
        return _acting(inv, verb, args)
    _refuse(inv)
    if inv.json and not verb.takes_json():
        json_commands = ", ".join(c for c in Command if c.takes_json())
        raise UsageError(f"--json applies to {json_commands}; not to {command}")
    if verb is Command.PLAN:
        if len(args) > 1 or (args and args[0] not in ("stop", "start")):
            raise UsageError(f"plan takes stop or start, not {' '.join(args)!r}"
                             + (_near(args[0], ["stop", "start"]) if len(args) == 1 else ""))
        inv.which = args[0] if args else "stop"
    elif verb is Command.POLICY:
        inv.policy = _parse_policy(args)
    elif verb is Command.CHECK_CONFIG:
        if len(args) > 1:
            raise UsageError(f"check-config takes one configuration file at most, got {' '.join(args)!r}")
        inv.check_file = args[0] if args else None
    else:
        _no_arguments(command, args)
    return inv
