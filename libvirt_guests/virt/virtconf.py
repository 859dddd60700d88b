"""libvirt's configuration file syntax (virconf: qemu.conf, libvirtd.conf),
read strictly and never executed.

One statement per line (or separated by ``;``): ``name = value`` where a value
is a string (``"..."`` or ``'...'`` on one line, ``\"\"\"...\"\"\"`` over lines; no
escapes), an integer (optionally signed) or a list ``[v, v, ...]`` of strings
and integers that may span lines; ``#`` starts a comment. What libvirt would
refuse is a :class:`ConfSyntaxError` here, so a file that the daemon cannot
load is never read as if it meant something.
"""

from __future__ import annotations

import re

Value = str | int | list[str | int]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_INT = re.compile(r"[-+]?[0-9]+")
_BLANKS = " \t\r"


class ConfSyntaxError(ValueError):
    """The text is not valid libvirt configuration syntax (libvirt refuses it too)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def advance(self, n: int = 1) -> str:
        chunk = self.text[self.pos:self.pos + n]
        self.line += chunk.count("\n")
        self.pos += n
        return chunk

    def skip_blanks(self) -> None:
        while self.peek() and self.peek() in _BLANKS:
            self.advance()

    def skip_comment(self) -> None:
        if self.peek() == "#":
            while self.peek() and self.peek() != "\n":
                self.advance()

    def skip_blanks_and_lines(self) -> None:
        while True:
            self.skip_blanks()
            self.skip_comment()
            if self.peek() != "\n":
                return
            self.advance()

    def error(self, reason: str) -> ConfSyntaxError:
        return ConfSyntaxError(self.line, reason)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        return self.advance(found.end() - self.pos)

    def string(self) -> str:
        if self.peek(3) == '"""':
            self.advance(3)
            end = self.text.find('"""', self.pos)
            if end < 0:
                raise self.error('unterminated """ string')
            value = self.advance(end - self.pos)
            self.advance(3)
            return value
        quote = self.advance()
        start = self.pos
        while self.peek() and self.peek() not in (quote, "\n"):
            self.advance()
        if self.peek() != quote:
            raise self.error("unterminated string")
        value = self.text[start:self.pos]
        self.advance()
        return value

    def scalar(self) -> str | int:
        if self.peek() in ("'", '"'):
            return self.string()
        number = self.match(_INT)
        if number is None:
            raise self.error("expecting a value")
        return int(number)

    def value(self) -> Value:
        if self.peek() != "[":
            return self.scalar()
        self.advance()
        items: list[str | int] = []
        self.skip_blanks_and_lines()
        while self.peek() != "]":
            if not self.peek():
                raise self.error("unterminated list")
            if self.peek() == "[":
                raise self.error("a list inside a list")
            items.append(self.scalar())
            self.skip_blanks_and_lines()
            if self.peek() == ",":
                self.advance()
                self.skip_blanks_and_lines()
            elif self.peek() != "]":
                raise self.error("expecting ',' or ']' in a list")
        self.advance()
        return items

    def separator(self) -> None:
        self.skip_blanks()
        if self.peek() == ";":
            self.advance()
            return
        self.skip_comment()
        if self.peek() == "\n":
            self.advance()
        elif self.peek():
            raise self.error("expecting a separator (end of line, ';' or a comment)")


def parse(text: str) -> list[tuple[str, Value, int]]:
    """Every ``(name, value, line)`` of ``text`` in order; raise ConfSyntaxError on what libvirt refuses."""
    reader = _Reader(text)
    entries: list[tuple[str, Value, int]] = []
    while True:
        reader.skip_blanks_and_lines()
        if not reader.peek():
            return entries
        line = reader.line
        name = reader.match(_NAME)
        if name is None:
            raise reader.error("expecting a name")
        reader.skip_blanks()
        if reader.peek() != "=":
            raise reader.error(f"expecting '=' after {name}")
        reader.advance()
        reader.skip_blanks()
        entries.append((name, reader.value(), line))
        reader.separator()
