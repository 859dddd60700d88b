"""What the last run left: the list file and the journal as far as they
can be trusted, read (and set aside where damaged) at the start of a run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from libvirt_guests.state.eventlog import is_our_log, log_path
from libvirt_guests.state.files import DamagedState, StateError, clean_temp_files, put_aside
from libvirt_guests.state.journal import Journal, remove
from libvirt_guests.state.listfile import ListEntries, read_list

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
        warn(f"{err}; {put_aside(list_file, 'damaged')}: the guests it names are not started from it")
    except StateError as err:
        previous.untrusted = True
        error(f"{err}; {put_aside(list_file, 'untrusted')}: the guests it names are not started from it")
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
        if previous.journal is None and is_our_log(log_path(state_file)):
            with contextlib.suppress(StateError):  # a log without its state file: left by a crash
                remove(log_path(state_file))
    return previous


def _put_journal_aside(state_file: Path, kind: str) -> str:
    """Set the state file aside, and its log with it (whichever was at fault)."""
    said = put_aside(state_file, kind) if os.path.lexists(state_file) else "absent"
    log = log_path(state_file)
    if os.path.lexists(log):
        said += f" (its log: {put_aside(log, kind)})"
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

