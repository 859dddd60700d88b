"""The start engine: restore or boot every guest the list file records (a
one-shot autostart), by order group, all at once up to PARALLEL_START when
START_DELAY is 0, else one after another with that gap.

A start must never make the next stop a no-op: it records the phase
'starting' before it acts, so a start killed half-way (SIGKILL, OOM, a full
disk) leaves the next stop to handle every running guest. One guest's
problem (a libvirt error, a bug, a huge delay in its policy) stays with that
guest: it is kept in the list for the next start, the others go on."""

from __future__ import annotations

import math
import threading
import time

from libvirt_guests.config.load import Config
from libvirt_guests.engine import Context, close_all, connect_all
from libvirt_guests.output import Output, shown, shown_error, shown_uri, tr
from libvirt_guests.start.groups import execute
from libvirt_guests.start.ledger import StartLedger
from libvirt_guests.start.peers import ask_peer, bring_all_back
from libvirt_guests.start.plan import StartAction, StartItem, UriStartPlan, plan_start
from libvirt_guests.state.files import StateError
from libvirt_guests.state.journal import Journal, remove
from libvirt_guests.state.listfile import ListEntries, write_list
from libvirt_guests.state.lock import touch_marker
from libvirt_guests.state.previous import load_previous
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.peers import Peers

# The longest a start waits between two guests or after an order group
# (START_DELAY, a policy's start_delay): beyond it a value is a typo, and
# waiting longer would hold the boot for good.
MAX_DELAY = 86400.0


def bounded_delay(seconds: float, maximum: float | None = None) -> tuple[float, str | None]:
    """A delay time.sleep takes (never NaN, negative or beyond `maximum`),
    and what to say when the value had to be changed."""
    limit = MAX_DELAY if maximum is None else maximum
    if math.isnan(seconds) or seconds < 0:
        return 0.0, f"{seconds:g} s is not a delay; not waiting"
    if seconds > limit:
        return limit, f"{seconds:g} s is more than the {limit:g} s a start waits at most; waiting {limit:g} s"
    return seconds, None


class Pacing:
    """The waits of a start: START_DELAY between two actual starts, and a
    policy's start_delay after an order group, each bounded (bounded_delay)."""

    def __init__(self, cfg: Config, out: Output) -> None:
        self.cfg = cfg
        self.out = out
        self._first_start = True
        self._delay_told = False
        self._lock = threading.Lock()

    def sleep(self, seconds: float, what: str) -> None:
        delay, note = bounded_delay(seconds)
        if note:
            self.out.warn(f"{what}: {note}")
        if delay:
            time.sleep(delay)

    def gap(self) -> None:
        """START_DELAY between two actual starts, never before the first."""
        if not self.cfg.start_delay > 0:
            return
        with self._lock:
            if self._first_start:
                self._first_start = False
                return
            delay, note = bounded_delay(self.cfg.start_delay)
            if note and not self._delay_told:
                self._delay_told = True
                self.out.warn(f"START_DELAY: {note}")
            if delay:
                time.sleep(delay)


class StartRun:
    """One `start` invocation: plan (start_groups runs the plans, the units
    of start_actions act, start_ledger records), bring guests back from
    their peer (migrated.bring_all_back), then rewrite the list."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.ledger = StartLedger(self)
        self.pacing = Pacing(self.cfg, ctx.out)
        self.journal = Journal(ctx.paths.state_file, "starting")
        self.failed = False
        self.ignore_mode = self.cfg.on_boot != "start"
        self.hvs: dict[str, Hypervisor | None] = {}
        self.starting_recorded = False
        self.peers = Peers(allowed=self.cfg.allowed_peers())

    def run(self) -> int:
        paths, out = self.ctx.paths, self.ctx.out
        previous = load_previous(paths.list_file, paths.state_file, out.warn, out.error)
        self.failed = previous.untrusted
        entries = previous.entries
        if entries is None:
            if previous.journal is not None:  # it describes a list that is gone, and maybe guests on a peer
                self.journal = previous.journal
                started = time.monotonic()
                try:
                    bring_all_back(self)
                finally:
                    close_all(self.hvs.values())
                    self.peers.close()
                self._keep_or_forget_journal()
                self.ledger.summary(time.monotonic() - started)
            self.mark_started()
            return 1 if self.failed else 0
        if previous.journal is not None:
            self.journal = previous.journal
        self.journal.save("starting")  # before acting: see the module's docstring
        self.starting_recorded = self.journal.write_error is None
        if self.journal.write_error:
            out.warn(f"{self.journal.write_error}: if this start is interrupted, the next stop will not know it")
        started = time.monotonic()
        try:
            execute(self, self._plan(entries))
            bring_all_back(self)
        finally:
            close_all(self.hvs.values())
            self.peers.close()
        self._record(entries)
        self.mark_started()
        self.ledger.summary(time.monotonic() - started)
        return 1 if self.failed else 0

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
        self.hvs = connect_all(self.ctx, [uri for uri, uuids in lines.items() if uuids], retry_for=retry)
        plans: list[tuple[Hypervisor, UriStartPlan]] = []
        for uri, uuids in lines.items():
            hv = self.hvs.get(uri)
            if hv is None:
                if uuids and not self.ignore_mode:
                    self.ledger.retained[uri] = list(uuids)  # unreachable: try again at the next start
                continue
            plan = plan_start(hv, uuids, self.cfg, self.journal)
            if self.ignore_mode:
                plan.items = [item for item in plan.items if self._wanted_despite_ignore(item)]
            for item in plan.items:  # a guest never runs on two hosts
                ask_peer(self.peers, self.journal, uri, item, self.cfg.migrate_uri)
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
            self.failed = True
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
