"""What is wrong with a configuration: one Problem per value, line or file,
said on one line (check-config lists them; stop and start warn and go on)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from libvirt_guests.config.commands import COMMANDS, Command
from libvirt_guests.config.settings import BY_NAME
from libvirt_guests.output import redact

SHOWN_VALUE = 80  # characters of a value quoted in a message


class ConfigError(Exception):
    """A configuration that cannot be used: exit 6 (LSB 'not configured')."""


def shown_value(text: str) -> str:
    """A value quoted on one line: its credentials redacted, repr (which
    escapes what cannot be printed), cut to SHOWN_VALUE characters (a value
    of the environment or the file can be megabytes long)."""
    text = redact(text)
    if len(text) <= SHOWN_VALUE:
        return repr(text)
    return f"{text[:SHOWN_VALUE]!r}...({len(text)} characters)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, and what is done about it."""

    # "value", "line" (a line of the file read otherwise, or not at all), "file" (the whole file)
    # or "setting" (values that do not go together; check-config's only)
    kind: str
    where: str  # FILE:LINE, FILE, or "the environment"
    reason: str  # what is wrong (for a value: what is accepted)
    variable: str | None = None  # None: not one variable's (a file, a command line)
    value: str | None = None  # the text found
    source: str = "file"  # "file" or "environment"
    accepts: str | None = None
    used: str | None = None  # the text of the value used instead
    as_original: bool = False  # used is the original's reading of the value (else the default)
    original_message: str | None = None  # what the original printed for it (on standard output)

    def text(self) -> str:
        """The one line that says it."""
        if self.kind in ("file", "setting"):
            text = self.reason
        elif self.kind == "line":
            text = f"{self.where}: {self.reason}"
        else:
            used = self.used or ""
            shown = used if re.fullmatch(r"[0-9]+(\.[0-9]+)?", used) else repr(used)
            how = "as the original script reads it" if self.as_original else "the default"
            text = (f"{self.variable}={shown_value(self.value or '')} (from {self.where}) is not valid: {self.reason}; "
                    f"using {shown}, {how}")
        return text.replace("\n", "\\n").replace("\r", "\\r")

    def concerns(self, command: str) -> bool:
        """True when `command` uses what this problem is about."""
        if self.variable is None or self.variable not in BY_NAME:
            return True
        if command == "shutdown" and self.variable == "ON_SHUTDOWN":
            return False  # `shutdown` forces ON_SHUTDOWN=shutdown, as in the original
        operations = Command(command).operations() if command in COMMANDS else ("stop", "start")
        return bool(set(BY_NAME[self.variable].used_by) & set(operations))

    def as_dict(self) -> dict[str, object]:
        return {
            "variable": self.variable, "value": self.value, "source": self.source, "where": self.where,
            "reason": self.reason, "accepts": self.accepts, "used": self.used,
            "used_is": None if self.kind != "value" else ("original reading" if self.as_original else "default"),
            "message": self.text(),
        }
