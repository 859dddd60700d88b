"""The command line: the original's ten commands with its usage line and
exit codes, plus plan, policy, check-config, man and help. Reading the line
is cli/commandline.py's; this module runs what it asks for."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from libvirt_guests import __version__
from libvirt_guests.cli import manpage
from libvirt_guests.cli.commandline import (
    COMPLETE_GUESTS,
    ENV_LOCK_WAIT,
    Invocation,
    UsageError,
    parse,
    parse_lock_wait,
    program_name,
    usage_lines,
)
from libvirt_guests.cli.help import help_text
from libvirt_guests.cli.policy import policy_command
from libvirt_guests.config import checkconfig
from libvirt_guests.config.commands import (
    COMMANDS,
    EXIT_CODES,
    EXIT_FAIL,
    EXIT_NOT_CONFIGURED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_USAGE,
    LSB_COMMANDS,
    Command,
)
from libvirt_guests.config.load import Paths, load
from libvirt_guests.engine import ABORT_WAIT, INTERRUPT_GRACE, TICK, Context, Interrupt
from libvirt_guests.output import Output, discard_stdout, open_standard_streams, plain_number, tr
from libvirt_guests.reports.history import report
from libvirt_guests.reports.plan import plan_command
from libvirt_guests.reports.status import gueststatus, status
from libvirt_guests.start.run import start
from libvirt_guests.state.files import StateError
from libvirt_guests.state.lock import RunLock, RunLockBusy, marker_exists
from libvirt_guests.stop.actions import any_waits_off
from libvirt_guests.stop.run import stop
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor

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
        if opts.command in ("status", "report"):  # the state files only: no connection
            return (status(paths, out, about, opts.json) if opts.command == "status"
                    else report(paths.history_file, out, about, opts.json))
        ctx = Context(config, paths, out)
        if opts.command == "gueststatus":
            return gueststatus(ctx, about, opts.json)
        if opts.command == "plan":
            return plan_command(ctx, opts.which, opts.json, about)
        return policy_command(ctx, opts, about)
    except (StateError, VirtError) as err:
        out.error(str(err))
        return EXIT_FAIL
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_SIGINT


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
        used = f"{plain_number(from_env)}, from {ENV_LOCK_WAIT}" if text else f"{DEFAULT_LOCK_WAIT}, the default"
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
        if problem.original_message and (command == Command.SHUTDOWN or any_waits_off(config.on_shutdown)):
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

