"""The actions of a stop chain, one unit each, as the original's
suspend_guest and shutdown_guest are one function each.

Every unit has the same contract. It is made once per URI (so it can keep
per-URI state, such as the shared shutdown budget) and its `perform(item,
last)` is called for one guest, in one of the `cap` workers of its queue
when the unit names a cap (chains.UriWork); a guest found no longer running is settled there, else the
unit's `act` runs. It returns

  Step.DONE      the guest no longer runs here; the outcome is recorded,
  Step.NEXT      the guest still runs; the chain goes on to its next action,
  Step.VANISHED  the guest is gone (not recorded: the chain records it),

and raises VirtError(disconnected=True) to have the chain reconnect and
perform it again. It prints the original's messages for its action and
honours the run's bounds (work.run: STOP_DEADLINE, signals).

Adding an action: one unit here (an Action with `name`, `cap` and `act`), one
line in ACTIONS, and its word in settings.ACTIONS (what chains accept)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

import libvirt

from libvirt_guests.engine import ABORT_WAIT, PROGRESS_EVERY, TICK, Workers, fmt_bytes
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import WARNING, shown, shown_uri, tr, trf
from libvirt_guests.records import dataclass
from libvirt_guests.start.peers import Peers
from libvirt_guests.stop.plan import StopItem
from libvirt_guests.virt.hypervisor import Guest, VirtError
from libvirt_guests.virt.migrate import (
    INTERRUPTED,
    MigrateProgress,
    check_peer,
    disable_autostart_here,
    migrate_live,
    restore_autostart,
)

if TYPE_CHECKING:
    from libvirt_guests.stop.chains import UriWork

SAVE_CALLS = 1 << 16  # no cap of its own: the saves under way are capped by PARALLEL_SAVE


class Step(Enum):
    DONE = "done"
    NEXT = "next"
    VANISHED = "vanished"


class Action:
    """One way of taking a running guest down (see the module's contract)."""

    name: ClassVar[str]
    cap: ClassVar[str | None] = None  # the Config field capping how many run at once per URI

    def __init__(self, work: UriWork) -> None:
        self.work = work
        self.out = work.ctx.out

    def perform(self, item: StopItem, last: bool) -> Step:
        """The action, unless the guest stopped or vanished meanwhile."""
        return self.begin(item) or self.act(item, last)

    def act(self, item: StopItem, last: bool) -> Step:
        """The action itself, on a guest found running."""
        raise NotImplementedError

    def close(self) -> None:
        """The URI's chains are done: release what the unit holds (connections)."""

    def begin(self, item: StopItem) -> Step | None:
        """None when the guest still runs and the action can begin; else
        what happened to it meanwhile (a guest that stopped is recorded)."""
        state = self.work.ledger.state_of(item)
        if state is Step.DONE:
            self.work.ledger.stopped_by_itself(item)
        return state


@dataclass
class JobEnd:
    """How a save (ours, or an earlier run's) ended."""

    ended: bool  # False: aborted, and still running ABORT_WAIT later: given up on
    aborted: bool
    error: VirtError | None = None


class Suspend(Action):
    """suspend_guest: a managed save, restored at the next start."""

    name = "suspend"
    cap = "parallel_save"

    def __init__(self, work: UriWork) -> None:
        super().__init__(work)
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
        if self.work.cfg.bypass_cache:
            flags |= libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE
        end = self._watch(item, label, lambda: guest.managed_save(flags))
        if not end.ended:
            return Step.NEXT  # no cleanup: the save may still be writing
        if end.error is None:
            self.out.say(label + tr("done"))
            self.work.ledger.finish(item, Outcome.SAVED)
            return Step.DONE
        if end.error.vanished:
            return Step.VANISHED
        if end.error.disconnected:
            raise end.error
        self.out.say(label + f"failed: {end.error}", level=WARNING)
        return self._after_failure(item)

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
            return self.work.run.bounds.save_end(started + timeout if timeout else None)

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
        self.work.ledger.unpause(item)
        return Step.NEXT


def _job_ended(guest: Guest) -> bool:
    if not guest.job_active():
        return True
    time.sleep(TICK)
    return False


class Shutdown(Action):
    """shutdown_guest: ask the guest to shut down and wait, up to its own
    SHUTDOWN_TIMEOUT, or (PARALLEL_SHUTDOWN above 1) one budget per URI."""

    name = "shutdown"
    cap = "parallel_shutdown"

    def __init__(self, work: UriWork) -> None:
        super().__init__(work)
        self.parallel = work.cfg.parallel_shutdown > 1
        self.budget_end: float | None = None  # the per-URI budget, from the first shutdown on
        self.budget_expired = False
        self._lock = threading.Lock()

    def timeout(self, item: StopItem) -> float | None:
        """Seconds this guest's shutdown may take by its own or the host's
        setting (None: no limit); the deadline is applied by the caller."""
        now = time.monotonic()
        if item.policy.shutdown_timeout is not None:
            return item.policy.shutdown_timeout or None
        if self.parallel:
            with self._lock:
                if self.budget_end is None and self.work.cfg.shutdown_timeout:
                    self.budget_end = now + self.work.cfg.shutdown_timeout
            return None if self.budget_end is None else max(0.0, self.budget_end - now)
        return self.work.cfg.shutdown_timeout or None

    def progress_line(self, waiting: int) -> str | None:
        """Parallel shutdown: the original's per-URI 'Waiting for N guests' line."""
        if not self.parallel or waiting == 0:
            return None
        if self.budget_end is not None:
            left = max(0, int(self.budget_end - time.monotonic()))
            return trf("Waiting for %d guests to shut down, %d seconds left\\n", waiting, left)
        return trf("Waiting for %d guests to shut down\\n", waiting)

    def perform(self, item: StopItem, last: bool) -> Step:
        return self.begin_and_request(item) or self.ended(item, self._wait(item, last))

    def act(self, item: StopItem, last: bool) -> Step:
        return self.request(item) or self.ended(item, self._wait(item, last))

    def begin_and_request(self, item: StopItem) -> Step | None:
        """begin() and request() with one look at the guest, not two (its
        isActive, then its state): every call before the request delays it,
        and with N guests asked at once the daemon answers them all in turn."""
        try:
            state = item.guest.state()
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            raise
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            self.work.ledger.stopped_by_itself(item)
            return Step.DONE
        return self.request(item, state)

    def request(self, item: StopItem, state: int | None = None) -> Step | None:
        """Ask the guest to shut down (state: its state, if just asked):
        None once asked, else the step."""
        guest = item.guest
        if (guest.state() if state is None else state) == libvirt.VIR_DOMAIN_PAUSED:
            guest.resume()  # a paused guest cannot act on a shutdown request
        self.out.say(tr("Starting shutdown on guest: $name", name=guest.name))
        try:
            guest.shutdown()
        except VirtError as err:
            if err.vanished or err.disconnected:
                raise
            self.out.say(f"Shutdown of guest {shown(guest.name)} could not be requested: {err}", level=WARNING)
            return self.begin(item) or Step.NEXT
        return None

    def ended(self, item: StopItem, off: bool) -> Step:
        """The wait for the guest to go off ended: off, or out of time."""
        if not off:
            return Step.NEXT
        self.out.say(tr("Shutdown of guest $name complete.", name=item.guest.name))
        self.work.ledger.finish(item, Outcome.SHUTDOWN)
        return Step.DONE

    def timed_out(self, item: StopItem, end: float, own_end: float | None) -> None:
        """Say that the guest's time ran out (and the URI's budget, once)."""
        self.out.say(tr("Shutdown of guest $name failed to complete in time.", name=item.guest.name),
                     level=WARNING)
        if end == own_end and self.budget_end is not None and item.policy.shutdown_timeout is None:
            with self._lock:
                expired, self.budget_expired = self.budget_expired, True
            if not expired:
                self.out.say(tr("Timeout expired while shutting down domains"), level=WARNING)

    def _wait(self, item: StopItem, last: bool) -> bool:
        """Wait for the guest to go off; False when its time ran out."""
        guest = item.guest
        timeout = self.timeout(item)
        own_end = None if timeout is None else time.monotonic() + timeout
        next_report = time.monotonic() + PROGRESS_EVERY
        while True:
            bound = self.work.run.bounds.wait_end(last)  # the deadline or a signal: asked again each time
            end = min((t for t in (own_end, bound) if t is not None), default=None)
            if guest.wait_inactive(TICK if end is None else max(0.0, min(TICK, end - time.monotonic()))):
                return True
            now = time.monotonic()
            if end is not None and now >= end:
                if guest.is_off():  # one last look: its lifecycle event may be late or lost
                    return True
                self.timed_out(item, end, own_end)
                return False
            if now >= next_report:
                next_report += PROGRESS_EVERY
                if self.parallel:
                    continue  # the per-URI ticker reports
                if end is None:
                    self.out.say(trf("Waiting for guest %s to shut down\\n", guest.name))
                else:
                    left = int(end - now + 0.5)
                    self.out.say(trf("Waiting for guest %s to shut down, %d seconds left\\n", guest.name, left))


class Poweroff(Action):
    """Pull the plug (virDomainDestroy): the last resort of a chain."""

    name = "poweroff"

    def act(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        self.out.say(f"Powering off guest {shown(guest.name)}")
        try:
            guest.destroy()
        except VirtError as err:
            if err.vanished or err.disconnected:
                raise
            stopped = self.begin(item)
            if stopped is not None:
                return stopped
            self.out.error(f"cannot power off guest {shown(guest.name)}: {err}")
            return Step.NEXT
        self.out.say(f"Power-off of guest {shown(guest.name)} complete.")
        self.work.ledger.finish(item, Outcome.POWEROFF)
        return Step.DONE


class Migrate(Action):
    """Move the running guest live to its peer host (its policy's migrate_to,
    else MIGRATE_URI), persistent there, never post-copy. Before: the peer
    is asked whether it can take the guest (check_peer), the peer is written
    in the journal (a stop killed now leaves start a peer to ask) and the
    guest's autostart here is turned off and remembered. After: the guest
    runs there, is taken out of the list file and recorded MIGRATED (detail:
    the peer). Whatever fails (no peer, peer unreachable or refusing, data
    URI unreachable, MIGRATE_TIMEOUT, the deadline, the peer's libvirtd
    lost), the guest keeps running here, its autostart is put back, and the
    chain goes on (Step.NEXT)."""

    name = "migrate"
    cap = "parallel_migrate"

    def __init__(self, work: UriWork) -> None:
        super().__init__(work)
        self.peers = Peers(retry_for=max(1.0, float(work.cfg.connect_timeout)), allowed=work.cfg.allowed_peers())

    def close(self) -> None:
        self.peers.close()

    def act(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        uri = item.policy.migrate_to
        label = f"Migrating guest {shown(guest.name)}: "
        if not uri:
            why = item.policy.migrate_refused or "MIGRATE_URI is empty and its policy sets no migrate_to"
            self.out.say(label + f"skipped: no peer ({why})", level=WARNING)
            return Step.NEXT
        try:
            peer = self.peers.get(uri)
        except VirtError as err:
            self.out.say(label + f"cannot reach the peer {shown_uri(uri)} ({err}); it stays here", level=WARNING)
            return Step.NEXT
        reasons = check_peer(guest, peer)
        if reasons:
            self.out.say(label + f"the peer {shown_uri(uri)} cannot take it: {'; '.join(reasons)}; it stays here",
                         level=WARNING)
            return Step.NEXT
        journal, here = self.work.run.journal, self.work.hv.uri
        if self.work.run.bounds.interrupted():  # a signal while the peer was asked: begin nothing
            return Step.NEXT
        journal.update(here, guest.uuid, peer=uri)
        autostart = disable_autostart_here(guest)
        journal.update(here, guest.uuid, autostart_here=autostart)
        self.out.say(label + f"to {shown_uri(uri)}...")

        def progress(seen: MigrateProgress) -> None:
            if seen.total:
                self.out.say(label + f"{fmt_bytes(seen.processed)} of {fmt_bytes(seen.total)}")

        timeout = self.work.cfg.migrate_timeout or None
        out = migrate_live(guest, peer, item.policy.migrate_data_uri or None, timeout=timeout,
                           deadline_at=self.work.run.bounds.save_end(None),
                           undefine_source=self.work.cfg.migrate_undefine, on_progress=progress,
                           signal_end=self.work.run.bounds.signal_end)
        if out.migrated:
            self.out.say(label + f"done in {out.seconds:.1f} s, running on {shown_uri(uri)}")
            self.work.run.unlist(here, guest.uuid)
            journal.update(here, guest.uuid, recorded=False)
            self.work.ledger.finish(item, Outcome.MIGRATED, uri)
            return Step.DONE
        why = {"timeout": f"MIGRATE_TIMEOUT ({self.work.cfg.migrate_timeout} s) expired, aborted",
               "deadline": "the stop deadline came, aborted",
               INTERRUPTED: f"{self.work.ctx.interrupt.name} came, aborted"}.get(out.reason, out.reason)
        if out.job_left:
            # The job may still move the guest: keep the peer in the journal, so start asks it.
            self.out.say(label + f"failed: {why}; the migration job may still be running", level=WARNING)
            return Step.NEXT
        if out.state_here == "vanished":
            return Step.VANISHED
        with contextlib.suppress(VirtError):
            restore_autostart(guest, autostart)
        journal.update(here, guest.uuid, peer="", autostart_here=None)
        self.out.say(label + f"failed after {out.seconds:.1f} s: {why}; it keeps running here", level=WARNING)
        return Step.NEXT


# action name -> its unit: the chain runner makes one of each per URI.
ACTIONS: dict[str, type[Action]] = {unit.name: unit for unit in (Migrate, Suspend, Shutdown, Poweroff)}
