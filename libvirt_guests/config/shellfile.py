"""The configuration file read as the original's /bin/sh reads it, and as
systemd's EnvironmentFile= passes it on; nothing in it is ever run.

python-dotenv splits the file into its lines; the POSIX shell's grammar
then reads them in one pass (a quote, a continued line, a compound command
or a here-document may span several): quotes and backslashes, several
assignments or commands on a line, ``export``, tilde expansion, and
``$NAME`` / ``${NAME}`` expansion (also ``${NAME-word}``, ``:-``, ``+``,
``:+``, ``=``, ``:=`` and ``${#NAME}``, nested) over the variables the
original had set before it sourced the file and those the file set on
earlier lines. A command the shell would run rather than assign (a command
word, command substitution, arithmetic, a redirection, a pipe) or an
expansion read only while the original runs (``$1``, ``${NAME%...}``) is
not evaluated: it is reported and skipped; a compound command (if, while,
for, case, { }, ( ), a function) is skipped whole, and a here-document's
body is never read as commands.

Where dash (Debian's /bin/sh) and bash run as sh (rpm distributions')
read a value differently, dash's reading is used and the difference is
reported (Reading.differences). The cost is linear in the text's size
(Reading.steps counts it); whatever the text holds, read_shell returns.
"""

from __future__ import annotations

import bisect
import io
import os
import pwd
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

import dotenv.parser

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BACKSLASH_PAIR = re.compile(r"\\.", re.S)
# In the word of a ${...} inside double quotes, bash (as sh) drops the inner quotes before it reads
# the names: "${X-"$A"b}" is $Ab there, $A then b in dash.
# A word of ${...} that starts with ~ (or has :~) and holds a ${...} other than ${NAME} after it.
# (The word starts after the operator's last character, - = or +: so does the ~ at its start.)
_DASH_TILDE = re.compile(r"(?<=[-=+:])~.*?\$\{(?![A-Za-z_][A-Za-z0-9_]*\})", re.S)
_BASH_JOINS = re.compile(r'\$[A-Za-z_][A-Za-z0-9_]*"+[A-Za-z0-9_]')
_LENGTH = re.compile(r"#([A-Za-z_][A-Za-z0-9_]*)\}")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_BLANKS = " \t"
_OPERATORS = ";&|<>()"
_SPECIAL_PARAMETERS = "@*#?-$!0123456789"
# Expansions nested deeper than this (${A-${A-...}}) are reported and skipped,
# not read: each level costs a few Python frames, and the interpreter's stack is bounded.
MAX_NESTING = 100


@dataclass
class Lit:
    text: str
    quoted: bool
    bash: str | None = None  # bash's reading of this text where it is not dash's (see _double_quoted)
    differs: str | None = None  # (an empty text) where bash reads what is around it otherwise: how


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
    tokens: list[tuple[str, str | None]] = field(default_factory=list)  # ("op", op) / ("word", literal or None)
    end_line: int = 0  # its last line


def _merged(parts: Word) -> Word:
    """Adjacent literal parts of the same quoting joined (a tilde-prefix is read within one)."""
    out: Word = []
    run: list[Lit] = []

    def flush() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else Lit("".join(p.text for p in run), run[0].quoted))
            run.clear()

    for part in parts:
        if isinstance(part, Lit) and part.bash is None and part.differs is None:
            if run and run[0].quoted != part.quoted:
                flush()
            run.append(part)
        else:
            flush()
            out.append(part)
    flush()
    return out


class _Incomplete(Exception):
    """The text ends inside a quote, an expansion or a continued line."""

    def __init__(self, what: str, line: int) -> None:
        super().__init__(what)
        self.what, self.line = what, line


class _Scanner:
    """The cursor over shell text, and what every part of the lexer shares:
    looking ahead, single quotes, backquotes, and why a command is not read.

    The shell joins a backslash-newline to nothing before it reads a token,
    anywhere but in single quotes, comments and here-documents: the lexer
    reads the text so joined (self.s), and goes back to the text as written
    (self.raw) for those three. A backslash pairs with the character after
    it, left to right, as it does outside single quotes; inside them the
    pairing may differ, but it is the same again after the closing quote."""

    def __init__(self, text: str, line: int) -> None:
        self.raw, self.first_line = text, line
        pieces, removed, at = [], [], 0
        for match in _BACKSLASH_PAIR.finditer(text):
            if match.group() == "\\\n":
                pieces.append(text[at:match.start()])
                removed.append(match.start())
                at = match.end()
        pieces.append(text[at:])
        self.s, self.i = "".join(pieces), 0
        self.removed = removed  # where (in raw) each backslash-newline taken out was
        self.joins = [r - 2 * k for k, r in enumerate(removed)]  # ... and where that is in self.s
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.skip: str | None = None
        self.start_line = line
        self.steps = 0  # characters looked at: the reader's cost, which a test bounds
        self.depth = 0  # ${ nesting
        self.in_quoted_brace = False  # inside the word of a ${...} within double quotes

    def peek(self, ahead: int = 0) -> str:
        self.steps += 1
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def raw_at(self, j: int) -> int:
        """The index in the text as written of the joined text's index j."""
        return j + 2 * bisect.bisect_right(self.joins, j)

    def joined_at(self, r: int) -> int:
        """The joined text's index of raw index r (not inside a backslash-newline)."""
        return r - 2 * bisect.bisect_left(self.removed, r)

    def line_at(self, j: int) -> int:
        return self.first_line + bisect.bisect_left(self.newlines, self.raw_at(j))

    def _skip_reason(self, why: str) -> None:
        self.skip = self.skip or why

    def _single_quoted(self) -> Lit:
        start = self.raw_at(self.i)
        end = self.raw.find("'", start + 1)
        if end < 0:
            raise _Incomplete("unterminated single quote", self.start_line)
        self.steps += end - start
        self.i = self.joined_at(end) + 1
        return Lit(self.raw[start + 1:end], True)

    def _backquote(self) -> None:
        j = self.i + 1
        while j < len(self.s) and self.s[j] != "`":
            self.steps += 1
            j += 2 if self.s[j] == "\\" else 1
        if j >= len(self.s):
            raise _Incomplete("unterminated command substitution `...`", self.start_line)
        self.i = j + 1
        self._skip_reason("would run a command: command substitution `...`")


class _Expansions(_Scanner):
    """Parsing of `$` expansions: $NAME, ${NAME}, ${NAME<op>word}, ${#NAME};
    $(...), $((...)) and the expansions read only while the original runs
    are skipped with their reason. Expands nothing."""

    def _double_quoted(self, brace: str = "") -> Word:
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
            return Param(name, "", None, quoted)
        if after and after in _SPECIAL_PARAMETERS:
            return self._cannot(self.i, self.i + 2, quoted)
        self.i += 1
        return Lit("$", quoted)

    def _braced(self, quoted: bool) -> Lit | Param:
        """${...}, read forward (its word's parts as they come: one pass, however deep)."""
        start, s = self.i, self.s
        if self.depth >= MAX_NESTING:
            end = self._brace_end(start + 1) + 1
            self.i = end
            self._skip_reason(f"nests expansions more than {MAX_NESTING} deep, which is not read here")
            return Lit("", quoted)
        length = _LENGTH.match(s, start + 2)
        if length:
            self.i = length.end()
            return Param(length.group(1), "#", None, quoted)
        match = NAME.match(s, start + 2)
        if not match:
            return self._cannot(start, self._brace_end(start + 1) + 1, quoted)
        name, j = match.group(), match.end()
        if s.startswith("}", j):
            self.i = j + 1
            return Param(name, "", None, quoted)
        op = next((op for op in (":-", ":=", ":+", "-", "=", "+") if s.startswith(op, j)), None)
        if op is None:
            return self._cannot(start, self._brace_end(start + 1) + 1, quoted)
        self.i = j + len(op)
        self.depth += 1
        outermost = quoted and not self.in_quoted_brace  # (its text holds the nested ones': looked at once)
        self.in_quoted_brace = quoted
        try:
            word = self._brace_word(quoted)
        finally:
            self.depth -= 1
            self.in_quoted_brace = not outermost and self.in_quoted_brace
        if outermost and _BASH_JOINS.search(self.s, start, self.i):
            word.append(Lit("", True, differs="a $NAME next to a \"...\" in a quoted expansion's word, which "
                                              "bash reads as one longer name"))
        return Param(name, op, word, quoted)

    def _brace_word(self, quoted: bool) -> Word:
        """The word of ${NAME-word}, up to its closing }. Within double quotes
        ("${X-\\n}") a backslash quotes only $ ` " \\ } and a newline, as there."""
        parts: Word = []
        word_start, tilde = self.i, False  # tilde: an unquoted ~ in it
        while True:
            c = self.peek()
            if c == "":
                raise _Incomplete("unterminated ${", self.start_line)
            if c == "}":
                if tilde and _DASH_TILDE.search(self.s, word_start, self.i):
                    # dash, when it passes over such a word unused, loses count of its braces: it
                    # reads ${A-~${U:-x}}y} to the second } (and drops text after it); bash does not
                    self._skip_reason("has a '~' and then an expansion inside an expansion's word, which dash "
                                      "and bash (as /bin/sh) end at different braces")
                self.i += 1
                return _merged(parts)
            if c == "\\" and self.peek(1):
                after = self.peek(1)
                self.i += 2
                if after == "\n":  # (never: the text is joined)
                    continue
                if quoted and after not in '$`"\\}':
                    parts.append(Lit("\\" + after, True))
                else:
                    parts.append(Lit(after, True))
            elif c == "'" and not quoted:
                parts.append(self._single_quoted())
            elif c == '"':
                parts.extend(self._double_quoted("quoted" if quoted else "unquoted"))
            elif c == "$":
                parts.append(self._dollar(quoted))
            elif c == "`":
                self._backquote()
            else:
                tilde = tilde or (c == "~" and not quoted)
                parts.append(Lit(c, quoted))
                self.i += 1

    def _brace_end(self, start: int) -> int:
        """Index of the } that closes the ${ at start."""
        depth, j = 1, start + 1
        while j < len(self.s):
            self.steps += 1
            c = self.s[j]
            if c == "\\":
                j += 2
                continue
            if c in "'\"":
                end = self.s.find(c, j + 1)
                if end < 0:
                    break
                self.steps += end - j
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
                self.i = end + 1
                continue
            depth += {"(": 1, ")": -1}.get(c, 0)
            self.i += 1
            if depth == 0:
                return

    def _cannot(self, start: int, end: int, quoted: bool) -> Lit:
        text = self.s[start:end]
        self.i = end
        self._skip_reason(f"uses {text!r}, which has a value only while the original script runs"
                          if not text.startswith("${") or text[2:3] in _SPECIAL_PARAMETERS
                          else f"uses {text!r}, an expansion not read here")
        return Lit("", quoted)


class _Lexer(_Expansions):
    """Splits shell text into simple commands of words (blanks, operators,
    comments, backslashes and quotes); expands nothing."""

    def commands(self) -> Iterator[Command]:
        """The simple commands of the text, one at a time (those before a
        syntax error at the end are yielded before it is raised)."""
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) whose bodies follow the line
        while self.i < len(self.s):
            command = self._command()
            if command is not None:
                yield command

    def _heredoc_bodies(self) -> None:
        """Past the bodies of the here-documents opened on the line just ended:
        sh never reads their lines as commands."""
        at = self.raw_at(self.i)  # the bodies are read as written
        for delimiter, strip_tabs in self.heredocs:
            while at < len(self.raw):
                end = self.raw.find("\n", at)
                end = len(self.raw) if end < 0 else end
                line = self.raw[at:end]
                self.steps += end - at + 1
                at = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
        self.heredocs = []
        self.i = len(self.s) if at >= len(self.raw) else self.joined_at(at)

    def _heredoc_delimiter(self, strip_tabs: bool) -> None:
        while self.peek() in _BLANKS and self.peek():
            self.i += 1
        start = self.i
        self._word()
        raw = self.s[start:self.i]
        delimiter = re.sub(r"\\(.)", r"\1", raw.replace("\\\n", ""), flags=re.S).replace("'", "").replace('"', "")
        self.heredocs.append((delimiter, strip_tabs))

    def _command(self) -> Command | None:
        words: list[Word] = []
        tokens: list[tuple[str, str | None]] = []
        self.skip = None
        start: int | None = None
        end_line: int | None = None
        while True:
            c = self.peek()
            if c == "":
                break
            if c in _BLANKS:
                self.i += 1
                continue
            if c == "#":  # a comment runs to the end of the line as written (a backslash-newline ends it too)
                here = self.raw_at(self.i)
                end = self.raw.find("\n", here)
                if end < 0:
                    self.i = len(self.s)
                    continue
                self.steps += end - here
                if self.raw[end - 1] == "\\" and bisect.bisect_left(self.removed, end - 1) < len(self.removed) \
                        and self.removed[bisect.bisect_left(self.removed, end - 1)] == end - 1:
                    self.i = self.joined_at(end + 1) - 1  # that newline was taken out: the line ends here
                    c = "\n"
                else:
                    self.i = self.joined_at(end)
                    continue
            if c == "\n":
                if start is not None:
                    end_line = self.line_at(self.i)
                self.i += 1
                if self.heredocs:
                    self._heredoc_bodies()
                if start is not None:
                    break
                continue
            if start is None:
                start, self.start_line = self.i, self.line_at(self.i)
            if c == ";":
                self.i += 1
                tokens.append(("op", ";"))
                if self.peek() == ";":
                    self.i += 1
                    self._skip_reason("would run a command: ';;' ends a case branch")
                break
            if c in _OPERATORS:
                op = c + self.peek(1) if self.peek(1) in "&|<>" and self.peek(1) else c
                self.i += len(op)
                tokens.append(("op", op))
                if op == "<<":
                    strip_tabs = self.peek() == "-"
                    self.i += strip_tabs
                    self._skip_reason("would run a command with a here-document ('<<'), whose body is not "
                                      "read either")
                    self._heredoc_delimiter(strip_tabs)
                self._skip_reason(f"would run a command: the operator '{op}'")
                continue
            word = self._word()
            words.append(word)
            tokens.append(("word", _literal(word)))
        if start is None:
            return None
        end = self.s.find("\n", start, self.i)
        text = self.s[start:self.i if end < 0 else end].strip()
        return Command(self.start_line, text, words, self.skip, tokens,
                       self.line_at(self.i) if end_line is None else end_line)

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
                if after == "\n":  # (never: the text is joined)
                    self.i += 2
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

    def _double_quoted(self, brace: str = "") -> Word:
        """A "..." string; brace: "quoted" or "unquoted" when it is inside the
        word of a ${NAME-word} that is itself inside double quotes or not.
        There dash also takes \\} as }; bash, inside a quoted one, drops
        the backslash before any character (its reading is kept as Lit.bash)."""
        self.i += 1
        parts: Word = []
        buf: list[str] = []
        bash: list[str] = []
        special = '$`"\\}' if brace else '$`"\\'

        def flush() -> None:
            if buf:
                dash_text, bash_text = "".join(buf), "".join(bash)
                parts.append(Lit(dash_text, True, bash_text if bash_text != dash_text else None))
                buf.clear()
                bash.clear()

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
                    continue
                buf.append(after if after in special else "\\" + after)
                bash.append(after if brace == "quoted" or after in '$`"\\' else "\\" + after)
                self.i += 2
            elif c == "$":
                flush()
                parts.append(self._dollar(quoted=True))
            elif c == "`":
                flush()
                self._backquote()
            else:
                buf.append(c)
                bash.append(c)
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
    # (line, NAME, what): a value dash and bash (as sh) read differently; dash's reading is used
    differences: list[tuple[int, str, str]] = field(default_factory=list)
    steps: int = 0  # what the reading cost (characters looked at): linear in the file's size


def _passwd_home() -> str | None:
    """The home folder of the user we run as, from the user database."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except (KeyError, OSError):
        return None


def _tilde(text: str, at_start: bool, ends_word: bool, scope: dict[str, str], after_colons: bool = True,
           unset_home: str | None = None) -> str:
    """Tilde expansion of an unquoted part of an assignment value (at its start and after each ':').
    A tilde-prefix runs to the first '/' or ':': when it runs on into a quoted
    part or an expansion (`~''`, `~$X`), it is not expanded. after_colons=False:
    at the start only. unset_home: what `~` is when HOME is not set (dash: none,
    it stays `~`; bash: the user's home from the user database)."""

    def expand(segment: str) -> str:
        if not segment.startswith("~"):
            return segment
        head, sep, tail = segment[1:].partition("/")
        if head == "":
            home = scope.get("HOME", unset_home)
        else:
            try:
                home = pwd.getpwnam(head).pw_dir
            except (KeyError, ValueError, OSError):  # no such user; a NUL byte in the name
                home = None
        return segment if home is None else home + sep + tail

    pieces = text.split(":")
    last = len(pieces) - 1
    return ":".join(expand(piece) if (index or at_start) and (index == 0 or after_colons)
                    and (ends_word or index < last or "/" in piece) else piece
                    for index, piece in enumerate(pieces))


class _Evaluator:
    def __init__(self, scope: dict[str, str], reading: Reading) -> None:
        self.scope, self.reading = scope, reading
        self.line = 0
        self.differs: list[str] = []  # what dash and bash read differently in the value being read
        self.tainted: set[str] = set()  # variables whose value dash and bash read differently

    def assign(self, name: str, value: str, differed: bool = False) -> None:
        self.scope[name] = value
        self.reading.values[name] = value
        self.reading.lines[name] = self.line
        if differed:
            self.tainted.add(name)
        else:
            self.tainted.discard(name)

    def value(self, parts: Word, assignment: bool, in_word: str = "") -> str:
        """The text of parts; in_word: they are the word of a ${NAME<op>word},
        "colons" or "start". There a tilde-prefix at the word's start is
        expanded by dash and bash alike; one after a ':' (in an assignment)
        by dash only, and only in the word of -, :-, + and :+ that is not
        inside the word of an = or := ("start" then): bash run as sh (POSIX
        mode) leaves it, so the difference is recorded."""
        out = []
        for index, part in enumerate(parts):
            if isinstance(part, Lit):
                text = part.text
                if part.bash is not None:
                    self.differs.append(f"{text!r} or {part.bash!r} inside double quotes")
                if part.differs is not None:
                    self.differs.append(part.differs)
                if assignment and not part.quoted and ("~" in text):
                    last = index + 1 == len(parts)
                    if last or re.search(r"[/:]", text):
                        if in_word == "start" and ":" in part.text.split("/", 1)[0]:
                            # dash, in the word of = and :=, runs a tilde-prefix on past a ':' (to
                            # the '/'): no user has ':' in the name; bash ends it at the ':'
                            text = part.text
                        else:
                            text = _tilde(part.text, index == 0, last, self.scope, in_word != "start")
                        # bash as sh: after a ':' only outside an expansion's word; with HOME
                        # unset, ~ is the user's home (dash keeps it)
                        fallback = _passwd_home() if "HOME" not in self.scope else None
                        bash = _tilde(part.text, index == 0, last, self.scope, not in_word, fallback)
                        if text != bash:
                            self.differs.append(f"{part.text!r} as {text!r} or {bash!r}"
                                                + (" (HOME is not set)" if fallback is not None else ""))
                out.append(text)
            else:
                out.append(self.param(part, assignment, in_word))
        return "".join(out)

    def param(self, part: Param, assignment: bool = True, in_word: str = "") -> str:
        self.reading.referenced.add(part.name)
        current = self.scope.get(part.name)
        if part.name in self.tainted and current is not None and part.op not in ("+", ":+"):
            self.differs.append(f"${part.name} as read on line {self.reading.lines.get(part.name)}")
        mode = "start" if part.op in ("=", ":=") or in_word == "start" else "colons"
        word: Callable[[], str] = lambda: self.value(part.word or [], assignment, in_word=mode)  # noqa: E731
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
            before = len(self.differs)
            current = word()
            self.assign(part.name, current, len(self.differs) > before)
            if len(self.differs) > before:
                self.reading.differences.append((self.line, part.name, f"{'; '.join(self.differs[before:])}; "
                                                 f"read as dash reads it, {current!r}"))
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
        exported = [(name, *self._assigned(name, parts))
                    for name, parts in map(_split_assignment, exports) if name is not None]
        for name, parts in map(_split_assignment, words[:count]):
            if name is not None:
                self.assign(name, *self._assigned(name, parts))
        for name, value, differed in exported:
            self.assign(name, value, differed)
        return None

    def _assigned(self, name: str, parts: Word) -> tuple[str, bool]:
        """The value of NAME=parts, and whether dash and bash read it differently (then recorded)."""
        self.differs = []
        text = self.value(parts, assignment=True)
        if self.differs and (self.line, name) not in [(line, n) for line, n, _ in self.reading.differences[-3:]]:
            self.reading.differences.append(
                (self.line, name, f"{'; '.join(dict.fromkeys(self.differs))}; read as dash reads it, {text!r}"))
        return text, bool(self.differs)


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
    """The variables a line meant to set: NAME=, and ${NAME=...} / ${NAME:=...}."""
    return tuple(dict.fromkeys(
        a or b for a, b in re.findall(r"(?:^|[\s;])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=|"
                                      r"\$\{([A-Za-z_][A-Za-z0-9_]*):?=", text)))


def parse_stream(stream: IO[str]) -> Iterator[Any]:
    """python-dotenv's parse_stream: its Bindings, one per line or quoted value."""
    return cast(Iterator[Any], dotenv.parser.parse_stream(stream))


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


_OPENERS = {"if": "fi", "while": "done", "until": "done", "for": "done", "case": "esac", "{": "}"}
_CLOSERS = {"fi", "done", "esac", "}"}
_LEAD = {"then", "else", "elif", "do", "!"}  # reserved words after which a command starts again


class _Compound:
    """Where the commands stand in the compound commands sh would run
    (if, while, until, for, case, { }, ( ) and function bodies), command by command."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.awaiting_body = False  # after NAME(): the function's body is the next compound command

    @property
    def inside(self) -> bool:
        return bool(self.stack) or self.awaiting_body

    def walk(self, command: Command) -> bool:
        """Follow the command's tokens; whether it belongs to a compound command."""
        touched = self.inside
        at_command = True  # a reserved word is recognised here
        tokens = command.tokens
        function_parens = -1
        for index, (kind, text) in enumerate(tokens):
            top = self.stack[-1] if self.stack else ""
            if index == function_parens:
                at_command = True
                continue
            if kind == "op":
                if text == "(":
                    following = tokens[index + 1] if index + 1 < len(tokens) else ("", None)
                    previous = tokens[index - 1] if index else ("", None)
                    if following == ("op", ")") and previous[0] == "word" and NAME.fullmatch(previous[1] or ""):
                        self.awaiting_body = touched = True  # NAME() - a function definition
                        function_parens = index + 1
                    elif at_command and top != "case":
                        self.stack.append("(")
                        touched = True
                elif text == ")":
                    if top == "(":
                        self.stack.pop()
                        touched = True
                    elif top == "case":
                        at_command = True  # a pattern's ')': its commands follow
                        continue
                at_command = text not in ("<", ">", "<<", ">>", "<&", ">&", "<>", ">|")
                continue
            if at_command and text in _OPENERS:
                self.stack.append(text)
                self.awaiting_body = False
                touched = True
                at_command = text in ("if", "while", "until", "{")
            elif at_command and text in _CLOSERS and self.stack:
                self.stack.pop()
                touched = True
                at_command = False
            elif at_command and text in _LEAD:
                touched = touched or bool(self.stack)
            elif top in ("case", "for") and text in ("in", "do"):
                at_command = text == "do"
            else:
                if self.awaiting_body and at_command:
                    self.awaiting_body = False  # not a compound command: that command is its body
                at_command = False
        return touched


def read_shell(text: str, scope: dict[str, str]) -> Reading:
    """Read `text` as `. FILE` would with the variables of `scope` set; scope is updated.

    Whatever the text holds, this returns the values it could read and the
    problems (it raises nothing). A compound command (if, while, case, { },
    ( ), a function definition) is never run here, and nothing inside it is
    assigned: it is one problem, from its first line to its last."""
    reading = Reading()
    evaluator = _Evaluator(scope, reading)
    # python-dotenv splits the file into its lines (a value quoted over several
    # lines is one); the shell's grammar then reads them in one pass, as a
    # here-document or a compound command may span several of them.
    text = "".join(chunk for _, chunk in _chunks(text))
    lexer = _Lexer(text, 1)
    compound = _Compound()
    region: list[Command] = []

    def close_region(why: str) -> None:
        first, last = region[0], region[-1]
        names = tuple(dict.fromkeys(n for command in region for n in _names_in(command.text)))
        span = f"line {first.line}" if last.end_line <= first.line else f"lines {first.line} to {last.end_line}"
        reading.skipped.append(Skipped(first.line, first.text, why.replace("{span}", span), names))
        region.clear()

    try:
        for command in lexer.commands():
            if compound.walk(command):
                region.append(command)
                if not compound.inside:
                    close_region("starts a compound command (if, while, for, case, { }, ( ) or a function) "
                                 "that would run commands: nothing in it is read ({span} skipped)")
                continue
            why = evaluator.run(command)
            if why is not None:
                reading.skipped.append(Skipped(command.line, command.text, why, _names_in(command.text)))
        if region:
            close_region("opens a compound command that is not closed: nothing in it is read, "
                         "and the rest of the file is skipped")
    except _Incomplete as err:
        if region:
            close_region("opens a compound command that is not closed: nothing in it is read, "
                         "and the rest of the file is skipped")
        else:
            lines = text.split("\n", err.line)
            first = lines[err.line - 1].strip() if len(lines) >= err.line else ""
            reading.skipped.append(Skipped(err.line, first, f"has an {err.what}: the rest of the file is skipped",
                                           _names_in(first)))
    except Exception as err:  # noqa: BLE001 - never seen; a file must never stop the reading of the rest
        line = lexer.start_line
        reading.skipped.append(Skipped(line, "", f"cannot be read ({type(err).__name__}): the rest of the file "
                                       "is skipped", ()))
    reading.steps = lexer.steps
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
