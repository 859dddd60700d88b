"""`check-config`: validate a configuration strictly and completely (every
problem named in one run, exit 6), show each effective value (the one stop
and start use) and its source, and flag what would surprise an admin coming
from the original."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from libvirt_guests.config.load import Config, Paths, load
from libvirt_guests.config.problems import Problem, shown_value
from libvirt_guests.config.settings import BY_NAME, SETTINGS, Setting, default_for
from libvirt_guests.output import Output, redact, shown, shown_uri
from libvirt_guests.virt.daemonshutdown import classify, daemon_kind, local_version, of_daemon, qemu_driver


def value_text(value: object) -> str:
    """A parsed value written back as configuration text."""
    if value is None:
        return ""  # a POLICY_MAX_... left empty
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return " ".join(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _describe(setting: Setting, value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if setting.name in ("START_DELAY", "SHUTDOWN_TIMEOUT"):
        return f"{value_text(value)} seconds"
    return repr(value_text(value))


def original_notes(config: Config) -> list[str]:
    """What the original script would have done with the values in use."""
    notes = []
    for problem in config.problems:
        setting = BY_NAME.get(problem.variable or "")
        if problem.kind == "value" and setting is not None and setting.explain is not None:
            notes.append(f"{setting.name}={shown_value(problem.value or '')}: {setting.explain(problem.value or '')}")
    chain = config.on_shutdown
    if config.sources.get("ON_SHUTDOWN") != "default" and chain not in (("suspend",), ("shutdown",)):
        legacy = "shutdown" if config.texts["ON_SHUTDOWN"] == "shutdown" else "suspend"
        notes.append(f"ON_SHUTDOWN={config.texts['ON_SHUTDOWN']!r}: only this tool knows chains and poweroff; "
                     f"the original script would use {legacy}")
    return notes


def canonical_notes(config: Config) -> list[str]:
    """Values taken as the original took them but not written the documented way."""
    notes = []
    for setting in SETTINGS:
        text = config.texts[setting.name]
        if config.sources[setting.name] == "default" or setting.canonical is None or setting.canonical(text):
            continue
        if any(p.variable == setting.name for p in config.problems):
            continue
        value = getattr(config, setting.attr)
        if isinstance(value, bool):
            notes.append(f"{setting.name}={shown_value(text)} means {_describe(setting, value)}: as in the original, "
                         "anything but 0 is on; write 1 for on, 0 for off")
        else:
            notes.append(f"{setting.name}={shown_value(text)} is read as the original read it, "
                         f"{_describe(setting, value)}; write {value_text(value)} to say so")
    return notes


def budget_notes(config: Config) -> list[str]:
    """PARALLEL_SHUTDOWN above 1 turns SHUTDOWN_TIMEOUT into one budget per URI."""
    if config.parallel_shutdown <= 1:
        return []
    timeout = f"{config.shutdown_timeout} s" if config.shutdown_timeout else "no limit (0)"
    return [f"PARALLEL_SHUTDOWN={config.parallel_shutdown}: SHUTDOWN_TIMEOUT ({timeout}) is one budget per URI "
            "for all the guests of that URI that are shut down, not a timeout per guest"]


def fallback_notes(config: Config) -> list[str]:
    """A chain that ends at the save has an implicit next action (issue 22)."""
    if not config.on_shutdown or config.on_shutdown[-1] != "suspend":
        return []
    then = " and powered off at STOP_DEADLINE" if config.stop_deadline else ""
    return [f"ON_SHUTDOWN={config.texts.get('ON_SHUTDOWN', ' '.join(config.on_shutdown))!r} ends with suspend: a "
            "guest that cannot be saved (a device QEMU cannot save, a save refused before, no room in the save "
            f"directory less SAVE_RESERVE, no time before STOP_DEADLINE) is shut down instead{then}, with a "
            "warning; write the chain out (e.g. 'suspend shutdown') to choose otherwise"]


def flavour_notes(config: Config) -> list[str]:
    """Defaults that differ between Debian's script and upstream's and are in use."""
    notes = []
    for setting in SETTINGS:
        if setting.debian_default is None or config.sources.get(setting.name) != "default":
            continue
        other = "debian" if config.flavour == "upstream" else "upstream"
        notes.append(
            f"{setting.name} is not set: the {config.flavour} default {default_for(setting, config.flavour)!r} "
            f"applies, where {other} uses {default_for(setting, other)!r}; set it to be explicit"
        )
    return notes


def migrate_problems(config: Config) -> list[Problem]:
    """ON_SHUTDOWN with migrate but no peer: the step would be skipped for
    every guest whose own policy names none (migrate_to)."""
    if "migrate" not in config.on_shutdown or config.migrate_uri:
        return []
    chain = config.texts["ON_SHUTDOWN"]
    if config.migrate_peers and config.guest_policy:
        whose = "whose own policy does not choose one of MIGRATE_PEERS with migrate_to"
    else:
        whose = "(no guest may name its own: MIGRATE_PEERS is empty" + (
            ")" if config.guest_policy else ", GUEST_POLICY=0)")
    return [Problem("setting", "ON_SHUTDOWN and MIGRATE_URI", f"ON_SHUTDOWN={chain!r} has migrate but MIGRATE_URI "
                    f"is empty: stop skips the migrate step of every guest {whose}",
                    variable="MIGRATE_URI", value=config.migrate_uri, source=config.sources.get("MIGRATE_URI", ""))]


def migrate_notes(config: Config) -> list[str]:
    """Migration settings that have no effect as the others are."""
    notes = []
    migrates = "migrate" in config.on_shutdown
    if config.migrate_back and config.on_boot != "start":
        notes.append("MIGRATE_BACK=1 has no effect with ON_BOOT=ignore: migrated guests stay on the peer")
    if (config.migrate_data_uri or config.migrate_undefine) and not migrates and not config.migrate_uri:
        notes.append("MIGRATE_DATA_URI/MIGRATE_UNDEFINE are set but no chain migrates (ON_SHUTDOWN has no "
                     "migrate); they apply only to guests whose own policy chain does")
    if not config.guest_policy and (config.migrate_peers or config.migrate_data_uris):
        notes.append("MIGRATE_PEERS/MIGRATE_DATA_URIS have no effect with GUEST_POLICY=0: no guest's own policy "
                     "is read")
    if migrates and config.migrate_undefine:
        notes.append("MIGRATE_UNDEFINE=1: a migrated guest's definition is removed here; if the peer is lost, "
                     "so is the guest")
    return notes


def default_uri(environ: Mapping[str, str] | None = None) -> str:
    """What URIS=default opens, without opening it: LIBVIRT_DEFAULT_URI, else the daemon libvirt probes first
    (qemu:///system for root, qemu:///session for a user)."""
    env = os.environ if environ is None else environ
    return env.get("LIBVIRT_DEFAULT_URI") or ("qemu:///system" if os.geteuid() == 0 else "qemu:///session")


def daemon_shutdown_checks(config: Config, qemu_conf: Path | None = None,
                           version_of: Callable[[], int | None] = local_version) -> tuple[list[Problem], list[str]]:
    """libvirt's own shutdown handling on a URI we handle (two actors on the same guests at a host shutdown:
    a save racing a shutdown, a guest started twice) is a problem, as is a local daemon whose settings cannot
    be known; a remote one's is a note."""
    problems: list[Problem] = []
    notes: list[str] = []
    version = version_of()
    for text in dict.fromkeys(config.uris):
        uri = default_uri() if text == "default" else text
        if not qemu_driver(uri):
            continue
        local = daemon_kind(uri) is not None
        if qemu_conf is not None and daemon_kind(uri) == "system":
            daemon = classify(uri, version=version, conf=qemu_conf)
        else:
            daemon = of_daemon(uri, version)
        where = f"URIS={shown_value(text)}" + (f" ({shown_uri(uri)})" if text != uri else "")
        if daemon.state == "on":
            problems.append(Problem("setting", "qemu.conf", f"{where}: libvirt's own shutdown handling is on "
                                    f"({daemon.reason}): it and libvirt-guests would both act on the same guests "
                                    "at a host shutdown; set auto_shutdown_try_save, auto_shutdown_try_shutdown "
                                    "and auto_shutdown_poweroff to \"none\" (and restart the daemon) or disable "
                                    "libvirt-guests; at a poweroff through logind stop waits for libvirt's action "
                                    "first"))
        elif daemon.state == "unknown" and local:
            problems.append(Problem("setting", "qemu.conf", f"{where}: whether libvirt's own shutdown handling is "
                                    f"on cannot be told: {daemon.reason}"))
        elif daemon.state == "unknown":
            notes.append(f"{where}: libvirt's own shutdown handling: unknown ({daemon.reason})")
    return problems, notes


def check_config(
    out: Output, paths: Paths, flavour: str | None, as_json: bool, qemu_conf: Path | None = None
) -> int:
    config = load(paths, flavour=flavour)
    daemon_problems, daemon_notes = daemon_shutdown_checks(config, qemu_conf)
    notes = (list(config.warnings) + original_notes(config) + canonical_notes(config) + budget_notes(config)
             + fallback_notes(config) + flavour_notes(config) + migrate_notes(config) + daemon_notes)
    problems = list(config.problems) + migrate_problems(config) + daemon_problems
    settings: dict[str, dict[str, str]] = {}
    for setting in SETTINGS:
        entry = {"value": value_text(getattr(config, setting.attr)), "source": config.sources[setting.name]}
        if config.texts[setting.name] != entry["value"]:
            entry["text"] = redact(config.texts[setting.name])
        entry["value"] = redact(entry["value"])  # a URI's credentials are never printed
        settings[setting.name] = entry
    valid = not problems
    if as_json:
        out.block(json.dumps({
            "valid": valid, "file": str(paths.config) if paths.config else None,
            "defaults": config.flavour, "settings": settings,
            "problems": [problem.as_dict() for problem in problems], "notes": notes,
        }, indent=2))
        return 0 if valid else 6
    for problem in problems:
        out.error(problem.text())
    out.say(f"# configuration file: {shown(paths.config) if paths.config else '(none)'}; defaults: {config.flavour}")
    width = max(len(name) for name in settings)
    bad = {p.variable: p for p in config.problems if p.kind == "value"}
    for name, entry in settings.items():
        comment = entry["source"]
        if name in bad:
            comment += f": {shown_value(bad[name].value or '')} is not valid, this is used instead"
        elif "text" in entry:
            comment += f": written {shown_value(str(entry['text']))}"
        out.say(f"{name:<{width}} = {entry['value']!r:<24} # {comment}")
    for note in notes:
        out.say(f"note: {note}")
    if not valid:
        out.say(f"{len(problems)} problem(s): see the error lines; stop and start would go on with the "
                "values shown, and exit 6")
    return 0 if valid else 6
