"""The list file, in the original's format: one line per URI, the UUIDs
of the guests to restart at boot."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from libvirt_guests.state import files
from libvirt_guests.state.files import safe_read, shown

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
        files.unlink(path)  # a list file has no journal log beside it
        return False
    files.atomic_write(path, text.encode())
    return True

