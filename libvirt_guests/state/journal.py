"""The state journal: each guest's outcome in the current stop or start,
beside the list file, and what the last run left."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from libvirt_guests.outcomes import Outcome
from libvirt_guests.state import files
from libvirt_guests.state.eventlog import JOURNAL_VERSION, LOG_FORMAT, Log, create_log, is_our_log, log_path
from libvirt_guests.state.files import DamagedState, StateError, safe_read, safe_read_bytes, shown
from libvirt_guests.state.listfile import _URI, _UUID


class Keep:
    """The default of Journal.update's fields: leave the field as it is."""


KEEP = Keep()

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

@dataclass
class GuestRecord:
    uri: str
    uuid: str
    name: str
    persistent: bool = True
    recorded: bool = True  # listed in the list file (restarted at boot)
    was_paused: bool = False  # paused by its user before the stop
    paused_by_us: bool = False
    outcome: str = Outcome.PENDING
    detail: str = ""
    # The migrate action: the peer it was being (outcome pending) or was
    # (outcome "migrated") moved to, and its autostart flag here before that
    # (None: not touched), to restore when it comes back. Journals written
    # before these fields existed load with the defaults.
    peer: str = ""
    autostart_here: bool | None = None

    @property
    def migrated(self) -> bool:
        return self.outcome == Outcome.MIGRATED


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


def _replay(path: Path, name: str) -> list[GuestRecord]:
    """The guest records of the log at path, in order, if it is the log
    named name; [] if absent or replaced since. UntrustedState or
    DamagedState as the state file."""
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
        if not isinstance(header, dict) or header.get("format") != LOG_FORMAT:
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


def _read(path: Path) -> tuple[str, list[GuestRecord]] | None:
    """The phase and guest records of the journal at path (see Journal.load)."""
    text = safe_read(path)
    if text is None:
        return None
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
    return data["phase"], records


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
    _log: Log | None = field(default=None, init=False, repr=False, compare=False)
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
        found = _read(path)
        if found is None:
            return None
        phase, records = found
        return cls(path, phase, {cls.key(r.uri, r.uuid): r for r in records})

    def get(self, uri: str, uuid: str) -> GuestRecord | None:
        return self.guests.get(self.key(uri, uuid))

    def add(self, record: GuestRecord) -> None:
        with self._lock:
            key = self.key(record.uri, record.uuid)
            self.guests[key] = record
            self._unwritten[key] = None

    def update(self, uri: str, uuid: str, *, outcome: str | Keep = KEEP, detail: str | Keep = KEEP,
               recorded: bool | Keep = KEEP, paused_by_us: bool | Keep = KEEP, peer: str | Keep = KEEP,
               autostart_here: bool | None | Keep = KEEP) -> None:
        """Change the named fields of a guest's record (the others are kept)."""
        with self._lock:
            key = self.key(uri, uuid)
            record = self.guests[key]
            changes = {"outcome": outcome, "detail": detail, "recorded": recorded, "paused_by_us": paused_by_us,
                       "peer": peer, "autostart_here": autostart_here}
            for name, value in changes.items():
                if value is not KEEP:
                    setattr(record, name, value)  # in place: a record read before stays the guest's
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

    def _append_locked(self, key: str) -> tuple[Log, int] | None:
        """Append key's record, and those added but not yet written, in one
        write; what to wait for. The first write of a run, or one after a
        failed write, rewrites the whole journal instead."""
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

    def _wait(self, written: tuple[Log, int] | None) -> None:
        if written is None:
            return
        error = written[0].wait_durable(written[1])
        if error is not None:
            with self._lock:
                self._failed(error)

    def _compact_locked(self) -> None:
        """A new state file holding everything, then a new, empty log."""
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
            files.atomic_write(self.path, json.dumps(data, indent=1).encode())
            path = log_path(self.path)
            self._log = Log(path, *create_log(path, name))
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


def remove(path: Path) -> None:
    """Remove path durably (the directory is synced); absent is fine. A
    state file's journal log (PATH.log) goes with it."""
    if not files.unlink(path):
        return
    if is_our_log(log := log_path(path)):
        with contextlib.suppress(OSError):  # ignored without its state file
            log.unlink()
