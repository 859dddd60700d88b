"""What happened to each guest of a start: the tally for the closing
summary, the guests kept for the next start, and the journal's records."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from libvirt_guests.engine import Tally
from libvirt_guests.outcomes import StartOutcome, start_summary_counts
from libvirt_guests.output import INFO, WARNING
from libvirt_guests.start.plan import StartItem

if TYPE_CHECKING:
    from libvirt_guests.start.run import StartRun


class StartLedger:
    """The outcome of each guest, recorded once it is known (thread-safe)."""

    def __init__(self, run: StartRun) -> None:
        self.run = run
        self.tally = Tally()
        self.retained: dict[str, list[str]] = {}  # guests to try again at the next start
        self.outcomes: dict[tuple[str, str], StartOutcome] = {}
        self._lock = threading.Lock()

    def retain(self, uri: str, uuid: str) -> None:
        """Keep the guest in the list, for the next start."""
        with self._lock:
            line = self.retained.setdefault(uri, [])
            if uuid not in line:
                line.append(uuid)

    def settle(self, uri: str, item: StartItem, outcome: StartOutcome) -> None:
        """Count the guest's outcome, keep it listed or not, and journal it."""
        journal = self.run.journal
        self.tally.add(outcome)
        self.outcomes[(uri, item.uuid)] = outcome
        name = item.guest.name if item.guest else ""
        if outcome == StartOutcome.HELD:  # kept listed; its journal record says what it said
            self.run.failed = True
            self.retain(uri, item.uuid)
            return
        if outcome == StartOutcome.ON_PEER:  # unlisted; recorded as migrated, so status and plan show where it is
            journal.settle(uri, item.uuid, name, "migrated", item.peer)
            journal.update(uri, item.uuid, peer=item.peer, recorded=False)
            return
        if outcome == StartOutcome.FAILED:
            self.run.failed = True
            self.retain(uri, item.uuid)
            journal.settle(uri, item.uuid, name, "start-failed", item.detail)
        else:
            word = {StartOutcome.MISSING: "vanished", StartOutcome.IGNORED: "ignored"}.get(outcome, "started")
            journal.settle(uri, item.uuid, name, word)

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
        self.run.ctx.out.say(
            f"libvirt-guests start: {self.tally.total} guests in {seconds:.1f} s: " + start_summary_counts(counts),
            level=WARNING if troubled else INFO)
