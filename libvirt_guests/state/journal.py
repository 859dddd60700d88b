"""Files that outlive one run: the list file (the original's format), the
state journal beside it, the 'started' lock file and the run lock.

Every write is atomic (temporary file in the same directory, fsync, rename,
fsync of the directory), but for the journal's event log, which is appended
to (a record torn by a crash is ignored: see the journal's section), and no
path is followed through a symlink, because the lock file lives in a
world-writable directory (/run/lock).

What a run finds is never a reason to leave guests unhandled: a state file
that is damaged, written by a newer version, a symbolic link or someone
else's is renamed aside (NAME.damaged-STAMP, NAME.untrusted-STAMP) with one
line saying so, and the run goes on as if it were absent; junk in the list
file is dropped word by word; whatever sits at the lock path is replaced or
reported, never fatal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from libvirt_guests.records import asdict, dataclass, field

FILE_MODE = 0o600
JOURNAL_VERSION = 2  # 1: one JSON document, no log (still read)
MIGRATED = "migrated"  # the outcome of a guest the migrate action moved to a peer
# The most read of any state file (list file, journal, its log): a journal of
# ten thousand guests and their events is a few MiB; a larger file is damage
# (or a file planted to fill the memory of a run at shutdown).
MAX_STATE_BYTES = 64 * 1024 * 1024


class StateError(Exception):
    """A state file that cannot be read or written safely."""


class UntrustedState(StateError):
    """A state file that is a symbolic link, not a regular file, or not ours."""


class DamagedState(StateError):
    """A journal that cannot be understood: damaged, or from a newer version."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The names _temp_name gives path's temporary files, and nothing else."""
    return re.compile(rf"\.{re.escape(path.name)}\.[0-9]+\.[0-9a-f]{{8}}")


def _replaceable(path: Path, directory: bool = False) -> None:
    """StateError for what a misconfigured path may name and no run may
    rename, replace or remove: a device (LIBVIRT_GUESTS_LIST_FILE=/dev/null;
    only root makes one, so it was not planted), or a directory that is not
    empty (=/var/lib/libvirt), unless directory. An empty directory, a
    FIFO, a socket, a link or a file can go aside: nothing is lost."""
    try:
        st = os.lstat(path)
    except OSError:
        return  # absent, or the operation itself says why not
    mode = st.st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise StateError(f"{path} is {_what(st)}; left alone")
    if stat.S_ISDIR(mode) and not directory:
        try:
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
        except OSError:
            empty = False
        if not empty:
            raise StateError(f"{path} is {_what(st)} that is not empty; left alone")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace path with data so that a crash leaves the old or the new file."""
    _replaceable(path)
    directory = path.parent
    tmp = directory / _temp_name(path)
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


def clean_temp_files(*paths: Path) -> list[Path]:
    """Remove what a killed run's atomic_write left beside paths
    (.NAME.PID.HEX, regular files of ours). Call under the run lock, where no
    other writer can be half-way. Returns what was removed."""
    removed: list[Path] = []
    for path in paths:
        pattern = _temp_pattern(path)
        try:
            names = os.listdir(path.parent)
        except OSError:
            continue
        for name in names:
            if not pattern.fullmatch(name):
                continue
            tmp = path.parent / name
            try:
                st = os.lstat(tmp)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                continue
    for directory in {p.parent for p in removed}:
        with contextlib.suppress(OSError):
            _fsync_dir(directory)
    return removed


def safe_read(path: Path) -> str | None:
    """Text of a regular file owned by us, None if absent; never via a symlink."""
    data = safe_read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


def safe_read_bytes(path: Path, limit: int | None = None) -> bytes | None:
    """Bytes of a regular file owned by us, None if absent; never via a
    symlink. DamagedState if it is larger than limit (MAX_STATE_BYTES)."""
    limit = MAX_STATE_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UntrustedState(f"{path} is a symbolic link; refusing to read it") from err
        raise StateError(f"cannot read {path}: {err.strerror}") from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedState(f"{path} is not a regular file")
        raise UntrustedState(f"{path} belongs to uid {st.st_uid}, not to us; refusing to trust it")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise StateError(f"cannot read {path}: {err.strerror}") from err
    if len(data) > limit:
        raise DamagedState(f"{path} is larger than {limit // (1024 * 1024)} MiB")
    return data


def remove(path: Path) -> None:
    """Remove path durably (the directory is synced); absent is fine. A
    state file's journal log (PATH.log) goes with it."""
    _replaceable(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as err:
        raise StateError(f"cannot remove {path}: {err.strerror}") from err
    if _is_our_log(log := log_path(path)):
        with contextlib.suppress(OSError):  # ignored without its state file
            log.unlink()
    try:
        _fsync_dir(path.parent)
    except OSError as err:
        raise StateError(f"cannot remove {path}: {err.strerror}") from err


def set_aside(path: Path, kind: str, directory: bool = False) -> Path:
    """Rename path (a link is renamed, never followed) to PATH.KIND-STAMP, so
    nothing is lost and the run can go on without it. Only a regular file
    or a link (or, if directory, a directory): see _replaceable."""
    _replaceable(path, directory)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(1000):
        target = path.with_name(f"{path.name}.{kind}-{stamp}" + (f".{attempt}" if attempt else ""))
        if os.path.lexists(target):
            continue
        try:
            os.rename(path, target)
        except OSError as err:
            raise StateError(f"cannot set {path} aside: {err.strerror}") from err
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)
        return target
    raise StateError(f"cannot set {path} aside: too many files set aside already")


def shown(text: str, limit: int = 40) -> str:
    """A word from a file, safe to print on one line: escaped, shortened."""
    escaped = text.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + f"...({len(text)} characters)"


# --- the list file -------------------------------------------------------

ListEntries = list[tuple[str, list[str]]]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_URI = re.compile(r"[\x21-\x7e]{1,1024}")  # printable ASCII, no blanks


def parse_list(text: str, problems: list[str] | None = None, name: str = "list file") -> ListEntries:
    """'<uri> <uuid> <uuid>...' per line, as the original reads it with `read`.

    Words that cannot be a URI or a guest's UUID (a NUL byte, invalid UTF-8,
    a name, a megabyte of junk) are dropped, each line's described in
    `problems`; a UUID listed twice on a line counts once."""
    entries: ListEntries = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        uri, rest = words[0], words[1:]
        if not _URI.fullmatch(uri):
            if problems is not None:
                problems.append(f"{name} line {number}: dropped: {shown(uri)} is not a libvirt URI")
            continue
        uuids: list[str] = []
        bad: list[str] = []
        for word in rest:
            if not _UUID.fullmatch(word):
                bad.append(word)
            elif word.lower() not in uuids:
                uuids.append(word.lower())
        if bad and problems is not None:
            listed = ", ".join(shown(w) for w in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            problems.append(f"{name} line {number}: dropped {len(bad)} entries that are not guest UUIDs: {listed}")
        entries.append((uri, uuids))
    return entries


def format_list(entries: Iterable[tuple[str, list[str]]]) -> str:
    return "".join(" ".join([uri, *uuids]) + "\n" for uri, uuids in entries if uuids)


def read_list(path: Path, problems: list[str] | None = None) -> ListEntries | None:
    text = safe_read(path)
    return None if text is None else parse_list(text, problems, f"list file {path}")


def write_list(path: Path, entries: Iterable[tuple[str, list[str]]]) -> bool:
    """Write the list atomically; an empty list removes the file. True if written."""
    text = format_list(entries)
    if not text:
        remove(path)
        return False
    atomic_write(path, text.encode())
    return True


# --- the state journal -----------------------------------------------------
#
# Two files: the state file, a JSON document holding the whole journal (as
# the previous version wrote it, plus the name of its log), rewritten
# atomically only at phase changes (save()); and beside it its log
# (STATE.log), one JSON line per guest event, appended as they happen: one
# write and one fsync per event, shared by the events of several threads, so
# that an event's cost does not depend on the number of guests. The log
# starts with a header naming its format version and the state file it
# follows ("log": a random name also written in the state file): a log whose
# name differs is one a compaction replaced and is ignored. Loading replays
# the log over the state file; a record torn by a crash (the last line,
# without its newline) is ignored; a damaged complete record is damage.
# The first write of a run compacts (a new state file, then a new log), so
# a torn tail is never appended to.

# Phases: 'stopping' (a stop is under way or was interrupted: the next stop
# finishes it), 'stopped' (done: the original's no-op applies), 'starting'
# (a start is under way or was interrupted: the next stop handles every
# running guest), 'start-incomplete' (a start left guests to retry).
PHASES = ("stopping", "stopped", "starting", "start-incomplete")
RESUMABLE_PHASES = ("stopping", "starting", "start-incomplete")
_LOG_FORMAT = "libvirt-guests journal log"


def log_path(state_file: Path) -> Path:
    """The journal's event log, beside its state file."""
    return state_file.with_name(state_file.name + ".log")


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
    # The migrate action: the peer it was being (outcome pending) or was
    # (outcome "migrated") moved to, and its autostart flag here before that
    # (None: not touched), to restore when it comes back. Journals written
    # before these fields existed load with the defaults.
    peer: str = ""
    autostart_here: bool | None = None

    @property
    def migrated(self) -> bool:
        return self.outcome == MIGRATED


# The type of each field of a guest record as the journal holds it: a record
# whose field has another type (a number for a name, NaN for a flag, a list
# for an outcome) is damage, refused at load rather than met by the run.
_RECORD_TYPES: dict[str, type | tuple[type, ...]] = {
    "uri": str, "uuid": str, "name": str, "persistent": bool, "recorded": bool, "was_paused": bool,
    "paused_by_us": bool, "outcome": str, "detail": str, "peer": str, "autostart_here": (bool, type(None)),
}


def _guest_of(data: object) -> GuestRecord:
    if not isinstance(data, dict):
        raise TypeError("a guest that is not a JSON object")
    for name, value in data.items():
        if name not in _RECORD_TYPES:
            raise TypeError(f"a guest with an unknown field {shown(str(name))}")
        if not isinstance(value, _RECORD_TYPES[name]):
            raise TypeError(f"a guest whose {name} is a {type(value).__name__}")
    record = GuestRecord(**data)
    if not (_URI.fullmatch(record.uri) and _UUID.fullmatch(record.uuid)):
        raise TypeError("a guest without a valid URI or UUID")
    return record


def _newer(path: Path, version: object) -> DamagedState | None:
    if isinstance(version, int) and not isinstance(version, bool) and version > JOURNAL_VERSION:
        return DamagedState(f"{path} was written by a newer version (format {version}, this one reads "
                            f"{JOURNAL_VERSION})")
    return None


def _create_log(path: Path, name: str) -> tuple[int, int]:
    """A new log at path holding only its header, in place atomically (as
    atomic_write), open for appending: (descriptor, size)."""
    import json  # not loaded by a run that keeps no journal (a stop with no guest: issue 13)

    header = (json.dumps({"format": _LOG_FORMAT, "version": JOURNAL_VERSION, "log": name}) + "\n").encode()
    tmp = path.parent / _temp_name(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except OSError as err:
        raise StateError(f"cannot write {path}: {err.strerror}") from err
    try:
        _write_all(fd, header)
        os.fsync(fd)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise StateError(f"cannot write {path}: {err.strerror}") from err
    return fd, len(header)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _is_our_log(path: Path) -> bool:
    """True if path is a regular file of ours that starts as a journal log."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        return os.read(fd, 64).startswith(b'{"format": "' + _LOG_FORMAT.encode() + b'"')
    except OSError:
        return False
    finally:
        os.close(fd)


def _replay(path: Path, name: str) -> list[GuestRecord]:
    """The guest records of the log at path, in order, if it is the log
    named name; [] if absent or replaced since. UntrustedState or
    DamagedState as the state file."""
    import json

    raw = safe_read_bytes(path)
    if raw is None:
        return []
    # After the last newline: nothing, or a record torn by a crash (or the
    # zeros a power cut can leave at the end of a file): ignored.
    lines = raw.rstrip(b"\0").split(b"\n")[:-1]
    if not lines:
        return []  # not even a whole header: nothing was ever appended to it
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict) or header.get("format") != _LOG_FORMAT:
            raise ValueError("not a journal log")
        if (newer := _newer(path, header.get("version"))) is not None:
            raise newer
        if header.get("version") != JOURNAL_VERSION:
            raise ValueError(f"unknown format {header.get('version')!r}")
        if header.get("log") != name:
            return []  # the log of an earlier state file, whose events that one holds
        records = []
        for number, line in enumerate(lines[1:], 2):
            event = json.loads(line)
            if not isinstance(event, dict) or list(event) != ["guest"]:
                raise ValueError(f"line {number} is not a journal event")
            records.append(_guest_of(event["guest"]))
        return records
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise DamagedState(f"{path} is damaged ({_damage(err)})") from err


def _damage(err: Exception) -> str:
    """What is wrong with a journal, for its one line."""
    if isinstance(err, RecursionError):
        return "nested too deep"
    return shown(str(err), 80)


class _Log:
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


@dataclass
class Journal:
    """Per-guest outcomes of the current stop or start, saved as they happen.

    update(), settle(): one small record appended to the log, durable when
    they return. save(): the whole journal rewritten (a phase change, a few
    times a run: never per guest). add(): written with the next of these."""

    path: Path
    phase: str = "stopping"
    guests: dict[str, GuestRecord] = field(default_factory=dict)
    # A journal that cannot be written (disk full) must not stop the work on
    # the guests: the first error is kept here for the caller to report.
    write_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _log: _Log | None = field(default=None, init=False, repr=False, compare=False)
    _unwritten: dict[str, None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @staticmethod
    def key(uri: str, uuid: str) -> str:
        return f"{uri} {uuid}"

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """The journal at path (its log replayed), None if absent.
        UntrustedState if it or its log is not a regular file of ours,
        DamagedState if either cannot be understood. Reads the format of
        the previous version too (one JSON document, no log)."""
        text = safe_read(path)
        if text is None:
            return None
        import json
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            version = data.get("version")
            if (newer := _newer(path, version)) is not None:
                raise newer
            if version not in (1, JOURNAL_VERSION) or isinstance(version, bool):
                raise ValueError(f"unknown format {version!r}")
            if data["phase"] not in PHASES:
                raise ValueError(f"unknown phase {data['phase']!r}")
            if not isinstance(data["guests"], list):
                raise TypeError("guests that are not a list")
            records = [_guest_of(g) for g in data["guests"]]
            name = data["log"] if version == JOURNAL_VERSION else None
            if name is not None and not isinstance(name, str):
                raise TypeError("a log name that is not a string")
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise DamagedState(f"{path} is damaged ({_damage(err)})") from err
        if name is not None:
            records += _replay(log_path(path), name)
        return cls(path, data["phase"], {cls.key(r.uri, r.uuid): r for r in records})

    def get(self, uri: str, uuid: str) -> GuestRecord | None:
        return self.guests.get(self.key(uri, uuid))

    def add(self, record: GuestRecord) -> None:
        with self._lock:
            key = self.key(record.uri, record.uuid)
            self.guests[key] = record
            self._unwritten[key] = None

    def update(self, uri: str, uuid: str, **changes: object) -> None:
        with self._lock:
            key = self.key(uri, uuid)
            record = self.guests[key]
            for name, value in changes.items():
                setattr(record, name, value)
            written = self._append_locked(key)
        self._wait(written)

    def settle(self, uri: str, uuid: str, name: str, outcome: str, detail: str = "") -> None:
        """A start is done with this guest: record the outcome, and forget
        that a stop paused it (fault: a later stop would resume a guest its
        user paused on purpose)."""
        with self._lock:
            key = self.key(uri, uuid)
            record = self.guests.setdefault(key, GuestRecord(uri, uuid, name))
            record.outcome, record.detail, record.paused_by_us = outcome, detail, False
            written = self._append_locked(key)
        self._wait(written)

    def save(self, phase: str | None = None) -> None:
        """Rewrite the whole journal (with phase, if given) and start a new log."""
        with self._lock:
            if phase:
                self.phase = phase
            self._compact_locked()

    def close(self) -> None:
        """Close the log (the journal stays usable: its next write compacts)."""
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _failed(self, error: str) -> None:
        self.write_error = self.write_error or error

    def _append_locked(self, key: str) -> tuple[_Log, int] | None:
        """Append key's record, and those added but not yet written, in one
        write; what to wait for. The first write of a run, or one after a
        failed write, rewrites the whole journal instead."""
        import json

        log = self._log
        if log is None or log.error is not None:
            self._compact_locked()
            return None
        self._unwritten[key] = None
        data = b"".join(
            json.dumps({"guest": asdict(self.guests[k])}, separators=(",", ":")).encode() + b"\n"
            for k in self._unwritten
        )
        try:
            seq = log.append(data)
        except StateError as err:
            self._failed(str(err))
            self._log = None
            log.close()
            return None
        self._unwritten.clear()
        return log, seq

    def _wait(self, written: tuple[_Log, int] | None) -> None:
        if written is None:
            return
        error = written[0].wait_durable(written[1])
        if error is not None:
            with self._lock:
                self._failed(error)

    def _compact_locked(self) -> None:
        """A new state file holding everything, then a new, empty log."""
        import json

        name = os.urandom(8).hex()  # as secrets.token_hex(8), without its imports (hashlib, random)
        data = {
            "version": JOURNAL_VERSION,
            "phase": self.phase,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "log": name,
            "guests": [asdict(g) for g in self.guests.values()],
        }
        old, self._log = self._log, None
        try:
            atomic_write(self.path, json.dumps(data, indent=1).encode())
            path = log_path(self.path)
            self._log = _Log(path, *_create_log(path, name))
            self._unwritten.clear()
        except StateError as err:
            self._failed(str(err))
        finally:
            if old is not None:
                old.close()  # after the new state file: what waits on it is in there

    def pending(self) -> list[GuestRecord]:
        return [g for g in self.guests.values() if g.recorded and g.outcome not in ("started", "vanished")]

    def migrated(self) -> list[GuestRecord]:
        """The guests a stop moved to a peer (not brought back since)."""
        return [g for g in self.guests.values() if g.migrated]


# --- what the last run left ------------------------------------------------

RESUME_MESSAGES = {
    "stopping": "Finishing an earlier stop that did not complete",
    "starting": "An earlier start did not complete: handling every running guest",
    "start-incomplete": "Guests of the last start are still waiting to be started: handling every running guest",
    "unknown": "The journal of the last run could not be read: handling every running guest",
}


@dataclass
class Previous:
    """The list file and journal a run finds, as far as they can be trusted."""

    entries: ListEntries | None = None  # None: no list file (or one set aside)
    journal: Journal | None = None
    journal_lost: bool = False  # there was a journal, but it could not be used
    untrusted: bool = False  # a file was set aside as untrusted: end with exit 1

    @property
    def phase(self) -> str | None:
        if self.journal is not None:
            return self.journal.phase
        return "unknown" if self.journal_lost else None

    @property
    def resumable(self) -> bool:
        """A stop finding the list file goes on instead of the original's
        no-op: an earlier run did not complete, or nobody can tell."""
        return self.phase in RESUME_MESSAGES

    @property
    def resume_message(self) -> str:
        return RESUME_MESSAGES.get(self.phase or "", "")


def _put_aside(path: Path, kind: str, directory: bool = False) -> str:
    try:
        return f"set aside as {set_aside(path, kind, directory)}"
    except StateError as err:
        return f"{err}; ignoring it"


def load_previous(list_file: Path, state_file: Path, warn: Callable[[str], None],
                  error: Callable[[str], None]) -> Previous:
    """Read what the last run left, for stop and start (under the run lock).

    Never raises: a damaged or newer journal is set aside with a warning;
    a list file or journal that is a symbolic link, not a regular file or
    not ours is set aside with an error (the run then exits 1, but still
    handles the guests); junk words of the list file are dropped with a
    warning; temporary files of a killed run are removed."""
    clean_temp_files(list_file, state_file, log_path(state_file))
    previous = Previous()
    problems: list[str] = []
    try:
        previous.entries = read_list(list_file, problems)
    except DamagedState as err:  # too large to be one
        warn(f"{err}; {_put_aside(list_file, 'damaged')}: the guests it names are not started from it")
    except StateError as err:
        previous.untrusted = True
        error(f"{err}; {_put_aside(list_file, 'untrusted')}: the guests it names are not started from it")
    for problem in problems:
        warn(problem)
    try:
        previous.journal = Journal.load(state_file)
    except DamagedState as err:
        previous.journal_lost = True
        warn(f"{err}; {_put_journal_aside(state_file, 'damaged')}")
    except StateError as err:
        previous.journal_lost = True
        previous.untrusted = True
        error(f"{err}; {_put_journal_aside(state_file, 'untrusted')}")
    else:
        if previous.journal is None and _is_our_log(log_path(state_file)):
            with contextlib.suppress(StateError):  # a log without its state file: left by a crash
                remove(log_path(state_file))
    return previous


def _put_journal_aside(state_file: Path, kind: str) -> str:
    """Set the state file aside, and its log with it (whichever was at fault)."""
    said = _put_aside(state_file, kind) if os.path.lexists(state_file) else "absent"
    log = log_path(state_file)
    if os.path.lexists(log):
        said += f" (its log: {_put_aside(log, kind)})"
    return said


def peek_previous(list_file: Path, state_file: Path) -> Previous:
    """What the next stop or start would find, read for a report: nothing is
    set aside or removed, and what cannot be read counts as lost."""
    previous = Previous()
    try:
        previous.entries = read_list(list_file)
    except StateError:
        previous.untrusted = True
    try:
        previous.journal = Journal.load(state_file)
    except StateError:
        previous.journal_lost = True
    return previous


# --- the 'started' lock file ---------------------------------------------


def marker_exists(path: Path) -> bool:
    """True if the lock file is a regular file of ours (a planted one is not)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def _what(st: os.stat_result) -> str:
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
             stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
    kind = kinds.get(stat.S_IFMT(st.st_mode), "a file")
    return kind if st.st_uid == os.geteuid() else f"{kind} of uid {st.st_uid}"


def touch_marker(path: Path) -> str | None:
    """Create the lock file afresh, replacing anything someone else planted
    (the lock directory is writable by every user). Never raises: the lock
    file must not change the outcome of a start; returns the one line to
    report when something was planted or the file cannot be made."""
    note = None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        return f"cannot create the lock file {path}: {err.strerror}; `status` will not say started"
    if st is not None:
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            try:
                os.utime(path, follow_symlinks=False)
            except OSError as err:
                return f"cannot update the lock file {path}: {err.strerror}"
            return None
        try:
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):  # only root makes one: not planted
                return f"{path} is {_what(st)}; left alone: `status` will not say started"
            if stat.S_ISDIR(st.st_mode):
                note = f"{path} was {_what(st)}; {_put_aside(path, 'untrusted', directory=True)}"
            else:
                path.unlink()
                note = f"{path} was {_what(st)}; replaced by the lock file"
        except OSError as err:
            return f"{path} is {_what(st)} and cannot be replaced ({err.strerror}); `status` will not say started"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE))
    except OSError as err:
        return (note + "; " if note else "") + (
            f"cannot create the lock file {path}: {err.strerror}; `status` will not say started")
    return note


def clear_marker(path: Path) -> str | None:
    """Remove the lock file at stop. Never raises; a planted directory is left
    where it is (it does not count as 'started'); returns a line to report."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot look at the lock file {path}: {err.strerror}"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"{path} is {_what(st)}, not a lock file; left alone (`status` does not count it)"
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        return f"cannot remove the lock file {path}: {err.strerror}"
    note = None if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() else f"{path} was {_what(st)}; removed"
    return note


# --- the run lock ---------------------------------------------------------


class RunLockBusy(StateError):
    """Another invocation held the run lock for longer than we may wait."""


class RunLock:
    """One invocation at a time: flock on a private file, waiting up to a bound.

    StateError when the lock file cannot be used at all (read-only or missing
    directory, a file that is not ours); RunLockBusy when another invocation
    holds it too long."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.writable = True

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            if err.errno == errno.EROFS:
                # A read-only file system: an existing lock file still locks
                # (flock needs no write access); only our pid is not written.
                with contextlib.suppress(OSError):
                    fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    self.writable = False
                    return fd
            raise StateError(f"cannot open run lock {self.path}: {err.strerror}") from err

    def acquire(self, wait: float, on_wait: Callable[[str], None],
                interrupted: Callable[[], bool] = lambda: False) -> None:
        """Take the lock, waiting up to `wait` s; RunLockBusy past it, or as
        soon as interrupted() (a signal: the run ends without acting)."""
        fd = self._open()
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
                if interrupted():
                    os.close(fd)
                    raise RunLockBusy(f"another libvirt-guests (pid {holder}) is still running; "
                                      "interrupted while waiting for it") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunLockBusy(
                        f"another libvirt-guests (pid {holder}) is still running; gave up waiting after {wait:g} s"
                    ) from None
                if not told:
                    on_wait(f"waiting for another libvirt-guests (pid {holder}) to finish, up to {wait:g} s")
                    told = True
                time.sleep(0.2)
        if self.writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            if self.writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
