"""Read-only reports: `status` (LSB), `gueststatus` (the `virsh list` table
per URI) and their JSON forms."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libvirt_guests.config.commands import EXIT_UNKNOWN
from libvirt_guests.config.load import Paths
from libvirt_guests.engine import Context
from libvirt_guests.output import Output, dump_json, shown, shown_uri, tr
from libvirt_guests.state.files import MAX_STATE_BYTES, StateError, ours
from libvirt_guests.state.journal import Journal
from libvirt_guests.state.listfile import parse_list
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor

PROC_LOCKS = Path("/proc/locks")
# The command a run-lock holder runs -> what status calls it.
_RUNNING = {"stop": "stop", "shutdown": "stop", "start": "start", "restart": "restart",
            "condrestart": "restart", "try-restart": "restart"}


class CannotTell(Exception):
    """A file status depends on cannot be examined (a user without access)."""


@dataclass
class _Probe:
    exists: bool
    text: str | None = None  # None: absent, or present but not readable by us


def _probe(path: Path, read: bool) -> _Probe:
    """Does path exist as the original's `[ -f ]` would see it, and its text
    if we may read it. A symlink or a file of another user is refused as the
    engines refuse it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _Probe(False)
    except OSError as err:
        raise CannotTell(f"cannot examine {path} as uid {os.geteuid()} ({err.strerror})") from err
    if stat.S_ISLNK(st.st_mode):
        raise StateError(f"{path} is a symbolic link; refusing to read it")
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"{path} is not a regular file")
    if not ours(st, root_too=True):  # a non-root monitoring user may believe root's files
        raise StateError(f"{path} belongs to uid {st.st_uid}, not to us; refusing to trust it")
    if not read:
        return _Probe(True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Probe(False)
    except PermissionError:
        return _Probe(True)  # root's 0600 file, seen by another user: it exists
    except OSError as err:
        raise StateError(f"cannot read {path}: {err.strerror}") from err
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        return _Probe(True)  # far too large to be a list: it exists, what it names is not told
    return _Probe(True, data.decode("utf-8", errors="replace"))


def _marker(path: Path) -> bool:
    """The lock file as the engines see it: a regular file of ours (or
    root's); anything else planted in /run/lock does not count."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise CannotTell(f"cannot examine {path} as uid {os.geteuid()} ({err.strerror})") from err
    return ours(st, root_too=True)


def _holder_from_proc_locks(st: os.stat_result) -> int | None:
    """The pid holding a flock on the file, from /proc/locks (which needs no
    access to the file itself)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2148738 0 EOF"; waiters have "->"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want and fields[4].isdigit():
            return int(fields[4])
    return None


def run_lock_holder(path: Path) -> tuple[bool, int | None]:
    """(held, pid) for the run lock: a start or stop holds it while it runs."""
    try:
        st = os.lstat(path)
    except OSError:
        return False, None
    if not stat.S_ISREG(st.st_mode):
        return False, None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM):
            return False, None
        pid = _holder_from_proc_locks(st)
        return pid is not None, pid
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # The kernel's word first: a killed holder's pid may still be written in the file.
            pid = _holder_from_proc_locks(st)
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return True, pid if pid is not None else (int(text) if text.isdigit() else None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def _command_of(pid: int) -> str | None:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return next((_RUNNING[w] for w in words[1:] if w in _RUNNING), None)


def running(paths: Paths) -> dict[str, Any] | None:
    """The start or stop under way, if any: {'command': ..., 'pid': ...}."""
    held, pid = run_lock_holder(paths.run_lock)
    if not held:
        return None
    return {"command": _command_of(pid) if pid else None, "pid": pid}


def running_line(run: dict[str, Any]) -> str:
    what = f"a {run['command']}" if run["command"] else "another libvirt-guests"
    return f"{what} is running" + (f" (pid {run['pid']})" if run["pid"] else "")


def _journal(paths: Paths, out: Output) -> Journal | None | bool:
    """The journal; None when there is none (or it cannot be understood),
    False when it is not ours to read (a monitoring user)."""
    try:
        st = os.lstat(paths.state_file)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    if st.st_uid != os.geteuid() or not os.access(paths.state_file, os.R_OK):
        return False
    try:
        return Journal.load(paths.state_file)
    except StateError as err:
        out.warn(str(err))
        return None


def _migrated(journal: Journal | None | bool) -> list[dict[str, str]] | None:
    """The guests the last stop moved to a peer (shown until the next stop)."""
    if journal is False:
        return None
    if not isinstance(journal, Journal):
        return []
    return [{"uri": g.uri, "uuid": g.uuid, "name": g.name, "peer": g.peer or g.detail} for g in journal.migrated()]


def _pending(journal: Journal | None | bool, entries: list[tuple[str, list[str]]]) -> list[dict[str, str]] | None:
    """The recorded guests the journal says are still to be started; None
    when the journal is not ours to read (a monitoring user)."""
    if journal is False:
        return None
    if not isinstance(journal, Journal):
        return []
    return [
        {"uri": g.uri, "uuid": g.uuid, "name": g.name, "outcome": g.outcome}
        for g in journal.pending()
        if any(g.uri == uri and g.uuid in uuids for uri, uuids in entries)
    ]


def status(paths: Paths, out: Output, about: dict[str, Any], as_json: bool = False) -> int:
    """The original's three answers with LSB exit codes 3/0/3, from the
    files' existence (so a non-root user gets them too); then a stop or
    start under way, and the guests a journal still names as pending.
    Exit 4 (LSB 'unknown') when a file cannot even be examined."""
    entries: list[tuple[str, list[str]]] | None = None
    pending: list[dict[str, str]] | None = []
    journal = _journal(paths, out)
    try:
        listed = _probe(paths.list_file, read=True)
        if listed.exists:
            state, message, code = "stopped-with-saved-guests", "stopped, with saved guests", 3
            if listed.text is not None:
                entries = parse_list(listed.text)
                pending = _pending(journal, entries)
            else:
                pending = None
        elif _marker(paths.lock_file):
            state, message, code = "started", "started", 0
        else:
            state, message, code = "stopped", "stopped, with no saved guests", 3
    except (CannotTell, StateError) as err:  # StateError: a path the engines refuse to read
        state, message, code = "unknown", f"status unknown: {err}", EXIT_UNKNOWN
        pending = None
    run = running(paths)
    migrated = _migrated(journal)
    if as_json:
        out.block(dump_json({
            "state": state,
            "exit_code": code,
            "list": None if entries is None else [{"uri": uri, "uuids": uuids} for uri, uuids in entries],
            "pending": pending,
            "migrated": migrated,
            "running": run,
            **about,
        }))
        return code
    out.say(tr(message) if code != EXIT_UNKNOWN else message)
    if run is not None:
        out.say(running_line(run))
    for guest in pending or []:
        out.say(f"  {shown(guest['name'])} on {shown_uri(guest['uri'])}: {guest['outcome']}")
    for guest in migrated or []:
        out.say(f"  {shown(guest['name'])} of {shown_uri(guest['uri'])}: migrated to {shown_uri(guest['peer'])}")
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


def gueststatus(ctx: Context, about: dict[str, Any], as_json: bool = False) -> int:
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
        out.say(f"* {shown_uri(uri)} URI:")
        if not entry["connected"]:
            out.error(f"failed to connect to {shown_uri(uri)}: {entry['error']}")
            out.say("")
            continue
        rows = [[str(g["id"]), shown(g["name"]), g["state"]] for g in entry["guests"]]
        out.block(format_table(["Id", "Name", "State"], rows))
    if as_json:
        out.block(dump_json({"uris": report, **about}))
    return 0
