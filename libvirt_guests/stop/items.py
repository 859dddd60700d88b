"""What a stop plan holds: each running guest's chain and what decided it
(stop/plan.py makes them; the chains, the actions and `plan stop` read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from libvirt_guests.config.policy import Effective, order_groups
from libvirt_guests.virt.guest import Guest


@dataclass
class StopItem:
    guest: Guest
    persistent: bool
    was_paused: bool  # paused by its user: saved paused, restored paused
    policy: Effective
    chain: tuple[str, ...]
    recorded: bool  # written to the list file: started again at boot
    note: str = ""
    # For a chain with migrate, as `plan stop` checks it: why the peer cannot
    # take the guest (empty: it can); None when not checked.
    peer_reasons: list[str] | None = None
    # Why the stop's budget changed its chain (issue 22): "" (as configured),
    # "room", "time", "blocker" or "refused"; configured: the chain before.
    budget_reason: str = ""
    configured: tuple[str, ...] = ()


@dataclass
class UriStopPlan:
    uri: str
    running: list[Guest] = field(default_factory=list)
    transient_left: list[Guest] = field(default_factory=list)  # PERSISTENT_ONLY
    skipped: list[Guest] = field(default_factory=list)  # policy skip="yes"
    items: list[StopItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[list[StopItem]]:
        return order_groups(self.items, lambda item: item.policy.order, descending=True)

    @property
    def recorded_uuids(self) -> list[str]:
        return [item.guest.uuid for item in self.items if item.recorded]
