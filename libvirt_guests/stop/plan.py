"""What stop will do to each running guest, decided before anything is
touched: the stop engine executes this plan and `libvirt-guests plan stop`
prints it, so the printed plan is the one the next stop follows."""

from __future__ import annotations

from libvirt_guests.config.load import Config
from libvirt_guests.config.policy import GuestPolicy, effective, policy_of
from libvirt_guests.output import shown, shown_error, shown_uri
from libvirt_guests.state.journal import Journal
from libvirt_guests.stop.actions import ACTIONS
from libvirt_guests.stop.items import StopItem, UriStopPlan
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.migrate import check_peer, open_peer

PEER_CHECK_TIMEOUT = 5.0  # seconds `plan` waits for a peer to answer
NO_PEER = "no peer: MIGRATE_URI is empty and its policy sets no migrate_to"


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
    policy: GuestPolicy = policy_of(config, guest)
    if policy.gone:
        return  # vanished since the listing: nothing to plan
    eff = effective(config, policy, forced_chain)
    plan.warnings += policy.one_line()  # after effective(): it adds the refusals and cuts
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
    if not persistent and any(ACTIONS[word].saves for word in chain):
        chain = tuple(word for word in chain if not ACTIONS[word].saves)
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
                if not any(ACTIONS[word].moves for word in item.chain):
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

