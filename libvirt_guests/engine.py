"""What the stop and start engines share: the run context, connecting to
every URI at once, FIFO concurrency caps, outcome tallies and the systemd
heartbeat."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from .config import Config, Paths
from .output import Output, notify, tr
from .virt import Hypervisor, VirtError

T = TypeVar("T")
R = TypeVar("R")

PROGRESS_EVERY = 5.0  # seconds between progress lines, as the original


@dataclass
class Context:
    config: Config
    paths: Paths
    out: Output


def each_at_once(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """func over items, all at the same time; results in the items' order."""
    items = list(items)
    if len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


def connect_all(
    ctx: Context, uris: Iterable[str], retry_for: float, stdout: bool = True
) -> dict[str, Hypervisor | None]:
    """Open one connection per URI, all at once; print the original's
    message, on a line of its own, for each URI that cannot be reached
    (on standard error when standard output carries JSON)."""

    def open_one(uri: str) -> Hypervisor | None:
        hv = Hypervisor(uri)
        try:
            hv.connect(retry_for, on_retry=ctx.out.warn)
        except VirtError:
            return None
        return hv

    uris = list(dict.fromkeys(uris))
    result = dict(zip(uris, each_at_once(open_one, uris), strict=False))
    for uri, hv in result.items():
        if hv is None:
            message = tr("Can't connect to $uri. Skipping.", uri=uri)
            if stdout:
                ctx.out.say(message, level=4)
            else:
                ctx.out.warn(message)
    return result


def close_all(hvs: Iterable[Hypervisor | None]) -> None:
    for hv in hvs:
        if hv is not None:
            hv.close()


class Slots:
    """At most `size` holders at once, served strictly in reservation order."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.busy = 0
        self.queue: deque[object] = deque()
        self.cond = threading.Condition()

    def reserve(self) -> object:
        ticket = object()
        with self.cond:
            self.queue.append(ticket)
        return ticket

    def wait(self, ticket: object, until: float | None = None) -> bool:
        """Take a slot for ticket; False (ticket dropped) if `until` passes first."""
        with self.cond:
            while not (self.queue[0] is ticket and self.busy < self.size):
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    self.queue.remove(ticket)
                    self.cond.notify_all()
                    return False
                self.cond.wait(left)
            self.queue.popleft()
            self.busy += 1
            self.cond.notify_all()
            return True

    def drop(self, ticket: object) -> None:
        with self.cond:
            if ticket in self.queue:
                self.queue.remove(ticket)
                self.cond.notify_all()

    def release(self) -> None:
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def load(self) -> int:
        """Holders plus waiters."""
        with self.cond:
            return self.busy + len(self.queue)


@dataclass
class Tally:
    """Outcomes counted as they happen (thread-safe)."""

    counts: Counter[str] = field(default_factory=Counter)
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def done(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class Heartbeat:
    """Under systemd: STATUS= progress and EXTEND_TIMEOUT_USEC= every few
    seconds, so a unit with a finite timeout is not killed while work goes on."""

    def __init__(self, status: Callable[[], str], every: float = PROGRESS_EVERY) -> None:
        self.status = status
        self.every = every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        while True:
            notify(status=self.status(), extend_timeout_usec=int(self.every * 3 * 1_000_000))
            if self.stopped.wait(self.every):
                return


def fmt_bytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count < 2**30 else f"{count / 2**30:.2f} GiB"
