"""The --help text, made from the same tables as the man page and completion."""

from __future__ import annotations

import textwrap

from libvirt_guests.cli.commandline import (
    OPTIONS,
    usage_lines,
)
from libvirt_guests.config.commands import COMMANDS, EXIT_CODES
from libvirt_guests.config.settings import SETTINGS, default_for


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
