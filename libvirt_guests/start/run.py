"""The start engine: restore or boot every guest the list file records (a
one-shot autostart), by order group, all at once up to PARALLEL_START when
START_DELAY is 0, else one after another with that gap.

A start must never make the next stop a no-op: it records the phase
'starting' before it acts, so a start killed half-way (SIGKILL, OOM, a full
disk) leaves the next stop to handle every running guest. One guest's
problem (a libvirt error, a bug, a huge delay in its policy) stays with that
guest: it is kept in the list for the next start, the others go on."""

from __future__ import annotations

import time

from libvirt_guests.engine import Context
from libvirt_guests.output import shown, shown_error, shown_uri, tr
from libvirt_guests.start.connections import StartConnections
from libvirt_guests.start.groups import execute
from libvirt_guests.start.ledger import StartLedger
from libvirt_guests.start.pacing import Pacing
from libvirt_guests.start.peers import ask_peer, bring_all_back
from libvirt_guests.start.plan import StartAction, StartItem, UriStartPlan, plan_start
from libvirt_guests.start.scope import StartScope
from libvirt_guests.state import history
from libvirt_guests.state.files import StateError
from libvirt_guests.state.journal import Journal, remove
from libvirt_guests.state.listfile import ListEntries, write_list
from libvirt_guests.state.lock import touch_marker
from libvirt_guests.state.previous import load_previous
from libvirt_guests.virt.hypervisor import Hypervisor


class StartRun:
    """One `start` invocation: plan, run the plans (groups.execute: the
    units act, the ledger records), bring guests back from their peer
    (peers.bring_all_back), then rewrite the list. The parts receive a
    StartScope (start/scope.py), never this object."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.ignore_mode = self.cfg.on_boot != "start"
        self.connections = StartConnections(ctx)
        self.starting_recorded = False
        self.journal: Journal  # the last stop's, else a new one: set by run(), with the two below
        self.ledger: StartLedger
        self.scope: StartScope

    def _begin(self, journal: Journal, failed: bool) -> None:
        self.journal = journal
        self.ledger = StartLedger(journal, self.ctx.out, failed)
        self.scope = StartScope(self.cfg, self.ctx.out, self.ledger, Pacing(self.cfg, self.ctx.out),
                                self.connections, self.ignore_mode)

    def run(self) -> int:
        paths, out = self.ctx.paths, self.ctx.out
        previous = load_previous(paths.list_file, paths.state_file, out.warn, out.error)
        journal = previous.journal if previous.journal is not None else Journal(paths.state_file, "starting")
        self._begin(journal, previous.untrusted)
        entries = previous.entries
        if entries is None:
            if previous.journal is not None:  # it describes a list that is gone, and maybe guests on a peer
                started = time.monotonic()
                try:
                    bring_all_back(self.scope)
                finally:
                    self.connections.close()
                self._keep_or_forget_journal()
                self.ledger.summary(time.monotonic() - started)
            self.mark_started()
            return 1 if self.ledger.failed else 0
        self.journal.save("starting")  # before acting: see the module's docstring
        self.starting_recorded = self.journal.write_error is None
        if self.journal.write_error:
            out.warn(f"{self.journal.write_error}: if this start is interrupted, the next stop will not know it")
        started = time.monotonic()
        try:
            execute(self.scope, self._plan(entries))
            bring_all_back(self.scope)
        finally:
            self.connections.close()
        self._record(entries)
        self.mark_started()
        self.ledger.summary(time.monotonic() - started)
        problem = history.record(paths.history_file, self.ledger.recorder.events(), ())
        if problem:  # never changes the outcome, never touches the other state files
            out.warn(problem)
        return 1 if self.ledger.failed else 0

    def mark_started(self) -> None:
        note = touch_marker(self.ctx.paths.lock_file)
        if note:
            self.ctx.out.warn(note)

    # -- planning ------------------------------------------------------------

    def _plan(self, entries: ListEntries) -> list[tuple[Hypervisor, UriStartPlan]]:
        out = self.ctx.out
        if self.ignore_mode:
            # The original's one message; only guests whose own policy says
            # on_boot="start" are started, found with one try per URI.
            out.say(tr("libvirt-guests is configured not to start any guests on boot"))
        lines: dict[str, list[str]] = {}
        for uri, uuids in entries:
            if uri not in self.cfg.uris:
                if not self.ignore_mode:
                    out.say(tr("Ignoring guests on $uri URI", uri=uri))
                continue
            line = lines.setdefault(uri, [])
            line.extend(u for u in uuids if u not in line)
        retry = 0 if self.ignore_mode else self.cfg.connect_timeout
        self.connections.connect([uri for uri, uuids in lines.items() if uuids], retry_for=retry)
        plans: list[tuple[Hypervisor, UriStartPlan]] = []
        for uri, uuids in lines.items():
            hv = self.connections.here(uri)
            if hv is None:
                if uuids and not self.ignore_mode:
                    self.ledger.retained[uri] = list(uuids)  # unreachable: try again at the next start
                continue
            plan = plan_start(hv, uuids, self.cfg, self.journal)
            if self.ignore_mode:
                plan.items = [item for item in plan.items if self._wanted_despite_ignore(item)]
            for item in plan.items:  # a guest never runs on two hosts
                ask_peer(self.connections.peers, self.journal, uri, item, self.cfg.migrate_uri)
            for warning in plan.warnings:
                out.warn(warning)
            plans.append((hv, plan))
        return plans

    def _wanted_despite_ignore(self, item: StartItem) -> bool:
        if item.action == StartAction.RESUME:
            return True  # paused by an interrupted stop: it was running, give it back
        if item.policy is not None and item.policy.on_boot == "start":
            return True
        if item.action == StartAction.FAILED:
            self.ctx.out.warn(f"guest {shown(item.guest.name) if item.guest else item.uuid}: cannot tell whether its "
                              f"policy says on_boot=start ({item.detail}); ignored like the others")
        return False

    # -- recording ---------------------------------------------------------------

    def _record(self, entries: ListEntries) -> None:
        """Rewrite the list with the guests to try again, or remove it.

        If the list cannot be rewritten (disk full), the old one stays and
        the journal still says 'starting': the next stop handles every
        running guest. Should the journal not have been written either, the
        list is removed, so that the next stop is not the original's no-op."""
        paths, out = self.ctx.paths, self.ctx.out
        order = list(dict.fromkeys(uri for uri, _ in entries))
        remaining = [(uri, self.ledger.retained[uri]) for uri in order if self.ledger.retained.get(uri)]
        try:
            if write_list(paths.list_file, remaining):
                self.journal.save("start-incomplete")  # the next stop or start goes on
            else:
                self._keep_or_forget_journal()
            return
        except StateError as err:
            self.ledger.fail()
            if self.journal.write_error is None:
                out.error(f"{err}; the list file still names the guests of this start: the next stop handles "
                          "every running guest, the next start tries the others again")
                return
            out.error(f"{err}; and the journal could not be written ({self.journal.write_error})")
        try:
            remove(paths.list_file)
            kept = " ".join(f"{shown_uri(uri)} {' '.join(uuids)};" for uri, uuids in remaining)
            out.error(f"removed the list file so that the next stop is not a no-op; not started: {kept}")
        except StateError as err:
            out.error(f"{err}: the next stop may do nothing; remove {paths.list_file} by hand")

    def _keep_or_forget_journal(self) -> None:
        """No list left: the journal is kept while it names guests on a peer
        (status and plan show them until the next stop), else removed."""
        paths, out = self.ctx.paths, self.ctx.out
        try:
            if self.journal.migrated():
                self.journal.save("stopped")
            else:
                remove(paths.state_file)
        except StateError as err:
            out.warn(str(err))


def start(ctx: Context) -> int:
    run = StartRun(ctx)
    try:
        return run.run()
    except Exception as err:  # noqa: BLE001 - a traceback here would hide that the guests need a stop
        ctx.out.error(f"start stopped by an unexpected error: {type(err).__name__}: {shown_error(err)}")
        if run.starting_recorded:
            ctx.out.error("the guests it started are still recorded: the next stop handles every running guest")
        run.mark_started()
        return 1
