"""What stop and start will do to each guest, decided before anything is
touched. The engines execute these plans and `libvirt-guests plan` prints
them, so the printed plan is the one the next run follows."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from libvirt_guests.config.load import Config
from libvirt_guests.config.policy import Effective, GuestPolicy, effective, order_groups, read_policy
from libvirt_guests.outcomes import StartOutcome
from libvirt_guests.output import redact, shown, shown_error, shown_uri
from libvirt_guests.records import dataclass, field
from libvirt_guests.state.journal import GuestRecord, Journal
from libvirt_guests.virt.hypervisor import AsListed, Guest, Hypervisor, VirtError
from libvirt_guests.virt.migrate import check_peer, open_peer

PEER_CHECK_TIMEOUT = 5.0  # seconds `plan` waits for a peer to answer
NO_PEER = "no peer: MIGRATE_URI is empty and its policy sets no migrate_to"


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


def _policy_of(config: Config, guest: Guest) -> GuestPolicy:
    """The policy stop and start decide by: the guest's own (read_policy),
    or with GUEST_POLICY=0 none, its metadata not even read."""
    if not config.guest_policy:
        return GuestPolicy(name=guest.name, ignored=True)
    return read_policy(guest)


def plan_stop(
    hv: Hypervisor, config: Config, forced_chain: tuple[str, ...] | None, journal: Journal | None
) -> UriStopPlan:
    """List the running guests of one URI and decide each one's chain. An
    error while planning one guest stays with that guest: it gets the host's
    chain, with a warning. The listing tells whether each guest is paused
    and persistent (Listed): the one call per guest is its policy's."""
    plan = UriStopPlan(hv.uri)
    plan.running = hv.running()
    for guest in plan.running:
        try:
            _plan_guest(plan, guest, config, forced_chain, journal)
        except Exception as err:  # noqa: BLE001 - one guest's error must not cost the others
            if isinstance(err, VirtError) and err.vanished:
                continue
            eff = effective(config, GuestPolicy(), forced_chain)
            plan.warnings.append(f"guest {shown(guest.name)}: cannot read its state or policy ({shown_error(err)}); "
                                 f"it gets the host-wide chain ({' '.join(eff.on_shutdown)})")
            plan.items.append(StopItem(guest, True, False, eff, eff.on_shutdown, recorded=True,
                                       note="planned with host-wide settings"))
    return plan


def _plan_guest(
    plan: UriStopPlan, guest: Guest, config: Config, forced_chain: tuple[str, ...] | None, journal: Journal | None
) -> None:
    policy: GuestPolicy = _policy_of(config, guest)
    if policy.gone:
        return  # vanished since the listing: nothing to plan
    eff = effective(config, policy, forced_chain)
    plan.warnings += policy.warnings  # after effective(): it adds the refusals and cuts
    listed = guest.as_listed
    persistent = listed.is_persistent()
    paused = listed.is_paused()
    if eff.skip:
        plan.skipped.append(guest)
        return
    if not persistent and config.persistent_only_for(forced_chain or config.on_shutdown):
        plan.transient_left.append(guest)
        return
    record = journal.get(plan.uri, guest.uuid) if journal else None
    if paused and record is not None and record.paused_by_us:
        paused = record.was_paused  # we paused it in an interrupted stop
    chain, note = eff.on_shutdown, ""
    if not persistent and "suspend" in chain:
        chain = tuple(a for a in chain if a != "suspend")
        note = "transient: cannot be saved"
    plan.items.append(StopItem(guest, persistent, paused, eff, chain, recorded=persistent, note=note))


def check_peers(plans: list[UriStopPlan], allowed: tuple[str, ...], timeout: float = PEER_CHECK_TIMEOUT) -> None:
    """For every guest whose chain has migrate, ask its peer whether it can
    take it (connection, CPU, memory, a clash), touching nothing: fills
    StopItem.peer_reasons. One connection per peer, each open bounded by
    ``timeout``; an error stays with the guest (or peer) it concerns. Only
    the host configuration's peers (``allowed``) are opened."""
    peers: dict[str, Hypervisor | str] = {}
    try:
        for plan in plans:
            for item in plan.items:
                if "migrate" not in item.chain:
                    continue
                uri = item.policy.migrate_to
                if not uri:
                    item.peer_reasons = [item.policy.migrate_refused or NO_PEER]
                    continue
                if uri not in allowed:  # effective() lets none through; never open a guest's own text
                    item.peer_reasons = [f"not one of the host's peers: {uri!r}"]
                    continue
                if uri not in peers:
                    try:
                        peers[uri] = open_peer(uri, timeout)
                    except VirtError as err:
                        peers[uri] = f"cannot reach the peer {shown_uri(uri)}: {err}"
                peer = peers[uri]
                if isinstance(peer, str):
                    item.peer_reasons = [peer]
                    continue
                try:
                    item.peer_reasons = check_peer(item.guest, peer)
                except VirtError as err:
                    item.peer_reasons = [f"cannot check: {err}"]
    finally:
        for peer in peers.values():
            if isinstance(peer, Hypervisor):
                peer.close()


class StartAction(StrEnum):
    """What start does to one listed guest (`plan start --json` shows the
    value). decide_start picks the first five from the guest's state; the
    plan adds MISSING and FAILED, start's peer check (migrated.decide) ON_PEER
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
            policy = _policy_of(config, guest)
            if policy.gone:  # undefined since the listing
                plan.items.append(StartItem(uuid, None, None, StartAction.MISSING))
                continue
            eff = effective(config, policy)
            plan.warnings += policy.warnings
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


def describe_stop(plan: UriStopPlan, config: Config) -> dict[str, Any]:
    """The stop plan of one URI as data (for `plan` and `plan --json`)."""
    parallel = config.parallel_shutdown > 1
    groups = []
    for group in plan.groups:
        entries = []
        for item in group:
            timeout = item.policy.shutdown_timeout
            entries.append({
                "name": item.guest.name,
                "uuid": item.guest.uuid,
                "persistent": item.persistent,
                "paused": item.was_paused,
                "actions": list(item.chain),
                "recorded": item.recorded,
                "order": item.policy.order,
                "shutdown_timeout": timeout if timeout is not None else config.shutdown_timeout,
                "shutdown_timeout_scope": "guest" if timeout is not None or not parallel else "uri",
                "save_timeout": item.policy.save_timeout,
                "note": item.note,
                "sources": item.policy.sources,
                "migrate_to": (redact(item.policy.migrate_to) or None) if "migrate" in item.chain else None,
                "peer_can_take": None if item.peer_reasons is None else not item.peer_reasons,
                "peer_reasons": item.peer_reasons or [],
            })
        groups.append(entries)
    return {
        "uri": redact(plan.uri),
        "groups": groups,
        "transient_not_handled": [g.name for g in plan.transient_left],
        "skipped": [g.name for g in plan.skipped],
        "warnings": plan.warnings,
    }


def describe_start(plan: UriStartPlan) -> dict[str, Any]:
    groups = []
    for group in plan.groups:
        groups.append([
            {
                "name": item.guest.name if item.guest else None,
                "uuid": item.uuid,
                "action": item.action,
                "order": item.policy.order if item.policy else None,
                "start_delay": item.policy.start_delay if item.policy else 0,
                "detail": item.detail,
            }
            for item in group
        ])
    return {"uri": plan.uri, "groups": groups, "warnings": plan.warnings}
