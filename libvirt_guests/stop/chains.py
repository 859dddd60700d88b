"""Running the action chains of one URI: order groups one after another,
each guest of a group through its chain (ACTIONS' units), and the record of
each guest's outcome (stop/ledger.py: GuestLedger).

No thread per guest: each capped action has a FIFO queue served by `cap`
workers (engine.Workers), so list order is kept and the thread count
follows the caps, not the number of guests. A guest's next action puts it
at the back of that action's queue. Actions without a cap and the pauses
before the saves go to a small pool of their own (`free`), everything after
the deadline or a signal to another (`late`). The URI's thread watches the
bounds on its own (UriWork._watch): a worker stuck in a libvirt call, which
cannot be cancelled, never delays the deadline's last actions nor a
signal's end."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.engine import PROGRESS_EVERY, TICK, Countdown, Tally, Workers
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import ERR, WARNING, Output, shown, shown_error, shown_uri, tr
from libvirt_guests.state.history import Recorder
from libvirt_guests.state.journal import Journal
from libvirt_guests.stop.actions import ACTIONS
from libvirt_guests.stop.actions.base import Action, ActionScope, OffWaiter, Step
from libvirt_guests.stop.bounds import StopBounds
from libvirt_guests.stop.items import StopItem, UriStopPlan
from libvirt_guests.stop.ledger import GuestLedger
from libvirt_guests.stop.offwatch import OffWatch, WaitEnd
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor

MAX_RECONNECTS = 3  # per guest: reconnect and repeat its current action
WATCHED: Final = "watched"  # a turn ends with the guest's wait handed to the OffWatch
Watched = Literal["watched"]
FREE_WORKERS = 8  # per URI: threads for uncapped actions and pauses
# Per URI: threads for everything after the deadline or a signal. At the deadline
# every guest not done gets its last action at once and each must be asked within
# DEADLINE_GRACE: 200 power-offs 8 at a time, at 0.1 s a call, took 2.5 s. A bound
# of its own, not one per guest (threads start only while jobs wait, see Workers).
LATE_WORKERS = 64


@dataclass(frozen=True)
class RunScope:
    """What the chains of every URI share from their run: the run owns
    these (the journal, the tally, the list file's lines: unlist)."""

    config: Config
    out: Output
    bounds: StopBounds
    journal: Journal
    tally: Tally
    unlist: Callable[[str, str], None]
    host_chain: tuple[str, ...]
    recorder: Recorder  # what happened to each guest, for the history
    refusals_file: Path | None = None  # where a refused save is remembered (issue 22)


class UriWork:
    """Stop work on one URI: its order groups, one after another, each
    through the action queues, watched by the calling thread."""

    def __init__(self, run: RunScope, hv: Hypervisor, plan: UriStopPlan) -> None:
        self.run = run
        self.out = run.out
        self.cfg = run.config
        self.bounds = run.bounds
        self.hv = hv
        self.plan = plan
        self.ledger = GuestLedger(hv.uri, run.journal, run.tally, run.bounds, run.out, run.unlist, run.recorder)
        scope = ActionScope(run.config, run.out, run.bounds, hv.uri, self.ledger, run.refusals_file)
        self.units: dict[str, Action] = {name: unit(scope) for name, unit in ACTIONS.items()}
        self.pools = {name: Workers(cap, f"stop-{name}")
                      for name, unit in ACTIONS.items() if (cap := unit.cap(self.cfg)) is not None}
        self.free = Workers(FREE_WORKERS, "stop-free")  # uncapped actions, the pauses before the saves
        self.late = Workers(LATE_WORKERS, "stop-late")  # everything after the deadline or a signal
        # The unit that waits for guests to go off: the deadline hands its waits to the URI's OffWatch.
        waiter = next(unit for unit in self.units.values() if unit.waits_off)
        assert isinstance(waiter, OffWaiter)
        self.waiter: OffWaiter = waiter
        self.offwatch = OffWatch(hv, waiter, run.bounds)
        self._diverted = False
        self._next_report = 0.0

    def execute(self) -> None:
        suspending = ACTIONS[self.run.host_chain[0]].saves
        msg = "Suspending guests on $uri URI..." if suspending else "Shutting down guests on $uri URI..."
        self.out.say(tr(msg, uri=self.hv.uri))
        self._next_report = time.monotonic() + PROGRESS_EVERY
        try:
            for group in self.plan.groups:
                if self.bounds.interrupted():
                    for item in group:  # queue nothing new
                        self.ledger.finish(item, Outcome.NOT_HANDLED, "interrupted before its turn")
                    continue
                self._run_group(group)
        finally:
            for pool in (*self.pools.values(), self.free, self.late):
                pool.close()
            self.offwatch.close()
            for unit in self.units.values():
                unit.close()

    def _run_group(self, group: list[StopItem]) -> None:
        if self.cfg.pause_before_save and not self.bounds.past_deadline():
            pauses = [item for item in group if item.chain and ACTIONS[item.chain[0]].saves and not item.was_paused]
            paused = Countdown(len(pauses))
            for item in pauses:  # all at once, in a bounded pool, before the first save begins
                self.free.put(functools.partial(self._pause, item, paused))
            self._watch(paused, until_bounds=True)  # a pause stuck in libvirt must not hold the deadline
        settled = Countdown(len(group))
        chains = [GuestChain(self, item, settled) for item in group]
        for chain in chains:  # in list order: the queues serve guests in that order
            if chain.chain:
                self.dispatch(chain)
            else:
                chain.turn()
        self._watch(settled)

    def dispatch(self, chain: GuestChain) -> None:
        """Queue the guest for its current action (an uncapped one: the free
        pool; anything after the deadline or a signal: the late pool)."""
        pool = self.pools.get(chain.action)
        if self.bounds.interrupted() or self.bounds.past_deadline():
            pool = self.late
        elif pool is None:
            pool = self.free
        pool.put(chain.turn)

    def _watch(self, step: Countdown, until_bounds: bool = False) -> None:
        """The watchdog: wait until the step's jobs are done (or, with
        until_bounds, the deadline or a signal came); at the deadline or a
        signal, hand every queued guest to the `late` pool at once (its
        chain then decides: last action, or nothing new); print the per-URI
        progress line."""
        bounds = self.bounds
        while not step.wait(self._tick()):
            if bounds.interrupted() or bounds.past_deadline():
                if until_bounds:
                    return
                if not self._diverted:
                    self._diverted = True
                    for pool in (*self.pools.values(), self.free):
                        pool.divert(self.late)
            if time.monotonic() >= self._next_report:
                self._next_report += PROGRESS_EVERY
                line = self.waiter.progress_line(self.pools[self.waiter.name].load())
                if line:
                    self.out.say(line)

    def _tick(self) -> float:
        """How long the watchdog may sleep: signals are seen every TICK s."""
        now = time.monotonic()
        wait = min(TICK, max(0.0, self._next_report - now))
        deadline = self.bounds.deadline_at
        if deadline is not None and not self._diverted:
            wait = min(wait, max(0.0, deadline - now))
        return wait

    def _pause(self, item: StopItem, paused: Countdown) -> None:
        guest = item.guest
        try:
            if self.bounds.interrupted() or self.bounds.past_deadline():
                return  # no save will begin
            if guest.state() != libvirt.VIR_DOMAIN_RUNNING:
                return
            self.ledger.note(item, paused_by_us=True)  # before: a crash can resume it
            guest.pause()
        except VirtError as err:
            if not err.vanished:
                self.out.warn(f"cannot pause guest {shown(guest.name)} before saving it: {err}")
        except Exception as err:  # noqa: BLE001 - one guest's bug must not cost the others
            self.out.error(f"cannot pause guest {shown(guest.name)} before saving it: "
                               f"{type(err).__name__}: {shown_error(err)}")
        finally:
            paused.done()

    def reconnect(self) -> bool:
        try:
            self.hv.reconnect(self.cfg.connect_timeout, on_retry=self.out.warn)
            return True
        except VirtError as err:
            self.out.error(f"lost the connection to {shown_uri(self.hv.uri)} and cannot reconnect: {err}")
            return False


class GuestChain:
    """One guest's way through its chain, one turn at a time. A turn runs in
    a worker of its action's queue; it ends by putting the guest at the back
    of the next action's queue, or by settling it. At each step: after a
    signal, begin nothing new; at the deadline, jump to the chain's last
    action (a save is not begun after the deadline); on a lost connection,
    reconnect and queue the step again (MAX_RECONNECTS times)."""

    def __init__(self, work: UriWork, item: StopItem, settled: Countdown) -> None:
        self.work = work
        self.item = item
        self.settled = settled
        self.chain = item.chain
        self.index = 0
        self.reconnects = 0
        self.announced = False

    @property
    def action(self) -> str:
        return self.chain[self.index]

    def turn(self, resumed: Callable[[], Step] | None = None) -> None:
        """One turn; `resumed`: the end of an action whose wait was watched."""
        try:
            settled = self._turn(resumed)
        except Exception as err:  # noqa: BLE001 - one guest's bug must not cost the others
            self.work.out.error(f"guest {shown(self.item.guest.name)}: unexpected error: "
                                    f"{type(err).__name__}: {shown_error(err)}")
            with contextlib.suppress(Exception):
                self.work.ledger.finish(self.item, Outcome.FAILED, f"unexpected error: {shown_error(err)}")
            settled = True
        if settled:
            self.settled.done()

    def _turn(self, resumed: Callable[[], Step] | None) -> bool:
        """True when the guest is settled, False when it is queued again
        (or its wait is watched)."""
        work, item, chain = self.work, self.item, self.chain
        bounds, ledger, out = work.bounds, work.ledger, work.out
        if not chain:
            ledger.finish(item, Outcome.FAILED, "a transient guest cannot be saved and its chain has no other action")
            out.error(f"guest {shown(item.guest.name)} is transient and cannot be saved; it is left running")
            return True
        while True:
            if resumed is None and bounds.interrupted():
                ledger.leave(item, Outcome.NOT_HANDLED, "interrupted: no new action is begun")
                return True
            if resumed is None and bounds.past_deadline() and not self.announced:
                self.announced = True
                self.index = len(chain) - 1
                if work.units[self.action].saves:  # no save is begun after the deadline
                    ledger.leave(item, Outcome.LEFT_RUNNING, "the stop deadline came before it could be saved")
                    out.say(f"Stop deadline reached: guest {shown(item.guest.name)} cannot be saved any more; "
                            "it is still running", level=ERR)
                    return True
                out.say(f"Stop deadline reached: {self.action} guest {shown(item.guest.name)} now", level=WARNING)
            last = self.index == len(chain) - 1
            if resumed is None and self.announced and work.units[self.action].waits_off:
                step = self._perform(functools.partial(self._shutdown_watched, last))  # its wait holds no worker
                if step is WATCHED:
                    return False
            else:
                if resumed is None:
                    ledger.began(item, self.action, work.units[self.action].saves)
                step = self._perform(resumed or functools.partial(work.units[self.action].perform, item, last))
            resumed = None
            if step is Step.VANISHED:
                ledger.finish(item, Outcome.VANISHED, "no longer running or defined")
                return True
            if step is Step.DONE:
                return True
            if step is Step.NEXT and last:
                ledger.chain_exhausted(item)
                return True
            if step is Step.NEXT:
                ledger.fell_back(item, f"{self.action} did not settle it")
                self.index += 1
            if not (bounds.interrupted() or bounds.past_deadline()):
                work.dispatch(self)  # the back of the next action's queue (or the same, after a reconnect)
                return False

    def _perform(self, act: Callable[[], Step | Watched]) -> Step | Watched | None:
        """The current action; None to repeat it after a reconnect."""
        try:
            return act()
        except VirtError as err:
            if err.disconnected and self.reconnects < MAX_RECONNECTS and self.work.reconnect():
                self.reconnects += 1
                return None
            if err.vanished:
                return Step.VANISHED
            self.work.out.error(f"guest {shown(self.item.guest.name)}: {err}")
            return Step.NEXT

    def _shutdown_watched(self, last: bool) -> Step | Watched:
        """The deadline's shutdown (the action that waits for its guest to go
        off): asked here, waited for by the URI's OffWatch."""
        waiter = self.work.waiter
        step = waiter.begin_and_request(self.item)
        if step is not None:
            return step
        self.work.offwatch.add(self.item, last, self._watched_end)
        return WATCHED

    def _watched_end(self, end: WaitEnd) -> None:
        """From the OffWatch: the chain goes on in the late pool."""
        def resumed() -> Step:
            if isinstance(end, VirtError):
                raise end
            return self.work.waiter.ended(self.item, end)

        self.work.late.put(functools.partial(self.turn, resumed))
