"""libvirt-guests(8) in roff, generated from the same tables as --help: the
settings, the commands, the policy attributes and the exit codes."""

from __future__ import annotations

import sys
import textwrap

from libvirt_guests import __version__
from libvirt_guests.cli.commandline import OPTIONS
from libvirt_guests.config.commands import COMMANDS, EXIT_CODES
from libvirt_guests.config.flavour import built_in
from libvirt_guests.config.load import CONFIG_CANDIDATES, DEFAULT_LIST_FILE, DEFAULT_LOCK_FILE
from libvirt_guests.config.policy import ATTRIBUTES, NAMESPACE
from libvirt_guests.config.settings import SETTINGS, default_for


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def _section(title: str) -> list[str]:
    return [f".SH {title}"]


def _item(tag: str, body: str) -> list[str]:
    return [".TP", f".B {_esc(tag)}", _esc(body)]


def render(commands: dict[str, str], exit_codes: dict[int, str]) -> str:
    lines = [
        f'.TH LIBVIRT\\-GUESTS 8 "" "libvirt-guests {__version__}" "System Administration"',
        *_section("NAME"),
        "libvirt\\-guests \\- save or shut down libvirt guests on host shutdown, restore them on boot",
        *_section("SYNOPSIS"),
        ".B libvirt\\-guests",
        "[\\fIoptions\\fR] \\fIcommand\\fR [\\fIarguments\\fR] [\\fIoptions\\fR]",
        ".PP",
        "Options may be given anywhere on the command line, before or after the command.",
        *_section("DESCRIPTION"),
        _esc(
            "On host shutdown (stop) it lists the running guests of every configured URI, records them in the "
            "list file, then saves each one with a managed save or asks it to shut down, following ON_SHUTDOWN. "
            "On boot (start) it restores or starts every recorded guest, whatever the guest's autostart flag. "
            "It is a drop-in replacement for libvirt's libvirt-guests.sh: same commands, configuration, list "
            "file, lock file, messages and exit codes. It talks to libvirt through libvirt-python."
        ),
        *_section("COMMANDS"),
    ]
    for name, text in commands.items():
        lines += _item(name, text)
    lines += _section("OPTIONS")
    for option in OPTIONS:
        env = f" Environment: {option.env}." if option.env else ""
        lines += _item(option.synopsis, option.text + env)
    lines += _section("CONFIGURATION")
    lines.append(_esc(
        "The configuration file is read as the original's /bin/sh reads it, without running anything: quotes, "
        "export, $NAME and ${NAME} over the original's defaults and the file's earlier lines. A line the shell "
        "would run (a command, $(...), `...`, $((...))) is skipped with an error; a compound command (if, while, "
        "for, case, { }, ( ), a function) is skipped whole, and a here-document's body is never read. Where dash "
        "and bash (as sh) read a value differently, dash's reading is used, with an error. A variable set in "
        "the process environment overrides the file. A value that is not valid is an error line naming the value used "
        "instead (the original's reading, else the default): stop and start still handle every guest and then "
        "exit 6, a command that does not use the value only warns, check-config names every problem and exits 6."
    ))
    flavour = built_in()
    lines += [".PP", _esc(
        f"Defaults of this copy: {flavour.describe()}, whoever runs it (the service, the init script or an "
        "admin's shell). --defaults or LIBVIRT_GUESTS_DEFAULTS choose the other set; check-config and "
        "--help show the set in force."
    )]
    other = "debian" if flavour.name == "upstream" else "upstream"
    for setting in SETTINGS:
        default = f"Default: {default_for(setting, flavour.name)!r}"
        if setting.debian_default is not None:
            default += f" ({other}: {default_for(setting, other)!r})"
        new = "" if setting.since_original else " Not known to the original script."
        lines += _item(setting.name, f"{setting.doc} Accepts {setting.accepts}. {default}.{new}")
    lines += _section("PER-GUEST POLICY")
    lines.append(_esc(
        f"A guest may carry its own policy in its domain XML metadata, namespace {NAMESPACE}, key guests, "
        "element policy. Each attribute overrides the host-wide setting for that guest only, within the host's "
        "bounds: the metadata is written by whoever may edit the domain, so it only chooses among what the "
        "configuration allows (MIGRATE_PEERS, MIGRATE_DATA_URIS, the POLICY_MAX_ variables; GUEST_POLICY=0 "
        "ignores it). A value that is not valid or not allowed is ignored (or cut to its ceiling) with a "
        "warning. Example:"
    ))
    lines += [".PP", ".nf", _esc(
        f"virsh metadata GUEST --uri {NAMESPACE} --key guests --set \\\n"
        "  '<policy on_shutdown=\"shutdown poweroff\" shutdown_timeout=\"120\" order=\"10\"/>' --config --live"
    ), ".fi"]
    for attribute in ATTRIBUTES:
        lines += _item(attribute.name, f"{attribute.doc}; {attribute.accepts}.")
    lines += _section("FILES")
    for tag, text in (
        (" or ".join(str(p) for p in CONFIG_CANDIDATES), "The configuration."),
        (str(DEFAULT_LIST_FILE), "The list file: one line per URI, the URI as written in URIS followed by the "
                                 "UUIDs of the guests to start, single spaces (the original's format)."),
        (f"{DEFAULT_LIST_FILE}.state", "The state journal: each guest's outcome as it happens (JSON, mode 0600); "
                                       "its events since the last rewrite are appended to the same name followed "
                                       "by .log."),
        (str(DEFAULT_LOCK_FILE), "Exists while guests are started (after start, until stop)."),
    ):
        lines += _item(tag, text)
    lines += _section("EXIT STATUS")
    for code, text in exit_codes.items():
        lines += _item(str(code), text)
    lines += _section("SEE ALSO")
    lines.append("virsh(1), libvirtd(8)")
    return "\n".join(lines) + "\n"


def render_sample_config() -> str:
    """sysconfig/libvirt-guests: every variable, commented out at its default."""
    lines = [
        "# Configuration of libvirt-guests, read as /bin/sh reads it (quotes, export, $NAME),",
        "# but never run: a line the shell would run (a command, $(...)) is skipped with an error.",
        "# A variable set in the process environment (systemd Environment=) overrides this file.",
        "# Check it with: libvirt-guests check-config",
    ]
    for setting in SETTINGS:
        lines.append("")
        lines += textwrap.wrap(setting.doc, width=78, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"# Accepts {setting.accepts}.")
        if setting.debian_default is not None:
            lines.append(f"# Debian's script used {setting.name}={setting.debian_default}.")
        lines.append(f"#{setting.name}={setting.default}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_sample_config() if sys.argv[1:] == ["sample-config"] else render(COMMANDS, EXIT_CODES), end="")
