"""Read-only reports: `status` (LSB), `gueststatus` (the `virsh list` table
per URI) and their JSON forms."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from .engine import Context
from .output import tr
from .state import Journal, StateError, marker_exists, read_list
from .virt import Hypervisor, VirtError


def status(ctx: Context, as_json: bool = False) -> int:
    """The original's three answers with LSB exit codes 3/0/3, plus the
    guests a journal still names as pending."""
    paths, out = ctx.paths, ctx.out
    entries = read_list(paths.list_file)
    pending: list[dict[str, str]] = []
    if entries is not None:
        state, message, code = "stopped-with-saved-guests", "stopped, with saved guests", 3
        try:
            journal = Journal.load(paths.state_file)
        except StateError as err:
            out.warn(str(err))
            journal = None
        if journal is not None:
            pending = [
                {"uri": g.uri, "uuid": g.uuid, "name": g.name, "outcome": g.outcome}
                for g in journal.pending()
                if any(g.uri == uri and g.uuid in uuids for uri, uuids in entries)
            ]
    elif marker_exists(paths.lock_file):
        state, message, code = "started", "started", 0
    else:
        state, message, code = "stopped", "stopped, with no saved guests", 3
    if as_json:
        out.say(json.dumps({
            "state": state,
            "exit_code": code,
            "list": [{"uri": uri, "uuids": uuids} for uri, uuids in entries or []],
            "pending": pending,
        }, indent=2))
        return code
    out.say(tr(message))
    for guest in pending:
        out.say(f"  {guest['name']} on {guest['uri']}: {guest['outcome']}")
    return code


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A table laid out as virsh's vshTable lays out `virsh list`."""
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            pad = "" if i == len(row) - 1 else " " * (widths[i] - _width(cell) + 2)
            cells.append(f" {cell}{pad}")
        return "".join(cells)

    return "\n".join([line(header), "-" * (sum(widths) + 3 * len(widths)), *(line(r) for r in rows)]) + "\n"


def _guest_rows(hv: Hypervisor) -> list[dict[str, Any]]:
    rows = []
    for guest in hv.running():
        if guest.name == "Domain-0":
            continue
        rows.append({
            "id": guest.domain_id(),
            "name": guest.name,
            "uuid": guest.uuid,
            "state": guest.state_name(),
            "persistent": guest.is_persistent(),
        })
    return rows


def gueststatus(ctx: Context, as_json: bool = False) -> int:
    """Per URI, the running guests; always exit 0, as the original."""
    out = ctx.out
    report = []
    for uri in ctx.config.uris:
        hv = Hypervisor(uri)
        entry: dict[str, Any] = {"uri": uri, "connected": False, "guests": []}
        try:
            hv.connect()
            entry["connected"] = True
            entry["guests"] = _guest_rows(hv)
        except VirtError as err:
            entry["error"] = str(err)
        finally:
            hv.close()
        report.append(entry)
        if as_json:
            continue
        out.say(f"* {uri} URI:")
        if not entry["connected"]:
            out.error(f"failed to connect to {uri}: {entry['error']}")
            out.say("")
            continue
        rows = [[str(g["id"]), g["name"], g["state"]] for g in entry["guests"]]
        out.say(format_table(["Id", "Name", "State"], rows))
    if as_json:
        out.say(json.dumps(report, indent=2))
    return 0
