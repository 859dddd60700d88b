"""Waiting for guests to stop: woken by the lifecycle events of their
connection, with a polling fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

POLL_FALLBACK = 1.0  # seconds between state checks when no event arrives


class Waits:
    """Waiting for something to hold, re-checked on lifecycle events. Waiters
    of one guest wait on that guest's condition (all share one lock), so an
    event wakes only them, not every waiter of the connection; a close of the
    connection wakes everyone; without events, each looks every POLL_FALLBACK
    seconds. Key None: waiters of any guest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str | None, threading.Condition] = {}
        self._events: dict[str | None, int] = {}  # lifecycle events seen, per guest UUID
        self._closes = 0
        self._wakes = 0  # wake() calls: seen by the waiters of any guest only
        # per guest UUID: (what had happened, when) the last time done() said no
        self._said_no: dict[str, tuple[int, float]] = {}

    def event(self, uuid: str | None) -> None:
        with self._lock:
            for key in {uuid, None}:
                self._events[key] = self._events.get(key, 0) + 1
                if key in self._waiters:
                    self._waiters[key].notify_all()

    def closed(self) -> None:
        with self._lock:
            self._closes += 1
            for waiters in self._waiters.values():
                waiters.notify_all()

    def _seen(self, key: str | None) -> int:
        """With the lock held: how much has happened that concerns `key`."""
        return self._events.get(key, 0) + self._closes + (self._wakes if key is None else 0)

    def seen(self, uuid: str | None) -> int:
        """A count that changes whenever something concerns `uuid` (any guest if None)."""
        with self._lock:
            return self._seen(uuid)

    def wait_any(self, seen: int, timeout: float) -> None:
        """Wait up to timeout for anything to happen to any guest after
        seen(None) returned `seen` (or for wake())."""
        with self._lock:
            waiters = self._waiters.setdefault(None, threading.Condition(self._lock))
            if self._seen(None) == seen:
                waiters.wait(timeout=timeout)

    def wake(self) -> None:
        """Let the waiters of any guest look again (nothing happened)."""
        with self._lock:
            self._wakes += 1
            if None in self._waiters:
                self._waiters[None].notify_all()

    def until(self, done: Callable[[], bool], timeout: float | None, uuid: str | None = None) -> bool:
        """Wait until done() holds, re-checking on every lifecycle event of
        the guest `uuid` (of any guest if None), on a close of the
        connection, and every POLL_FALLBACK seconds; False on timeout.

        For one guest, done() is not asked again while nothing happened to it
        since it last said no, less than POLL_FALLBACK seconds ago: a caller
        that waits in slices (to look at its own bounds in between) does not
        ask libvirt twice per slice (issue 13: 4 calls a second per guest)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            waiters = self._waiters.setdefault(uuid, threading.Condition(self._lock))
        while True:
            with self._lock:
                seen = self._seen(uuid)
                said_no = self._said_no.get(uuid) if uuid is not None else None
            now = time.monotonic()
            if said_no is None or said_no[0] != seen or now - said_no[1] >= POLL_FALLBACK:
                if done():
                    return True
                said_no = (seen, now)
                if uuid is not None:
                    with self._lock:
                        self._said_no[uuid] = said_no
            next_look = said_no[1] + POLL_FALLBACK
            end = next_look if deadline is None else min(next_look, deadline)
            left = end - time.monotonic()
            if deadline is not None and deadline - time.monotonic() <= 0:
                return False
            with self._lock:
                if self._seen(uuid) == seen and left > 0:
                    waiters.wait(timeout=left)


