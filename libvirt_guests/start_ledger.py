"""What happened to each guest of a start: the tally for the closing
summary, the guests kept for the next start, and the journal's records."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .engine import Tally
from .output import INFO, WARNING
from .plan import StartItem

if TYPE_CHECKING:
    from .start import StartRun

STARTED = ("restored", "booted", "resumed")  # outcomes that are a guest actually started

# Counted in the summary only when they happened, after the fixed counts.
_PEER_WORDS = (("on peer", "left on their peer"), ("held", "held (peer cannot be asked)"),
               ("returned", "brought back from their peer"), ("kept", "kept on their peer"),
               ("not on peer", "no longer on their peer"))


class StartLedger:
    """The outcome of each guest, recorded once it is known (thread-safe)."""

    def __init__(self, run: StartRun) -> None:
        self.run = run
        self.tally = Tally()
        self.retained: dict[str, list[str]] = {}  # guests to try again at the next start
        self.outcomes: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def retain(self, uri: str, uuid: str) -> None:
        """Keep the guest in the list, for the next start."""
        with self._lock:
            line = self.retained.setdefault(uri, [])
            if uuid not in line:
                line.append(uuid)

    def settle(self, uri: str, item: StartItem, outcome: str) -> None:
        """Count the guest's outcome, keep it listed or not, and journal it."""
        journal = self.run.journal
        self.tally.add(outcome)
        self.outcomes[(uri, item.uuid)] = outcome
        name = item.guest.name if item.guest else ""
        if outcome == "held":  # kept listed; its journal record says what it said
            self.run.failed = True
            self.retain(uri, item.uuid)
            return
        if outcome == "on peer":  # unlisted; recorded as migrated, so status and plan show where it is
            journal.settle(uri, item.uuid, name, "migrated", item.peer)
            journal.update(uri, item.uuid, peer=item.peer, recorded=False)
            return
        if outcome == "failed":
            self.run.failed = True
            self.retain(uri, item.uuid)
            journal.settle(uri, item.uuid, name, "start-failed", item.detail)
        else:
            word = {"missing": "vanished", "ignored": "ignored"}.get(outcome, "started")
            journal.settle(uri, item.uuid, name, word)

    def started(self, uri: str, item: StartItem) -> bool:
        """Did this run actually start the guest?"""
        return self.outcomes.get((uri, item.uuid)) in STARTED

    def summary(self, seconds: float) -> None:
        """The closing line: how many guests of each outcome."""
        if not self.tally.total:
            return
        counts = self.tally.counts
        parts = [f"{counts['restored']} restored", f"{counts['booted']} booted"]
        if counts["resumed"]:
            parts.append(f"{counts['resumed']} resumed")
        parts += [f"{counts['already active']} already active", f"{counts['ignored']} ignored",
                  f"{counts['missing']} no longer defined", f"{counts['failed']} failed"]
        for key, words in _PEER_WORDS:
            if counts[key]:
                parts.append(f"{counts[key]} {words}")
        self.run.ctx.out.say(
            f"libvirt-guests start: {self.tally.total} guests in {seconds:.1f} s: " + ", ".join(parts),
            level=WARNING if counts["failed"] or counts["held"] or counts["kept"] else INFO)
