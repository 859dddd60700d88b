"""The commands and the exit codes, one table each: --help, the man page, the
parser, the dispatch and the bash completion read them (the variables are
settings.py's)."""

from __future__ import annotations

from enum import StrEnum


class Command(StrEnum):
    """A command of the command line; the methods say what sets one apart
    (as mkosi's Verb does), so the parser, the dispatch and --help agree."""

    START = "start"
    STOP = "stop"
    SHUTDOWN = "shutdown"
    RESTART = "restart"
    CONDRESTART = "condrestart"
    TRY_RESTART = "try-restart"
    RELOAD = "reload"
    FORCE_RELOAD = "force-reload"
    STATUS = "status"
    GUESTSTATUS = "gueststatus"
    REPORT = "report"
    PLAN = "plan"
    POLICY = "policy"
    CHECK_CONFIG = "check-config"
    MAN = "man"
    HELP = "help"

    def is_lsb(self) -> bool:
        """One of the original's ten, listed in its usage line."""
        return self in _LSB

    def needs_lock(self) -> bool:
        """Acts on guests, under the run lock (one such run at a time)."""
        return bool(self.operations())

    def operations(self) -> tuple[str, ...]:
        """What it does to guests: the names Setting.used_by speaks of."""
        return _OPERATIONS.get(self, ())

    def takes_json(self) -> bool:
        return self in _JSON

    def is_report(self) -> bool:
        """Only reads; answers even when the configuration is broken."""
        return self in _REPORTS

    def takes_arguments(self) -> bool:
        return self in (Command.PLAN, Command.POLICY, Command.CHECK_CONFIG)

    @property
    def doc(self) -> str:
        return _COMMAND_DOCS[self]


_LSB = frozenset(Command) - {Command.REPORT, Command.PLAN, Command.POLICY, Command.CHECK_CONFIG, Command.MAN,
                             Command.HELP}
_OPERATIONS: dict[Command, tuple[str, ...]] = {
    Command.START: ("start",), Command.STOP: ("stop",), Command.SHUTDOWN: ("stop",),
    Command.RESTART: ("stop", "start"), Command.CONDRESTART: ("stop", "start"),
    Command.TRY_RESTART: ("stop", "start"),
}
_REPORTS = frozenset({Command.STATUS, Command.GUESTSTATUS, Command.REPORT, Command.PLAN, Command.POLICY})
_JSON = _REPORTS | {Command.CHECK_CONFIG}
_COMMAND_DOCS: dict[Command, str] = {
    Command.START: "Start or restore every guest recorded by the last stop (ON_BOOT=start), then create the "
                   "lock file.",
    Command.STOP: "Record the running guests in the list file, then take each through ON_SHUTDOWN; remove the "
                  "lock file. Does nothing when a completed stop's list file is still there; finishes an "
                  "interrupted stop.",
    Command.SHUTDOWN: "As stop, with ON_SHUTDOWN=shutdown.",
    Command.RESTART: "stop, then start.",
    Command.CONDRESTART: "restart, only if the lock file exists.",
    Command.TRY_RESTART: "Same as condrestart.",
    Command.RELOAD: "Nothing: the configuration is read on every invocation.",
    Command.FORCE_RELOAD: "Same as reload.",
    Command.STATUS: "'stopped, with saved guests' (exit 3), 'started' (exit 0) or 'stopped, with no saved guests' "
                    "(exit 3); then the guests still to be started, and 'a stop is running (pid N)' while one "
                    "runs. Exit 4 when the files cannot be examined.",
    Command.GUESTSTATUS: "The running guests of each URI. Always exit 0.",
    Command.REPORT: "What happened to each guest in the last stops and starts (the action taken, the one planned and "
                    "why it changed, bytes written, seconds, the result), and each URI's saves, from the history "
                    "file (LIBVIRT_GUESTS_HISTORY_FILE). Exit 1 when it cannot be read.",
    Command.PLAN: "plan [stop|start]: print what stop (the default) or start would do to each guest, touching none; "
                  "plan stop exits 150 when not every guest can be saved as configured.",
    Command.POLICY: "policy GUEST [--uri URI] [--on-shutdown ACTIONS] [--on-boot start|ignore] [--order N] "
                    "[--shutdown-timeout S] [--save-timeout S] [--start-delay S] [--skip yes|no] [--migrate-to URI] "
                    "[--migrate-data-uri URI] [--clear]: "
                    "show or set a guest's own policy (the first URI of URIS unless --uri).",
    Command.CHECK_CONFIG: "check-config [FILE]: validate a configuration and show where each value comes from "
                          "(exit 0 or 6).",
    Command.MAN: "Print the libvirt-guests(8) man page (roff).",
    Command.HELP: "Print this help (the same as --help).",
}
# name -> what it does, in --help order
COMMANDS: dict[str, str] = {command.value: command.doc for command in Command}
LSB_COMMANDS: tuple[str, ...] = tuple(command.value for command in Command if command.is_lsb())

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_STOPPED, EXIT_UNKNOWN, EXIT_NOT_CONFIGURED = 0, 1, 2, 3, 4, 6
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number, as a shell reports it
# plan stop: not every guest can be saved as configured. From LSB's range for
# applications (150-199), clear of the init-script codes 0-7 and the signals.
EXIT_PLAN_FALLBACK = 150
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success; for status: started",
    EXIT_FAIL: "a guest could not be handled (left running, failed to save, start or power off), a URI could not "
               "be listed, libvirt did not answer by the stop deadline, another invocation held the run lock too "
               "long, or a state file could not be written (a stop handles the guests all the same)",
    EXIT_USAGE: "usage error: the usage lines, then what was wrong; start, stop, shutdown and the restarts instead "
                "ignore an extra word or unknown option (one error line), handle the guests, and exit 2 at the end",
    EXIT_STOPPED: "status: stopped (with or without saved guests)",
    EXIT_UNKNOWN: "status: unknown (a file it depends on cannot be examined, e.g. by a user without access)",
    EXIT_NOT_CONFIGURED: "not configured: a configuration value the command uses is not valid (SHUTDOWN_TIMEOUT "
                         "below 0 among them), or for start and stop an option value or LIBVIRT_GUESTS_LOCK_WAIT; "
                         "stop and start still handle the guests, with the value each error line names, then exit 6 "
                         "(6 wins over 2 and 1); check-config exits 6 for any problem",
    EXIT_SIGINT: "interrupted by SIGINT (Ctrl-C): no new action was begun, the actions under way had up to 10 s "
                 "(a save still running then was aborted), the state was recorded (the next stop finishes an "
                 "interrupted one), then the run lock was released; wins over 6 and 1",
    EXIT_SIGTERM: "interrupted by SIGTERM: as 130",
    EXIT_PLAN_FALLBACK: "plan stop: not every guest can be saved as configured (no room, no time, a device that "
                        "cannot be saved or a save refused before): the plan names each one and what it gets instead",
}
