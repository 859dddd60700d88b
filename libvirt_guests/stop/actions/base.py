"""The actions of a stop chain, one unit each, as the original's
suspend_guest and shutdown_guest are one function each.

Every unit has the same contract. It is made once per URI with an
ActionScope, all it may use: the configuration, the output, the run's
bounds (STOP_DEADLINE, signals), its URI and the URI's GuestLedger (the
one writer of the journal and the tally; `moved` also takes a guest out
of the list file). It may keep per-URI state (such as the shared shutdown
budget). Its `perform(item, last)` is called for one guest, in one of the
workers of its queue (as many as its `cap(config)`; an uncapped action, in
a small shared pool); a guest found no longer running is settled there,
else the unit's `act` runs. It returns

  Step.DONE      the guest no longer runs here; the outcome is recorded,
  Step.NEXT      the guest still runs; the chain goes on to its next action,
  Step.VANISHED  the guest is gone (not recorded: the chain records it),

and raises VirtError(disconnected=True) to have the chain reconnect and
perform it again. It prints the original's messages for its action.

Its traits, on the class, are what the rest of the code asks (never its
name): `saves` (a managed save: not for transient guests, not begun after
the deadline, the guest paused before it with PAUSE_BEFORE_SAVE), `moves`
(the guest keeps running on a peer), `waits_off` (it waits for the guest to
go off: an OffWaiter, whose wait the deadline hands to the URI's OffWatch)
and `cap` (the setting capping how many run at once per URI).

Adding an action: one module in this package (an Action with `name`, its
traits and `act`), one line in ACTIONS (this package's __init__), its
word in config.settings.ACTIONS (what chains accept), and its outcome in
outcomes.Outcome if it needs a new one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from libvirt_guests.config.load import Config
from libvirt_guests.output import Output
from libvirt_guests.stop.bounds import StopBounds
from libvirt_guests.stop.items import StopItem
from libvirt_guests.stop.ledger import GuestLedger
from libvirt_guests.virt.errors import VirtError


class Step(Enum):
    DONE = "done"
    NEXT = "next"
    VANISHED = "vanished"


@dataclass(frozen=True)
class ActionScope:
    """What an action may use on its URI."""

    config: Config
    out: Output
    bounds: StopBounds
    uri: str
    ledger: GuestLedger
    refusals_file: Path | None = None  # where a refused save is remembered (issue 22)


class Action:
    """One way of taking a running guest down (see the module's contract)."""

    name: ClassVar[str]
    saves: ClassVar[bool] = False  # a managed save (restored at start)
    moves: ClassVar[bool] = False  # the guest keeps running on a peer host
    waits_off: ClassVar[bool] = False  # waits for the guest to go off (an OffWaiter)

    @staticmethod
    def cap(config: Config) -> int | None:
        """How many of it run at once per URI (None: uncapped)."""
        return None

    def __init__(self, scope: ActionScope) -> None:
        self.scope = scope
        self.out = scope.out
        self.ledger = scope.ledger

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
        state = state_of(item)
        if state is Step.DONE:
            self.ledger.stopped_by_itself(item)
        return state


@runtime_checkable
class OffWaiter(Protocol):
    """An action that waits for its guest to go off (waits_off): what the
    chains and the OffWatch ask it when the deadline hands its wait over."""

    name: ClassVar[str]

    def begin_and_request(self, item: StopItem) -> Step | None: ...
    def ended(self, item: StopItem, off: bool) -> Step: ...
    def timeout(self, item: StopItem) -> float | None: ...
    def timed_out(self, item: StopItem, end: float, own_end: float | None) -> None: ...
    def progress_line(self, waiting: int) -> str | None: ...


def state_of(item: StopItem) -> Step | None:
    """None while the guest runs; DONE if it stopped, VANISHED if it is gone."""
    try:
        return None if item.guest.is_active() else Step.DONE
    except VirtError as err:
        if err.vanished:
            return Step.VANISHED
        raise
