"""The record of what happened to each guest of one URI in a stop: its
journal record and the run's tally. The one writer of both for the chains
and the actions (the run owns the list file's lines: `unlist`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.engine import Tally
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import ERR, Output, shown
from libvirt_guests.state import history
from libvirt_guests.state.history import Recorder
from libvirt_guests.state.journal import KEEP, Journal, Keep
from libvirt_guests.stop.bounds import StopBounds
from libvirt_guests.stop.items import StopItem
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.saveimage import image_bytes, memory_bytes


class GuestLedger:
    """What happened to each guest of one URI: the journal and the tally."""

    def __init__(self, uri: str, journal: Journal, tally: Tally, bounds: StopBounds, out: Output,
                 unlist: Callable[[str, str], None], recorder: Recorder | None = None) -> None:
        self.uri = uri
        self._recorder = recorder if recorder is not None else Recorder("stop")  # for the history
        self._journal = journal
        self._tally = tally
        self._bounds = bounds
        self._out = out
        self._unlist = unlist

    def finish(self, item: StopItem, outcome: Outcome, detail: str = "") -> None:
        self._journal.update(self.uri, item.guest.uuid, outcome=outcome, detail=detail)
        self._tally.add(outcome)
        guest, saved = item.guest, outcome == Outcome.SAVED
        self._recorder.finished(
            self.uri, guest.uuid, guest.name, planned=(item.configured or item.chain or ("",))[0],
            reason="; ".join(why for why in (item.budget_reason, "" if saved else detail) if why),
            result=outcome.value, saved=saved,
            bytes_written=image_bytes(self.uri, guest.name) if saved else None, memory_bytes=memory_bytes(guest))

    def began(self, item: StopItem, action: str, saves: bool) -> None:
        """An action of the guest's chain begins (for the history: its seconds, the URI's save span)."""
        self._recorder.began(self.uri, item.guest.uuid, action, saves)

    def fell_back(self, item: StopItem, why: str) -> None:
        """The action did not settle the guest: its chain goes on (for the history)."""
        self._recorder.note(self.uri, item.guest.uuid, why)

    def leave(self, item: StopItem, outcome: Outcome, detail: str) -> None:
        """The guest stays running: resume it if we paused it, then record why."""
        self.unpause(item)
        self.finish(item, outcome, detail)

    def note(self, item: StopItem, *, peer: str | Keep = KEEP, autostart_here: bool | None | Keep = KEEP,
             paused_by_us: bool | Keep = KEEP) -> None:
        """Record, before the step it concerns, what a crash must leave known:
        the peer a migration begins to, the autostart flag it turned off, a
        pause before a save."""
        self._journal.update(self.uri, item.guest.uuid, peer=peer, autostart_here=autostart_here,
                             paused_by_us=paused_by_us)

    def moved(self, item: StopItem, peer: str) -> None:
        """The guest runs on its peer now: out of the list file, recorded MIGRATED."""
        self._unlist(self.uri, item.guest.uuid)
        self._journal.update(self.uri, item.guest.uuid, recorded=False)
        self.finish(item, Outcome.MIGRATED, peer)

    def unpause(self, item: StopItem) -> None:
        guest = item.guest
        record = self._journal.get(self.uri, guest.uuid)
        if not (record and record.paused_by_us):
            return
        try:
            if guest.state() == libvirt.VIR_DOMAIN_PAUSED:
                guest.resume()
            self._journal.update(self.uri, guest.uuid, paused_by_us=False)
        except VirtError as err:
            if not err.vanished:
                self._out.warn(f"guest {shown(guest.name)}: cannot resume it after pausing it: {err}")

    def stopped_by_itself(self, item: StopItem) -> None:
        self.finish(item, Outcome.SAVED if item.guest.has_managed_save() else Outcome.SHUTDOWN, "stopped by itself")

    def chain_exhausted(self, item: StopItem) -> None:
        """Every action was tried: record whether the guest still runs, and why."""
        guest = item.guest
        try:
            running = guest.is_active()
        except VirtError:
            running = True
        if not running:
            self.finish(item, Outcome.SHUTDOWN, "stopped by itself")
        elif self._bounds.interrupted():
            self.leave(item, Outcome.NOT_HANDLED, "interrupted")
        else:
            why = ("the stop deadline came before its chain ended" if self._bounds.past_deadline()
                   else "every action of its chain failed")
            self.leave(item, Outcome.LEFT_RUNNING, why)
            self._out.say(f"Guest {shown(guest.name)} is still running: {why}", level=ERR)


def record_history(cfg: Config, path: Path, recorder: history.Recorder, out: Output) -> None:
    """What happened to each guest, kept; a problem is one warning, never the
    exit code, and never touches the other state files."""
    problem = history.record(path, recorder.events(), recorder.stop_records(
        cfg.parallel_save, cfg.pause_before_save, cfg.bypass_cache))
    if problem:
        out.warn(problem)

