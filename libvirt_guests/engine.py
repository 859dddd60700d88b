"""What the stop and start engines share: the run context, connecting to
every URI at once, FIFO concurrency caps (Slots for threads that wait their
turn, Workers for a queue served by a bounded set of threads), outcome
tallies and the systemd heartbeat."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from libvirt_guests.config.load import Config, Paths
from libvirt_guests.output import Output, notify, shown_uri, tr
from libvirt_guests.virt.errors import NoAnswer, VirtError
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.waits import POLL_FALLBACK

T = TypeVar("T")
R = TypeVar("R")

PROGRESS_EVERY = 5.0  # seconds between progress lines, as the original
TICK = 0.5  # at most this long between two looks at the deadline and at signals, in every wait
# After SIGINT or SIGTERM: nothing new is started, and the actions under way
# get this long to end (a save still running then is aborted).
INTERRUPT_GRACE = 10.0
ABORT_WAIT = 5.0  # seconds an aborted save, or a libvirt call past every bound, is waited for


class Interrupt:
    """SIGINT or SIGTERM received. Set from a signal handler, so it takes no
    lock: plain attributes, read by waits that look at least every TICK s."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None  # time.monotonic() when it came

    def set(self, signum: int) -> None:
        if self.at is None:
            self.signum = signum
            self.at = time.monotonic()

    def is_set(self) -> bool:
        return self.at is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


@dataclass
class Context:
    config: Config
    paths: Paths
    out: Output
    interrupt: Interrupt = field(default_factory=Interrupt)


def each_at_once(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """func over items, all at the same time; results in the items' order.

    Daemon threads: a libvirt call blocked in C must never keep the process
    from exiting once the run has given up on it."""
    items = list(items)
    if len(items) <= 1:
        return [func(item) for item in items]
    results: list[R | None] = [None] * len(items)
    errors: list[BaseException] = []

    def one(index: int, item: T) -> None:
        try:
            results[index] = func(item)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i, item), daemon=True) for i, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def connect_all(
    ctx: Context, uris: Iterable[str], retry_for: float, stdout: bool = True
) -> dict[str, Hypervisor | None]:
    """Open one connection per URI, all at once; print the original's
    message, on a line of its own, for each URI that cannot be reached
    (on standard error when standard output carries JSON)."""

    no_answer: dict[str, str] = {}
    # One open may take this long before the daemon counts as not answering.
    answer_within = max(1.0, float(ctx.config.connect_timeout))

    def open_one(uri: str) -> Hypervisor | None:
        hv = Hypervisor(uri)
        try:
            hv.connect(retry_for, on_retry=ctx.out.warn, answer_within=answer_within)
        except NoAnswer as err:
            no_answer[uri] = str(err)  # why, on a line of its own: the original never met this case
            return None
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
            if uri in no_answer:
                ctx.out.warn(f"{shown_uri(uri)}: {no_answer[uri]}")
        elif hv.events_error:
            ctx.out.warn(f"{shown_uri(uri)}: no domain events ({hv.events_error}); checking guest states every "
                         f"{POLL_FALLBACK:g} s instead")
    return result


def same_daemons(hvs: dict[str, Hypervisor | None]) -> list[tuple[str, str]]:
    """(uri, earlier uri) for every connected URI that reaches the daemon an
    earlier one already reaches (`default` and `qemu:///system` as root):
    libvirt's own name of each connection is compared."""
    seen: dict[str, str] = {}
    same: list[tuple[str, str]] = []
    for uri, hv in hvs.items():
        if hv is None:
            continue
        name = hv.connected_uri() or uri
        if name in seen:
            same.append((uri, seen[name]))
        else:
            seen[name] = uri
    return same


def close_all(hvs: Iterable[Hypervisor | None]) -> None:
    for hv in hvs:
        if hv is not None:
            hv.close()


class Workers:
    """A FIFO queue of jobs served by at most `size` daemon threads, started
    as jobs come: the thread count follows the cap, never the number of
    jobs, and a queued job costs no thread. divert() hands the queued jobs,
    and every later one, to other workers (the way out at the deadline or a
    signal, which must not wait for a worker stuck in a libvirt call)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[Callable[[], None]] = deque()
        self._threads = self._idle = self._busy = 0
        self._closed = False
        self._target: Workers | None = None

    def put(self, job: Callable[[], None]) -> None:
        with self._cond:
            target = self._target
            if target is None:
                self._queue.append(job)
                if len(self._queue) > self._idle and self._threads < self.size:
                    self._threads += 1
                    number = self._threads
                    threading.Thread(target=self._serve, name=f"{self.name}-{number}", daemon=True).start()
                else:
                    self._cond.notify()
        if target is not None:
            target.put(job)

    def divert(self, target: Workers) -> None:
        """From now on, this queue's jobs are the target's (queued ones first, in order)."""
        with self._cond:
            if self._target is not None:
                return
            self._target = target
            jobs = list(self._queue)
            self._queue.clear()
        for job in jobs:
            target.put(job)

    def load(self) -> int:
        """Jobs under way plus jobs queued."""
        with self._cond:
            return self._busy + len(self._queue)

    def close(self) -> None:
        """No more jobs: idle threads end (a thread stuck in a job is left behind)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _serve(self) -> None:
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    self._idle -= 1
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                    self._busy += 1
                try:
                    job()
                finally:
                    with self._cond:
                        self._busy -= 1
        finally:
            with self._cond:
                self._threads -= 1


class Countdown:
    """The jobs of one step not done yet; the waiter is woken once, at zero."""

    def __init__(self, count: int) -> None:
        self.left = count
        self._cond = threading.Condition()

    def done(self) -> None:
        with self._cond:
            self.left -= 1
            if self.left <= 0:
                self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """True once every job is done; else False after timeout."""
        with self._cond:
            if self.left > 0:
                self._cond.wait(timeout)
            return self.left <= 0


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
