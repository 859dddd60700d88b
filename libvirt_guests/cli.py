"""The command line: the original's ten commands with its usage line and
exit codes, plus plan, policy, check-config and man."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from .config import ENV_DEFAULTS, FLAVOURS, ConfigError, Paths, load
from .engine import Context, close_all, connect_all
from .output import Output, tr
from .plan import describe_start, describe_stop, plan_start, plan_stop
from .policy import ATTRIBUTES, BY_ATTRIBUTE, effective, read_policy, write_policy
from .settings import SettingError
from .start import start
from .state import Journal, RunLock, StateError, marker_exists, read_list
from .status import gueststatus, status
from .stop import stop
from .virt import VirtError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_STOPPED, EXIT_NOT_CONFIGURED = 0, 1, 2, 3, 6
ENV_LOCK_WAIT = "LIBVIRT_GUESTS_LOCK_WAIT"
LSB_COMMANDS = ("start", "stop", "status", "restart", "condrestart", "try-restart", "reload", "force-reload",
                "gueststatus", "shutdown")

# name -> what it does (drives --help and the man page)
COMMANDS: dict[str, str] = {
    "start": "Start or restore every guest recorded by the last stop (ON_BOOT=start), then create the lock file.",
    "stop": "Record the running guests in the list file, then take each through ON_SHUTDOWN; remove the lock file. "
            "Does nothing when a completed stop's list file is still there; finishes an interrupted stop.",
    "shutdown": "As stop, with ON_SHUTDOWN=shutdown.",
    "restart": "stop, then start.",
    "condrestart": "restart, only if the lock file exists.",
    "try-restart": "Same as condrestart.",
    "reload": "Nothing: the configuration is read on every invocation.",
    "force-reload": "Same as reload.",
    "status": "'stopped, with saved guests' (exit 3), 'started' (exit 0) or 'stopped, with no saved guests' "
              "(exit 3); --json for scripts.",
    "gueststatus": "The running guests of each URI; --json for scripts. Always exit 0.",
    "plan": "plan [stop|start] [--json]: print what stop or start would do to each guest, touching none.",
    "policy": "policy GUEST [--uri URI] [--on-shutdown ACTIONS] [--on-boot start|ignore] [--order N] "
              "[--shutdown-timeout S] [--save-timeout S] [--start-delay S] [--skip yes|no] [--clear] [--json]: "
              "show or set a guest's own policy.",
    "check-config": "check-config [FILE] [--json]: validate a configuration and show where each value comes from "
                    "(exit 0 or 6).",
    "man": "Print the libvirt-guests(8) man page (roff).",
}

EXIT_CODES = {
    0: "success; for status: started",
    1: "a guest could not be handled (left running, failed to save, start or power off), a URI could not be listed, "
       "another invocation held the run lock too long, or a state file could not be written",
    2: "usage error",
    3: "status: stopped (with or without saved guests)",
    6: "not configured: a configuration value is not valid (SHUTDOWN_TIMEOUT below 0 among them)",
}


def program_name() -> str:
    """What the usage line calls us: the original printed its $0 (a wrapper
    such as Debian's diverted libvirt-guests.sh passes its own)."""
    if os.environ.get("LIBVIRT_GUESTS_PROGRAM_NAME"):
        return os.environ["LIBVIRT_GUESTS_PROGRAM_NAME"]
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "libvirt-guests"
    return "libvirt-guests" if name in ("__main__.py", "-c", "") else sys.argv[0]


def usage_line() -> str:
    return tr(
        "Usage: $program_name {start|stop|status|restart|condrestart|try-restart|reload|force-reload|"
        "gueststatus|shutdown}",
        program_name=program_name(),
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(usage_line())
        raise SystemExit(EXIT_USAGE)


def _global_parser() -> _Parser:
    parser = _Parser(prog="libvirt-guests", add_help=False)
    parser.add_argument("--config", help="configuration file (env LIBVIRT_GUESTS_CONFIG)")
    parser.add_argument("--list-file", help="list file (env LIBVIRT_GUESTS_LIST_FILE)")
    parser.add_argument("--lock-file", help="'started' lock file (env LIBVIRT_GUESTS_LOCK_FILE)")
    parser.add_argument("--state-file", help="state journal (env LIBVIRT_GUESTS_STATE_FILE)")
    parser.add_argument("--defaults", choices=FLAVOURS, help=f"whose defaults apply (env {ENV_DEFAULTS})")
    parser.add_argument("--lock-wait", type=float, default=None,
                        help="seconds to wait for another running invocation (env LIBVIRT_GUESTS_LOCK_WAIT)")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def help_text() -> str:
    from .settings import SETTINGS

    lines = [usage_line(), "", "Commands:"]
    lines += [f"  {name:<13} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Configuration variables (file, overridden by the process environment):"]
    lines += [f"  {s.name:<18} default {s.default!r}: {s.accepts}" for s in SETTINGS]
    lines += ["", "Exit codes:"] + [f"  {code}  {text}" for code, text in EXIT_CODES.items()]
    lines += ["", "See libvirt-guests(8) (`libvirt-guests man`) for everything."]
    return "\n".join(lines)


def _with_lock(ctx: Context, wait: float, action: Callable[[], int]) -> int:
    lock = RunLock(ctx.paths.run_lock)
    lock.acquire(wait, ctx.out.warn)
    try:
        return action()
    finally:
        lock.release()


def _plan(ctx: Context, args: list[str]) -> int:
    parser = _Parser(add_help=False)
    parser.add_argument("which", nargs="?", choices=("stop", "start"), default="stop")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    cfg = ctx.config
    journal = Journal.load(ctx.paths.state_file)
    if opts.which == "stop":
        hvs = connect_all(ctx, cfg.uris, retry_for=0, stdout=not opts.json)
        report = [describe_stop(plan_stop(hv, cfg, None, journal), cfg) for hv in hvs.values() if hv is not None]
    else:
        entries = read_list(ctx.paths.list_file) or []
        hvs = connect_all(ctx, [uri for uri, _ in entries if uri in cfg.uris], retry_for=0, stdout=not opts.json)
        report = [describe_start(plan_start(hvs[uri], uuids, cfg, journal)) for uri, uuids in entries
                  if hvs.get(uri) is not None]  # type: ignore[arg-type]
    close_all(hvs.values())
    if opts.json:
        unreachable = [uri for uri, hv in hvs.items() if hv is None]
        ctx.out.say(json.dumps({"operation": opts.which, "uris": report, "unreachable": unreachable}, indent=2))
        return EXIT_OK
    for uri_report in report:
        ctx.out.say(f"{opts.which} on {uri_report['uri']}:")
        for number, group in enumerate(uri_report["groups"], 1):
            for entry in group:
                ctx.out.say(f"  group {number}: " + _describe_entry(opts.which, entry))
        for name in uri_report.get("transient_not_handled", []):
            ctx.out.say(f"  left alone: {name} (transient, PERSISTENT_ONLY)")
        for name in uri_report.get("skipped", []):
            ctx.out.say(f"  left alone: {name} (policy skip=yes)")
        for warning in uri_report["warnings"]:
            ctx.out.warn(warning)
    return EXIT_OK


def _describe_entry(which: str, entry: dict[str, object]) -> str:
    if which == "start":
        delay = f", then wait {entry['start_delay']:g} s" if entry["start_delay"] else ""
        return f"{entry['name'] or entry['uuid']}: {entry['action']}{delay}"
    timeout = entry["shutdown_timeout"] or "no limit"
    text = f"{entry['name']}: {' -> '.join(entry['actions']) or 'nothing possible'}"  # type: ignore[arg-type]
    if "shutdown" in entry["actions"]:  # type: ignore[operator]
        text += f" (shutdown timeout {timeout} per {entry['shutdown_timeout_scope']})"
    if "suspend" in entry["actions"] and entry["save_timeout"]:  # type: ignore[operator]
        text += f" (save timeout {entry['save_timeout']})"
    if not entry["recorded"]:
        text += " [not recorded: not started at boot]"
    if entry["note"]:
        text += f" [{entry['note']}]"
    return text


def _policy(ctx: Context, args: list[str]) -> int:
    parser = _Parser(add_help=False)
    parser.add_argument("guest")
    parser.add_argument("--uri", default=None)
    for attribute in ATTRIBUTES:
        parser.add_argument("--" + attribute.name.replace("_", "-"), dest=attribute.name)
    parser.add_argument("--clear", action="store_true")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    uri = opts.uri or (ctx.config.uris[0] if ctx.config.uris else "default")
    hv = connect_all(ctx, [uri], retry_for=0, stdout=not opts.json)[uri]
    if hv is None:
        return EXIT_FAIL
    try:
        guest = hv.lookup(opts.guest)
        if guest is None:
            ctx.out.error(f"no guest {opts.guest!r} on {uri}")
            return EXIT_FAIL
        current = read_policy(guest)
        changes = {a.name: getattr(opts, a.name) for a in ATTRIBUTES if getattr(opts, a.name) is not None}
        if opts.clear or changes:
            texts = {} if opts.clear else dict(current.texts)
            for name, text in changes.items():
                try:
                    BY_ATTRIBUTE[name].parse(text)
                except SettingError as err:
                    ctx.out.error(f"--{name.replace('_', '-')}={text!r} is not valid: {err}")
                    return EXIT_USAGE
                texts[name] = text
            write_policy(guest, texts)
            current = read_policy(guest)
        for warning in current.warnings:
            ctx.out.warn(warning)
        eff = effective(ctx.config, current)
        values = {a.name: getattr(eff, a.name) for a in ATTRIBUTES}
        values["shutdown_timeout"] = (
            eff.shutdown_timeout if eff.shutdown_timeout is not None else ctx.config.shutdown_timeout
        )
        if opts.json:
            ctx.out.say(json.dumps({
                "guest": guest.name, "uuid": guest.uuid, "uri": uri,
                "policy": {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()},
                "sources": eff.sources, "metadata": current.texts,
            }, indent=2))
        else:
            ctx.out.say(f"policy of {guest.name} ({guest.uuid}) on {uri}:")
            for name, value in values.items():
                shown = " ".join(value) if isinstance(value, tuple) else ("-" if value is None else value)
                ctx.out.say(f"  {name:<17} {str(shown):<24} ({eff.sources[name]})")
        return EXIT_OK
    finally:
        hv.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Output()
    opts = _global_parser().parse_args(argv)
    command = opts.command
    if (opts.help and command is None) or (command == "--help" and not opts.args):
        out.say(help_text())
        return EXIT_OK
    json_ok = command in ("status", "gueststatus") and opts.args == ["--json"]
    if command not in COMMANDS or (command in LSB_COMMANDS and opts.args and not json_ok):
        out.say(usage_line())
        return EXIT_USAGE
    if command == "man":
        from . import manpage

        out.say(manpage.render(COMMANDS, EXIT_CODES))
        return EXIT_OK
    paths = Paths.resolve(opts.config, opts.list_file, opts.lock_file, opts.state_file)
    if command == "check-config":
        if opts.args and not opts.args[0].startswith("-"):
            paths = Paths.resolve(opts.args.pop(0), opts.list_file, opts.lock_file, opts.state_file)
        from . import checkconfig

        return checkconfig.check_config(out, paths, opts.defaults, "--json" in opts.args)
    if command in ("reload", "force-reload"):
        return EXIT_OK  # configuration is read on every invocation
    try:
        lock_wait = opts.lock_wait if opts.lock_wait is not None else float(os.environ.get(ENV_LOCK_WAIT, "300"))
    except ValueError:
        out.error(f"{ENV_LOCK_WAIT}={os.environ[ENV_LOCK_WAIT]!r} is not valid: expected seconds")
        return EXIT_USAGE
    try:
        config = load(paths, flavour=opts.defaults)
    except ConfigError as err:
        if str(err) == "SHUTDOWN_TIMEOUT must be equal or greater than 0":
            out.say(tr(str(err)))  # the original's own message, on standard output
        else:
            out.error(str(err))
        return EXIT_NOT_CONFIGURED
    for warning in config.warnings:
        out.warn(warning)
    ctx = Context(config, paths, out)
    try:
        return _dispatch(ctx, command, opts.args, lock_wait)
    except (StateError, VirtError) as err:
        out.error(str(err))
        return EXIT_FAIL
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_FAIL


def _dispatch(ctx: Context, command: str, args: list[str], lock_wait: float) -> int:
    as_json = "--json" in args
    if command == "status":
        return status(ctx, as_json)
    if command == "gueststatus":
        return gueststatus(ctx, as_json)
    if command == "plan":
        return _plan(ctx, args)
    if command == "policy":
        return _policy(ctx, args)
    if command == "start":
        return _with_lock(ctx, lock_wait, lambda: start(ctx))
    if command == "stop":
        return _with_lock(ctx, lock_wait, lambda: stop(ctx))
    if command == "shutdown":
        return _with_lock(ctx, lock_wait, lambda: stop(ctx, ("shutdown",)))
    if command in ("condrestart", "try-restart") and not marker_exists(ctx.paths.lock_file):
        return EXIT_OK
    # restart, condrestart, try-restart: stop, then start
    return _with_lock(ctx, lock_wait, lambda: max(stop(ctx), start(ctx)))


def run() -> None:
    sys.exit(main())

