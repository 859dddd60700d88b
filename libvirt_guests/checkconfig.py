"""`check-config`: validate a configuration, show each effective value and
its source, and flag what would surprise an admin coming from the original."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .config import Config, ConfigError, Paths, load, read_file
from .output import Output
from .settings import SETTINGS, default_for

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
_AUTO_SHUTDOWN = re.compile(r"^\s*(auto_shutdown_(?:try_save|try_shutdown|poweroff))\s*=\s*\"?([^\"#\s]*)\"?", re.M)


def legacy_notes(file_values: dict[str, str]) -> list[str]:
    """Values the original script would have read differently from what they say."""
    notes = []
    for setting in SETTINGS:
        if setting.name not in file_values or setting.legacy is None:
            continue
        text = file_values[setting.name]
        try:
            setting.parse(text)
            valid = True
        except ValueError:
            valid = False
        legacy = setting.legacy(text)
        if not valid:
            notes.append(f"{setting.name}={text!r}: the original script would silently use {legacy}")
        elif setting.name == "ON_SHUTDOWN" and text.strip() not in ("suspend", "shutdown"):
            notes.append(f"{setting.name}={text!r}: only this tool knows chains and poweroff; "
                         f"the original script would use {legacy}")
    return notes


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


def qemu_conf_notes(path: Path = QEMU_CONF) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    notes = []
    for key, value in _AUTO_SHUTDOWN.findall(text):
        if value and value != "none":
            notes.append(
                f"{path}: {key} = \"{value}\": libvirt's own shutdown handling would duel with "
                "libvirt-guests; set it to \"none\" or disable libvirt-guests"
            )
    return notes


def check_config(
    out: Output, paths: Paths, flavour: str | None, as_json: bool, qemu_conf: Path = QEMU_CONF
) -> int:
    file_values: dict[str, str] = {}
    try:
        file_values = read_file(paths.config)[0] if paths.config else {}
        config = load(paths, flavour=flavour)
    except ConfigError as err:
        notes = legacy_notes(file_values)
        if as_json:
            out.say(json.dumps({"valid": False, "error": str(err), "notes": notes}, indent=2))
        else:
            out.error(str(err))
            for note in notes:
                out.say(f"note: {note}")
        return 6
    notes = list(config.warnings) + legacy_notes(file_values) + flavour_notes(config) + qemu_conf_notes(qemu_conf)
    settings = {
        s.name: {"value": config.texts[s.name], "source": config.sources[s.name]} for s in SETTINGS
    }
    if as_json:
        out.say(json.dumps({
            "valid": True, "file": str(paths.config) if paths.config else None,
            "defaults": config.flavour, "settings": settings, "notes": notes,
        }, indent=2))
        return 0
    out.say(f"# configuration file: {paths.config or '(none)'}; defaults: {config.flavour}")
    width = max(len(name) for name in settings)
    for name, entry in settings.items():
        out.say(f"{name:<{width}} = {entry['value']!r:<24} # {entry['source']}")
    for note in notes:
        out.say(f"note: {note}")
    return 0
