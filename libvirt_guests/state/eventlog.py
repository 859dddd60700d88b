"""The journal's event log (STATE.log): one JSON line per guest event,
appended as they happen, made durable by group commit."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from libvirt_guests.state.files import StateError, ours, write_replacing
from libvirt_guests.state.files import write_all as _write_all  # a name of this module: tests make it fail

JOURNAL_VERSION = 2  # 1: one JSON document, no log (still read)
LOG_FORMAT = "libvirt-guests journal log"


def log_path(state_file: Path) -> Path:
    """The journal's event log, beside its state file."""
    return state_file.with_name(state_file.name + ".log")


def create_log(path: Path, name: str) -> tuple[int, int]:
    """A new log at path holding only its header, in place atomically (the
    atomic write, kept open for appending): (descriptor, size)."""
    header = (json.dumps({"format": LOG_FORMAT, "version": JOURNAL_VERSION, "log": name}) + "\n").encode()
    fd = write_replacing(path, lambda fd: _write_all(fd, header), append=True)
    assert fd is not None
    return fd, len(header)


def is_our_log(path: Path) -> bool:
    """True if path is a regular file of ours that starts as a journal log."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not ours(st):
            return False
        return os.read(fd, 64).startswith(b'{"format": "' + LOG_FORMAT.encode() + b'"')
    except OSError:
        return False
    finally:
        os.close(fd)


class Log:
    """An open journal log. Records are written under the journal's lock;
    waiting for them to reach the disk is not: a thread that finds an fsync
    under way waits for the next one, which covers its record and every
    other written meanwhile (group commit)."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path, self.fd, self.size = path, fd, size
        self.written = 0  # sequence number of the last record written
        self.durable = 0  # ... and of the last one known to be on disk
        self.syncing = False
        self.error: str | None = None  # an fsync failed: records may be lost; the journal starts afresh
        self.closed = False
        self.cond = threading.Condition(threading.Lock())

    def append(self, data: bytes) -> int:
        """Write records (under the journal's lock); their sequence number.
        StateError if they cannot be written: what was written of them is
        cut off again where possible, and the log must not be used again."""
        try:
            _write_all(self.fd, data)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise StateError(f"cannot write {self.path}: {err.strerror}") from err
        self.size += len(data)
        with self.cond:
            self.written += 1
            return self.written

    def wait_durable(self, seq: int) -> str | None:
        """Return once record seq is on disk; the error if an fsync failed."""
        with self.cond:
            while self.durable < seq:
                if self.syncing:
                    self.cond.wait()
                    continue
                self.syncing, target = True, self.written
                self.cond.release()
                try:
                    os.fdatasync(self.fd)
                    error = None
                except OSError as err:
                    error = f"cannot write {self.path}: {err.strerror}"
                finally:
                    self.cond.acquire()
                self.syncing = False
                self.durable = max(self.durable, target)
                self.error = self.error or error
                self.cond.notify_all()
            return self.error

    def close(self) -> None:
        """Close once no fsync is under way; whoever still waits returns (the
        caller made their records durable otherwise, or reports the loss)."""
        with self.cond:
            while self.syncing:
                self.cond.wait()
            if not self.closed:
                self.closed = True
                with contextlib.suppress(OSError):
                    os.close(self.fd)
            self.durable = self.written
            self.cond.notify_all()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            with contextlib.suppress(OSError):
                os.close(self.fd)

