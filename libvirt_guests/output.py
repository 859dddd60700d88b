"""What the tool says: the original's messages (as gettext ids of the
``libvirt`` text domain, so shipped translations apply), syslog priority
prefixes under systemd, and sd_notify status datagrams."""

from __future__ import annotations

import contextlib
import gettext
import json
import os
import re
import socket
import sys
import threading
import urllib.parse
from typing import TextIO

TEXT_DOMAIN = "libvirt"
LOCALE_DIR = "/usr/share/locale"

_translation = gettext.translation(TEXT_DOMAIN, localedir=LOCALE_DIR, fallback=True)

# syslog priorities, as systemd reads them from a "<N>" line prefix
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6


def tr(msgid: str, **values: object) -> str:
    """eval_gettext: translate, then replace $name by its value (a guest's
    name, a URI: shown as shown_error shows a text: redacted, escaped)."""
    text = _translation.gettext(msgid)
    return re.sub(r"\$(\w+)", lambda m: shown_error(values[m.group(1)]) if m.group(1) in values else m.group(0),
                  text)


def trf(msgid: str, *args: object) -> str:
    """gettext of a printf format whose id ends in a literal backslash-n;
    its string arguments are shown as tr's values are."""
    text = _translation.gettext(msgid)
    return (text[:-2] if text.endswith("\\n") else text) % tuple(
        shown_error(arg) if isinstance(arg, str) else arg for arg in args)


# --- Untrusted text, made safe to print -------------------------------------
# A guest's name, description and metadata come from whoever can define a
# domain; file names, configuration values, URIs and libvirt's error texts
# from places this tool does not control either. Every such value is passed
# through shown() (or shown_uri() for a URI, shown_error() for an exception's
# text) where it is put into a message; Output then escapes whatever control
# character is still left in a whole line, as a last line of defence.

_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape(text: str, backslash: bool) -> str:
    if text.isprintable() and (not backslash or "\\" not in text):
        return text  # the common case: nothing to do
    return "".join(_escape_char(ch) if not ch.isprintable() or (backslash and ch == "\\") else ch for ch in text)


def escape(text: object) -> str:
    """A value from a guest or a file, safe to print on one line: every
    character Python's str.isprintable() refuses (Unicode categories Cc,
    Cf, Cs, Co, Cn, Zl, Zp and Zs other than the space: C0, DEL, C1, the
    bidirectional controls U+202A-U+202E and U+2066-U+2069, U+200B-U+200F,
    U+2028/U+2029, ...) is written as Python writes it, \\r, \\x9b,
    \\u202e; a backslash is doubled, so that the escape is unambiguous."""
    return _escape(str(text), backslash=True)


# Query parameters of a URI whose value is (or may hold) a secret: every
# name of which one part (split at _ and -) is one of these words.
_SECRET_WORDS = frozenset({"password", "passwd", "pass", "pwd", "passphrase", "secret", "token", "key", "apikey",
                           "credential", "credentials", "auth", "authtoken", "cookie", "privkey"})
REDACTED = "***"
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#@]*@")
# A value ends at the next separator; in a sentence, punctuation right
# before a blank or the end ("...&password=x. Skipping.") is the sentence's.
_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&;#\s'\"]*?)"
                    r"(?=[.,:)\]]*(?:[&;#\s'\"]|$))")


def _secret_name(name: str) -> bool:
    return any(part in _SECRET_WORDS for part in re.split(r"[_.-]", name.lower()))


def redact(text: str) -> str:
    """Credentials out of a URI, or out of any text that may contain one
    (libvirt's error messages echo the URI): the password of `user:pw@`
    and the value of a query parameter named as a secret (password,
    passwd, pass, pwd, secret, token, key, ...) become ***. A parameter
    whose value holds a URI with a password (the ESX driver's proxy=) loses
    that password too, percent-encoded or not."""
    if "@" not in text and "=" not in text:
        return text

    def param(match: re.Match[str]) -> str:
        value = match.group("value")
        if _secret_name(match.group("name")):
            return match.group("head") + (REDACTED if value else "")
        decoded = urllib.parse.unquote(value)
        if "@" in decoded and _USERINFO.search(decoded):
            return match.group("head") + urllib.parse.quote(_redact_userinfo(decoded), safe=":/@*")
        return match.group(0)

    return _PARAM.sub(param, _redact_userinfo(text))


def _redact_userinfo(text: str) -> str:
    return _USERINFO.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text) if "@" in text else text


def shown(value: object) -> str:
    """A value from a guest or a file, for a message: escaped (see escape)."""
    return escape(value)


def shown_uri(uri: object) -> str:
    """A URI for a message: its credentials redacted, then escaped. The
    raw URI stays in the configuration and the 0600 state file."""
    return escape(redact(str(uri)))


def shown_error(err: object) -> str:
    """An exception's text (libvirt's messages may echo a URI, a guest's
    name, a file's name) for a message: redacted, then escaped. An error
    whose text was made for printing already (its class sets `shown`, as
    VirtError does) is taken as it is, so it is not escaped twice."""
    if isinstance(err, BaseException) and getattr(err, "shown", False):
        return str(err)
    return escape(redact(str(err)))


def _last_defence(text: str) -> str:
    """What Output does to every line: credentials redacted and any control
    character escaped (not the backslash: values escaped where they were
    put into the message carry their own)."""
    return _escape(redact(text), backslash=False)


def dump_json(data: dict[str, object]) -> str:
    """Every --json output: one object, laid out the same way."""
    return json.dumps(data, indent=2)  # ensure_ascii: no control or invisible character left raw


def _under_journal(stream: TextIO) -> bool:
    """True when stream is connected to the journal (JOURNAL_STREAM matches)."""
    spec = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in spec:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return spec == f"{st.st_dev}:{st.st_ino}"


def _discard(stream: TextIO) -> None:
    """Point a stream's descriptor at /dev/null, so that nothing written or
    still buffered for it (the interpreter's flush at exit) fails again."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(devnull, fd)
    os.close(devnull)


def discard_stdout() -> None:
    """After a BrokenPipeError on standard output: nothing more goes there."""
    _discard(sys.stdout)


def open_standard_streams() -> None:
    """At start-up: a standard descriptor (0, 1, 2) that is closed is opened
    on /dev/null, so that no file this run opens (the list file, a libvirt
    socket) takes its number and receives what is written to it; and a
    sys.stdin/stdout/stderr that Python left None (its descriptor was closed
    when the interpreter started) becomes a stream on /dev/null."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            except OSError:
                continue
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115 - for the whole run
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def _forgiving(stream: TextIO | None) -> TextIO:
    """The stream to write to: /dev/null for none at all; a character the
    stream's encoding cannot write (a guest named café-€ under latin-1 or
    LANG=C) comes out as \\xe9, \\u20ac instead of failing the line."""
    if stream is None:
        return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the Output
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(Exception):
            reconfigure(errors="backslashreplace")
    return stream


class Output:
    """Line-atomic, thread-safe output: work runs in many threads at once.

    say(), warn() and error() write one line each: a newline or any other
    control character left in the text is escaped (see _last_defence), and
    credentials in a URI are redacted. block() writes text of several lines
    that the tool itself laid out (--help, a table, JSON).

    Writing never fails: a stream that cannot be written to any more (closed,
    a reader gone, EIO, a full disk) is dropped for the rest of the run,
    and the work goes on with the same exit code."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = _forgiving(out or sys.stdout)
        self.err = _forgiving(err or sys.stderr)
        self._lock = threading.Lock()
        self._gone: set[int] = set()
        self._prefix_out = _under_journal(self.out)
        self._prefix_err = _under_journal(self.err)

    def _write(self, stream: TextIO, prefix: bool, level: int, lines: list[str]) -> None:
        with self._lock:
            if id(stream) in self._gone:
                return
            try:
                for line in lines:
                    stream.write((f"<{level}>" if prefix else "") + _last_defence(line) + "\n")
                stream.flush()
            except Exception:  # noqa: BLE001 - whatever the stream does, what is done goes on
                # The reader went away (`| head`, a restarted journal), the
                # disk is full, the descriptor was closed: what is said is
                # lost, what is done goes on.
                self._gone.add(id(stream))
                _discard(stream)

    def say(self, text: str, level: int = INFO) -> None:
        """A line on standard output, where the original printed its messages."""
        self._write(self.out, self._prefix_out, level, [text])

    def block(self, text: str, level: int = INFO) -> None:
        """Lines the tool laid out itself (help, tables, JSON) on standard output."""
        self._write(self.out, self._prefix_out, level, text.split("\n"))

    def warn(self, text: str) -> None:
        self._write(self.err, self._prefix_err, WARNING, [f"libvirt-guests: warning: {text}"])

    def error(self, text: str) -> None:
        self._write(self.err, self._prefix_err, ERR, [f"libvirt-guests: error: {text}"])


def notify(**fields: str | int) -> bool:
    """Send an sd_notify datagram (STATUS=, EXTEND_TIMEOUT_USEC=, ...)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def plain_number(value: float | int) -> str:
    """0, 1.5, 300: not Python's 0.0."""
    return f"{int(value)}" if float(value).is_integer() else f"{value}"
