"""What start does about guests that may be on a peer host: ask the peer
before starting a listed guest here, and (MIGRATE_BACK=1) bring migrated
guests back live.

The rule is the migrate action's: a guest never runs on two hosts. A guest
that runs on its peer is left there. When the peer cannot be asked, a guest
whose journal proves it stayed here (saved, shut down, powered off by this
host's stop) is started as usual; one whose journal says it was migrated, or
says nothing conclusive (a stop killed mid-migration, a journal lost), is
not started: it stays listed and recorded, with an error line, and start
exits 1. A human decides; a second boot of a running guest would corrupt
its disks."""

from __future__ import annotations

from dataclasses import dataclass

from libvirt_guests.config.load import Config
from libvirt_guests.outcomes import Outcome, StartOutcome, StartRecord
from libvirt_guests.output import ERR, INFO, shown, shown_error, shown_uri
from libvirt_guests.start.plan import StartAction, StartItem
from libvirt_guests.start.scope import StartScope
from libvirt_guests.state.journal import GuestRecord, Journal
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.migrate import check_peer, migrate_live, restore_autostart, running_on_peer
from libvirt_guests.virt.peers import Peers

# The journal's outcomes that prove the guest did not leave (this host's stop
# kept it here, or a start handled it here): its peer need not answer.
STAYED_HERE = frozenset({*(outcome.value for outcome in Outcome if outcome.stays_here()),
                         *(record.value for record in StartRecord)})


@dataclass(frozen=True)
class PeerVerdict:
    """What start does with one listed guest, as far as its peer is concerned."""

    action: StartAction  # START (go on), ON_PEER (leave it there, unlist it), HELD (keep it listed, exit 1)
    peer: str = ""
    message: str = ""


def peer_of(record: GuestRecord | None, migrate_to: str) -> str:
    """The peer to ask about a guest: the one its journal names, else its
    policy's migrate_to (which falls back to MIGRATE_URI)."""
    if record is not None and record.peer:
        return record.peer
    return migrate_to


def start_command(here: str, uuid: str) -> str:
    """The one command that starts a held guest by hand (by UUID: a name is the guest's own text)."""
    return f"virsh -c {shown_uri(here)} start {shown(uuid)}"


def decide(peers: Peers, uuid: str, record: GuestRecord | None, migrate_to: str, here: str = "") -> PeerVerdict:
    """Ask the guest's peer (if it has one) whether the guest runs there. A
    peer the journal names that is not one of the host's is never opened:
    the guest is held (a stop may have moved it there, it may run there)."""
    uri = peer_of(record, migrate_to)
    if not uri:
        return PeerVerdict(StartAction.START)
    if uri not in peers.allowed:
        return PeerVerdict(StartAction.HELD, uri, f"not started: the last stop recorded it with the peer {uri!r}, "
                                        "which is not one of the host's peers (MIGRATE_URI, MIGRATE_PEERS), so it "
                                        "is not asked; it stays listed: check that the guest does not run there, "
                                        f"then start it with: {start_command(here, uuid)}")
    try:
        there = running_on_peer(peers.get(uri), uuid)
    except VirtError as err:
        if record is not None and record.outcome in STAYED_HERE and not record.peer:
            return PeerVerdict(StartAction.START, uri)  # this host's stop kept it here: the peer cannot have it
        if record is not None and record.migrated:
            why = f"the last stop migrated it to {shown_uri(uri)}"
        else:
            why = f"it may be running on {shown_uri(uri)} (nothing says a stop did not move it there)"
        return PeerVerdict(StartAction.HELD, uri, f"not started: {why}, and {shown_uri(uri)} cannot be asked "
                                                  f"({err}); it stays "
                                        "listed: check the peer, then start it by hand or run start again")
    if there:
        return PeerVerdict(StartAction.ON_PEER, uri, f"running on {shown_uri(uri)}, left there")
    return PeerVerdict(StartAction.START, uri)


def ask_peer(peers: Peers, journal: Journal, uri: str, item: StartItem, migrate_uri: str) -> None:
    """Before a guest is started here: does it run on its peer? The item
    becomes ON_PEER or HELD when decide says so."""
    if not item.action.asks_peer():
        return
    migrate_to = item.policy.migrate_to if item.policy else migrate_uri
    verdict = decide(peers, item.uuid, journal.get(uri, item.uuid), migrate_to, uri)
    if verdict.action != StartAction.START:
        item.action, item.detail, item.peer = verdict.action, verdict.message, verdict.peer


def describe_migrated(journal: Journal | None, config: Config) -> list[dict[str, object]]:
    """The guests the last stop moved to a peer, for status and plan start."""
    if journal is None:
        return []
    back = config.migrate_back and config.on_boot == "start"
    allowed = config.allowed_peers()

    def next_start(peer: str) -> str:
        if peer not in allowed:
            return "left on the peer, never asked: not one of the host's peers (MIGRATE_URI, MIGRATE_PEERS)"
        return "migrate back" if back else "left on the peer"

    return [{"uri": g.uri, "uuid": g.uuid, "name": g.name, "peer": g.peer or g.detail,
             "autostart_here": g.autostart_here, "next_start": next_start(g.peer or g.detail)}
            for g in journal.migrated()]


@dataclass(frozen=True)
class Return:
    """How one guest's way back ended."""

    outcome: StartOutcome  # RETURNED, KEPT (still on the peer), NOT_ON_PEER
    message: str
    failed: bool = False


def bring_back(record: GuestRecord, here: Hypervisor, peers: Peers, config: Config) -> Return:
    """Migrate one guest the journal says is on a peer back here, live;
    restore its autostart flag here. Whatever fails, the guest keeps running
    on the peer (migrate_live's contract) and stays recorded."""
    uri = record.peer or record.detail
    if uri not in peers.allowed:
        return Return(StartOutcome.KEPT, f"the recorded peer {uri!r} is not one of the host's peers (MIGRATE_URI, "
                      "MIGRATE_PEERS); not asked, it stays recorded there", failed=True)
    try:
        peer = peers.get(uri)
    except VirtError as err:
        return Return(StartOutcome.KEPT, f"cannot reach {shown_uri(uri)} ({err}); it stays there", failed=True)
    try:
        guest = peer.lookup(record.uuid)
        if guest is None or not guest.is_active():
            restore_here(record, here)
            return Return(StartOutcome.NOT_ON_PEER,
                          f"no longer running on {shown_uri(uri)}; not brought back, forgotten")
        reasons = [r.replace("the peer", "this host") for r in check_peer(guest, here)]
    except VirtError as err:
        return Return(StartOutcome.KEPT, f"cannot look it up on {shown_uri(uri)} ({err}); it stays there", failed=True)
    if reasons:
        return Return(StartOutcome.KEPT,
                      f"this host cannot take it back: {'; '.join(reasons)}; it stays on {shown_uri(uri)}",
                      failed=True)
    out = migrate_live(guest, here, config.migrate_back_data_uri or None,
                       timeout=config.migrate_timeout or None, undefine_source=True)
    if not out.migrated:
        why = out.reason + (f" ({out.detail})" if out.detail else "")
        return Return(StartOutcome.KEPT,
                      f"migration back failed after {out.seconds:.1f} s: {why}; it keeps running on {shown_uri(uri)}",
                      failed=True)
    note = restore_here(record, here)
    return Return(StartOutcome.RETURNED, f"brought back from {shown_uri(uri)} in {out.seconds:.1f} s" + note)


def restore_here(record: GuestRecord, here: Hypervisor) -> str:
    """Put back the autostart flag the migrate action turned off; the text to
    add to the guest's line when that fails."""
    if not record.autostart_here:
        return ""
    try:
        guest = here.lookup(record.uuid)
        if guest is not None:
            restore_autostart(guest, True)
    except VirtError as err:
        return f"; its autostart flag could not be turned back on ({err})"
    return ""


def bring_all_back(scope: StartScope) -> None:
    """MIGRATE_BACK=1 with ON_BOOT=start: migrate the guests the journal
    says are on a peer back here, one after another (bring_back each)."""
    cfg, ledger, connections, out = scope.cfg, scope.ledger, scope.connections, scope.out
    if not (cfg.migrate_back and cfg.on_boot == "start"):
        return
    records = ledger.migrated(cfg.uris)
    if not records:
        return
    ledger.tally.total += len(records)
    connections.peers.retry_for = float(cfg.connect_timeout)  # at boot the peer may be slow to answer
    connections.connect([r.uri for r in records], retry_for=cfg.connect_timeout)
    for record in records:
        hv = connections.here(record.uri)
        label = f"Bringing guest {shown(record.name)} back: "
        if hv is None:
            out.say(label + f"{shown_uri(record.uri)} cannot be reached; it stays on "
                            f"{shown_uri(record.peer or record.detail)}",
                    level=ERR)
            ledger.fail()
            continue
        out.say(label + f"from {shown_uri(record.peer or record.detail)}...")
        try:
            result = bring_back(record, hv, connections.peers, cfg)
        except Exception as err:  # noqa: BLE001 - one guest's problem stays with that guest
            out.say(label + f"failed: unexpected error: {type(err).__name__}: {shown_error(err)}", level=ERR)
            ledger.fail()
            continue
        out.say(label + result.message, level=ERR if result.failed else INFO)
        detail = f"migrated back from {shown_uri(record.peer)}" if result.outcome == StartOutcome.RETURNED \
            else result.message
        ledger.settle_return(record, result.outcome, detail, result.failed)
