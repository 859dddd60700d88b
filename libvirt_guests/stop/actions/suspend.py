"""The suspend action: a managed save, watched until it ends (or is
aborted at the deadline); the guest is restored at boot."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.engine import ABORT_WAIT, PROGRESS_EVERY, TICK, Workers, fmt_bytes
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import WARNING, shown, tr
from libvirt_guests.stop.actions.base import Action, ActionScope, Step
from libvirt_guests.stop.items import StopItem
from libvirt_guests.stop.planned import learn
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest

SAVE_CALLS = 1 << 16  # no cap of its own: the saves under way are capped by PARALLEL_SAVE


@dataclass
class JobEnd:
    """How a save (ours, or an earlier run's) ended."""

    ended: bool  # False: aborted, and still running ABORT_WAIT later: given up on
    aborted: bool
    error: VirtError | None = None


class Suspend(Action):
    """suspend_guest: a managed save, restored at the next start."""

    name = "suspend"
    saves = True

    @staticmethod
    def cap(config: Config) -> int | None:
        return config.parallel_save

    def __init__(self, scope: ActionScope) -> None:
        super().__init__(scope)
        # The save calls, watched from the worker: threads reused, one per save under way (or given up on).
        self.calls = Workers(SAVE_CALLS, "stop-save-call")

    def close(self) -> None:
        self.calls.close()

    def act(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        label = tr("Suspending $name: ", name=guest.name)
        self.out.say(label + "...")
        if guest.job_active():
            # A save started by an interrupted run may still be under way: let it end, within our bounds.
            end = self._watch(item, label, None)
            if not end.ended:
                return Step.NEXT
            stopped = self.begin(item)
            if stopped is Step.DONE:
                self.out.say(label + tr("done"))
            if stopped is not None:
                return stopped
            if end.aborted:
                return self._after_failure(item)
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if item.was_paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
        if self.scope.config.bypass_cache:
            flags |= libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE
        end = self._watch(item, label, lambda: guest.managed_save(flags))
        if not end.ended:
            return Step.NEXT  # no cleanup: the save may still be writing
        if end.error is None:
            self.out.say(label + tr("done"))
            self.ledger.finish(item, Outcome.SAVED)
            self._learn(item, None)
            return Step.DONE
        if end.error.vanished:
            return Step.VANISHED
        if end.error.disconnected:
            raise end.error
        self.out.say(label + f"failed: {end.error}", level=WARNING)
        self._learn(item, end.error)
        return self._after_failure(item)

    def _learn(self, item: StopItem, error: VirtError | None) -> None:
        """A refused save is remembered for the next stop; a save that worked forgets it."""
        if self.scope.refusals_file is not None and (problem := learn(self.scope.refusals_file, item.guest, error)):
            self.out.warn(problem)

    def _watch(self, item: StopItem, label: str, save: Callable[[], None] | None) -> JobEnd:
        """Run save in a thread of self.calls (or, with save None, watch the job an
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
            self.calls.put(work)
        started = time.monotonic()
        timeout = item.policy.save_timeout
        aborted_at: float | None = None
        next_report = started + PROGRESS_EVERY
        def limit() -> float | None:
            """When the save is aborted (asked again each time: a signal may bring it forward)."""
            return self.scope.bounds.save_end(started + timeout if timeout else None)

        def tick() -> float:
            """Look again in TICK s, or at the limit if that comes first: SAVE_TIMEOUT=1 aborts at 1 s."""
            end = limit() if aborted_at is None else None
            return TICK if end is None else max(0.0, min(TICK, end - time.monotonic()))

        while not (finished.wait(tick()) if save is not None else _job_ended(guest)):
            now = time.monotonic()
            if aborted_at is None:
                end = limit()
                if end is not None and now >= end:
                    self.out.say(label + f"aborting the save after {now - started:.0f} s", level=WARNING)
                    with contextlib.suppress(VirtError):
                        guest.abort_job()
                    aborted_at = now
            elif now >= aborted_at + ABORT_WAIT:
                self.out.say(label + f"the save did not end {ABORT_WAIT:g} s after it was aborted; "
                             "giving up on it", level=WARNING)
                return JobEnd(ended=False, aborted=True)
            if now >= next_report:
                progress = guest.job_progress()
                text = f"{fmt_bytes(progress.processed)} of {fmt_bytes(progress.total)}" if progress else "..."
                self.out.say(label + text)
                next_report += PROGRESS_EVERY
        return JobEnd(ended=True, aborted=aborted_at is not None, error=errors[0] if errors else None)

    def _after_failure(self, item: StopItem) -> Step:
        """A failed save leaves the guest running: drop any partial image and
        resume the guest if we paused it, so its next action can work."""
        guest = item.guest
        try:
            if not guest.is_active():
                return self.begin(item) or Step.DONE
            if guest.has_managed_save():
                guest.remove_managed_save()
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            self.out.warn(f"guest {shown(guest.name)}: cleaning up after the failed save: {err}")
        self.ledger.unpause(item)
        return Step.NEXT


def _job_ended(guest: Guest) -> bool:
    if not guest.job_active():
        return True
    time.sleep(TICK)
    return False

