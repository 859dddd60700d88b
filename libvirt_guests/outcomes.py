"""What happened to a guest in a stop (Outcome) or a start (StartOutcome),
as the journal records it and the closing summary counts it."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import assert_never


class Outcome(StrEnum):
    PENDING = "pending"  # not handled yet (an interrupted stop finishes it)
    SAVED = "saved"
    SHUTDOWN = "shutdown"
    POWEROFF = "poweroff"
    LEFT_RUNNING = "left-running"  # every action of its chain failed, or the deadline came
    FAILED = "failed"
    VANISHED = "vanished"  # undefined or gone while the stop ran
    NOT_HANDLED = "not-handled"  # interrupted, or given up on: in the summary only when it happened
    MIGRATED = "migrated"  # runs on a peer host now (the migrate action): in the summary only when it happened

    @property
    def words(self) -> str:
        """How the closing summary says it."""
        return _WORDS.get(self, self.value)

    def troubled(self) -> bool:
        """A guest that still runs although the stop was asked to take it down."""
        return self in (Outcome.LEFT_RUNNING, Outcome.FAILED, Outcome.NOT_HANDLED)

    def stays_here(self) -> bool:
        """The stop kept the guest on this host: a start need not ask its
        peer (every member is classified: mypy fails on a new one left out)."""
        match self:
            case (Outcome.SAVED | Outcome.SHUTDOWN | Outcome.POWEROFF | Outcome.LEFT_RUNNING | Outcome.FAILED
                  | Outcome.VANISHED):
                return True
            case Outcome.PENDING | Outcome.NOT_HANDLED | Outcome.MIGRATED:
                return False  # on a peer, or maybe on its way there
        assert_never(self)


_WORDS = {Outcome.SHUTDOWN: "shut down", Outcome.POWEROFF: "powered off", Outcome.LEFT_RUNNING: "left running",
          Outcome.NOT_HANDLED: "not handled"}
# The closing summary's counts, in this order (NOT_HANDLED and MIGRATED only when they happened).
SUMMARY = (Outcome.SAVED, Outcome.SHUTDOWN, Outcome.POWEROFF, Outcome.LEFT_RUNNING, Outcome.FAILED, Outcome.VANISHED)


def summary_counts(counts: Counter[str]) -> str:
    """'2 saved, 0 shut down, ...' for the closing summary: the original
    outcomes always; migrated and not handled only when they happened."""
    shown = ([Outcome.MIGRATED] if counts[Outcome.MIGRATED] else []) + list(SUMMARY)
    if counts[Outcome.NOT_HANDLED]:
        shown.append(Outcome.NOT_HANDLED)
    return ", ".join(f"{counts[outcome]} {outcome.words}" for outcome in shown)


class StartOutcome(StrEnum):
    """What happened to a guest in a start, as its closing summary counts it
    (in this order)."""

    RESTORED = "restored"
    BOOTED = "booted"
    RESUMED = "resumed"  # in the summary only when it happened, as the peer outcomes below
    ALREADY_ACTIVE = "already active"
    IGNORED = "ignored"
    MISSING = "missing"
    FAILED = "failed"
    ON_PEER = "on peer"  # runs on its peer: left there, unlisted
    HELD = "held"  # its peer cannot be asked: not started, kept listed
    RETURNED = "returned"  # MIGRATE_BACK: brought back from its peer
    KEPT = "kept"  # MIGRATE_BACK: could not be brought back, still on its peer
    NOT_ON_PEER = "not on peer"  # MIGRATE_BACK: no longer running on its peer

    @property
    def words(self) -> str:
        """How the closing summary says it."""
        return _START_WORDS.get(self, self.value)

    def always_counted(self) -> bool:
        """In the summary even when no guest had it."""
        return self in (StartOutcome.RESTORED, StartOutcome.BOOTED, StartOutcome.ALREADY_ACTIVE,
                        StartOutcome.IGNORED, StartOutcome.MISSING, StartOutcome.FAILED)

    def started(self) -> bool:
        """The guest was actually started by this run."""
        return self in (StartOutcome.RESTORED, StartOutcome.BOOTED, StartOutcome.RESUMED)

    def troubled(self) -> bool:
        """The summary is a warning (and start exits 1)."""
        return self in (StartOutcome.FAILED, StartOutcome.HELD, StartOutcome.KEPT)

    def recorded_as(self) -> Outcome | StartRecord | None:
        """The journal's word for a guest with this outcome; None: its record
        is left as the stop wrote it (it stays listed, or on its peer)."""
        match self:
            case (StartOutcome.RESTORED | StartOutcome.BOOTED | StartOutcome.RESUMED | StartOutcome.ALREADY_ACTIVE
                  | StartOutcome.RETURNED):
                return StartRecord.STARTED
            case StartOutcome.IGNORED:
                return StartRecord.IGNORED
            case StartOutcome.FAILED:
                return StartRecord.START_FAILED
            case StartOutcome.MISSING | StartOutcome.NOT_ON_PEER:
                return Outcome.VANISHED
            case StartOutcome.ON_PEER:
                return Outcome.MIGRATED
            case StartOutcome.HELD | StartOutcome.KEPT:
                return None
        assert_never(self)


class StartRecord(StrEnum):
    """The journal's words for a guest a start handled, besides the stop's
    (VANISHED, MIGRATED); all of them say the guest is on this host."""

    STARTED = "started"
    START_FAILED = "start-failed"
    IGNORED = "ignored"


_START_WORDS = {StartOutcome.MISSING: "no longer defined", StartOutcome.ON_PEER: "left on their peer",
                StartOutcome.HELD: "held (peer cannot be asked)", StartOutcome.RETURNED: "brought back from their peer",
                StartOutcome.KEPT: "kept on their peer", StartOutcome.NOT_ON_PEER: "no longer on their peer"}


def start_summary_counts(counts: Counter[str]) -> str:
    """'1 restored, 2 booted, ...' for the start's closing summary: the
    original's outcomes always, the others only when they happened."""
    return ", ".join(f"{counts[outcome]} {outcome.words}" for outcome in StartOutcome
                     if outcome.always_counted() or counts[outcome])
