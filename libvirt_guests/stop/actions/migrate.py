"""The migrate action: a live migration to the guest's peer, which keeps
it running there; it comes back at the next start."""

from __future__ import annotations

import contextlib

from libvirt_guests.config.load import Config
from libvirt_guests.engine import fmt_bytes
from libvirt_guests.output import WARNING, shown, shown_uri
from libvirt_guests.stop.actions.base import Action, ActionScope, Step
from libvirt_guests.stop.items import StopItem
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.migrate import (
    INTERRUPTED,
    MigrateProgress,
    check_peer,
    disable_autostart_here,
    migrate_live,
    restore_autostart,
)
from libvirt_guests.virt.peers import Peers


class Migrate(Action):
    """Move the running guest live to its peer host (its policy's migrate_to,
    else MIGRATE_URI), persistent there, never post-copy. Before: the peer
    is asked whether it can take the guest (check_peer), the peer is written
    in the journal (a stop killed now leaves start a peer to ask) and the
    guest's autostart here is turned off and remembered. After: the guest
    runs there, is taken out of the list file and recorded MIGRATED (detail:
    the peer). Whatever fails (no peer, peer unreachable or refusing, data
    URI unreachable, MIGRATE_TIMEOUT, the deadline, the peer's libvirtd
    lost), the guest keeps running here, its autostart is put back, and the
    chain goes on (Step.NEXT)."""

    name = "migrate"
    moves = True

    @staticmethod
    def cap(config: Config) -> int | None:
        return config.parallel_migrate

    def __init__(self, scope: ActionScope) -> None:
        super().__init__(scope)
        cfg = scope.config
        self.peers = Peers(retry_for=max(1.0, float(cfg.connect_timeout)), allowed=cfg.allowed_peers())

    def close(self) -> None:
        self.peers.close()

    def act(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        uri = item.policy.migrate_to
        label = f"Migrating guest {shown(guest.name)}: "
        if not uri:
            why = item.policy.migrate_refused or "MIGRATE_URI is empty and its policy sets no migrate_to"
            self.out.say(label + f"skipped: no peer ({why})", level=WARNING)
            return Step.NEXT
        try:
            peer = self.peers.get(uri)
        except VirtError as err:
            self.out.say(label + f"cannot reach the peer {shown_uri(uri)} ({err}); it stays here", level=WARNING)
            return Step.NEXT
        reasons = check_peer(guest, peer)
        if reasons:
            self.out.say(label + f"the peer {shown_uri(uri)} cannot take it: {'; '.join(reasons)}; it stays here",
                         level=WARNING)
            return Step.NEXT
        cfg, bounds, ledger = self.scope.config, self.scope.bounds, self.ledger
        if bounds.interrupted():  # a signal while the peer was asked: begin nothing
            return Step.NEXT
        ledger.note(item, peer=uri)
        autostart = disable_autostart_here(guest)
        ledger.note(item, autostart_here=autostart)
        self.out.say(label + f"to {shown_uri(uri)}...")

        def progress(seen: MigrateProgress) -> None:
            if seen.total:
                self.out.say(label + f"{fmt_bytes(seen.processed)} of {fmt_bytes(seen.total)}")

        timeout = cfg.migrate_timeout or None
        out = migrate_live(guest, peer, item.policy.migrate_data_uri or None, timeout=timeout,
                           deadline_at=bounds.save_end(None),
                           undefine_source=cfg.migrate_undefine, on_progress=progress,
                           signal_end=bounds.signal_end)
        if out.migrated:
            self.out.say(label + f"done in {out.seconds:.1f} s, running on {shown_uri(uri)}")
            ledger.moved(item, uri)
            return Step.DONE
        why = {"timeout": f"MIGRATE_TIMEOUT ({cfg.migrate_timeout} s) expired, aborted",
               "deadline": "the stop deadline came, aborted",
               INTERRUPTED: f"{bounds.interrupt.name} came, aborted"}.get(out.reason, out.reason)
        if out.job_left:
            # The job may still move the guest: keep the peer in the journal, so start asks it.
            self.out.say(label + f"failed: {why}; the migration job may still be running", level=WARNING)
            return Step.NEXT
        if out.state_here == "vanished":
            return Step.VANISHED
        with contextlib.suppress(VirtError):
            restore_autostart(guest, autostart)
        ledger.note(item, peer="", autostart_here=None)
        self.out.say(label + f"failed after {out.seconds:.1f} s: {why}; it keeps running here", level=WARNING)
        return Step.NEXT
