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

Adding an action: one module in this package (an Action with `name`, `cap`
and `act`), one line in ACTIONS (this package's __init__), and its word in
config.settings.ACTIONS (what chains accept)."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from libvirt_guests.stop.plan import StopItem

if TYPE_CHECKING:
    from libvirt_guests.stop.chains import UriWork


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


