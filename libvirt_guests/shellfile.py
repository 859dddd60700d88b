"""The configuration file read as the original's /bin/sh reads it, and as
systemd's EnvironmentFile= passes it on; nothing in it is ever run.

python-dotenv splits the file into its lines; each line is then read with
the POSIX shell's rules: quotes and backslashes, several assignments or
commands on a line, ``export``, tilde expansion, and ``$NAME`` / ``${NAME}``
expansion (also ``${NAME-word}``, ``:-``, ``+``, ``:+``, ``=``, ``:=`` and
``${#NAME}``) over the variables the original had set before it sourced the
file and those the file set on earlier lines. A command the shell would run
rather than assign (a command word, command substitution, arithmetic, a
redirection, a pipe) or an expansion read only while the original runs
(``$1``, ``${NAME%...}``) is not evaluated: it is reported and skipped.
"""

from __future__ import annotations

import io
import pwd
import re
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

from .records import dataclass, field

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_REST = re.compile(r"[A-Za-z0-9_]+")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_BLANKS = " \t"
_OPERATORS = ";&|<>()"
_SPECIAL_PARAMETERS = "@*#?-$!0123456789"


@dataclass
class Lit:
    text: str
    quoted: bool


@dataclass
class Param:
    name: str
    op: str  # '', '#', '-', ':-', '+', ':+', '=', ':='
    word: list[Lit | Param] | None
    quoted: bool


Word = list[Lit | Param]


@dataclass
class Command:
    line: int
    text: str  # its first line, as written
    words: list[Word]
    skip: str | None  # why it is not read, if it is not


class _Incomplete(Exception):
    """The text ends inside a quote, an expansion or a continued line."""

    def __init__(self, what: str, line: int) -> None:
        super().__init__(what)
        self.what, self.line = what, line


class _Scanner:
    """The cursor over shell text, and what every part of the lexer shares:
    looking ahead, joined lines, single quotes, backquotes, and why a
    command is not read."""

    def __init__(self, text: str, line: int) -> None:
        self.s, self.i, self.line = text, 0, line
        self.skip: str | None = None
        self.start_line = line

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def _continuation(self) -> None:
        """Past a backslash-newline, which joins two lines; the next line must exist."""
        self.i += 2
        self.line += 1
        if self.i >= len(self.s):
            raise _Incomplete("line continued past the end of the file", self.start_line)

    def _skip_reason(self, why: str) -> None:
        self.skip = self.skip or why

    def _single_quoted(self) -> Lit:
        end = self.s.find("'", self.i + 1)
        if end < 0:
            raise _Incomplete("unterminated single quote", self.start_line)
        text = self.s[self.i + 1:end]
        self.line += text.count("\n")
        self.i = end + 1
        return Lit(text, True)

    def _backquote(self) -> None:
        j = self.i + 1
        while j < len(self.s) and self.s[j] != "`":
            j += 2 if self.s[j] == "\\" else 1
        if j >= len(self.s):
            raise _Incomplete("unterminated command substitution `...`", self.start_line)
        self.line += self.s.count("\n", self.i, j)
        self.i = j + 1
        self._skip_reason("would run a command: command substitution `...`")


class _Expansions(_Scanner):
    """Parsing of `$` expansions: $NAME, ${NAME}, ${NAME<op>word}, ${#NAME};
    $(...), $((...)) and the expansions read only while the original runs
    are skipped with their reason. Expands nothing."""

    def _double_quoted(self) -> Word:
        raise NotImplementedError  # the word lexer's (a ${NAME-word} may hold "...")

    def _dollar(self, quoted: bool) -> Lit | Param:
        after = self.peek(1)
        if after == "(":
            arithmetic = self.peek(2) == "("
            self._skip_parens()
            self._skip_reason("would run a command: arithmetic expansion $((...))" if arithmetic
                              else "would run a command: command substitution $(...)")
            return Lit("", quoted)
        if after == "{":
            return self._braced(quoted)
        match = NAME.match(self.s, self.i + 1)
        if match:
            name, self.i = match.group(), match.end()
            # The shell joins backslash-newline before it reads a name: $A\<newline>B is $AB.
            while self.s.startswith("\\\n", self.i) and (more := _NAME_REST.match(self.s, self.i + 2)):
                self._continuation()
                name, self.i = name + more.group(), more.end()
            return Param(name, "", None, quoted)
        if after and after in _SPECIAL_PARAMETERS:
            return self._cannot(self.i, self.i + 2, quoted)
        self.i += 1
        return Lit("$", quoted)

    def _braced(self, quoted: bool) -> Lit | Param:
        start = self.i
        end = self._brace_end(start + 1)
        inner = self.s[start + 2:end]
        length = re.fullmatch(r"#([A-Za-z_][A-Za-z0-9_]*)", inner)
        if length:
            self.i = end + 1
            return Param(length.group(1), "#", None, quoted)
        match = NAME.match(inner)
        if not match:
            return self._cannot(start, end + 1, quoted)
        name, rest = match.group(), inner[match.end():]
        if rest == "":
            self.i = end + 1
            return Param(name, "", None, quoted)
        op = next((op for op in (":-", ":=", ":+", "-", "=", "+") if rest.startswith(op)), None)
        if op is None:
            return self._cannot(start, end + 1, quoted)
        self.i = start + 2 + match.end() + len(op)
        word = self._brace_word(quoted)
        return Param(name, op, word, quoted)

    def _brace_word(self, quoted: bool) -> Word:
        """The word of ${NAME-word}, up to its closing }."""
        parts: Word = []
        while True:
            c = self.peek()
            if c == "":
                raise _Incomplete("unterminated ${", self.start_line)
            if c == "}":
                self.i += 1
                return parts
            if c == "\\" and self.peek(1):
                parts.append(Lit(self.peek(1), True))
                self.i += 2
            elif c == "'" and not quoted:
                parts.append(self._single_quoted())
            elif c == '"':
                parts.extend(self._double_quoted())
            elif c == "$":
                parts.append(self._dollar(quoted))
            elif c == "`":
                self._backquote()
            else:
                if c == "\n":
                    self.line += 1
                parts.append(Lit(c, quoted))
                self.i += 1


    def _brace_end(self, start: int) -> int:
        """Index of the } that closes the ${ at start."""
        depth, j = 1, start + 1
        while j < len(self.s):
            c = self.s[j]
            if c == "\\":
                j += 2
                continue
            if c in "'\"":
                end = self.s.find(c, j + 1)
                if end < 0:
                    break
                j = end + 1
                continue
            if c == "$" and self.s[j + 1:j + 2] == "{":
                depth += 1
                j += 2
                continue
            if c == "}":
                depth -= 1
                if depth == 0:
                    return j
            j += 1
        raise _Incomplete("unterminated ${", self.start_line)

    def _skip_parens(self) -> None:
        """Past $( ... ) or $(( ... )), nested parentheses and quotes included."""
        self.i += 1  # the $
        depth = 0
        while True:
            c = self.peek()
            if c == "":
                raise _Incomplete("unterminated $(", self.start_line)
            if c == "\\":
                self.i += 2
                continue
            if c in "'\"":
                end = self.s.find(c, self.i + 1)
                if end < 0:
                    raise _Incomplete("unterminated quote", self.start_line)
                self.line += self.s.count("\n", self.i, end)
                self.i = end + 1
                continue
            if c == "\n":
                self.line += 1
            depth += {"(": 1, ")": -1}.get(c, 0)
            self.i += 1
            if depth == 0:
                return

    def _cannot(self, start: int, end: int, quoted: bool) -> Lit:
        text = self.s[start:end]
        self.line += text.count("\n")
        self.i = end
        self._skip_reason(f"uses {text!r}, which has a value only while the original script runs"
                          if not text.startswith("${") or text[2:3] in _SPECIAL_PARAMETERS
                          else f"uses {text!r}, an expansion not read here")
        return Lit("", quoted)


class _Lexer(_Expansions):
    """Splits shell text into simple commands of words (blanks, operators,
    comments, backslashes and quotes); expands nothing."""

    def commands(self) -> list[Command]:
        result = []
        while self.i < len(self.s):
            command = self._command()
            if command is not None:
                result.append(command)
        return result

    def _command(self) -> Command | None:
        words: list[Word] = []
        self.skip = None
        start: int | None = None
        while True:
            c = self.peek()
            if c == "":
                break
            if c in _BLANKS:
                self.i += 1
                continue
            if c == "\\" and self.peek(1) == "\n":
                self._continuation()
                continue
            if c == "#":
                while self.peek() not in ("", "\n"):
                    self.i += 1
                continue
            if c == "\n":
                self.i += 1
                self.line += 1
                if start is not None:
                    break
                continue
            if start is None:
                start, self.start_line = self.i, self.line
            if c == ";":
                self.i += 1
                if self.peek() == ";":
                    self.i += 1
                    self._skip_reason("would run a command: ';;' ends a case branch")
                break
            if c in _OPERATORS:
                op = c + self.peek(1) if self.peek(1) in "&|<>" and self.peek(1) else c
                self.i += len(op)
                self._skip_reason(f"would run a command: the operator '{op}'")
                continue
            words.append(self._word())
        if start is None:
            return None
        text = self.s[start:self.i].split("\n", 1)[0].strip()
        return Command(self.start_line, text, words, self.skip)

    def _word(self) -> Word:
        parts: Word = []
        plain: list[str] = []

        def flush() -> None:
            if plain:
                parts.append(Lit("".join(plain), False))
                plain.clear()

        while True:
            c = self.peek()
            if c == "" or c in _BLANKS or c == "\n" or c in _OPERATORS:
                break
            if c == "\\":
                after = self.peek(1)
                if after == "\n":
                    self._continuation()
                    continue
                if after == "":
                    raise _Incomplete("backslash at the end of the file", self.start_line)
                flush()
                parts.append(Lit(after, True))
                self.i += 2
            elif c == "'":
                flush()
                parts.append(self._single_quoted())
            elif c == '"':
                flush()
                parts.extend(self._double_quoted())
            elif c == "$":
                flush()
                parts.append(self._dollar(quoted=False))
            elif c == "`":
                flush()
                self._backquote()
            else:
                plain.append(c)
                self.i += 1
        flush()
        return parts

    def _double_quoted(self) -> Word:
        self.i += 1
        parts: Word = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                parts.append(Lit("".join(buf), True))
                buf.clear()

        while True:
            c = self.peek()
            if c == "":
                raise _Incomplete("unterminated double quote", self.start_line)
            if c == '"':
                self.i += 1
                break
            if c == "\\":
                after = self.peek(1)
                if after == "":
                    raise _Incomplete("unterminated double quote", self.start_line)
                if after == "\n":
                    self.i += 2
                    self.line += 1
                    continue
                buf.append(after if after in '$`"\\' else "\\" + after)
                self.i += 2
            elif c == "$":
                flush()
                parts.append(self._dollar(quoted=True))
            elif c == "`":
                flush()
                self._backquote()
            else:
                if c == "\n":
                    self.line += 1
                buf.append(c)
                self.i += 1
        flush()
        return parts or [Lit("", True)]


@dataclass
class Skipped:
    """A command of the file that was not read (not run either)."""

    line: int
    text: str
    reason: str
    names: tuple[str, ...]  # the variables it meant to set, as far as can be told


@dataclass
class Reading:
    """What the shell makes of the file."""

    values: dict[str, str] = field(default_factory=dict)  # each variable the file set: its final value
    lines: dict[str, int] = field(default_factory=dict)  # ... and the line that set it last
    skipped: list[Skipped] = field(default_factory=list)
    unset: list[tuple[int, str]] = field(default_factory=list)  # (line, NAME) expanded while not set
    referenced: set[str] = field(default_factory=set)


def _tilde(text: str, at_start: bool, ends_word: bool, scope: dict[str, str]) -> str:
    """Tilde expansion of an unquoted part of an assignment value (at its start and after each ':').
    A tilde-prefix runs to the first '/' or ':': when it runs on into a quoted
    part or an expansion (`~''`, `~$X`), it is not expanded."""

    def expand(segment: str) -> str:
        if not segment.startswith("~"):
            return segment
        head, sep, tail = segment[1:].partition("/")
        if head == "":
            home = scope.get("HOME")
        else:
            try:
                home = pwd.getpwnam(head).pw_dir
            except KeyError:
                home = None
        return segment if home is None else home + sep + tail

    pieces = text.split(":")
    last = len(pieces) - 1
    return ":".join(expand(piece) if (index or at_start) and (ends_word or index < last or "/" in piece) else piece
                    for index, piece in enumerate(pieces))


class _Evaluator:
    def __init__(self, scope: dict[str, str], reading: Reading) -> None:
        self.scope, self.reading = scope, reading
        self.line = 0

    def assign(self, name: str, value: str) -> None:
        self.scope[name] = value
        self.reading.values[name] = value
        self.reading.lines[name] = self.line

    def value(self, parts: Word, assignment: bool) -> str:
        out = []
        for index, part in enumerate(parts):
            if isinstance(part, Lit):
                text = part.text
                if assignment and not part.quoted and ("~" in text):
                    last = index + 1 == len(parts)
                    if last or re.search(r"[/:]", text):
                        text = _tilde(text, index == 0, last, self.scope)
                out.append(text)
            else:
                out.append(self.param(part))
        return "".join(out)

    def param(self, part: Param) -> str:
        self.reading.referenced.add(part.name)
        current = self.scope.get(part.name)
        word: Callable[[], str] = lambda: self.value(part.word or [], assignment=False)  # noqa: E731
        if part.op in ("", "#"):
            if current is None:
                self.reading.unset.append((self.line, part.name))
            return str(len(current or "")) if part.op == "#" else (current or "")
        if part.op == "-":
            return current if current is not None else word()
        if part.op == ":-":
            return current if current else word()
        if part.op == "+":
            return word() if current is not None else ""
        if part.op == ":+":
            return word() if current else ""
        # '=' and ':=' assign the word when unset (or empty)
        if current is None or (part.op == ":=" and not current):
            current = word()
            self.assign(part.name, current)
        return current

    def run(self, command: Command) -> str | None:
        """Perform the assignments of a command; why it was skipped, if it was."""
        self.line = command.line
        if command.skip:
            return command.skip
        words = command.words
        count = 0
        while count < len(words) and _assignment_name(words[count]) is not None:
            count += 1
        exports = []
        if count < len(words):
            head = _literal(words[count])
            if head != "export":
                shown = head if head is not None else command.text.split()[0] if command.text.split() else "?"
                return f"would run the command '{shown}'"
            for word in words[count + 1:]:
                if _assignment_name(word) is None and not NAME.fullmatch(_literal(word) or ""):
                    return f"would run 'export {_literal(word) or '...'}'"
                exports.append(word)
        # export's arguments are expanded first, as a command's arguments are
        # (`export A=0 B=$A` sets B from A's value before the line); then the
        # assignments before the command word, in order; then export's.
        exported = [(name, self.value(parts, assignment=True))
                    for name, parts in map(_split_assignment, exports) if name is not None]
        for name, parts in map(_split_assignment, words[:count]):
            if name is not None:
                self.assign(name, self.value(parts, assignment=True))
        for name, value in exported:
            self.assign(name, value)
        return None


def _literal(word: Word) -> str | None:
    """The text of a word made only of unquoted characters."""
    if len(word) == 1 and isinstance(word[0], Lit) and not word[0].quoted:
        return word[0].text
    return None


def _assignment_name(word: Word) -> str | None:
    if word and isinstance(word[0], Lit) and not word[0].quoted:
        match = _ASSIGNMENT.match(word[0].text)
        if match:
            return match.group(1)
    return None


def _split_assignment(word: Word) -> tuple[str | None, Word]:
    """NAME and the value's parts of a NAME=value word; (None, word) for a bare name."""
    name = _assignment_name(word)
    if name is None:
        return None, word
    first = word[0]
    assert isinstance(first, Lit)
    rest = first.text[len(name) + 1:]
    return name, ([Lit(rest, False)] if rest else []) + word[1:]


def _names_in(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(re.findall(r"(?:^|[\s;])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", text)))


# The name python-dotenv's parser module is kept under when it is loaded on its own (_dotenv_parser).
_PARSER_MODULE = "libvirt_guests._dotenv_parser"


def _dotenv_parser() -> Any:
    """python-dotenv's parser module (dotenv.parser), which splits the file.

    Loaded from its own file, without running the dotenv package's
    __init__: that imports dotenv.main, and with it logging, tempfile,
    shutil and more, several milliseconds of every start, at every shutdown,
    for nothing (issue 13); the parser itself needs only codecs, re and
    typing. It is kept under a name of ours, so that a later `import dotenv`
    (anyone's) gets its own, complete package. If python-dotenv is laid out
    otherwise (no dotenv/parser.py, or it fails to load on its own), the
    ordinary import."""
    for name in ("dotenv.parser", _PARSER_MODULE):  # imported already, by anyone
        if name in sys.modules:
            return sys.modules[name]
    try:
        import importlib.util

        package = importlib.util.find_spec("dotenv")  # finds the package; runs none of it
        assert package is not None and package.submodule_search_locations
        folder = next(iter(package.submodule_search_locations))
        spec = importlib.util.spec_from_file_location(_PARSER_MODULE, f"{folder}/parser.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_PARSER_MODULE] = module
        spec.loader.exec_module(module)
        assert callable(module.parse_stream)
    except Exception:  # noqa: BLE001 - any failure: the ordinary import below
        sys.modules.pop(_PARSER_MODULE, None)
        import dotenv.parser as module
    return module


def parse_stream(stream: IO[str]) -> Iterator[Any]:
    """python-dotenv's parse_stream: its Bindings, one per line or quoted value."""
    return cast(Iterator[Any], _dotenv_parser().parse_stream(stream))


def _chunks(text: str) -> list[tuple[int, str]]:
    """The file in python-dotenv's lines (a value quoted over several lines is one), with line numbers."""
    originals = [binding.original.string for binding in parse_stream(io.StringIO(text))]
    if "".join(originals) != text:  # never seen; read the file whole rather than wrongly
        return [(1, text)]
    chunks, line = [], 1
    for original in originals:
        chunks.append((line, original))
        line += original.count("\n")
    return chunks


def read_shell(text: str, scope: dict[str, str]) -> Reading:
    """Read `text` as `. FILE` would with the variables of `scope` set; scope is updated."""
    reading = Reading()
    evaluator = _Evaluator(scope, reading)
    chunks = _chunks(text)
    pending, pending_line = "", 1
    for index, (line, chunk) in enumerate(chunks):
        if not pending:
            pending_line = line
        pending += chunk
        last = index + 1 == len(chunks)
        if not last and not pending.endswith("\n"):
            continue
        try:
            commands = _Lexer(pending, pending_line).commands()
        except _Incomplete as err:
            if not last:
                continue
            first = pending.splitlines()[err.line - pending_line].strip() if pending.strip() else ""
            reading.skipped.append(Skipped(err.line, first, f"has an {err.what}: the rest of the file is skipped",
                                           _names_in(first)))
            break
        pending = ""
        for command in commands:
            why = evaluator.run(command)
            if why is not None:
                reading.skipped.append(Skipped(command.line, command.text, why, _names_in(command.text)))
    return reading


# --- systemd's EnvironmentFile= ------------------------------------------------------------------

_WHITESPACE, _NEWLINE, _COMMENTS, _NEED_ESCAPE = " \t\n\r", "\n\r", "#;", '"\\`$'


def environment_file_values(text: str) -> dict[str, str]:
    """The variables systemd's EnvironmentFile= passes on from `text`: its
    env-file parser (src/basic/env-file.c) re-stated; no $ expansion, a
    '# comment' after an unquoted value is part of the value, and a name
    that is not a valid variable name ('export NAME') is dropped."""
    values: dict[str, str] = {}
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_blank: int | None = None
    value_blank: int | None = None

    def push(strip_value: bool) -> None:
        name = "".join(key[:key_blank] if key_blank is not None else key)
        chars = value[:value_blank] if strip_value and value_blank is not None else value
        if NAME.fullmatch(name):
            values[name] = "".join(chars)

    for c in text:
        if state == "pre_key":
            if c in _COMMENTS:
                state = "comment"
            elif c not in _WHITESPACE:
                state, key, key_blank = "key", [c], None
        elif state == "key":
            if c in _NEWLINE:
                state, key = "pre_key", []
            elif c == "=":
                state, value, value_blank = "pre_value", [], None
            else:
                if c not in _WHITESPACE:
                    key_blank = None
                elif key_blank is None:
                    key_blank = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in _NEWLINE:
                push(False)
                state, key = "pre_key", []
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in _WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in _NEWLINE:
                push(True)
                state, key = "pre_key", []
            elif c == "\\":
                state, value_blank = "value_escape", None
            else:
                if c not in _WHITESPACE:
                    value_blank = None
                elif value_blank is None:
                    value_blank = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in _NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            state = "pre_key" if c in _NEWLINE else "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        push(state == "value")
    return values
