"""What start will do to each listed guest, decided before anything is
touched: the start engine executes this plan and `libvirt-guests plan start`
prints it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from libvirt_guests.config.load import Config
from libvirt_guests.config.policy import Effective, effective, order_groups, policy_of
from libvirt_guests.outcomes import StartOutcome
from libvirt_guests.output import shown_error
from libvirt_guests.state.journal import GuestRecord, Journal
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import AsListed, Guest
from libvirt_guests.virt.hypervisor import Hypervisor


class StartAction(StrEnum):
    """What start does to one listed guest (`plan start --json` shows the
    value). decide_start picks the first five from the guest's state; the
    plan adds MISSING and FAILED, start's peer check (peers.decide) ON_PEER
    (left there, unlisted) and HELD (kept listed, exit 1)."""

    START = "start"
    RESTORE = "restore"
    RESUME = "resume"
    ALREADY_ACTIVE = "already active"
    IGNORE = "ignore"
    MISSING = "missing"
    FAILED = "failed"
    ON_PEER = "on peer"
    HELD = "held"

    @property
    def outcome(self) -> StartOutcome:
        """What the start's summary counts when it is done."""
        return _START_OUTCOMES[self]

    def asks_peer(self) -> bool:
        """Would start the guest here: its peer is asked first (a guest never runs on two hosts)."""
        return self in (StartAction.START, StartAction.RESTORE)

    def final(self) -> bool:
        """Settled by the plan: start does not look at the guest again before acting."""
        return self in (StartAction.MISSING, StartAction.FAILED, StartAction.ON_PEER, StartAction.HELD)


_START_OUTCOMES = {
    StartAction.START: StartOutcome.BOOTED, StartAction.RESTORE: StartOutcome.RESTORED,
    StartAction.RESUME: StartOutcome.RESUMED, StartAction.ALREADY_ACTIVE: StartOutcome.ALREADY_ACTIVE,
    StartAction.IGNORE: StartOutcome.IGNORED, StartAction.MISSING: StartOutcome.MISSING,
    StartAction.FAILED: StartOutcome.FAILED, StartAction.ON_PEER: StartOutcome.ON_PEER,
    StartAction.HELD: StartOutcome.HELD,
}


@dataclass
class StartItem:
    uuid: str
    guest: Guest | None  # None: no longer defined, or could not be looked up
    policy: Effective | None
    action: StartAction
    detail: str = ""  # for FAILED and HELD: why; for ON_PEER: the line to print
    peer: str = ""  # the peer asked about it, if any


@dataclass
class UriStartPlan:
    uri: str
    items: list[StartItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[list[StartItem]]:
        return order_groups(self.items, lambda item: item.policy.order if item.policy else None, descending=False)


def decide_start(guest: Guest | AsListed, eff: Effective, record: GuestRecord | None) -> StartAction:
    """What start does to one guest, from its state: as listed when planning
    (guest.as_listed), at this moment when acting (start asks again just
    before it acts: an admin or libvirt's autostart may have started the
    guest since the plan was made)."""
    if guest.is_paused() and record is not None and record.paused_by_us:
        return StartAction.RESUME  # paused by a stop that was interrupted before saving it
    if guest.is_active():
        return StartAction.ALREADY_ACTIVE
    if eff.on_boot != "start":
        return StartAction.IGNORE
    return StartAction.RESTORE if guest.has_managed_save() else StartAction.START


def plan_start(hv: Hypervisor, uuids: list[str], config: Config, journal: Journal | None) -> UriStartPlan:
    """One item per recorded guest. A libvirt error (or any other) on one
    guest stays with that guest: it is planned as FAILED, the others go on.
    The guests are found, with their state, by one listing of the URI (if
    it fails, one lookup each); the one call per guest is its policy's."""
    plan = UriStartPlan(hv.uri)
    found: dict[str, Guest | None] | None = None
    if uuids:
        try:
            found = hv.lookup_all(uuids)
        except Exception:  # noqa: BLE001 - then each guest is looked up alone, its error its own
            found = None
    for uuid in uuids:
        guest: Guest | None = None
        eff: Effective | None = None
        try:
            guest = found[uuid] if found is not None else hv.lookup(uuid)
            if guest is None:
                plan.items.append(StartItem(uuid, None, None, StartAction.MISSING))
                continue
            policy = policy_of(config, guest)
            if policy.gone:  # undefined since the listing
                plan.items.append(StartItem(uuid, None, None, StartAction.MISSING))
                continue
            eff = effective(config, policy)
            plan.warnings += policy.one_line()
            record = journal.get(hv.uri, uuid) if journal else None
            plan.items.append(StartItem(uuid, guest, eff, decide_start(guest.as_listed, eff, record)))
        except VirtError as err:
            if err.vanished:
                plan.items.append(StartItem(uuid, None, None, StartAction.MISSING))
            else:
                plan.items.append(StartItem(uuid, guest, eff, StartAction.FAILED, str(err)))
        except Exception as err:  # noqa: BLE001 - one guest's problem must not cost the others
            plan.items.append(StartItem(uuid, guest, eff, StartAction.FAILED,
                                        f"{type(err).__name__}: {shown_error(err)}"))
    return plan

