"""The shutdown action: the power button, then a wait for the guest to go
off within the shared SHUTDOWN_TIMEOUT budget."""

from __future__ import annotations

import threading
import time

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.engine import PROGRESS_EVERY, TICK
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import WARNING, shown, tr, trf
from libvirt_guests.stop.actions.base import Action, ActionScope, Step
from libvirt_guests.stop.items import StopItem
from libvirt_guests.virt.errors import VirtError


class Shutdown(Action):
    """shutdown_guest: ask the guest to shut down and wait, up to its own
    SHUTDOWN_TIMEOUT, or (PARALLEL_SHUTDOWN above 1) one budget per URI."""

    name = "shutdown"
    waits_off = True

    @staticmethod
    def cap(config: Config) -> int | None:
        return config.parallel_shutdown

    def __init__(self, scope: ActionScope) -> None:
        super().__init__(scope)
        self.parallel = scope.config.parallel_shutdown > 1
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
                if self.budget_end is None and self.scope.config.shutdown_timeout:
                    self.budget_end = now + self.scope.config.shutdown_timeout
            return None if self.budget_end is None else max(0.0, self.budget_end - now)
        return self.scope.config.shutdown_timeout or None

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
            self.ledger.stopped_by_itself(item)
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
        self.ledger.finish(item, Outcome.SHUTDOWN)
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
            bound = self.scope.bounds.wait_end(last)  # the deadline or a signal: asked again each time
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


