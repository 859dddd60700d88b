"""The command line: the original's ten commands with its usage line and
exit codes, plus plan, policy, check-config, man and help. Reading the line
is commandline.py's; this module runs what it asks for."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from libvirt_guests import __version__
from libvirt_guests.cli import manpage
from libvirt_guests.cli.commandline import (
    COMPLETE_GUESTS,
    ENV_LOCK_WAIT,
    OPTIONS,
    Invocation,
    UsageError,
    parse,
    parse_lock_wait,
    program_name,
    usage_lines,
)
from libvirt_guests.config import checkconfig
from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.policy import ATTRIBUTES, effective, read_policy, refusals, write_policy
from libvirt_guests.config.settings import (
    COMMANDS,
    EXIT_CODES,
    EXIT_FAIL,
    EXIT_NOT_CONFIGURED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    LSB_COMMANDS,
    SETTINGS,
    Command,
    default_for,
)
from libvirt_guests.engine import ABORT_WAIT, INTERRUPT_GRACE, TICK, Context, Interrupt, close_all, connect_all
from libvirt_guests.output import Output, discard_stdout, dump_json, open_standard_streams, redact, shown, shown_uri, tr
from libvirt_guests.reports.plan import describe_start, describe_stop
from libvirt_guests.reports.status import gueststatus, status
from libvirt_guests.start.peers import describe_migrated
from libvirt_guests.start.plan import plan_start
from libvirt_guests.start.run import start
from libvirt_guests.state.files import StateError
from libvirt_guests.state.lock import RunLock, RunLockBusy, marker_exists
from libvirt_guests.state.previous import peek_previous
from libvirt_guests.stop.plan import check_peers, plan_stop
from libvirt_guests.stop.run import stop
from libvirt_guests.virt.hypervisor import Hypervisor, VirtError

if TYPE_CHECKING:
    from libvirt_guests.config.load import Config

__all__ = ["COMMANDS", "EXIT_CODES", "LSB_COMMANDS", "main", "program_name", "run"]

EXIT_BROKEN_PIPE = 141  # standard output closed before the usage line was out (as SIGPIPE)
# After a signal, the process ends this long after the actions' own bound even
# if the work has not (a start does not yet look at the signal itself).
BACKSTOP = 5.0
DEFAULT_LOCK_WAIT = 300


def usage_line() -> str:
    """The original's usage line (the first of usage_lines())."""
    return usage_lines()[0]


def _usage_error(out: Output, reason: str) -> int:
    """Exit 2 as the original (its usage line on standard output), plus why."""
    out.block("\n".join(usage_lines()))
    out.error(f"{reason}; see {program_name()} --help")
    return EXIT_USAGE


def _entry(tag: str, width: int, text: str) -> str:
    """One '  tag  text' entry of --help, wrapped to 79 columns."""
    return textwrap.fill(text, width=79, initial_indent=f"  {tag:<{width}} ", subsequent_indent=" " * (width + 3),
                         break_on_hyphens=False, break_long_words=False)


def help_text(flavour_name: str = "upstream", flavour_from: str = "") -> str:
    other = "debian" if flavour_name == "upstream" else "upstream"
    lines = [*usage_lines(), "", "Commands:"]
    lines += [_entry(name, 13, text) for name, text in COMMANDS.items()]
    lines += ["", "Options (accepted anywhere; without one, its [environment variable]):"]
    for option in OPTIONS:
        env = f" [{option.env}]" if option.env else ""
        lines.append(_entry(option.synopsis, 27, option.text + env))
    lines += ["", f"Defaults in force: {flavour_name}" + (f" ({flavour_from})" if flavour_from else "") + "."]
    lines += ["", "Variables (the file's, overridden by the environment's), with their defaults:"]
    for s in SETTINGS:
        default = f"default {default_for(s, flavour_name)!r}"
        if s.debian_default is not None:
            default += f" ({other}: {default_for(s, other)!r})"
        lines.append(_entry(s.name, 18, f"{default}: {s.accepts}"))
    lines += ["", "Exit codes:"] + [_entry(str(code), 1, text) for code, text in EXIT_CODES.items()]
    lines += ["", "See libvirt-guests(8) (`libvirt-guests man`) for everything."]
    return "\n".join(lines)


def _with_lock(ctx: Context, wait: float, action: Callable[[], int], required: bool = True) -> int:
    """Run action holding the run lock. For a stop (required False) a lock
    that cannot be used at all (read-only or missing directory) does not
    keep the guests from being handled: it is said, and the stop goes on."""
    lock = RunLock(ctx.paths.run_lock)
    try:
        lock.acquire(wait, ctx.out.warn, ctx.interrupt.is_set)
    except RunLockBusy:
        raise
    except StateError as err:
        if required:
            raise
        ctx.out.error(f"{err}; going on without it: another libvirt-guests could run at the same time")
    try:
        return _interruptible(ctx, action)
    finally:
        lock.release()


def _interruptible(ctx: Context, action: Callable[[], int]) -> int:
    """One behaviour for SIGINT and SIGTERM: the handler only notes the
    signal (ctx.interrupt); the engines begin nothing new and give the
    actions under way INTERRUPT_GRACE seconds, record, and return; the run
    lock is released only then; the exit code is 128 + the signal number.
    The action runs in a thread of its own, so this thread can still end the
    process (BACKSTOP seconds past the bounds) if the action does not."""
    if threading.current_thread() is not threading.main_thread():
        return action()  # signal handlers can only be installed in the main thread
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["code"] = action()
        except BaseException as err:  # noqa: BLE001 - re-raised below, in this thread
            result["error"] = err

    previous = {sig: signal.signal(sig, lambda signum, _frame: ctx.interrupt.set(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = threading.Thread(target=work, name="action", daemon=True)
        worker.start()
        told = False
        while worker.is_alive():
            worker.join(TICK)
            if ctx.interrupt.at is None:
                continue
            if not told:
                told = True
                ctx.out.warn(f"{ctx.interrupt.name} received: interrupted; no new action is begun, the actions "
                             f"under way get up to {INTERRUPT_GRACE:g} s")
            if worker.is_alive() and time.monotonic() > ctx.interrupt.at + INTERRUPT_GRACE + ABORT_WAIT + BACKSTOP:
                ctx.out.error(f"still busy {time.monotonic() - ctx.interrupt.at:.0f} s after "
                              f"{ctx.interrupt.name}: ending now")
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):  # a closed or full stream must not keep us here
                        stream.flush()
                os._exit(ctx.interrupt.exit_code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    code = result["code"]
    assert isinstance(code, int)
    return code


def _restart(ctx: Context) -> int:
    """restart, condrestart, try-restart: stop, then start (not after a signal)."""
    code = stop(ctx)
    if ctx.interrupt.is_set():
        return code
    return max(code, start(ctx))


def _about(opts: Invocation, paths: Paths) -> dict[str, Any]:
    """What every JSON report says about the configuration it read."""
    assert opts.flavour is not None
    return {"config_file": str(paths.config) if paths.config else None,
            "defaults": opts.flavour.name, "defaults_from": opts.flavour.source}


def _config_for_reports(out: Output, opts: Invocation, paths: Paths) -> Config:
    """The configuration for status, gueststatus, plan and policy, which
    answer even when it is broken: each problem goes to standard error, the
    report goes on with the values used instead (as stop and start would)."""
    config = load(paths, flavour=opts.defaults)
    for problem in config.problems:
        out.error(problem.text())
    for warning in config.warnings:
        out.warn(warning)
    return config


def _report(out: Output, opts: Invocation, paths: Paths) -> int:
    about = _about(opts, paths)
    config = _config_for_reports(out, opts, paths)
    try:
        if opts.command == "status":
            return status(paths, out, about, opts.json)
        ctx = Context(config, paths, out)
        if opts.command == "gueststatus":
            return gueststatus(ctx, about, opts.json)
        if opts.command == "plan":
            return _plan(ctx, opts, about)
        return _policy(ctx, opts, about)
    except (StateError, VirtError) as err:
        out.error(str(err))
        return EXIT_FAIL
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_SIGINT


def _plan(ctx: Context, opts: Invocation, about: dict[str, Any]) -> int:
    cfg, which = ctx.config, opts.which
    previous = peek_previous(ctx.paths.list_file, ctx.paths.state_file)
    journal = previous.journal
    note = ""
    if which == "stop":
        hvs = connect_all(ctx, cfg.uris, retry_for=0, stdout=not opts.json)
        plans = [plan_stop(hv, cfg, None, journal) for hv in hvs.values() if hv is not None]
        check_peers(plans, cfg.allowed_peers())  # before anything is done: can each guest's peer take it?
        report = [describe_stop(plan, cfg) for plan in plans]
        # The original's rule, as stop applies it: a list left by a completed stop makes the next stop a no-op.
        if previous.entries is not None and not previous.resumable:
            note = (f"the list file {ctx.paths.list_file} is still there (no start since the last stop): "
                    "the next stop does nothing, as the original")
    else:
        entries = previous.entries
        hvs = connect_all(ctx, [uri for uri, _ in entries or [] if uri in cfg.uris], retry_for=0,
                          stdout=not opts.json)
        report = [describe_start(plan_start(hv, uuids, cfg, journal)) for uri, uuids in entries or []
                  if (hv := hvs.get(uri)) is not None]
        if entries is None:
            note = f"no list file {ctx.paths.list_file}: the next start has no guest to start"
        elif cfg.on_boot != "start":
            note = f"ON_BOOT={cfg.on_boot}: the next start starts only guests whose own policy says on_boot=start"
    close_all(hvs.values())
    migrated: list[dict[str, object]] = []
    if which == "start":
        migrated = describe_migrated(journal, cfg)
    if opts.json:
        unreachable = [uri for uri, hv in hvs.items() if hv is None]
        extra = {"migrated": migrated} if which == "start" else {}
        ctx.out.block(dump_json({"operation": which, "uris": report, "unreachable": unreachable,
                               "note": note or None, **extra, **about,
                               **({} if cfg.guest_policy else {"guest_policy_ignored": True})}))
        return EXIT_OK
    if note and not (migrated and previous.entries is None):
        ctx.out.say(f"note: {note}")
    if not cfg.guest_policy:
        ctx.out.say("note: GUEST_POLICY=0: the guests' own policies (metadata) are ignored")
    for guest in migrated:
        ctx.out.say(f"on a peer: {shown(guest['name'])} of {shown_uri(guest['uri'])} runs on "
                    f"{shown_uri(guest['peer'])} (migrated by the last stop): {guest['next_start']}")
    for uri_report in report:
        ctx.out.say(f"{which} on {shown_uri(uri_report['uri'])}:")
        for number, group in enumerate(uri_report["groups"], 1):
            for entry in group:
                ctx.out.say(f"  group {number}: " + _describe_entry(which, entry))
        for name in uri_report.get("transient_not_handled", []):
            ctx.out.say(f"  left alone: {shown(name)} (transient, PERSISTENT_ONLY)")
        for name in uri_report.get("skipped", []):
            ctx.out.say(f"  left alone: {shown(name)} (policy skip=yes)")
        if not uri_report["groups"]:
            empty = "no running guests" if which == "stop" else "no guests to start"
            ctx.out.say(f"  {empty}" if not uri_report.get("skipped") and not uri_report.get(
                "transient_not_handled") else f"  {empty} to act on")
        for warning in uri_report["warnings"]:
            ctx.out.warn(warning)
    return EXIT_OK


def _number(value: float | int) -> str:
    """0, 1.5, 300: not Python's 0.0."""
    return f"{int(value)}" if float(value).is_integer() else f"{value}"


def _describe_entry(which: str, entry: dict[str, Any]) -> str:
    if which == "start":
        delay = f", then wait {_number(entry['start_delay'])} s" if entry["start_delay"] else ""
        return f"{shown(entry['name'] or entry['uuid'])}: {entry['action']}{delay}"
    timeout = _number(entry["shutdown_timeout"]) if entry["shutdown_timeout"] else "no limit"
    text = f"{shown(entry['name'])}: {' -> '.join(entry['actions']) or 'nothing possible'}"
    if "shutdown" in entry["actions"]:
        text += f" (shutdown timeout {timeout} per {entry['shutdown_timeout_scope']})"
    if "suspend" in entry["actions"] and entry["save_timeout"]:
        text += f" (save timeout {_number(entry['save_timeout'])})"
    if entry.get("peer_can_take") is not None:
        peer = shown_uri(entry["migrate_to"]) if entry["migrate_to"] else "no peer"
        text += (f" (peer {peer} can take it)" if entry["peer_can_take"]
                 else f" (peer {peer} cannot take it: {'; '.join(entry['peer_reasons'])})")
    if not entry["recorded"]:
        text += " [not recorded: not started at boot]"
    if entry["note"]:
        text += f" [{entry['note']}]"
    return text


def show_value(value: object) -> str:
    """A policy value for people: yes/no, plain numbers, words, '-' for unset."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def _policy(ctx: Context, opts: Invocation, about: dict[str, Any]) -> int:
    args = opts.policy
    assert args is not None
    refused = refusals(ctx.config, args.changes)
    if refused:  # what stop would refuse is not stored
        for line in refused:
            ctx.out.error(line)
        return EXIT_USAGE
    uri = args.uri or (ctx.config.uris[0] if ctx.config.uris else "default")
    hv = connect_all(ctx, [uri], retry_for=0, stdout=not opts.json)[uri]
    if hv is None:
        return EXIT_FAIL
    try:
        guest = hv.lookup(args.guest)
        if guest is None:
            ctx.out.error(f"no guest '{shown(args.guest)}' on {shown_uri(uri)}")
            return EXIT_FAIL
        current = read_policy(guest)
        if args.clear or args.changes:
            texts = {} if args.clear else {**current.texts, **args.changes}
            write_policy(guest, texts)
            current = read_policy(guest)
        eff = effective(ctx.config, current)
        for warning in current.warnings:
            ctx.out.warn(warning)
        if not ctx.config.guest_policy and current.texts:
            ctx.out.warn(f"guest {shown(guest.name)}: GUEST_POLICY=0: its policy metadata is ignored; "
                         "the values below are the host-wide settings")
        values = {a.name: getattr(eff, a.name) for a in ATTRIBUTES}
        values["shutdown_timeout"] = (
            eff.shutdown_timeout if eff.shutdown_timeout is not None else ctx.config.shutdown_timeout
        )
        if opts.json:
            ctx.out.block(dump_json({
                "guest": guest.name, "uuid": guest.uuid, "uri": redact(uri),
                "policy": {k: (list(v) if isinstance(v, tuple) else redact(v) if isinstance(v, str) else v)
                           for k, v in values.items()},
                "sources": eff.sources, "metadata": {k: redact(v) for k, v in current.texts.items()}, **about,
            }))
        else:
            ctx.out.say(f"policy of {shown(guest.name)} ({guest.uuid}) on {shown_uri(uri)}:")
            for name, value in values.items():
                ctx.out.say(f"  {name:<17} {shown_uri(show_value(value)):<24} ({eff.sources[name]})")
        return EXIT_OK
    finally:
        hv.close()


def _complete_guests(opts: Invocation, paths: Paths) -> int:
    """Guest names for the bash completion of `policy`, from the URI policy
    would use; silent and exit 0 whatever happens (the shell shows nothing)."""
    try:
        with open(os.devnull, "w") as null:
            config = _config_for_reports(Output(null, null), opts, paths)
        uri = (opts.policy.uri if opts.policy else None) or (config.uris[0] if config.uris else "default")
        hv = Hypervisor(uri)
        hv.connect(0)
        try:
            names = sorted(dom.name() for dom in hv.conn.listAllDomains(0))  # type: ignore[union-attr]
        finally:
            hv.close()
    except Exception:  # noqa: BLE001 - completion must never print a traceback
        return EXIT_OK
    print("\n".join(names))
    return EXIT_OK


def _early(out: Output, opts: Invocation) -> int | None:
    """Everything that needs no configuration (or, for the reports, no valid
    one); None for the commands that act on guests."""
    if opts.help or opts.command == Command.HELP:
        assert opts.flavour is not None
        out.block(help_text(opts.flavour.name, opts.flavour.detail))
        return EXIT_OK
    if opts.version:
        out.say(f"libvirt-guests {__version__}")
        return EXIT_OK
    if opts.command == Command.MAN:
        out.block(manpage.render(COMMANDS, EXIT_CODES))
        return EXIT_OK
    if opts.command in (Command.RELOAD, Command.FORCE_RELOAD):
        return EXIT_OK  # configuration is read on every invocation
    paths = Paths.resolve(opts.config, opts.list_file, opts.lock_file, opts.state_file)
    if opts.command == Command.CHECK_CONFIG:
        if opts.check_file:
            paths = Paths.resolve(opts.check_file, opts.list_file, opts.lock_file, opts.state_file)

        return checkconfig.check_config(out, paths, opts.defaults, opts.json)
    if opts.command == COMPLETE_GUESTS:
        return _complete_guests(opts, paths)
    if opts.command is not None and Command(opts.command).is_report():
        return _report(out, opts, paths)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Output()
    try:
        opts = parse(argv)
    except UsageError as err:
        return _usage_error(out, str(err))
    try:
        early = _early(out, opts)
    except KeyboardInterrupt:  # Ctrl-C while a report read its configuration
        out.error("interrupted")
        return EXIT_SIGINT
    if early is not None:
        return early
    command = opts.command
    assert command is not None

    # Before anything is read: a signal from here on is the run's, as one
    # during the run (no new action begun, the state recorded, 130 or 143).
    interrupt = Interrupt()
    with _signals_noted(interrupt):
        return _act(out, opts, Command(command), interrupt)


@contextlib.contextmanager
def _signals_noted(interrupt: Interrupt) -> Iterator[None]:
    """SIGINT and SIGTERM only noted in interrupt while the block runs (in
    the main thread; elsewhere they cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: interrupt.set(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _lock_wait(out: Output, opts: Invocation) -> tuple[float, bool]:
    """--lock-wait, else LIBVIRT_GUESTS_LOCK_WAIT, else the default; True
    when a value given was not valid (one error line; the run exits 6)."""
    failed = False
    text = os.environ.get(ENV_LOCK_WAIT)
    try:
        from_env = parse_lock_wait(text or str(DEFAULT_LOCK_WAIT), ENV_LOCK_WAIT)
        used = f"{_number(from_env)}, from {ENV_LOCK_WAIT}" if text else f"{DEFAULT_LOCK_WAIT}, the default"
    except UsageError as err:  # nan would never time out, inf never either
        from_env, used = DEFAULT_LOCK_WAIT, f"{DEFAULT_LOCK_WAIT}, the default"
        if opts.lock_wait is None:
            out.error(f"{err}; using {used}")
            failed = True
    for fault in opts.faults:
        if fault.dest == "lock_wait":
            out.error(f"{fault.message}; using {used}")
            failed = True
    return (opts.lock_wait if opts.lock_wait is not None else from_env), failed


def _act(out: Output, opts: Invocation, command: Command, interrupt: Interrupt) -> int:
    """A command that acts on guests: whatever its command line, environment
    and configuration say, it handles them; each thing it could not use is
    one error line, and it exits 6 (a value), else 2 (a word) at the end."""
    words_failed = False
    for fault in opts.faults:
        if fault.dest != "lock_wait":
            out.error(fault.message)
            words_failed = words_failed or not fault.value
    values_failed = any(fault.value and fault.dest != "lock_wait" for fault in opts.faults)
    lock_wait, lock_wait_failed = _lock_wait(out, opts)
    paths = Paths.resolve(opts.config, opts.list_file, opts.lock_file, opts.state_file)
    config = load(paths, flavour=opts.defaults)
    config_failed = _report_config(out, config, command, paths)
    ctx = Context(config, paths, out, interrupt)
    try:
        code = _dispatch(ctx, command, lock_wait)
    except (StateError, VirtError) as err:
        out.error(str(err))
        code = EXIT_FAIL
    except KeyboardInterrupt:  # stop and start handle SIGINT themselves (in the main thread)
        out.error("interrupted")
        code = EXIT_SIGINT
    if ctx.interrupt.is_set():
        return ctx.interrupt.exit_code  # 130 or 143: the run did not complete
    # The guests were handled whatever the configuration said; a value the
    # command used that was not valid makes it exit 6 (6 wins over 2 and 1).
    if config_failed or values_failed or lock_wait_failed:
        return EXIT_NOT_CONFIGURED
    return EXIT_USAGE if words_failed else code


def _report_config(out: Output, config: Config, command: str, paths: Paths) -> bool:
    """Say what is wrong with the configuration before acting; True when a
    problem concerns what `command` does (it exits 6 once it has done it)."""
    for warning in config.warnings:
        out.warn(warning)
    acts = not (command in ("condrestart", "try-restart") and not marker_exists(paths.lock_file))
    failed = False
    for problem in config.problems:
        if not (acts and problem.concerns(command)):
            out.warn(f"{problem.text()} (not used by {command})")
            continue
        if problem.original_message and (command == "shutdown" or "shutdown" in config.on_shutdown):
            out.say(tr(problem.original_message))  # the original's own message, on standard output
        out.error(problem.text())
        failed = True
    return failed


def _dispatch(ctx: Context, command: Command, lock_wait: float) -> int:
    """Run a command that acts on guests, under the run lock."""
    if command in (Command.CONDRESTART, Command.TRY_RESTART) and not marker_exists(ctx.paths.lock_file):
        return EXIT_OK
    if command == Command.START:
        return _with_lock(ctx, lock_wait, lambda: start(ctx))
    if command in (Command.STOP, Command.SHUTDOWN):
        # A stop handles the guests even when the run lock cannot be used at all.
        chain = ("shutdown",) if command == Command.SHUTDOWN else None
        return _with_lock(ctx, lock_wait, lambda: stop(ctx, chain), required=False)
    return _with_lock(ctx, lock_wait, lambda: _restart(ctx))


def run() -> None:
    """The entry point (the console script's and `python -m`'s). A closed
    standard output (`| head -1`) is not an error: Output drops what cannot
    be written and the command finishes with its own exit code; whatever
    else the closed pipe interrupts ends quietly with 141, as a shell
    reports a command killed by SIGPIPE.

    The process then ends at once (os._exit), its output flushed: the
    interpreter's teardown (every module and object freed, then the C
    libraries' destructors, libvirt's and GnuTLS's) cost 10 to 25 ms here,
    a good part of a `stop` with no guest (issue 13), for nothing a run
    needs. When main() returns, every file it wrote is closed (synced where
    that matters) and every connection closed; a thread still alive is a
    daemon left behind on purpose (a libvirt call blocked in C), which a
    normal exit does not wait for either. An exception out of main() (a bug)
    still takes the normal way, traceback included."""
    open_standard_streams()  # a closed descriptor at start: /dev/null, not the next file opened
    try:
        code = main()
    except BrokenPipeError:
        discard_stdout()
        code = EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C before main() could note it (at import): no traceback either
        with contextlib.suppress(Exception):
            sys.stderr.write("libvirt-guests: error: interrupted\n")
        code = EXIT_SIGINT
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        code = EXIT_BROKEN_PIPE
    except (OSError, ValueError):  # EIO, ENOSPC on what print() left buffered: the command's code stands
        discard_stdout()
    with contextlib.suppress(Exception):  # nowhere left to say it
        sys.stderr.flush()
    os._exit(code)

