"""Running the start plans: every URI at once (one after another with
START_DELAY), the order groups of one URI one after another, the guests of
a group queued to PARALLEL_START workers (a FIFO queue, so list order is
kept, and no thread per guest), each through its unit (start/units.py)."""

from __future__ import annotations

from functools import partial

from libvirt_guests.config.policy import start_delay_total
from libvirt_guests.engine import Countdown, Heartbeat, Workers, each_at_once
from libvirt_guests.outcomes import StartOutcome
from libvirt_guests.output import WARNING, shown, shown_error, shown_uri, tr
from libvirt_guests.start.plan import StartAction, StartItem, UriStartPlan, decide_start
from libvirt_guests.start.scope import StartScope
from libvirt_guests.start.units import START_UNITS, StartUnit
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest
from libvirt_guests.virt.hypervisor import Hypervisor


def execute(scope: StartScope, plans: list[tuple[Hypervisor, UriStartPlan]]) -> None:
    """Start the guests of every plan."""
    tally = scope.ledger.tally
    tally.total = sum(len(plan.items) for _hv, plan in plans)
    work = [UriStart(scope, hv, plan) for hv, plan in plans]
    with Heartbeat(lambda: f"Starting guests: {tally.done()} of {tally.total} done"):
        if scope.cfg.start_delay > 0:
            for uri_work in work:  # one after another, with START_DELAY between starts
                uri_work.execute()
        else:
            each_at_once(UriStart.execute, work)


class UriStart:
    """Start work on one URI: its order groups, one after another."""

    def __init__(self, scope: StartScope, hv: Hypervisor, plan: UriStartPlan) -> None:
        self.scope = scope
        self.ledger = scope.ledger
        self.hv = hv
        self.plan = plan
        self.units: dict[StartAction, StartUnit] = {action: unit(scope) for action, unit in START_UNITS.items()}

    def execute(self) -> None:
        """The groups; an unexpected error keeps the guests not yet handled for the next start."""
        try:
            self._run_groups()
        except Exception as err:  # noqa: BLE001 - the guests not yet handled wait for the next start
            self.scope.out.error(f"{shown_uri(self.hv.uri)}: starting guests stopped by an unexpected error: "
                                 f"{type(err).__name__}: {shown_error(err)}")
            self.ledger.fail()
            for item in self.plan.items:
                if (self.hv.uri, item.uuid) not in self.ledger.outcomes:
                    self.ledger.retain(self.hv.uri, item.uuid)

    def _run_groups(self) -> None:
        scope, cfg = self.scope, self.scope.cfg
        if self.plan.items or not scope.ignore_mode:
            scope.out.say(tr("Resuming guests on $uri URI...", uri=self.hv.uri))
        parallel = cfg.start_delay == 0
        workers = Workers(cfg.parallel_start if parallel else 1, "start")
        groups = self.plan.groups
        budget = start_delay_total(cfg)  # guests' start_delay, all groups together (None: no bound)
        spent = 0.0
        try:
            for number, group in enumerate(groups, 1):
                countdown = Countdown(len(group))
                for item in group:
                    workers.put(partial(self._start_one, item, countdown))
                while not countdown.wait(60.0):
                    pass  # a start has no deadline: each guest's own call ends it
                if number == len(groups):
                    break  # start_delay is a wait before the next order group
                delays = [(item.policy.start_delay, item.guest.name if item.guest else item.uuid) for item in group
                          if item.policy and self.ledger.started(self.hv.uri, item)]
                delay, name = max(delays, default=(0.0, ""))
                if delay and budget is not None and spent + delay > budget:
                    cut = max(0.0, budget - spent)
                    if spent <= budget:  # told once
                        scope.out.warn(f"{shown_uri(self.hv.uri)}: the start_delay of the guests' own policies "
                                       f"adds up to more than POLICY_MAX_START_DELAY_TOTAL ({budget:g} s): waiting "
                                       f"{cut:g} s instead of {delay:g} s after guest {shown(name)}, and not at all "
                                       "after the next groups")
                    spent, delay = budget + 1, cut
                else:
                    spent += delay
                if delay:
                    scope.pacing.sleep(delay, f"start_delay of guest {shown(name)}")
        finally:
            workers.close()

    def _start_one(self, item: StartItem, countdown: Countdown) -> None:
        try:
            self.ledger.began(self.hv.uri, item)
            outcome = self._act_safely(item)
            self.ledger.settle(self.hv.uri, item, outcome)
        finally:
            countdown.done()

    def _act_safely(self, item: StartItem) -> StartOutcome:
        try:
            return self.act(item)
        except Exception as err:  # noqa: BLE001 - one guest's problem stays with that guest
            name = item.guest.name if item.guest else item.uuid
            self.scope.out.say(tr("Resuming guest $name: ", name=name)
                               + f"failed: unexpected error: {type(err).__name__}: {shown_error(err)}", level=WARNING)
            return StartOutcome.FAILED

    def act(self, item: StartItem, retried: bool = False) -> StartOutcome:
        """One guest: the plan's action when it is final, else the action
        its state asks for now (it may have been started since the plan was
        made). On a lost connection, reconnect and try once more; a libvirt
        error on a guest that runs now is 'already active'."""
        out = self.scope.out
        guest = item.guest
        label = tr("Resuming guest $name: ", name=guest.name if guest else item.uuid)
        if item.action.final():
            return self.units[item.action].perform(item, label)
        if guest is None:
            return self.units[StartAction.MISSING].perform(item, label)
        try:
            action = decide_start(guest, item.policy, self.ledger.record(self.hv.uri, item.uuid))  # type: ignore[arg-type]
            return self.units[action].perform(item, label)
        except VirtError as err:
            if err.vanished:
                return self.units[StartAction.MISSING].perform(item, label)
            if err.disconnected and not retried:
                try:
                    self.hv.reconnect(self.scope.cfg.connect_timeout, on_retry=out.warn)
                    return self.act(item, retried=True)
                except VirtError:
                    pass
            if _active_now(guest):  # started meanwhile ("domain is already running")
                return self.units[StartAction.ALREADY_ACTIVE].perform(item, label)
            out.say(label + f"failed: {err}", level=WARNING)
            return StartOutcome.FAILED


def _active_now(guest: Guest) -> bool:
    try:
        return guest.is_active()
    except VirtError:
        return False
