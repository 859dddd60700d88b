"""The stop engine: list the running guests of every URI, record them, then
take each guest through its action chain (suspend, shutdown, poweroff) with
concurrency caps, timeouts and a global deadline.

Each guest runs its chain in its own thread; a FIFO Slots object per action
caps how many saves or shutdowns of one URI run at once (PARALLEL_SAVE,
PARALLEL_SHUTDOWN) and keeps the list order."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from enum import Enum

import libvirt

from .engine import PROGRESS_EVERY, Context, Heartbeat, Slots, Tally, close_all, connect_all, each_at_once, fmt_bytes
from .output import WARNING, tr, trf
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


MAX_RECONNECTS = 3  # per guest: reconnect and repeat its current action


class Step(Enum):
    DONE = "done"  # the guest is no longer running
    NEXT = "next"  # this action did not work: try the next one
    VANISHED = "vanished"


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
                self._run_group(group)
        finally:
            self._running = False

    def _run_group(self, group: list[StopItem]) -> None:
        if self.cfg.pause_before_save:
            for item in group:
                if item.chain and item.chain[0] == "suspend" and not item.was_paused:
                    self._pause(item)
        # Reserve the first action's slot in list order, so the caps serve guests in that order.
        tickets = [
            self._slots(item.chain[0]).reserve() if item.chain and item.chain[0] != "poweroff" else None
            for item in group
        ]
        threads = [
            threading.Thread(target=self._run_chain, args=(item, ticket), name=f"stop-{item.guest.name}")
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
            if self.run.past_deadline() and not announced:
                announced = True
                if ticket is not None:
                    self._slots(chain[index]).drop(ticket)
                    ticket = None
                index = len(chain) - 1
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
            if last:
                self._finish_running(item)
                return
            index += 1

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

    def _finish_running(self, item: StopItem) -> None:
        """The chain is exhausted and the guest still runs."""
        guest = item.guest
        try:
            running = guest.is_active()
        except VirtError:
            running = True
        if running:
            self._finish(item, "left-running", "every action of its chain failed")
            self.ctx.out.say(f"Guest {guest.name} is still running: every action of its chain failed", level=WARNING)
        else:
            self._finish(item, "shutdown", "stopped by itself")

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
        elif slots.wait(ticket, None if last else self.run.deadline_at):
            holding = True
        else:
            return Step.NEXT  # the deadline came while waiting for a slot
        try:
            return self._suspend(item, last) if action == "suspend" else self._shutdown(item, last)
        finally:
            if holding:
                slots.release()

    # -- the three actions --------------------------------------------------

    def _suspend(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        stopped = self._not_running(item)
        if stopped is not None:
            return stopped
        label = tr("Suspending $name: ", name=guest.name)
        self.ctx.out.say(label + "...")
        if guest.job_active():
            # A save started by an interrupted run may still be under way: let it end.
            guest.hv.wait_until(lambda: not guest.job_active(), item.policy.save_timeout or None)
            stopped = self._not_running(item)
            if stopped is Step.DONE:
                self.ctx.out.say(label + tr("done"))
            if stopped is not None:
                return stopped
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if item.was_paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
        if self.cfg.bypass_cache:
            flags |= libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE
        error = self._save_with_limits(guest, flags, item.policy.save_timeout, last, label)
        if error is None:
            self.ctx.out.say(label + tr("done"))
            self._finish(item, "saved")
            return Step.DONE
        if error.vanished:
            return Step.VANISHED
        if error.disconnected:
            raise error
        self.ctx.out.say(label + f"failed: {error}", level=WARNING)
        return self._after_failed_save(item)

    def _save_with_limits(self, guest: Guest, flags: int, timeout: int, last: bool, label: str) -> VirtError | None:
        """Run managedSave in a worker thread; print progress; abort the job at
        SAVE_TIMEOUT or (unless this is the last action) at the deadline."""
        errors: list[VirtError] = []
        finished = threading.Event()

        def work() -> None:
            try:
                guest.managed_save(flags)
            except VirtError as err:
                errors.append(err)
            finally:
                finished.set()

        threading.Thread(target=work, name=f"save-{guest.name}", daemon=True).start()
        started = time.monotonic()
        limit = started + timeout if timeout else None
        if not last and self.run.deadline_at is not None:
            limit = min(limit or self.run.deadline_at, self.run.deadline_at)
        next_report = started + PROGRESS_EVERY
        aborted = False
        while not finished.wait(max(0.0, min(next_report, limit or next_report) - time.monotonic())):
            now = time.monotonic()
            if limit is not None and now >= limit and not aborted:
                self.ctx.out.say(label + f"aborting the save after {now - started:.0f} s", level=WARNING)
                with contextlib.suppress(VirtError):
                    guest.abort_job()
                aborted = True
                limit = None
            if now >= next_report:
                progress = guest.job_progress()
                text = f"{fmt_bytes(progress.processed)} of {fmt_bytes(progress.total)}" if progress else "..."
                self.ctx.out.say(label + text)
                next_report += PROGRESS_EVERY
        return errors[0] if errors else None

    def _after_failed_save(self, item: StopItem) -> Step:
        """A failed save leaves the guest running: drop any partial image and
        resume the guest if we paused it, so its next action can work."""
        guest = item.guest
        try:
            if not guest.is_active():
                return self._not_running(item) or Step.DONE
            if guest.has_managed_save():
                guest.remove_managed_save()
            record = self.run.journal.get(self.hv.uri, guest.uuid)
            if record and record.paused_by_us and guest.state() == libvirt.VIR_DOMAIN_PAUSED:
                guest.resume()
                self.run.journal.update(self.hv.uri, guest.uuid, paused_by_us=False)
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            self.ctx.out.warn(f"guest {guest.name}: cleaning up after the failed save: {err}")
        return Step.NEXT

    def _shutdown_timeout(self, item: StopItem, last: bool) -> float | None:
        now = time.monotonic()
        if item.policy.shutdown_timeout is not None:
            timeout: float | None = item.policy.shutdown_timeout or None
        elif self.parallel_shutdown:
            with self._lock:
                if self.budget_end is None and self.cfg.shutdown_timeout:
                    self.budget_end = now + self.cfg.shutdown_timeout
            timeout = None if self.budget_end is None else max(0.0, self.budget_end - now)
        else:
            timeout = self.cfg.shutdown_timeout or None
        if self.run.deadline_at is not None:
            left = max(0.0, self.run.deadline_at - now)
            if last and self.run.past_deadline():
                timeout = 0.0
            elif not last:
                timeout = left if timeout is None else min(timeout, left)
        return timeout

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
        timeout = self._shutdown_timeout(item, last)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = PROGRESS_EVERY if end is None else min(PROGRESS_EVERY, end - time.monotonic())
            if guest.wait_inactive(max(0.0, wait)):
                break
            if end is not None and time.monotonic() >= end:
                message = tr("Shutdown of guest $name failed to complete in time.", name=guest.name)
                self.ctx.out.say(message, level=WARNING)
                if self.budget_end is not None and item.policy.shutdown_timeout is None:
                    with self._lock:
                        expired, self.budget_expired = self.budget_expired, True
                    if not expired:
                        self.ctx.out.say(tr("Timeout expired while shutting down domains"), level=WARNING)
                return Step.NEXT
            if not self.parallel_shutdown:
                if end is None:
                    self.ctx.out.say(trf("Waiting for guest %s to shut down\\n", guest.name))
                else:
                    left = int(end - time.monotonic() + 0.5)
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


class StopRun:
    """One `stop` (or `shutdown`) invocation."""

    def __init__(self, ctx: Context, forced_chain: tuple[str, ...] | None) -> None:
        self.ctx = ctx
        self.forced_chain = forced_chain
        self.host_chain = forced_chain or ctx.config.on_shutdown
        self.tally = Tally()
        self.journal = Journal(ctx.paths.state_file)
        self.deadline_at: float | None = None
        self.failed = False

    def past_deadline(self) -> bool:
        return self.deadline_at is not None and time.monotonic() >= self.deadline_at

    def run(self) -> int:
        paths, out = self.ctx.paths, self.ctx.out
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
            remove(paths.state_file)
        hvs = connect_all(self.ctx, self.ctx.config.uris, retry_for=0)
        plans = self._list(hvs)
        entries = self._merge(previous, plans)
        self.journal.save("stopping")
        self._record(lambda: write_list(paths.list_file, entries))
        self.tally.total = sum(len(p.items) for p in plans.values())
        with Heartbeat(self._status):
            busy = [UriStop(self, hvs[uri], plan) for uri, plan in plans.items() if plan.items]  # type: ignore[arg-type]
            each_at_once(UriStop.execute, busy)
        self._forget_undefined(entries, hvs)
        close_all(hvs.values())
        if self._record(lambda: write_list(paths.list_file, entries)):
            self.journal.save("stopped")
        else:
            self._record(lambda: remove(paths.state_file))
        marker_note = clear_marker(paths.lock_file)  # never changes the outcome: one line at most
        if marker_note:
            out.warn(marker_note)
        if self.journal.write_error:
            out.error(f"the per-guest journal could not be kept: {self.journal.write_error}")
            self.failed = True
        counts = self.tally.counts
        out.say(
            f"libvirt-guests stop: {self.tally.done()} guests in {time.monotonic() - started:.1f} s: "
            + ", ".join(f"{counts[key]} {word}" for key, word in OUTCOME_WORDS.items())
        )
        if counts["left-running"] or counts["failed"]:
            self.failed = True
        return 1 if self.failed else 0

    def _status(self) -> str:
        return f"Stopping guests: {self.tally.done()} of {self.tally.total} done"

    def _record(self, write: Callable[[], object]) -> object:
        """Write state, but never let a full disk keep the guests from being
        saved or shut down: report (exit 1) and go on."""
        try:
            return write()
        except StateError as err:
            self.ctx.out.error(f"{err}; the guests are still handled, but are not recorded to be started at boot")
            self.failed = True
            return None

    def _list(self, hvs: dict[str, Hypervisor | None]) -> dict[str, UriStopPlan]:
        """The listing phase, for all URIs at once, reported in URIS order."""
        out = self.ctx.out
        connected = [uri for uri, hv in hvs.items() if hv is not None]

        def plan_one(uri: str) -> UriStopPlan | VirtError:
            try:
                return plan_stop(hvs[uri], self.ctx.config, self.forced_chain, self.journal)  # type: ignore[arg-type]
            except VirtError as err:
                return err

        plans: dict[str, UriStopPlan] = {}
        for uri, plan in zip(connected, each_at_once(plan_one, connected), strict=False):
            if isinstance(plan, VirtError):
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

    def _forget_undefined(self, entries: list[tuple[str, list[str]]], hvs: dict[str, Hypervisor | None]) -> None:
        """Drop guests that no longer exist from the list, so no start (ours or
        the original's) fails on them."""
        for uri, uuids in entries:
            hv = hvs.get(uri)
            if hv is None:
                continue
            for uuid in list(uuids):
                try:
                    if hv.lookup(uuid) is None:
                        uuids.remove(uuid)
                except VirtError:
                    pass


def stop(ctx: Context, forced_chain: tuple[str, ...] | None = None) -> int:
    return StopRun(ctx, forced_chain).run()

