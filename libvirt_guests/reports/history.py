"""`report`: what happened to each guest in the last stops and starts (the
action taken, the one planned and why it changed, bytes written, seconds,
the result), and each URI's saves, from the history file (state/history.py).
Only reads; names escaped and URIs redacted as every report does."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from libvirt_guests.config.commands import EXIT_FAIL, EXIT_OK
from libvirt_guests.output import Output, dump_json, redact, shown, shown_error, shown_uri
from libvirt_guests.reports.status import format_table
from libvirt_guests.state.history import GuestEvent, History, StopRecord

SHOWN_PER_GUEST = 5  # the text shows each guest's last few; --json all that is kept


def size(count: int | None) -> str:
    """Bytes for a person: 512 B, 3.0 MiB, 1.2 GiB; '' for none."""
    if count is None:
        return ""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def when(epoch: float) -> str:
    """Local time, to the second: what an admin compares with the host's logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _why(event: GuestEvent) -> str:
    """The planned action and the reason, when they differ from what was done."""
    parts = []
    if event.planned and event.planned != event.action:
        parts.append(f"planned {shown(event.planned)}")
    if event.reason:
        parts.append(shown_error(event.reason))
    return ": ".join(parts)


def _row(event: GuestEvent) -> list[str]:
    return [when(event.when), shown(event.kind), shown(event.action), shown(event.result), f"{event.seconds:.1f}",
            size(event.bytes_written), _why(event)]


def _rate(record: StopRecord) -> str:
    if record.saved == 0:
        return "no save"
    rate = f", {size(int(record.bytes_saved / record.save_seconds))}/s" if record.save_seconds > 0 else ""
    settings = (f"PARALLEL_SAVE={record.parallel_save}, PAUSE_BEFORE_SAVE={int(record.pause_before_save)}, "
                f"BYPASS_CACHE={int(record.bypass_cache)}")
    return (f"{record.saved} guest{'s' if record.saved != 1 else ''}, {size(record.bytes_saved)}, "
            f"{record.save_seconds:.1f} s of saving{rate} ({settings})")


def _groups(history: History) -> list[tuple[str, str, list[GuestEvent]]]:
    """(uri, uuid, events) per guest and URI, by URI then by the guest's latest name."""
    by_key: dict[tuple[str, str], list[GuestEvent]] = {}
    for event in history.events:
        by_key.setdefault((event.uri, event.uuid), []).append(event)
    return sorted(((uri, uuid, events) for (uri, uuid), events in by_key.items()),
                  key=lambda item: (item[0], item[2][-1].name, item[1]))


def _uris(history: History) -> list[str]:
    return sorted({s.uri for s in history.stop_records})


def _json(path: Path, history: History, about: dict[str, Any]) -> str:
    def redacted(item: GuestEvent | StopRecord) -> dict[str, Any]:
        data = asdict(item)
        data["uri"] = redact(data["uri"])
        if "reason" in data:
            data["reason"] = redact(data["reason"])
        return data

    return dump_json({
        "history_file": str(path),
        "problem": history.problem,
        "guests": [{"uri": redact(uri), "uuid": uuid, "name": events[-1].name,
                    "events": [redacted(e) for e in events]} for uri, uuid, events in _groups(history)],
        "stops": [{"uri": redact(uri), "records": [redacted(s) for s in history.stops(uri)]}
                  for uri in _uris(history)],
        **about,
    })


def report(path: Path, out: Output, about: dict[str, Any], as_json: bool = False) -> int:
    """Per guest its last stops and starts, per URI its last saves. Exit 0,
    or 1 when the history cannot be read (then it says why, in one line)."""
    history = History.load(path)
    if as_json:
        out.block(_json(path, history, about))
        return EXIT_FAIL if history.problem else EXIT_OK
    if history.problem:
        out.error(history.problem)
        return EXIT_FAIL
    if not history.events and not history.stop_records:
        out.say(f"No stop or start recorded yet in {shown(path)}")
        return EXIT_OK
    for uri, uuid, events in _groups(history):
        out.say(f"{shown(events[-1].name)} ({shown(uuid)}) on {shown_uri(uri)}:")
        rows = [_row(e) for e in events[-SHOWN_PER_GUEST:]]
        table = format_table(["When", "Run", "Action", "Result", "Seconds", "Written", "Why"], rows)
        out.block("".join(line.rstrip() + "\n" for line in table.splitlines()))
    for uri in _uris(history):
        records = history.stops(uri)
        last = "the last stop" if len(records) == 1 else f"the last {min(len(records), SHOWN_PER_GUEST)} stops"
        out.say(f"Saves on {shown_uri(uri)}, {last}:")
        for record in records[-SHOWN_PER_GUEST:]:
            out.say(f"  {when(record.when)}  {_rate(record)}")
    return EXIT_OK
