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

import libvirt

from .engine import Context, Heartbeat, Slots, Tally, close_all, connect_all, each_at_once
from .migrated import Peers, bring_back, decide
from .output import ERR, INFO, WARNING, tr
from .plan import StartItem, UriStartPlan, decide_start, plan_start
from .state import Journal, ListEntries, StateError, load_previous, remove, touch_marker, write_list
from .virt import Guest, Hypervisor, VirtError

# The longest a start waits between two guests or after an order group
# (START_DELAY, a policy's start_delay): beyond it a value is a typo, and
# waiting longer would hold the boot for good.
MAX_DELAY = 86400.0

STARTED = ("restored", "booted", "resumed")  # outcomes that are a guest actually started


def bounded_delay(seconds: float, maximum: float | None = None) -> tuple[float, str | None]:
    """A delay time.sleep takes (never NaN, negative or beyond `maximum`),
    and what to say when the value had to be changed."""
    limit = MAX_DELAY if maximum is None else maximum
    if math.isnan(seconds) or seconds < 0:
        return 0.0, f"{seconds:g} s is not a delay; not waiting"
    if seconds > limit:
        return limit, f"{seconds:g} s is more than the {limit:g} s a start waits at most; waiting {limit:g} s"
    return seconds, None


class StartRun:
    """One `start` invocation."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.tally = Tally()
        self.journal = Journal(ctx.paths.state_file, "starting")
        self.retained: dict[str, list[str]] = {}  # guests to try again at the next start
        self.outcomes: dict[tuple[str, str], str] = {}
        self.failed = False
        self.ignore_mode = self.cfg.on_boot != "start"
        self.hvs: dict[str, Hypervisor | None] = {}
        self._first_start = True
        self._lock = threading.Lock()
        self._delay_told = False
        self.starting_recorded = False
        self.peers = Peers()

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
                    self._bring_back()
                finally:
                    close_all(self.hvs.values())
                    self.peers.close()
                self._keep_or_forget_journal()
                self._summary(time.monotonic() - started)
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
            plans = self._plan(entries)
            self._execute(plans)
            self._bring_back()
        finally:
            close_all(self.hvs.values())
            self.peers.close()
        self._record(entries)
        self.mark_started()
        self._summary(time.monotonic() - started)
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
                    self.retained[uri] = list(uuids)  # unreachable: try again at the next start
                continue
            plan = plan_start(hv, uuids, self.cfg, self.journal)
            if self.ignore_mode:
                plan.items = [item for item in plan.items if self._wanted_despite_ignore(item)]
            for item in plan.items:
                self._ask_peer(uri, item)
            for warning in plan.warnings:
                out.warn(warning)
            plans.append((hv, plan))
        return plans

    def _ask_peer(self, uri: str, item: StartItem) -> None:
        """Before a guest is started here: does it run on its peer? (A guest
        never runs on two hosts; see migrated.py.)"""
        if item.action not in ("start", "restore"):
            return
        migrate_to = item.policy.migrate_to if item.policy else self.cfg.migrate_uri
        verdict = decide(self.peers, item.uuid, self.journal.get(uri, item.uuid), migrate_to)
        if verdict.action != "start":
            item.action, item.detail, item.peer = verdict.action, verdict.message, verdict.peer

    def _wanted_despite_ignore(self, item: StartItem) -> bool:
        if item.action == "resume":
            return True  # paused by an interrupted stop: it was running, give it back
        if item.policy is not None and item.policy.on_boot == "start":
            return True
        if item.action == "failed":
            self.ctx.out.warn(f"guest {item.guest.name if item.guest else item.uuid}: cannot tell whether its "
                              f"policy says on_boot=start ({item.detail}); ignored like the others")
        return False

    # -- acting ----------------------------------------------------------------

    def _execute(self, plans: list[tuple[Hypervisor, UriStartPlan]]) -> None:
        self.tally.total = sum(len(plan.items) for _hv, plan in plans)
        with Heartbeat(lambda: f"Starting guests: {self.tally.done()} of {self.tally.total} done"):
            if self.cfg.start_delay > 0:
                for hv, plan in plans:  # one after another, with START_DELAY between starts
                    self._run_uri(hv, plan)
            else:
                each_at_once(lambda pair: self._run_uri(*pair), plans)

    def _run_uri(self, hv: Hypervisor, plan: UriStartPlan) -> None:
        try:
            self._run_groups(hv, plan)
        except Exception as err:  # noqa: BLE001 - the guests not yet handled wait for the next start
            self.ctx.out.error(f"{hv.uri}: starting guests stopped by an unexpected error: {type(err).__name__}: {err}")
            self.failed = True
            for item in plan.items:
                if (hv.uri, item.uuid) not in self.outcomes:
                    self._retain(hv.uri, item.uuid)

    def _run_groups(self, hv: Hypervisor, plan: UriStartPlan) -> None:
        if plan.items or not self.ignore_mode:
            self.ctx.out.say(tr("Resuming guests on $uri URI...", uri=hv.uri))
        parallel = self.cfg.start_delay == 0
        slots = Slots(self.cfg.parallel_start if parallel else 1)
        groups = plan.groups
        for number, group in enumerate(groups, 1):
            tickets = [slots.reserve() for _ in group]
            threads = [
                threading.Thread(target=self._start_one, args=(hv, item, slots, ticket), name=f"start-{item.uuid}")
                for item, ticket in zip(group, tickets, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if number == len(groups):
                break  # start_delay is a wait before the next order group
            delays = [(item.policy.start_delay, item.guest.name if item.guest else item.uuid) for item in group
                      if item.policy and self.outcomes.get((hv.uri, item.uuid)) in STARTED]
            delay, name = max(delays, default=(0.0, ""))
            if delay:
                self._sleep(delay, f"start_delay of guest {name}")

    def _sleep(self, seconds: float, what: str) -> None:
        delay, note = bounded_delay(seconds)
        if note:
            self.ctx.out.warn(f"{what}: {note}")
        if delay:
            time.sleep(delay)

    def _gap(self) -> None:
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
                self.ctx.out.warn(f"START_DELAY: {note}")
            if delay:
                time.sleep(delay)

    def _start_one(self, hv: Hypervisor, item: StartItem, slots: Slots, ticket: object) -> None:
        slots.wait(ticket)
        try:
            outcome = self._act_safely(hv, item)
        finally:
            slots.release()
        self._settle(hv.uri, item, outcome)

    def _act_safely(self, hv: Hypervisor, item: StartItem) -> str:
        try:
            return self._act(hv, item)
        except Exception as err:  # noqa: BLE001 - one guest's problem stays with that guest
            name = item.guest.name if item.guest else item.uuid
            self.ctx.out.say(tr("Resuming guest $name: ", name=name)
                             + f"failed: unexpected error: {type(err).__name__}: {err}", level=WARNING)
            return "failed"

    def _act(self, hv: Hypervisor, item: StartItem, retried: bool = False) -> str:
        out = self.ctx.out
        guest = item.guest
        label = tr("Resuming guest $name: ", name=guest.name if guest else item.uuid)
        if item.action == "failed":
            out.say(label + f"failed: {item.detail}", level=WARNING)
            return "failed"
        if item.action == "on peer":
            out.say(label + item.detail)
            return "on peer"
        if item.action == "held":
            out.say(label + item.detail, level=ERR)
            return "held"
        if guest is None:
            out.say(label + "no longer defined, forgotten")
            return "missing"
        try:
            # Ask again now: the guest may have been started since the plan was made.
            action = decide_start(guest, item.policy, self.journal.get(hv.uri, item.uuid))  # type: ignore[arg-type]
            if action == "already active":
                out.say(label + tr("already active"))
                self._sync_time(guest)
                return "already active"
            if action == "ignore":
                out.say(label + "ignored (on_boot=ignore)")
                return "ignored"
            self._gap()
            if action == "resume":
                guest.resume()
                outcome = "resumed"
            else:
                flags = libvirt.VIR_DOMAIN_START_BYPASS_CACHE if self.cfg.bypass_cache else 0
                guest.start(flags)
                outcome = "restored" if action == "restore" else "booted"
        except VirtError as err:
            if err.vanished:
                out.say(label + "no longer defined, forgotten")
                return "missing"
            if err.disconnected and not retried:
                try:
                    hv.reconnect(self.cfg.connect_timeout, on_retry=out.warn)
                    return self._act(hv, item, retried=True)
                except VirtError:
                    pass
            if self._active_now(guest):  # started meanwhile ("domain is already running")
                out.say(label + tr("already active"))
                self._sync_time(guest)
                return "already active"
            out.say(label + f"failed: {err}", level=WARNING)
            return "failed"
        out.say(label + tr("done"))
        self._sync_time(guest)
        return outcome

    @staticmethod
    def _active_now(guest: Guest) -> bool:
        try:
            return guest.is_active()
        except VirtError:
            return False

    def _sync_time(self, guest: Guest) -> None:
        if not self.cfg.sync_time:
            return
        try:
            guest.sync_time()
        except VirtError as err:
            self.ctx.out.warn(f"cannot sync the time of guest {guest.name}: {err}")

    # -- recording ---------------------------------------------------------------

    def _retain(self, uri: str, uuid: str) -> None:
        with self._lock:
            line = self.retained.setdefault(uri, [])
            if uuid not in line:
                line.append(uuid)

    def _settle(self, uri: str, item: StartItem, outcome: str) -> None:
        self.tally.add(outcome)
        self.outcomes[(uri, item.uuid)] = outcome
        name = item.guest.name if item.guest else ""
        if outcome == "held":  # kept listed; its journal record says what it said
            self.failed = True
            self._retain(uri, item.uuid)
            return
        if outcome == "on peer":  # unlisted; recorded as migrated, so status and plan show where it is
            self.journal.settle(uri, item.uuid, name, "migrated", item.peer)
            self.journal.update(uri, item.uuid, peer=item.peer, recorded=False)
            return
        if outcome == "failed":
            self.failed = True
            self._retain(uri, item.uuid)
            self.journal.settle(uri, item.uuid, name, "start-failed", item.detail)
        else:
            word = {"missing": "vanished", "ignored": "ignored"}.get(outcome, "started")
            self.journal.settle(uri, item.uuid, name, word)

    def _record(self, entries: ListEntries) -> None:
        """Rewrite the list with the guests to try again, or remove it.

        If the list cannot be rewritten (disk full), the old one stays and
        the journal still says 'starting': the next stop handles every
        running guest. Should the journal not have been written either, the
        list is removed, so that the next stop is not the original's no-op."""
        paths, out = self.ctx.paths, self.ctx.out
        order = list(dict.fromkeys(uri for uri, _ in entries))
        remaining = [(uri, self.retained[uri]) for uri in order if self.retained.get(uri)]
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
            kept = " ".join(f"{uri} {' '.join(uuids)};" for uri, uuids in remaining)
            out.error(f"removed the list file so that the next stop is not a no-op; not started: {kept}")
        except StateError as err:
            out.error(f"{err}: the next stop may do nothing; remove {paths.list_file} by hand")

    # -- guests on a peer ----------------------------------------------------------

    def _bring_back(self) -> None:
        """MIGRATE_BACK=1 with ON_BOOT=start: migrate the guests the journal
        says are on a peer back here, one after another."""
        if not (self.cfg.migrate_back and self.cfg.on_boot == "start"):
            return
        records = [r for r in self.journal.migrated() if r.uri in self.cfg.uris]
        if not records:
            return
        self.tally.total += len(records)
        out = self.ctx.out
        self.peers.retry_for = float(self.cfg.connect_timeout)  # at boot the peer may be slow to answer
        here: dict[str, Hypervisor | None] = dict(self.hvs)
        missing = [r.uri for r in records if r.uri not in here]
        here.update(connect_all(self.ctx, missing, retry_for=self.cfg.connect_timeout))
        self.hvs = here
        for record in records:
            hv = here.get(record.uri)
            label = f"Bringing guest {record.name} back: "
            if hv is None:
                out.say(label + f"{record.uri} cannot be reached; it stays on {record.peer or record.detail}",
                        level=ERR)
                self.failed = True
                continue
            out.say(label + f"from {record.peer or record.detail}...")
            try:
                result = bring_back(record, hv, self.peers, self.cfg)
            except Exception as err:  # noqa: BLE001 - one guest's problem stays with that guest
                out.say(label + f"failed: unexpected error: {type(err).__name__}: {err}", level=ERR)
                self.failed = True
                continue
            out.say(label + result.message, level=ERR if result.failed else INFO)
            self.tally.add(result.outcome)
            if result.failed:
                self.failed = True
            elif result.outcome == "returned":
                self.journal.settle(record.uri, record.uuid, record.name, "started",
                                    f"migrated back from {record.peer}")
            else:
                self.journal.settle(record.uri, record.uuid, record.name, "vanished", result.message)

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

    def _summary(self, seconds: float) -> None:
        if not self.tally.total:
            return
        counts = self.tally.counts
        parts = [f"{counts['restored']} restored", f"{counts['booted']} booted"]
        if counts["resumed"]:
            parts.append(f"{counts['resumed']} resumed")
        parts += [f"{counts['already active']} already active", f"{counts['ignored']} ignored",
                  f"{counts['missing']} no longer defined", f"{counts['failed']} failed"]
        for key, words in (("on peer", "left on their peer"), ("held", "held (peer cannot be asked)"),
                           ("returned", "brought back from their peer"), ("kept", "kept on their peer"),
                           ("not on peer", "no longer on their peer")):
            if counts[key]:
                parts.append(f"{counts[key]} {words}")
        self.ctx.out.say(f"libvirt-guests start: {self.tally.total} guests in {seconds:.1f} s: " + ", ".join(parts),
                         level=WARNING if counts["failed"] or counts["held"] or counts["kept"] else INFO)


def start(ctx: Context) -> int:
    run = StartRun(ctx)
    try:
        return run.run()
    except Exception as err:  # noqa: BLE001 - a traceback here would hide that the guests need a stop
        ctx.out.error(f"start stopped by an unexpected error: {type(err).__name__}: {err}")
        if run.starting_recorded:
            ctx.out.error("the guests it started are still recorded: the next stop handles every running guest")
        run.mark_started()
        return 1
