"""What happened to each guest in the last stops and starts, and each URI's
saves: what `report` shows the morning after and what the stop's planning
learns its predictions from.

Kept apart from the state that decides the next stop (list file, journal,
refusals): a history that cannot be read is reported in one line and started
afresh, and never makes a run set its other state aside. Bounded: the last
KEEP_PER_GUEST events of each guest (of the KEEP_GUESTS guests seen last) and
the last KEEP_PER_URI stop records of each URI (of KEEP_URIS URIs).

load and record never raise. The file is a regular file owned by us, written
atomically (state/files.py); LIBVIRT_GUESTS_HISTORY_FILE=/dev/null turns the
history off."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from libvirt_guests.state.files import (
    DamagedState,
    StateError,
    UntrustedState,
    atomic_write,
    put_aside,
    safe_read_bytes,
)

VERSION = 1
KEEP_PER_GUEST = 10
KEEP_GUESTS = 1000
KEEP_PER_URI = 20
KEEP_URIS = 50
# A full history is KEEP_GUESTS * KEEP_PER_GUEST events of a few hundred
# bytes: a few MiB. A larger file is damage.
MAX_HISTORY_BYTES = 16 * 1024 * 1024
# Longest text kept in a field (a guest's name, a reason): names are
# untrusted, and a reason is one line.
MAX_TEXT = 1024


@dataclass(frozen=True)
class GuestEvent:
    """One guest in one stop or start."""

    when: float  # epoch seconds at the end of the guest's handling
    kind: str  # "stop" | "start"
    uri: str  # as configured (redacted by whoever prints it)
    uuid: str
    name: str
    action: str  # the action that settled it: suspend|shutdown|poweroff|migrate|restore|boot|...
    planned: str  # the action first planned for it (== action when no fallback happened)
    reason: str  # why the plan or the fallback: "" | "room" | "time" | "refused" | "policy" | "failed: ..."
    result: str  # the Outcome / StartOutcome value
    seconds: float  # from the start of its first action to its end
    bytes_written: int | None  # size of the managed-save image, when it saved
    memory_bytes: int | None  # the guest's current memory when planned


@dataclass(frozen=True)
class StopRecord:
    """One URI's saves in one stop: what the aggregate save rate learns from."""

    when: float
    uri: str
    saved: int  # guests saved
    bytes_saved: int  # sum of their image sizes
    save_seconds: float  # wall time from the first save's start to the last save's end
    parallel_save: int  # PARALLEL_SAVE in effect (0 = unlimited)
    pause_before_save: bool
    bypass_cache: bool


T = TypeVar("T", GuestEvent, StopRecord)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(kind: str, value: object) -> bool:
    """Whether a JSON value fits a field's annotation (as a string, from
    `from __future__ import annotations`)."""
    if kind == "str":
        return isinstance(value, str) and len(value) <= MAX_TEXT
    if kind == "float":
        return (_is_int(value) or isinstance(value, float)) and value == value  # not NaN
    if kind == "int":
        return _is_int(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int | None":
        return value is None or _is_int(value)
    return False


def _from_json(cls: type[T], item: object) -> T:
    """One record from its JSON object; unknown keys (a newer version's) are
    ignored; DamagedState for a missing key or a value of the wrong type."""
    if not isinstance(item, dict):
        raise DamagedState("an entry is not an object")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in item or not _check(str(f.type), item[f.name]):
            raise DamagedState(f"an entry has no valid {f.name!r}")
        value = item[f.name]
        values[f.name] = float(value) if f.type == "float" else value
    return cls(**values)


def _last(items: Sequence[T], key: Callable[[T], str], per_key: int, keys: int) -> list[T]:
    """The last per_key items of each key, for the keys seen last; in order."""
    kept: list[T] = []
    counts: dict[str, int] = {}
    for item in reversed(items):
        k = key(item)
        if k not in counts and len(counts) >= keys:
            continue
        if counts.get(k, 0) < per_key:
            counts[k] = counts.get(k, 0) + 1
            kept.append(item)
    kept.reverse()
    return kept


class History:
    """The history as loaded: empty (with .problem) when it could not be read."""

    def __init__(self, events: Sequence[GuestEvent] = (), stop_records: Sequence[StopRecord] = (),
                 problem: str | None = None) -> None:
        self.events = _last(sorted(events, key=lambda e: e.when), lambda e: e.uuid, KEEP_PER_GUEST, KEEP_GUESTS)
        self.stop_records = _last(sorted(stop_records, key=lambda s: s.when), lambda s: s.uri, KEEP_PER_URI,
                                  KEEP_URIS)
        self.problem = problem

    @classmethod
    def load(cls, path: Path) -> History:
        """Never raises: a missing file is an empty history; one that cannot
        be read is empty with .problem (one line); nothing is set aside here."""
        try:
            return cls._read(path) or cls()
        except (StateError, ValueError, RecursionError) as err:
            return cls(problem=f"history {path} cannot be read: {err}")
        except Exception as err:  # noqa: BLE001 - the history never stops a run
            return cls(problem=f"history {path} cannot be read ({type(err).__name__})")

    @classmethod
    def _read(cls, path: Path) -> History | None:
        if str(path) == os.devnull:
            return None
        data = safe_read_bytes(path, MAX_HISTORY_BYTES)
        if data is None:
            return None
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedState("not a history (damaged)") from err
        if not isinstance(doc, dict) or not _is_int(doc.get("version")):
            raise DamagedState("not a history (damaged)")
        if doc["version"] > VERSION:
            raise DamagedState(f"written by a newer version (format {doc['version']})")
        events, stops = doc.get("events", []), doc.get("stops", [])
        if not isinstance(events, list) or not isinstance(stops, list):
            raise DamagedState("not a history (damaged)")
        return cls([_from_json(GuestEvent, e) for e in events], [_from_json(StopRecord, s) for s in stops])

    def guest(self, uuid: str) -> list[GuestEvent]:
        """This guest's events, oldest first, at most KEEP_PER_GUEST."""
        return [e for e in self.events if e.uuid == uuid]

    def stops(self, uri: str) -> list[StopRecord]:
        """This URI's stop records, oldest first, at most KEEP_PER_URI."""
        return [s for s in self.stop_records if s.uri == uri]

    def guests(self) -> list[str]:
        """The UUIDs with events, in the order they were last seen (oldest first)."""
        last: dict[str, float] = {}
        for event in self.events:
            last[event.uuid] = event.when
        return sorted(last, key=lambda u: last[u])

    def to_json(self) -> bytes:
        doc = {"version": VERSION, "events": [asdict(e) for e in self.events],
               "stops": [asdict(s) for s in self.stop_records]}
        return (json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def _fit(item: T) -> T:
    """An item as it can be read back: texts cut to MAX_TEXT, a float that is
    not finite (or not a number) as 0, so that recording never damages the file."""
    values: dict[str, Any] = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if f.type == "str" and isinstance(value, str) and len(value) > MAX_TEXT:
            values[f.name] = value[:MAX_TEXT]
        elif f.type == "float" and not (isinstance(value, (int, float)) and math.isfinite(value)):
            values[f.name] = 0.0
    return replace(item, **values) if values else item


def record(path: Path, events: Sequence[GuestEvent], stops: Sequence[StopRecord]) -> str | None:
    """Append and trim (bounded per guest and per URI), atomically; returns a
    one-line problem or None; never raises. A damaged or untrusted file is set
    aside and started afresh; the run's other state is never touched."""
    if str(path) == os.devnull or not (events or stops):
        return None
    try:
        return _record(path, events, stops)
    except Exception as err:  # noqa: BLE001 - the history never stops a run
        return f"cannot record the history in {path} ({type(err).__name__}: {err})"


def _record(path: Path, events: Sequence[GuestEvent], stops: Sequence[StopRecord]) -> str | None:
    problem: str | None = None
    try:
        old = History._read(path) or History()
    except (StateError, ValueError, RecursionError) as err:
        kind = "untrusted" if isinstance(err, UntrustedState) else "damaged"
        problem = f"history {path} cannot be read: {err}; {put_aside(path, kind)}; starting it afresh"
        old = History()
    new = History([*old.events, *map(_fit, events)], [*old.stop_records, *map(_fit, stops)])
    try:
        atomic_write(path, new.to_json())
    except StateError as err:
        return f"{problem}; {err}" if problem else f"cannot record the history: {err}"
    return problem


@dataclass
class _Open:
    began: float  # monotonic, when its first action began
    action: str = ""
    reason: str = ""  # why an action did not settle it (the chain went on)


class Recorder:
    """One run's events, collected from the threads that handle the guests,
    then recorded at once (record). began() marks the start of a guest's
    first action (and of a URI's first save); finished() its end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Open] = {}
        self._events: list[GuestEvent] = []
        self._saves_began: dict[str, float] = {}  # uri -> monotonic
        self._saves_ended: dict[str, float] = {}
        self._saved: dict[str, list[GuestEvent]] = {}  # uri -> the guests saved

    def began(self, uri: str, uuid: str, action: str, saves: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._open.setdefault((uri, uuid), _Open(now)).action = action
            if saves:
                self._saves_began.setdefault(uri, now)

    def note(self, uri: str, uuid: str, reason: str) -> None:
        """Why the guest's current action did not settle it (its chain goes on)."""
        with self._lock:
            opened = self._open.get((uri, uuid))
            if opened is not None:
                opened.reason = reason

    def finished(self, uri: str, uuid: str, name: str, *, action: str | None = None, planned: str = "",
                 reason: str = "", result: str, bytes_written: int | None = None, memory_bytes: int | None = None,
                 saved: bool = False) -> None:
        """The guest's handling ended: action (default: the last one begun) settled it with result."""
        now = time.monotonic()
        with self._lock:
            opened = self._open.pop((uri, uuid), None)
            done = action if action is not None else (opened.action if opened else "")
            event = GuestEvent(
                when=time.time(), kind=self.kind, uri=uri, uuid=uuid, name=name, action=done,
                planned=planned or done, reason=reason or (opened.reason if opened else ""), result=result,
                seconds=round(now - opened.began, 3) if opened else 0.0,
                bytes_written=bytes_written, memory_bytes=memory_bytes)
            self._events.append(event)
            if saved:
                self._saves_ended[uri] = now
                self._saved.setdefault(uri, []).append(event)

    def events(self) -> list[GuestEvent]:
        with self._lock:
            return list(self._events)

    def stop_records(self, parallel_save: int, pause_before_save: bool, bypass_cache: bool) -> list[StopRecord]:
        """Per URI with saves whose every image size is known: what the save rate learns from."""
        records = []
        with self._lock:
            for uri, saved in self._saved.items():
                began, ended = self._saves_began.get(uri), self._saves_ended[uri]
                if began is None or any(e.bytes_written is None for e in saved):
                    continue
                records.append(StopRecord(time.time(), uri, len(saved), sum(e.bytes_written or 0 for e in saved),
                                          round(ended - began, 3), parallel_save, pause_before_save, bypass_cache))
        return records
