"""What happened to each guest of a start: the tally for the closing
summary, the guests kept for the next start, the journal's records, and
whether the start failed (exit 1): the ledger alone writes them."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from libvirt_guests.engine import Tally
from libvirt_guests.outcomes import StartOutcome, start_summary_counts
from libvirt_guests.output import INFO, WARNING, Output
from libvirt_guests.start.plan import StartItem
from libvirt_guests.state.history import Recorder
from libvirt_guests.state.journal import GuestRecord, Journal

# The action that settled a guest, by its outcome, for the history.
_DONE_BY = {StartOutcome.RESTORED: "restore", StartOutcome.BOOTED: "boot", StartOutcome.RESUMED: "resume"}


class StartLedger:
    """The outcome of each guest, recorded once it is known (thread-safe)."""

    def __init__(self, journal: Journal, out: Output, failed: bool = False) -> None:
        self._journal = journal
        self._out = out
        self._failed = failed
        self.tally = Tally()
        self.retained: dict[str, list[str]] = {}  # guests to try again at the next start
        self.outcomes: dict[tuple[str, str], StartOutcome] = {}
        self._lock = threading.Lock()
        self.recorder = Recorder("start")  # what happened to each guest, for the history

    @property
    def failed(self) -> bool:
        """Start exits 1: a guest failed or is held, a state file could not be trusted or written."""
        return self._failed

    def fail(self) -> None:
        self._failed = True

    def record(self, uri: str, uuid: str) -> GuestRecord | None:
        """What the journal says of a guest (the last stop's record, or this start's)."""
        return self._journal.get(uri, uuid)

    def migrated(self, uris: Iterable[str]) -> list[GuestRecord]:
        """The guests of these URIs the journal says are on a peer."""
        wanted = set(uris)
        return [record for record in self._journal.migrated() if record.uri in wanted]

    def retain(self, uri: str, uuid: str) -> None:
        """Keep the guest in the list, for the next start."""
        with self._lock:
            line = self.retained.setdefault(uri, [])
            if uuid not in line:
                line.append(uuid)

    def began(self, uri: str, item: StartItem) -> None:
        """The guest's unit begins (for the history: its seconds)."""
        self.recorder.began(uri, item.uuid, str(item.action))

    def settle(self, uri: str, item: StartItem, outcome: StartOutcome) -> None:
        """Count the guest's outcome, keep it listed or not, and journal it."""
        journal = self._journal
        self.tally.add(outcome)
        self.outcomes[(uri, item.uuid)] = outcome
        self.recorder.finished(uri, item.uuid, item.guest.name if item.guest else "",
                               action=_DONE_BY.get(outcome, str(item.action)), planned=str(item.action),
                               reason=item.detail if outcome == StartOutcome.FAILED else "", result=outcome.value)
        name = item.guest.name if item.guest else ""
        word = outcome.recorded_as()
        if outcome == StartOutcome.HELD:  # kept listed; its journal record says what it said
            self.fail()
            self.retain(uri, item.uuid)
            return
        assert word is not None, outcome
        if outcome == StartOutcome.ON_PEER:  # unlisted; recorded as migrated, so status and plan show where it is
            journal.settle(uri, item.uuid, name, word.value, item.peer)
            journal.update(uri, item.uuid, peer=item.peer, recorded=False)
            return
        if outcome == StartOutcome.FAILED:
            self.fail()
            self.retain(uri, item.uuid)
            journal.settle(uri, item.uuid, name, word.value, item.detail)
        else:
            journal.settle(uri, item.uuid, name, word.value)

    def settle_return(self, record: GuestRecord, outcome: StartOutcome, detail: str, failed: bool) -> None:
        """Count and journal how a guest's way back from its peer ended
        (MIGRATE_BACK); one that could not be brought back stays recorded there."""
        self.tally.add(outcome)
        word = outcome.recorded_as()
        if failed or word is None:
            self.fail()
            return
        self._journal.settle(record.uri, record.uuid, record.name, word.value, detail)

    def started(self, uri: str, item: StartItem) -> bool:
        """Did this run actually start the guest?"""
        outcome = self.outcomes.get((uri, item.uuid))
        return outcome is not None and outcome.started()

    def summary(self, seconds: float) -> None:
        """The closing line: how many guests of each outcome."""
        if not self.tally.total:
            return
        counts = self.tally.counts
        troubled = any(counts[outcome] for outcome in StartOutcome if outcome.troubled())
        self._out.say(
            f"libvirt-guests start: {self.tally.total} guests in {seconds:.1f} s: " + start_summary_counts(counts),
            level=WARNING if troubled else INFO)
