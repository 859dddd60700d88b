"""The stop engine: list the running guests of every URI, record them, then
take each guest through its action chain (suspend, shutdown, poweroff) with
concurrency caps, timeouts and a global deadline.

No thread per guest (stop/chains.py): per URI, each capped action has a FIFO
queue served by as many workers as its cap (PARALLEL_SAVE, PARALLEL_SHUTDOWN,
PARALLEL_MIGRATE), which keeps the list order; a guest's next action queues
it for that action. The URI's own thread is the watchdog of the bounds.

Bounds. With STOP_DEADLINE, the stop ends by the deadline plus a few seconds
whatever libvirt does: at the deadline every wait ends (a save under way is
aborted, a shutdown stops being waited for, no queue is waited in any more)
and each guest not yet done gets the last action of its chain at once
(queued guests leave their queues for a small pool of their own, and the
shutdowns begun then are waited for together, see stop/offwatch.py); a last
action begun then gets DEADLINE_GRACE seconds (a save is not begun
after the deadline: the guest is left running and named). After SIGINT or
SIGTERM nothing new is begun and the actions under way get INTERRUPT_GRACE
seconds. All libvirt work runs in daemon threads: a call blocked in C (a
daemon that stopped answering) cannot be cancelled, so the run gives up on
it ABORT_WAIT seconds after those bounds, records what it knows and ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from libvirt_guests.engine import (
    TICK,
    Context,
    Heartbeat,
    Tally,
    close_all,
    connect_all,
    each_at_once,
    same_daemons,
)
from libvirt_guests.outcomes import Outcome, summary_counts
from libvirt_guests.output import INFO, WARNING, Output, shown, shown_error, shown_uri, tr
from libvirt_guests.state import history
from libvirt_guests.state.files import StateError
from libvirt_guests.state.journal import GuestRecord, Journal, remove
from libvirt_guests.state.listfile import ListEntries, write_list
from libvirt_guests.state.lock import clear_marker
from libvirt_guests.state.previous import load_previous
from libvirt_guests.stop.actions import ACTIONS
from libvirt_guests.stop.bounds import StopBounds
from libvirt_guests.stop.chains import RunScope, UriWork
from libvirt_guests.stop.handoff import hand_off
from libvirt_guests.stop.items import UriStopPlan
from libvirt_guests.stop.ledger import record_history
from libvirt_guests.stop.listlines import ListLines
from libvirt_guests.stop.plan import plan_stop
from libvirt_guests.stop.planned import apply_budget, load_memory
from libvirt_guests.stop.ups import ups_deadline
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.migrate import restore_autostart


class _WorkOutput:
    """The libvirt work's output: silent once the run has given up on that
    work, so that a call answered late prints nothing after the summary."""

    def __init__(self, out: Output, run: StopRun) -> None:
        self._out = out
        self._run = run

    def say(self, text: str, level: int = INFO) -> None:
        if not self._run.gave_up:
            self._out.say(text, level)

    def warn(self, text: str) -> None:
        if not self._run.gave_up:
            self._out.warn(text)

    def error(self, text: str) -> None:
        if not self._run.gave_up:
            self._out.error(text)


class StopRun:
    """One `stop` (or `shutdown`) invocation.

    The calling thread only reads and writes files; all libvirt work runs in
    a daemon thread (`_work`), which the caller waits for up to the bounds
    (`give_up_at`), so that it can always record and end."""

    def __init__(self, ctx: Context, forced_chain: tuple[str, ...] | None) -> None:
        self.main_ctx = ctx
        self.gave_up = False
        # What runs in the libvirt work sees this context, whose output goes silent at a give-up.
        self.ctx = replace(ctx, out=cast(Output, _WorkOutput(ctx.out, self)))
        self.forced_chain = forced_chain
        self.host_chain = forced_chain or ctx.config.on_shutdown
        self.tally = Tally()
        self.journal = Journal(ctx.paths.state_file)
        self.bounds = StopBounds(ctx.interrupt, ctx.config.stop_deadline)
        self.recorder = history.Recorder("stop")  # what happened to each guest, for the history
        self.failed = False
        self.stage = "connecting to"  # what the libvirt work is doing, for the give-up message
        self.lines = ListLines([])
        # The lines written before acting, and write_list's answer (True: written, False: none, so removed).
        self.listed: tuple[ListEntries, bool] | None = None
        self.plans: dict[str, UriStopPlan] = {}
        self._record_failed = False

    # -- the run ---------------------------------------------------------------

    def run(self) -> int:
        paths, out = self.ctx.paths, self.main_ctx.out
        started = time.monotonic()
        # Never raises: what cannot be trusted is set aside, and the guests are handled.
        found = load_previous(paths.list_file, paths.state_file, out.warn, out.error)
        self.failed = found.untrusted
        previous = found.entries
        if previous is not None:
            if not found.resumable:
                return 0  # the last stop was not followed by start: the original's no-op
            out.say(found.resume_message)  # an earlier stop or start did not complete, or nobody can tell
            self.journal = found.journal or self.journal
        else:
            previous = []
            # The guests the last stop moved to a peer stay recorded (with their
            # autostart flag here) until they are back: only they are carried over.
            carried = found.journal.migrated() if found.journal is not None else []
            for record in carried:
                self.journal.add(record)
            if not carried:
                self._record(lambda: remove(paths.state_file))
        self.lines = ListLines(previous)
        if (deadline := ups_deadline(self.ctx.config, out)) != self.ctx.config.stop_deadline:
            self.bounds = StopBounds(self.ctx.interrupt, deadline)
        worker = threading.Thread(target=self._work_safely, name="stop-libvirt", daemon=True)
        with Heartbeat(self._status):
            worker.start()
            finished = wait_for(worker, self.bounds)
        if not finished:
            give_up(self)
        complete = finished and not self.bounds.interrupted()
        entries = self.lines.abandon()
        if self.listed is not None and self.listed[0] == entries:
            written: object = self.listed[1]  # on disk already: no second write and its two fsyncs
        else:
            written = self._record(lambda: write_list(paths.list_file, entries))
        # Kept without a list too while it names guests moved to a peer (status and plan show them).
        if written or (written is False and self.journal.migrated()):
            self.journal.save("stopped" if complete else "stopping")  # 'stopping': the next stop finishes it
        else:
            self._record(lambda: remove(paths.state_file))
        marker_note = clear_marker(paths.lock_file)  # never changes the outcome: one line at most
        if marker_note:
            out.warn(marker_note)
        if self.journal.write_error and not self._record_failed:
            out.error(f"the per-guest journal could not be kept: {self.journal.write_error}")
            self.failed = True
        self._summary(started, finished)
        record_history(self.ctx.config, paths.history_file, self.recorder, out)
        return 1 if self.failed else 0

    def _work_safely(self) -> None:
        try:
            self._work()
        except Exception as err:  # noqa: BLE001 - reported; the calling thread still records
            self.ctx.out.error(f"the stop met an unexpected error: {type(err).__name__}: {shown_error(err)}")
            self.failed = True

    def _work(self) -> None:
        """Everything that talks to libvirt, in one daemon thread."""
        paths = self.ctx.paths
        hvs = connect_all(self.ctx, self.ctx.config.uris, retry_for=0)
        for uri, first in same_daemons(hvs):
            self.ctx.out.say(f"{shown_uri(uri)} is the same daemon as {shown_uri(first)}: its guests are handled "
                             f"once, as {shown_uri(first)}'s")
            hv = hvs.pop(uri)
            if hv is not None:
                hv.close()
        self.stage = "listing the guests of"
        self.plans = list_guests(self, hvs)

        def record(entries: ListEntries) -> None:
            if any(uuids for _uri, uuids in entries) or self.journal.guests:  # nothing to record: no fsync (issue 13)
                self.journal.save("stopping")
            written = self._record(lambda: write_list(paths.list_file, entries))
            if isinstance(written, bool):  # None: it could not be written, so it is tried again at the end
                self.listed = (entries, written)

        if not self.lines.merge(self.plans, record):
            return
        self.tally.total = sum(len(p.items) for p in self.plans.values())
        self.stage = "acting on the guests of"
        shared = RunScope(self.ctx.config, self.ctx.out, self.bounds, self.journal, self.tally, self.lines.unlist,
                          self.host_chain, self.recorder, self.ctx.paths.refusals_file)
        hand_off(shared, hvs, self.plans)  # libvirt's own shutdown handling: defer to it, or say the conflict
        if self.tally.total:
            busy = [UriWork(shared, hv, plan) for uri, plan in self.plans.items() if plan.items and (hv := hvs[uri])]
            each_at_once(UriWork.execute, busy)
        self.stage = "closing"
        forget_undefined(self.lines, hvs)
        close_all(hvs.values())

    def _summary(self, started: float, finished: bool) -> None:
        counts = self.tally.counts
        text = f"libvirt-guests stop: {self.tally.done()} guests in {time.monotonic() - started:.1f} s: "
        text += summary_counts(counts)
        if self.bounds.interrupted():
            text += f" (interrupted by {self.ctx.interrupt.name})"
        troubled = any(counts[outcome] for outcome in Outcome if outcome.troubled()) or not finished
        self.main_ctx.out.say(text, level=WARNING if troubled else INFO)
        if counts[Outcome.LEFT_RUNNING] or counts[Outcome.FAILED]:
            self.failed = True

    def _status(self) -> str:
        return f"Stopping guests: {self.tally.done()} of {self.tally.total} done"

    def _record(self, write: Callable[[], object]) -> object:
        """Write state, but never let a full disk or a read-only file system
        keep the guests from being saved or shut down: say so loudly, once
        (exit 1), and go on."""
        try:
            return write()
        except StateError as err:
            if not self._record_failed:
                self._record_failed = True
                self.main_ctx.out.error(f"{err}: nothing is recorded; the guests are still handled, but are not "
                                   "recorded to be started at boot")
            self.failed = True
            return None



def wait_for(worker: threading.Thread, bounds: StopBounds) -> bool:
    """Wait for the libvirt work; False if the bounds passed first."""
    while True:
        worker.join(TICK)
        if not worker.is_alive():
            return True
        give_up = bounds.give_up_at()
        if give_up is not None and time.monotonic() >= give_up:
            return False


def give_up(run: StopRun) -> None:
    """The bounds passed with libvirt calls still unanswered: say which,
    and leave them behind (their threads are daemons)."""
    run.gave_up = True
    why = f"after {run.ctx.interrupt.name}" if run.bounds.interrupted() else "at the stop deadline"
    pending = [
        (plan.uri, item) for plan in run.plans.values() for item in plan.items
        if (record := run.journal.get(plan.uri, item.guest.uuid)) is not None and record.outcome == Outcome.PENDING
    ]
    if pending:
        names = ", ".join(shown(item.guest.name) for _uri, item in pending)
        what = f"guests {names}; they may still be running"
    else:
        what = f"{run.stage} {' '.join(shown_uri(uri) for uri in run.ctx.config.uris)}"
    run.main_ctx.out.error(f"no answer from libvirt {why}: gave up waiting for {what}")
    for uri, item in pending:
        run.journal.update(uri, item.guest.uuid, outcome=Outcome.NOT_HANDLED, detail="no answer from libvirt")
        run.tally.add(Outcome.NOT_HANDLED)
    run.failed = True


def forget_undefined(lines: ListLines, hvs: dict[str, Hypervisor | None]) -> None:
    """Drop guests that no longer exist from the list, so no start (ours or
    the original's) fails on them: one listing per URI (if it fails, one
    lookup per guest; a guest that cannot be looked up stays listed)."""
    for uri, uuids in [(uri, list(uuids)) for uri, uuids in lines.entries]:
        hv = hvs.get(uri)
        if hv is None or not uuids:
            continue
        try:
            found: dict[str, Guest | None] | None = hv.lookup_all(uuids, facts=False)
        except VirtError:
            found = None
        for uuid in uuids:
            try:
                gone = (found[uuid] if found is not None else hv.lookup(uuid)) is None
            except VirtError:
                continue
            if gone:
                lines.unlist(uri, uuid)


def list_guests(run: StopRun, hvs: dict[str, Hypervisor | None]) -> dict[str, UriStopPlan]:
    """The listing phase, for all URIs at once, reported in URIS order."""
    out = run.ctx.out
    connected = [uri for uri, hv in hvs.items() if hv is not None]
    history, refusals, problems = load_memory(run.ctx.paths.history_file, run.ctx.paths.refusals_file)
    for problem in problems:
        out.warn(problem)
    at = run.bounds.deadline_at
    deadline = None if at is None else max(0.0, at - time.monotonic())

    def plan_one(uri: str) -> UriStopPlan | Exception:
        try:
            hv = hvs[uri]
            assert hv is not None
            plan = plan_stop(hv, run.ctx.config, run.forced_chain, run.journal)
            plan.warnings += apply_budget(plan, run.ctx.config, history, refusals, deadline).warnings
            return plan
        except Exception as err:  # noqa: BLE001 - one URI must not cost the others
            return err

    plans: dict[str, UriStopPlan] = {}
    for uri, plan in zip(connected, each_at_once(plan_one, connected), strict=False):
        if isinstance(plan, Exception):
            out.say(tr("Failed to list persistent guests on $uri", uri=uri), level=WARNING)
            out.error(f"{shown_uri(uri)}: {shown_error(plan)}")
            run.failed = True
            continue
        names = ", ".join(shown(g.name) for g in plan.running)
        out.say(tr("Running guests on $uri URI: ", uri=uri) + (names or tr("no running guests.")))
        if plan.transient_left:
            msg = "Not suspending transient guests on URI: $uri: " if ACTIONS[run.host_chain[0]].saves else (
                "Not shutting down transient guests on URI: $uri: ")
            out.say(tr(msg, uri=uri) + ", ".join(shown(g.name) for g in plan.transient_left))
        for guest in plan.skipped:
            out.say(f"Leaving guest {shown(guest.name)} alone: its policy says skip")
        for warning in plan.warnings:
            out.warn(warning)
        for guest in plan.running:
            if (existing := run.journal.get(uri, guest.uuid)) is not None and existing.migrated:
                back_here(run, existing, guest)
        for item in plan.items:
            existing = run.journal.get(uri, item.guest.uuid)
            run.journal.add(GuestRecord(
                uri, item.guest.uuid, item.guest.name, item.persistent, item.recorded, item.was_paused,
                paused_by_us=bool(existing and existing.paused_by_us),
            ))
        plans[uri] = plan
    return plans


def back_here(run: StopRun, record: GuestRecord, guest: Guest) -> None:
    """A guest the journal says is on a peer runs here again (brought back
    by hand): put back the autostart flag the migrate action turned off, so
    that its record, replaced now, does not take the flag with it."""
    if not record.autostart_here:
        return
    try:
        restore_autostart(guest, True)
    except VirtError as err:
        run.ctx.out.warn(f"guest {shown(guest.name)} is back from {shown_uri(record.peer or record.detail)}, "
                         f"but its autostart flag could not be turned back on: {shown_error(err)}")


def stop(ctx: Context, forced_chain: tuple[str, ...] | None = None) -> int:
    return StopRun(ctx, forced_chain).run()

