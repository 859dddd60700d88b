"""The stop engine: list the running guests of every URI, record them, then
take each guest through its action chain (suspend, shutdown, poweroff) with
concurrency caps, timeouts and a global deadline.

Each guest runs its chain in its own thread; a FIFO Slots object per action
caps how many saves or shutdowns of one URI run at once (PARALLEL_SAVE,
PARALLEL_SHUTDOWN) and keeps the list order.

Bounds. With STOP_DEADLINE, the stop ends by the deadline plus a few seconds
whatever libvirt does: at the deadline every wait ends (a save under way is
aborted, a shutdown stops being waited for, a slot is no longer waited for)
and each guest not yet done gets the last action of its chain at once; a
last action begun then gets DEADLINE_GRACE seconds (a save is not begun
after the deadline: the guest is left running and named). After SIGINT or
SIGTERM nothing new is begun and the actions under way get INTERRUPT_GRACE
seconds. All libvirt work runs in daemon threads: a call blocked in C (a
daemon that stopped answering) cannot be cancelled, so the run gives up on
it ABORT_WAIT seconds after those bounds, records what it knows and ends."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

import libvirt

from .engine import (
    INTERRUPT_GRACE,
    PROGRESS_EVERY,
    TICK,
    Context,
    Heartbeat,
    Slots,
    Tally,
    close_all,
    connect_all,
    each_at_once,
    fmt_bytes,
    same_daemons,
)
from .output import ERR, INFO, WARNING, Output, tr, trf
from .plan import StopItem, UriStopPlan, plan_stop
from .state import GuestRecord, Journal, StateError, clear_marker, load_previous, remove, write_list
from .virt import Guest, Hypervisor, VirtError

OUTCOME_WORDS = {
    "saved": "saved",
    "shutdown": "shut down",
    "poweroff": "powered off",
    "left-running": "left running",
    "failed": "failed",
    "vanished": "vanished",
}
NOT_HANDLED = "not-handled"  # interrupted, or given up on: in the summary only when it happened


MAX_RECONNECTS = 3  # per guest: reconnect and repeat its current action
DEADLINE_GRACE = 5.0  # seconds after STOP_DEADLINE for the last actions begun at the deadline
ABORT_WAIT = 5.0  # seconds an aborted save, or a libvirt call past every bound, is waited for


class Step(Enum):
    DONE = "done"  # the guest is no longer running
    NEXT = "next"  # this action did not work: try the next one
    SKIPPED = "skipped"  # the deadline or a signal came before the action could begin
    VANISHED = "vanished"


@dataclass
class JobEnd:
    """How a save (ours, or an earlier run's) ended."""

    ended: bool  # False: aborted, and still running ABORT_WAIT later: given up on
    aborted: bool
    error: VirtError | None = None


class UriStop:
    """Stop work on one URI."""

    def __init__(self, run: StopRun, hv: Hypervisor, plan: UriStopPlan) -> None:
        self.run = run
        self.ctx = run.ctx
        self.cfg = run.ctx.config
        self.hv = hv
        self.plan = plan
        self.save_slots = Slots(self.cfg.parallel_save)
        self.shutdown_slots = Slots(self.cfg.parallel_shutdown)
        self.parallel_shutdown = self.cfg.parallel_shutdown > 1
        self.budget_end: float | None = None  # the per-URI shutdown budget
        self.budget_expired = False
        self._lock = threading.Lock()

    # -- driving -----------------------------------------------------------

    def execute(self) -> None:
        suspending = self.run.host_chain[0] == "suspend"
        msg = "Suspending guests on $uri URI..." if suspending else "Shutting down guests on $uri URI..."
        self.ctx.out.say(tr(msg, uri=self.hv.uri))
        ticker = threading.Thread(target=self._ticker, daemon=True)
        self._running = True
        ticker.start()
        try:
            for group in self.plan.groups:
                if self.run.interrupted():
                    for item in group:  # queue nothing new
                        self._finish(item, NOT_HANDLED, "interrupted before its turn")
                    continue
                self._run_group(group)
        finally:
            self._running = False

    def _run_group(self, group: list[StopItem]) -> None:
        if self.cfg.pause_before_save and not self.run.past_deadline():
            for item in group:
                if item.chain and item.chain[0] == "suspend" and not item.was_paused:
                    self._pause(item)
        # Reserve the first action's slot in list order, so the caps serve guests in that order.
        tickets = [
            self._slots(item.chain[0]).reserve() if item.chain and item.chain[0] != "poweroff" else None
            for item in group
        ]
        threads = [
            threading.Thread(target=self._run_chain, args=(item, ticket), name=f"stop-{item.guest.name}", daemon=True)
            for item, ticket in zip(group, tickets, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _slots(self, action: str) -> Slots:
        return self.save_slots if action == "suspend" else self.shutdown_slots

    def _pause(self, item: StopItem) -> None:
        guest = item.guest
        try:
            if guest.state() != libvirt.VIR_DOMAIN_RUNNING:
                return
            self.run.journal.update(self.hv.uri, guest.uuid, paused_by_us=True)
            guest.pause()
        except VirtError as err:
            if not err.vanished:
                self.ctx.out.warn(f"cannot pause guest {guest.name} before saving it: {err}")

    def _ticker(self) -> None:
        """Parallel shutdown: the original's per-URI 'Waiting for N guests' line."""
        while self._running:
            time.sleep(PROGRESS_EVERY)
            if not self._running or not self.parallel_shutdown:
                continue
            count = self.shutdown_slots.load()
            if count == 0:
                continue
            if self.budget_end is not None:
                left = max(0, int(self.budget_end - time.monotonic()))
                self.ctx.out.say(trf("Waiting for %d guests to shut down, %d seconds left\\n", count, left))
            else:
                self.ctx.out.say(trf("Waiting for %d guests to shut down\\n", count))

    def _run_chain(self, item: StopItem, ticket: object | None) -> None:
        chain = item.chain
        if not chain:
            self._finish(item, "failed", "a transient guest cannot be saved and its chain has no other action")
            self.ctx.out.error(f"guest {item.guest.name} is transient and cannot be saved; it is left running")
            return
        index, reconnects, announced = 0, 0, False
        while True:
            if self.run.interrupted():
                self._drop(chain[index], ticket)
                self._leave(item, NOT_HANDLED, "interrupted: no new action is begun")
                return
            if self.run.past_deadline() and not announced:
                announced = True
                self._drop(chain[index], ticket)
                ticket = None
                index = len(chain) - 1
                if chain[index] == "suspend":  # no save is begun after the deadline
                    self._leave(item, "left-running", "the stop deadline came before it could be saved")
                    self.ctx.out.say(f"Stop deadline reached: guest {item.guest.name} cannot be saved any more; "
                                     "it is still running", level=ERR)
                    return
                message = f"Stop deadline reached: {chain[index]} guest {item.guest.name} now"
                self.ctx.out.say(message, level=WARNING)
            last = index == len(chain) - 1
            try:
                step = self._perform(chain[index], item, last, ticket)
            except VirtError as err:
                if err.disconnected and reconnects < MAX_RECONNECTS and self._reconnect():
                    reconnects += 1
                    ticket = None
                    continue  # try the same action again on the new connection
                if err.vanished:
                    step = Step.VANISHED
                else:
                    self.ctx.out.error(f"guest {item.guest.name}: {err}")
                    step = Step.NEXT
            ticket = None
            if step is Step.VANISHED:
                self._finish(item, "vanished", "no longer running or defined")
                return
            if step is Step.DONE:
                return
            if step is Step.SKIPPED and (self.run.interrupted() or self.run.past_deadline()):
                continue  # decided at the top of the loop
            if last:
                self._finish_running(item)
                return
            index += 1

    def _drop(self, action: str, ticket: object | None) -> None:
        if ticket is not None:
            self._slots(action).drop(ticket)

    def _reconnect(self) -> bool:
        try:
            self.hv.reconnect(self.cfg.connect_timeout, on_retry=self.ctx.out.warn)
            return True
        except VirtError as err:
            self.ctx.out.error(f"lost the connection to {self.hv.uri} and cannot reconnect: {err}")
            return False

    def _finish(self, item: StopItem, outcome: str, detail: str = "") -> None:
        self.run.journal.update(self.hv.uri, item.guest.uuid, outcome=outcome, detail=detail)
        self.run.tally.add(outcome)

    def _leave(self, item: StopItem, outcome: str, detail: str) -> None:
        """The guest stays running: resume it if we paused it, then record why."""
        self._unpause(item)
        self._finish(item, outcome, detail)

    def _unpause(self, item: StopItem) -> None:
        guest = item.guest
        record = self.run.journal.get(self.hv.uri, guest.uuid)
        if not (record and record.paused_by_us):
            return
        try:
            if guest.state() == libvirt.VIR_DOMAIN_PAUSED:
                guest.resume()
            self.run.journal.update(self.hv.uri, guest.uuid, paused_by_us=False)
        except VirtError as err:
            if not err.vanished:
                self.ctx.out.warn(f"guest {guest.name}: cannot resume it after pausing it: {err}")

    def _finish_running(self, item: StopItem) -> None:
        """The chain is exhausted and the guest still runs."""
        guest = item.guest
        try:
            running = guest.is_active()
        except VirtError:
            running = True
        if not running:
            self._finish(item, "shutdown", "stopped by itself")
        elif self.run.interrupted():
            self._leave(item, NOT_HANDLED, "interrupted")
        else:
            why = ("the stop deadline came before its chain ended" if self.run.past_deadline()
                   else "every action of its chain failed")
            self._leave(item, "left-running", why)
            self.ctx.out.say(f"Guest {guest.name} is still running: {why}", level=ERR)

    def _not_running(self, item: StopItem) -> Step | None:
        """DONE if the guest stopped meanwhile, VANISHED if it is gone, else None."""
        try:
            if item.guest.is_active():
                return None
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            raise
        self._finish(item, "saved" if item.guest.has_managed_save() else "shutdown", "stopped by itself")
        return Step.DONE

    def _perform(self, action: str, item: StopItem, last: bool, ticket: object | None) -> Step:
        if action == "poweroff":
            return self._poweroff(item)
        slots = self._slots(action)
        ticket = ticket or slots.reserve()
        if self.run.past_deadline():
            slots.drop(ticket)  # at the deadline the last action runs at once, uncapped
            holding = False
        elif slots.wait(ticket, self.run.slot_end):
            holding = True
        else:
            return Step.SKIPPED  # the deadline or a signal came while waiting for a slot
        try:
            return self._suspend(item) if action == "suspend" else self._shutdown(item, last)
        finally:
            if holding:
                slots.release()

    # -- the three actions --------------------------------------------------

    def _suspend(self, item: StopItem) -> Step:
        guest = item.guest
        stopped = self._not_running(item)
        if stopped is not None:
            return stopped
        label = tr("Suspending $name: ", name=guest.name)
        self.ctx.out.say(label + "...")
        if guest.job_active():
            # A save started by an interrupted run may still be under way: let it end, within our bounds.
            end = self._watch_save(item, label, None)
            if not end.ended:
                return Step.NEXT
            stopped = self._not_running(item)
            if stopped is Step.DONE:
                self.ctx.out.say(label + tr("done"))
            if stopped is not None:
                return stopped
            if end.aborted:
                return self._after_failed_save(item)
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if item.was_paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
        if self.cfg.bypass_cache:
            flags |= libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE
        end = self._watch_save(item, label, lambda: guest.managed_save(flags))
        if not end.ended:
            return Step.NEXT  # no cleanup: the save may still be writing
        if end.error is None:
            self.ctx.out.say(label + tr("done"))
            self._finish(item, "saved")
            return Step.DONE
        if end.error.vanished:
            return Step.VANISHED
        if end.error.disconnected:
            raise end.error
        self.ctx.out.say(label + f"failed: {end.error}", level=WARNING)
        return self._after_failed_save(item)

    def _watch_save(self, item: StopItem, label: str, save: Callable[[], None] | None) -> JobEnd:
        """Run save in a daemon thread (or, with save None, watch the job an
        earlier run started); print progress; abort the job at SAVE_TIMEOUT,
        at the stop deadline, or INTERRUPT_GRACE after a signal; give up on
        it when it is still running ABORT_WAIT after the abort."""
        guest = item.guest
        errors: list[VirtError] = []
        finished = threading.Event()

        def work() -> None:
            try:
                save()  # type: ignore[misc]
            except VirtError as err:
                errors.append(err)
            finally:
                finished.set()

        if save is not None:
            threading.Thread(target=work, name=f"save-{guest.name}", daemon=True).start()
        started = time.monotonic()
        timeout = item.policy.save_timeout
        aborted_at: float | None = None
        next_report = started + PROGRESS_EVERY
        while not (finished.wait(TICK) if save is not None else self._job_ended(guest)):
            now = time.monotonic()
            if aborted_at is None:
                limit = self.run.save_end(started + timeout if timeout else None)
                if limit is not None and now >= limit:
                    self.ctx.out.say(label + f"aborting the save after {now - started:.0f} s", level=WARNING)
                    with contextlib.suppress(VirtError):
                        guest.abort_job()
                    aborted_at = now
            elif now >= aborted_at + ABORT_WAIT:
                self.ctx.out.say(label + f"the save did not end {ABORT_WAIT:g} s after it was aborted; "
                                 "giving up on it", level=WARNING)
                return JobEnd(ended=False, aborted=True)
            if now >= next_report:
                progress = guest.job_progress()
                text = f"{fmt_bytes(progress.processed)} of {fmt_bytes(progress.total)}" if progress else "..."
                self.ctx.out.say(label + text)
                next_report += PROGRESS_EVERY
        return JobEnd(ended=True, aborted=aborted_at is not None, error=errors[0] if errors else None)

    @staticmethod
    def _job_ended(guest: Guest) -> bool:
        if not guest.job_active():
            return True
        time.sleep(TICK)
        return False

    def _after_failed_save(self, item: StopItem) -> Step:
        """A failed save leaves the guest running: drop any partial image and
        resume the guest if we paused it, so its next action can work."""
        guest = item.guest
        try:
            if not guest.is_active():
                return self._not_running(item) or Step.DONE
            if guest.has_managed_save():
                guest.remove_managed_save()
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            self.ctx.out.warn(f"guest {guest.name}: cleaning up after the failed save: {err}")
        self._unpause(item)
        return Step.NEXT

    def _shutdown_timeout(self, item: StopItem) -> float | None:
        """Seconds this guest's shutdown may take by its own or the host's
        setting (None: no limit); the deadline is applied by the caller."""
        now = time.monotonic()
        if item.policy.shutdown_timeout is not None:
            return item.policy.shutdown_timeout or None
        if self.parallel_shutdown:
            with self._lock:
                if self.budget_end is None and self.cfg.shutdown_timeout:
                    self.budget_end = now + self.cfg.shutdown_timeout
            return None if self.budget_end is None else max(0.0, self.budget_end - now)
        return self.cfg.shutdown_timeout or None

    def _shutdown(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        stopped = self._not_running(item)
        if stopped is not None:
            return stopped
        if guest.state() == libvirt.VIR_DOMAIN_PAUSED:
            guest.resume()  # a paused guest cannot act on a shutdown request
        self.ctx.out.say(tr("Starting shutdown on guest: $name", name=guest.name))
        try:
            guest.shutdown()
        except VirtError as err:
            if err.vanished or err.disconnected:
                raise
            self.ctx.out.say(f"Shutdown of guest {guest.name} could not be requested: {err}", level=WARNING)
            return self._not_running(item) or Step.NEXT
        timeout = self._shutdown_timeout(item)
        own_end = None if timeout is None else time.monotonic() + timeout
        next_report = time.monotonic() + PROGRESS_EVERY
        while True:
            bound = self.run.wait_end(last)  # the deadline or a signal: asked again each time
            end = min((t for t in (own_end, bound) if t is not None), default=None)
            if guest.wait_inactive(TICK if end is None else max(0.0, min(TICK, end - time.monotonic()))):
                break
            now = time.monotonic()
            if end is not None and now >= end:
                message = tr("Shutdown of guest $name failed to complete in time.", name=guest.name)
                self.ctx.out.say(message, level=WARNING)
                if end == own_end and self.budget_end is not None and item.policy.shutdown_timeout is None:
                    with self._lock:
                        expired, self.budget_expired = self.budget_expired, True
                    if not expired:
                        self.ctx.out.say(tr("Timeout expired while shutting down domains"), level=WARNING)
                return Step.NEXT
            if now >= next_report:
                next_report += PROGRESS_EVERY
                if self.parallel_shutdown:
                    continue  # the per-URI ticker reports
                if end is None:
                    self.ctx.out.say(trf("Waiting for guest %s to shut down\\n", guest.name))
                else:
                    left = int(end - now + 0.5)
                    self.ctx.out.say(trf("Waiting for guest %s to shut down, %d seconds left\\n", guest.name, left))
        self.ctx.out.say(tr("Shutdown of guest $name complete.", name=guest.name))
        self._finish(item, "shutdown")
        return Step.DONE

    def _poweroff(self, item: StopItem) -> Step:
        guest = item.guest
        stopped = self._not_running(item)
        if stopped is not None:
            return stopped
        self.ctx.out.say(f"Powering off guest {guest.name}")
        try:
            guest.destroy()
        except VirtError as err:
            if err.vanished or err.disconnected:
                raise
            stopped = self._not_running(item)
            if stopped is not None:
                return stopped
            self.ctx.out.error(f"cannot power off guest {guest.name}: {err}")
            return Step.NEXT
        self.ctx.out.say(f"Power-off of guest {guest.name} complete.")
        self._finish(item, "poweroff")
        return Step.DONE


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
        self.ctx = dataclasses.replace(ctx, out=cast(Output, _WorkOutput(ctx.out, self)))
        self.forced_chain = forced_chain
        self.host_chain = forced_chain or ctx.config.on_shutdown
        self.tally = Tally()
        self.journal = Journal(ctx.paths.state_file)
        self.deadline_at: float | None = None
        self.failed = False
        self.stage = "connecting to"  # what the libvirt work is doing, for the give-up message
        self.entries: list[tuple[str, list[str]]] = []  # the list file's lines
        self.plans: dict[str, UriStopPlan] = {}
        self.abandoned = False  # gave up on the libvirt work: it must not write any more
        self._lock = threading.Lock()
        self._record_failed = False

    # -- bounds --------------------------------------------------------------

    def past_deadline(self) -> bool:
        return self.deadline_at is not None and time.monotonic() >= self.deadline_at

    def interrupted(self) -> bool:
        return self.ctx.interrupt.is_set()

    def _signal_end(self) -> float | None:
        at = self.ctx.interrupt.at
        return None if at is None else at + INTERRUPT_GRACE

    def slot_end(self) -> float | None:
        """Waiting for a slot ends at the deadline, or at once after a signal."""
        return _earliest(self.deadline_at, self.ctx.interrupt.at)

    def wait_end(self, last: bool) -> float | None:
        """When waiting for the current action (a shutdown) must end."""
        deadline = self.deadline_at
        if deadline is not None and last:
            deadline += DEADLINE_GRACE
        return _earliest(deadline, self._signal_end())

    def save_end(self, timeout_end: float | None) -> float | None:
        """When a save under way is aborted: its timeout, the deadline (last
        action or not: STOP_DEADLINE ends the stop), or the signal's bound."""
        return _earliest(timeout_end, self.deadline_at, self._signal_end())

    def give_up_at(self) -> float | None:
        """When the run stops waiting for libvirt at all."""
        after_deadline = None if self.deadline_at is None else self.deadline_at + DEADLINE_GRACE + ABORT_WAIT
        after_signal = self._signal_end()
        return _earliest(after_deadline, None if after_signal is None else after_signal + ABORT_WAIT)

    # -- the run ---------------------------------------------------------------

    def run(self) -> int:
        paths, out = self.ctx.paths, self.main_ctx.out
        started = time.monotonic()
        if self.ctx.config.stop_deadline:
            self.deadline_at = started + self.ctx.config.stop_deadline
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
            self._record(lambda: remove(paths.state_file))
        self.entries = [(uri, list(uuids)) for uri, uuids in previous]
        worker = threading.Thread(target=self._work_safely, name="stop-libvirt", daemon=True)
        with Heartbeat(self._status):
            worker.start()
            finished = self._wait(worker)
        if not finished:
            self._give_up()
        complete = finished and not self.interrupted()
        with self._lock:
            self.abandoned = True  # from here on, only this thread writes
            entries = [(uri, list(uuids)) for uri, uuids in self.entries]
        if self._record(lambda: write_list(paths.list_file, entries)):
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
        return 1 if self.failed else 0

    def _wait(self, worker: threading.Thread) -> bool:
        """Wait for the libvirt work; False if the bounds passed first."""
        while True:
            worker.join(TICK)
            if not worker.is_alive():
                return True
            give_up = self.give_up_at()
            if give_up is not None and time.monotonic() >= give_up:
                return False

    def _work_safely(self) -> None:
        try:
            self._work()
        except Exception as err:  # noqa: BLE001 - reported; the calling thread still records
            self.ctx.out.error(f"the stop met an unexpected error: {type(err).__name__}: {err}")
            self.failed = True

    def _work(self) -> None:
        """Everything that talks to libvirt, in one daemon thread."""
        paths = self.ctx.paths
        hvs = connect_all(self.ctx, self.ctx.config.uris, retry_for=0)
        for uri, first in same_daemons(hvs):
            self.ctx.out.say(f"{uri} is the same daemon as {first}: its guests are handled once, as {first}'s")
            hv = hvs.pop(uri)
            if hv is not None:
                hv.close()
        self.stage = "listing the guests of"
        self.plans = self._list(hvs)
        with self._lock:
            if self.abandoned:
                return
            self.entries = self._merge(self.entries, self.plans)
            entries = [(uri, list(uuids)) for uri, uuids in self.entries]
            self.journal.save("stopping")
            self._record(lambda: write_list(paths.list_file, entries))
        self.tally.total = sum(len(p.items) for p in self.plans.values())
        self.stage = "acting on the guests of"
        busy = [UriStop(self, hvs[uri], plan) for uri, plan in self.plans.items() if plan.items]  # type: ignore[arg-type]
        each_at_once(UriStop.execute, busy)
        self.stage = "closing"
        self._forget_undefined(hvs)
        close_all(hvs.values())

    def _give_up(self) -> None:
        """The bounds passed with libvirt calls still unanswered: say which,
        and leave them behind (their threads are daemons)."""
        self.gave_up = True
        why = f"after {self.ctx.interrupt.name}" if self.interrupted() else "at the stop deadline"
        pending = [
            (plan.uri, item) for plan in self.plans.values() for item in plan.items
            if (record := self.journal.get(plan.uri, item.guest.uuid)) is not None and record.outcome == "pending"
        ]
        if pending:
            names = ", ".join(item.guest.name for _uri, item in pending)
            what = f"guests {names}; they may still be running"
        else:
            what = f"{self.stage} {' '.join(self.ctx.config.uris)}"
        self.main_ctx.out.error(f"no answer from libvirt {why}: gave up waiting for {what}")
        for uri, item in pending:
            self.journal.update(uri, item.guest.uuid, outcome=NOT_HANDLED, detail="no answer from libvirt")
            self.tally.add(NOT_HANDLED)
        self.failed = True

    def _summary(self, started: float, finished: bool) -> None:
        counts = self.tally.counts
        words = dict(OUTCOME_WORDS)
        if counts[NOT_HANDLED]:
            words[NOT_HANDLED] = "not handled"
        text = (f"libvirt-guests stop: {self.tally.done()} guests in {time.monotonic() - started:.1f} s: "
                + ", ".join(f"{counts[key]} {word}" for key, word in words.items()))
        if self.interrupted():
            text += f" (interrupted by {self.ctx.interrupt.name})"
        troubled = counts["left-running"] or counts["failed"] or counts[NOT_HANDLED] or not finished
        self.main_ctx.out.say(text, level=WARNING if troubled else INFO)
        if counts["left-running"] or counts["failed"]:
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

    def _list(self, hvs: dict[str, Hypervisor | None]) -> dict[str, UriStopPlan]:
        """The listing phase, for all URIs at once, reported in URIS order."""
        out = self.ctx.out
        connected = [uri for uri, hv in hvs.items() if hv is not None]

        def plan_one(uri: str) -> UriStopPlan | Exception:
            try:
                return plan_stop(hvs[uri], self.ctx.config, self.forced_chain, self.journal)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - one URI must not cost the others
                return err

        plans: dict[str, UriStopPlan] = {}
        for uri, plan in zip(connected, each_at_once(plan_one, connected), strict=False):
            if isinstance(plan, Exception):
                out.say(tr("Failed to list persistent guests on $uri", uri=uri), level=WARNING)
                out.error(f"{uri}: {plan}")
                self.failed = True
                continue
            names = ", ".join(g.name for g in plan.running)
            out.say(tr("Running guests on $uri URI: ", uri=uri) + (names or tr("no running guests.")))
            if plan.transient_left:
                msg = "Not suspending transient guests on URI: $uri: " if self.host_chain[0] == "suspend" else (
                    "Not shutting down transient guests on URI: $uri: ")
                out.say(tr(msg, uri=uri) + ", ".join(g.name for g in plan.transient_left))
            for guest in plan.skipped:
                out.say(f"Leaving guest {guest.name} alone: its policy says skip")
            for warning in plan.warnings:
                out.warn(warning)
            for item in plan.items:
                existing = self.journal.get(uri, item.guest.uuid)
                self.journal.add(GuestRecord(
                    uri, item.guest.uuid, item.guest.name, item.persistent, item.recorded, item.was_paused,
                    paused_by_us=bool(existing and existing.paused_by_us),
                ))
            plans[uri] = plan
        return plans

    @staticmethod
    def _merge(previous: list[tuple[str, list[str]]], plans: dict[str, UriStopPlan]) -> list[tuple[str, list[str]]]:
        """Lines of the list file: what an interrupted run recorded, plus
        the guests listed now, one line per URI, URIs in first-seen order."""
        merged: dict[str, list[str]] = {}
        for uri, uuids in previous:
            merged.setdefault(uri, []).extend(u for u in uuids if u not in merged.get(uri, []))
        for uri, plan in plans.items():
            line = merged.setdefault(uri, [])
            line.extend(u for u in plan.recorded_uuids if u not in line)
        return list(merged.items())

    def _forget_undefined(self, hvs: dict[str, Hypervisor | None]) -> None:
        """Drop guests that no longer exist from the list, so no start (ours or
        the original's) fails on them."""
        for uri, uuids in self.entries:
            hv = hvs.get(uri)
            if hv is None:
                continue
            for uuid in list(uuids):
                try:
                    gone = hv.lookup(uuid) is None
                except VirtError:
                    continue
                with self._lock:
                    if gone and not self.abandoned:
                        uuids.remove(uuid)


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)


def stop(ctx: Context, forced_chain: tuple[str, ...] | None = None) -> int:
    return StopRun(ctx, forced_chain).run()
