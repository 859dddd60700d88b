"""Waiting for many guests to go off in one thread. The shutdowns begun at
the stop deadline (each guest's last action, all at once) must neither hold
a worker each while their guests shut down nor wait for a free one: their
waits are kept here, re-checked on each guest's own lifecycle events (every
POLL_FALLBACK seconds without events), with the bounds Shutdown._wait has."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from libvirt_guests.engine import TICK
from libvirt_guests.stop.actions.base import OffWaiter
from libvirt_guests.stop.bounds import StopBounds
from libvirt_guests.stop.items import StopItem
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.waits import POLL_FALLBACK

WaitEnd = bool | VirtError  # off (True), out of time (False), or what libvirt raised


@dataclass
class _Wait:
    item: StopItem
    last: bool
    own_end: float | None  # the guest's (or the URI's) shutdown timeout
    done: Callable[[WaitEnd], None]
    seen: int = -1  # the guest's event count at its last check
    next_poll: float = 0.0


class OffWatch:
    """The waits for guests to go off, of one URI, in one daemon thread
    (started with the first wait; it ends at close())."""

    def __init__(self, hv: Hypervisor, waiter: OffWaiter, bounds: StopBounds) -> None:
        self.hv = hv
        self.waiter = waiter  # the action whose waits these are (shutdown)
        self.bounds = bounds
        self._lock = threading.Lock()
        self._new: list[_Wait] = []
        self._started = self._closed = False

    def add(self, item: StopItem, last: bool, done: Callable[[WaitEnd], None]) -> None:
        """Wait for the guest (just asked to shut down) to go off; then
        call done, from the watch's thread (it must not block)."""
        timeout = self.waiter.timeout(item)
        own_end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._new.append(_Wait(item, last, own_end, done))
            start, self._started = not self._started, True
        if start:
            threading.Thread(target=self._run, name="stop-offwatch", daemon=True).start()
        self.hv.waits.wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.hv.waits.wake()

    def _run(self) -> None:
        waits: list[_Wait] = []
        while True:
            # Counted before the new waits are taken: an add() (and its wake) after
            # the count then ends the wait below at once, not a TICK later.
            seen_any = self.hv.waits.seen(None)
            with self._lock:
                waits += self._new
                self._new.clear()
                if not waits and self._closed:
                    return
            waits = [wait for wait in waits if not self._ended(wait)]
            ends = [end - time.monotonic() for wait in waits if (end := self._end(wait)) is not None]
            self.hv.waits.wait_any(seen_any, max(0.0, min([TICK, *ends])))

    def _end(self, wait: _Wait) -> float | None:
        bound = self.bounds.wait_end(wait.last)  # asked again each time: a signal brings it forward
        return min((t for t in (wait.own_end, bound) if t is not None), default=None)

    def _ended(self, wait: _Wait) -> bool:
        """Look at one guest if something happened to it, if its poll is due,
        and once more when its time is up (a lifecycle event that is late or
        lost must not make a guest that is off count as out of time); True
        once its wait is over. The look is made here (Guest.is_off), not
        through Waits.until, whose own memo could take a due poll or the last
        look for the one made just before."""
        now = time.monotonic()
        seen = self.hv.waits.seen(wait.item.guest.uuid)
        end = self._end(wait)
        if seen != wait.seen or now >= wait.next_poll or (end is not None and now >= end):
            wait.seen, wait.next_poll = seen, now + POLL_FALLBACK
            try:
                off = wait.item.guest.is_off()
            except VirtError as err:
                wait.done(err)
                return True
            if off:
                wait.done(True)
                return True
        if end is not None and now >= end:
            self.waiter.timed_out(wait.item, end, wait.own_end)
            wait.done(False)
            return True
        return False
