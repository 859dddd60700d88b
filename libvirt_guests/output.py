"""What the tool says: the original's messages (as gettext ids of the
``libvirt`` text domain, so shipped translations apply), syslog priority
prefixes under systemd, and sd_notify status datagrams."""

from __future__ import annotations

import gettext
import os
import re
import sys
import threading
from typing import TextIO

TEXT_DOMAIN = "libvirt"
LOCALE_DIR = "/usr/share/locale"

_translation = gettext.translation(TEXT_DOMAIN, localedir=LOCALE_DIR, fallback=True)

# syslog priorities, as systemd reads them from a "<N>" line prefix
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6


def tr(msgid: str, **values: object) -> str:
    """eval_gettext: translate, then replace $name by its value."""
    text = _translation.gettext(msgid)
    return re.sub(r"\$(\w+)", lambda m: str(values.get(m.group(1), m.group(0))), text)


def trf(msgid: str, *args: object) -> str:
    """gettext of a printf format whose id ends in a literal backslash-n."""
    text = _translation.gettext(msgid)
    return (text[:-2] if text.endswith("\\n") else text) % args


def dump_json(data: dict[str, object]) -> str:
    """Every --json output: one object, laid out the same way."""
    import json  # only --json needs it

    return json.dumps(data, indent=2)


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


class Output:
    """Line-atomic, thread-safe output: work runs in many threads at once."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._lock = threading.Lock()
        self._gone: set[int] = set()
        self._prefix_out = _under_journal(self.out)
        self._prefix_err = _under_journal(self.err)

    def _write(self, stream: TextIO, prefix: bool, level: int, text: str) -> None:
        lines = text.split("\n")
        with self._lock:
            if id(stream) in self._gone:
                return
            try:
                for line in lines:
                    stream.write((f"<{level}>" if prefix else "") + line + "\n")
                stream.flush()
            except (OSError, ValueError):
                # The reader went away (`| head`, a restarted journal) or the
                # disk is full: what is said is lost, what is done goes on.
                self._gone.add(id(stream))
                _discard(stream)

    def say(self, text: str, level: int = INFO) -> None:
        """A line on standard output, where the original printed its messages."""
        self._write(self.out, self._prefix_out, level, text)

    def warn(self, text: str) -> None:
        self._write(self.err, self._prefix_err, WARNING, f"libvirt-guests: warning: {text}")

    def error(self, text: str) -> None:
        self._write(self.err, self._prefix_err, ERR, f"libvirt-guests: error: {text}")


def notify(**fields: str | int) -> bool:
    """Send an sd_notify datagram (STATUS=, EXTEND_TIMEOUT_USEC=, ...)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
    import socket  # only under systemd (NOTIFY_SOCKET set)

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        return False
    return True
