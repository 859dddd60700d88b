"""Running the action chains of one URI: order groups one after another,
each guest of a group through its chain (ACTIONS' units) in a thread of its
own, the per-action caps (FIFO Slots, so list order is kept), and the record
of each guest's outcome (GuestLedger)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import libvirt

from .actions import ACTIONS, Action, Shutdown, Step
from .engine import PROGRESS_EVERY, Slots
from .outcomes import Outcome
from .output import ERR, WARNING, tr
from .plan import StopItem, UriStopPlan
from .virt import Hypervisor, VirtError

if TYPE_CHECKING:
    from .stop import StopRun

MAX_RECONNECTS = 3  # per guest: reconnect and repeat its current action


class GuestLedger:
    """What happened to each guest of one URI: the journal and the tally."""

    def __init__(self, work: UriWork) -> None:
        self.work = work
        self.run = work.run
        self.uri = work.hv.uri

    def finish(self, item: StopItem, outcome: Outcome, detail: str = "") -> None:
        self.run.journal.update(self.uri, item.guest.uuid, outcome=outcome, detail=detail)
        self.run.tally.add(outcome)

    def leave(self, item: StopItem, outcome: Outcome, detail: str) -> None:
        """The guest stays running: resume it if we paused it, then record why."""
        self.unpause(item)
        self.finish(item, outcome, detail)

    def unpause(self, item: StopItem) -> None:
        guest = item.guest
        record = self.run.journal.get(self.uri, guest.uuid)
        if not (record and record.paused_by_us):
            return
        try:
            if guest.state() == libvirt.VIR_DOMAIN_PAUSED:
                guest.resume()
            self.run.journal.update(self.uri, guest.uuid, paused_by_us=False)
        except VirtError as err:
            if not err.vanished:
                self.work.ctx.out.warn(f"guest {guest.name}: cannot resume it after pausing it: {err}")

    @staticmethod
    def state_of(item: StopItem) -> Step | None:
        """None while the guest runs; DONE if it stopped, VANISHED if it is gone."""
        try:
            return None if item.guest.is_active() else Step.DONE
        except VirtError as err:
            if err.vanished:
                return Step.VANISHED
            raise

    def stopped_by_itself(self, item: StopItem) -> None:
        self.finish(item, Outcome.SAVED if item.guest.has_managed_save() else Outcome.SHUTDOWN, "stopped by itself")

    def chain_exhausted(self, item: StopItem) -> None:
        """Every action was tried: record whether the guest still runs, and why."""
        guest = item.guest
        try:
            running = guest.is_active()
        except VirtError:
            running = True
        if not running:
            self.finish(item, Outcome.SHUTDOWN, "stopped by itself")
        elif self.run.bounds.interrupted():
            self.leave(item, Outcome.NOT_HANDLED, "interrupted")
        else:
            why = ("the stop deadline came before its chain ended" if self.run.bounds.past_deadline()
                   else "every action of its chain failed")
            self.leave(item, Outcome.LEFT_RUNNING, why)
            self.work.ctx.out.say(f"Guest {guest.name} is still running: {why}", level=ERR)


class UriWork:
    """Stop work on one URI: its order groups, one after another."""

    def __init__(self, run: StopRun, hv: Hypervisor, plan: UriStopPlan) -> None:
        self.run = run
        self.ctx = run.ctx
        self.cfg = run.ctx.config
        self.hv = hv
        self.plan = plan
        self.ledger = GuestLedger(self)
        self.units: dict[str, Action] = {name: unit(self) for name, unit in ACTIONS.items()}
        self.slots = {name: Slots(getattr(self.cfg, unit.cap)) for name, unit in ACTIONS.items() if unit.cap}
        self._running = False

    def execute(self) -> None:
        suspending = self.run.host_chain[0] == "suspend"
        msg = "Suspending guests on $uri URI..." if suspending else "Shutting down guests on $uri URI..."
        self.ctx.out.say(tr(msg, uri=self.hv.uri))
        self._running = True
        threading.Thread(target=self._ticker, daemon=True).start()
        try:
            for group in self.plan.groups:
                if self.run.bounds.interrupted():
                    for item in group:  # queue nothing new
                        self.ledger.finish(item, Outcome.NOT_HANDLED, "interrupted before its turn")
                    continue
                self._run_group(group)
        finally:
            self._running = False
            for unit in self.units.values():
                unit.close()

    def _run_group(self, group: list[StopItem]) -> None:
        if self.cfg.pause_before_save and not self.run.bounds.past_deadline():
            for item in group:
                if item.chain and item.chain[0] == "suspend" and not item.was_paused:
                    self._pause(item)
        # Reserve the first action's slot in list order, so the caps serve guests in that order.
        tickets = [self._reserve(item.chain[0]) if item.chain else None for item in group]
        threads = [
            threading.Thread(target=self._run_chain, args=(item, ticket), name=f"stop-{item.guest.name}", daemon=True)
            for item, ticket in zip(group, tickets, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _reserve(self, action: str) -> object | None:
        slots = self.slots.get(action)
        return None if slots is None else slots.reserve()

    def _drop(self, action: str, ticket: object | None) -> None:
        if ticket is not None:
            self.slots[action].drop(ticket)

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
        shutdown = self.units[Shutdown.name]
        assert isinstance(shutdown, Shutdown)
        while self._running:
            time.sleep(PROGRESS_EVERY)
            line = shutdown.progress_line(self.slots[Shutdown.name].load()) if self._running else None
            if line:
                self.ctx.out.say(line)

    def _run_chain(self, item: StopItem, ticket: object | None) -> None:
        """Take one guest through its chain. At each step: after a signal,
        begin nothing new; at the deadline, jump to the chain's last action
        (a save is not begun after the deadline); on a lost connection,
        reconnect and repeat the step (MAX_RECONNECTS times)."""
        chain = item.chain
        if not chain:
            why = "a transient guest cannot be saved and its chain has no other action"
            self.ledger.finish(item, Outcome.FAILED, why)
            self.ctx.out.error(f"guest {item.guest.name} is transient and cannot be saved; it is left running")
            return
        index, reconnects, announced = 0, 0, False
        while True:
            if self.run.bounds.interrupted():
                self._drop(chain[index], ticket)
                self.ledger.leave(item, Outcome.NOT_HANDLED, "interrupted: no new action is begun")
                return
            if self.run.bounds.past_deadline() and not announced:
                announced = True
                self._drop(chain[index], ticket)
                ticket = None
                index = len(chain) - 1
                if chain[index] == "suspend":  # no save is begun after the deadline
                    self.ledger.leave(item, Outcome.LEFT_RUNNING, "the stop deadline came before it could be saved")
                    self.ctx.out.say(f"Stop deadline reached: guest {item.guest.name} cannot be saved any more; "
                                     "it is still running", level=ERR)
                    return
                self.ctx.out.say(f"Stop deadline reached: {chain[index]} guest {item.guest.name} now", level=WARNING)
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
                self.ledger.finish(item, Outcome.VANISHED, "no longer running or defined")
                return
            if step is Step.DONE:
                return
            if step is Step.SKIPPED and (self.run.bounds.interrupted() or self.run.bounds.past_deadline()):
                continue  # decided at the top of the loop
            if last:
                self.ledger.chain_exhausted(item)
                return
            index += 1

    def _reconnect(self) -> bool:
        try:
            self.hv.reconnect(self.cfg.connect_timeout, on_retry=self.ctx.out.warn)
            return True
        except VirtError as err:
            self.ctx.out.error(f"lost the connection to {self.hv.uri} and cannot reconnect: {err}")
            return False

    def _perform(self, action: str, item: StopItem, last: bool, ticket: object | None) -> Step:
        """Perform one action holding its slot, if its unit is capped."""
        unit, slots = self.units[action], self.slots.get(action)
        if slots is None:
            return unit.perform(item, last)
        ticket = ticket or slots.reserve()
        if self.run.bounds.past_deadline():
            slots.drop(ticket)  # at the deadline the last action runs at once, uncapped
            return unit.perform(item, last)
        if not slots.wait(ticket, self.run.bounds.slot_end):
            return Step.SKIPPED  # the deadline or a signal came while waiting for a slot
        try:
            return unit.perform(item, last)
        finally:
            slots.release()
