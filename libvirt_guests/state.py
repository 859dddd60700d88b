"""Files that outlive one run: the list file (the original's format), the
state journal beside it, the 'started' lock file and the run lock.

Every write is atomic (temporary file in the same directory, fsync, rename,
fsync of the directory) and no path is followed through a symlink, because
the lock file lives in a world-writable directory (/run/lock)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE_MODE = 0o600


class StateError(Exception):
    """A state file that cannot be read or written safely."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace path with data so that a crash leaves the old or the new file."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as err:
        raise StateError(f"cannot write {path}: {err.strerror}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
        _fsync_dir(directory)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise StateError(f"cannot write {path}: {err.strerror}") from err


def safe_read(path: Path) -> str | None:
    """Text of a regular file owned by us, None if absent; never via a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StateError(f"{path} is a symbolic link; refusing to read it") from err
        raise StateError(f"cannot read {path}: {err.strerror}") from err
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise StateError(f"{path} belongs to uid {st.st_uid}, not to us; refusing to trust it")
        return handle.read().decode("utf-8", errors="replace")


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise StateError(f"cannot remove {path}: {err.strerror}") from err


# --- the list file -------------------------------------------------------

ListEntries = list[tuple[str, list[str]]]


def parse_list(text: str) -> ListEntries:
    """'<uri> <uuid> <uuid>...' per line, as the original reads it with `read`."""
    entries: ListEntries = []
    for line in text.splitlines():
        words = line.split()
        if words:
            entries.append((words[0], words[1:]))
    return entries


def format_list(entries: Iterable[tuple[str, list[str]]]) -> str:
    return "".join(" ".join([uri, *uuids]) + "\n" for uri, uuids in entries if uuids)


def read_list(path: Path) -> ListEntries | None:
    text = safe_read(path)
    return None if text is None else parse_list(text)


def write_list(path: Path, entries: Iterable[tuple[str, list[str]]]) -> bool:
    """Write the list atomically; an empty list removes the file. True if written."""
    text = format_list(entries)
    if not text:
        remove(path)
        return False
    atomic_write(path, text.encode())
    return True


# --- the state journal -----------------------------------------------------

# Phases: 'stopping' (a stop is under way or was interrupted: the next stop
# finishes it), 'stopped' (done: the original's no-op applies), 'start-incomplete'
# (a start left guests to retry).
RESUMABLE_PHASES = ("stopping", "start-incomplete")


@dataclass
class GuestRecord:
    uri: str
    uuid: str
    name: str
    persistent: bool = True
    recorded: bool = True  # listed in the list file (restarted at boot)
    was_paused: bool = False  # paused by its user before the stop
    paused_by_us: bool = False
    outcome: str = "pending"
    detail: str = ""


@dataclass
class Journal:
    """Per-guest outcomes of the current stop or start, saved as they happen."""

    path: Path
    phase: str = "stopping"
    guests: dict[str, GuestRecord] = field(default_factory=dict)
    # A journal that cannot be written (disk full) must not stop the work on
    # the guests: the first error is kept here for the caller to report.
    write_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def key(uri: str, uuid: str) -> str:
        return f"{uri} {uuid}"

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        text = safe_read(path)
        if text is None:
            return None
        try:
            data = json.loads(text)
            guests = {cls.key(g["uri"], g["uuid"]): GuestRecord(**g) for g in data["guests"]}
            return cls(path, data["phase"], guests)
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(f"{path} is damaged ({err}); remove it to start afresh") from err

    def get(self, uri: str, uuid: str) -> GuestRecord | None:
        return self.guests.get(self.key(uri, uuid))

    def add(self, record: GuestRecord) -> None:
        with self._lock:
            self.guests[self.key(record.uri, record.uuid)] = record

    def update(self, uri: str, uuid: str, **changes: object) -> None:
        with self._lock:
            record = self.guests[self.key(uri, uuid)]
            for name, value in changes.items():
                setattr(record, name, value)
            self._save_locked()

    def save(self, phase: str | None = None) -> None:
        with self._lock:
            if phase:
                self.phase = phase
            self._save_locked()

    def _save_locked(self) -> None:
        data = {
            "version": 1,
            "phase": self.phase,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "guests": [asdict(g) for g in self.guests.values()],
        }
        try:
            atomic_write(self.path, json.dumps(data, indent=1).encode())
        except StateError as err:
            self.write_error = self.write_error or str(err)

    def pending(self) -> list[GuestRecord]:
        return [g for g in self.guests.values() if g.recorded and g.outcome not in ("started", "vanished")]


# --- the 'started' lock file ---------------------------------------------


def marker_exists(path: Path) -> bool:
    """True if the lock file is a regular file of ours (a planted one is not)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def touch_marker(path: Path) -> None:
    """Create the lock file afresh, replacing anything someone else planted."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.utime(path, follow_symlinks=False)
            return
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise StateError(f"cannot replace {path}: {err.strerror}") from err
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE))
    except OSError as err:
        raise StateError(f"cannot create {path}: {err.strerror}") from err


# --- the run lock ---------------------------------------------------------


class RunLock:
    """One invocation at a time: flock on a private file, waiting up to a bound."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, wait: float, on_wait: Callable[[str], None]) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            raise StateError(f"cannot open run lock {self.path}: {err.strerror}") from err
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise StateError(f"run lock {self.path} is not a regular file of ours; refusing to use it")
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateError(
                        f"another libvirt-guests (pid {holder}) is still running; gave up waiting after {wait:g} s"
                    ) from None
                if not told:
                    on_wait(f"waiting for another libvirt-guests (pid {holder}) to finish, up to {wait:g} s")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
