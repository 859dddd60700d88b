"""The start engine: restore or boot every guest the list file records (a
one-shot autostart), by order group, all at once up to PARALLEL_START when
START_DELAY is 0, else one after another with that gap."""

from __future__ import annotations

import threading
import time

import libvirt

from .engine import Context, Heartbeat, Slots, Tally, close_all, connect_all, each_at_once
from .output import WARNING, tr
from .plan import StartItem, UriStartPlan, plan_start
from .state import Journal, read_list, remove, touch_marker, write_list
from .virt import Hypervisor, VirtError


class StartRun:
    """One `start` invocation."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.tally = Tally()
        self.retained: dict[str, list[str]] = {}  # guests to try again at the next start
        self.failed = False
        self._first_start = True
        self._delay_lock = threading.Lock()

    def run(self) -> int:
        paths, out = self.ctx.paths, self.ctx.out
        entries = read_list(paths.list_file)
        if entries is None:
            touch_marker(paths.lock_file)
            return 0
        journal = Journal.load(paths.state_file)
        started = time.monotonic()
        if self.cfg.on_boot != "start":
            out.say(tr("libvirt-guests is configured not to start any guests on boot"))
        configured = [(uri, uuids) for uri, uuids in entries if uri in self.cfg.uris]
        for uri, _uuids in entries:
            if uri not in self.cfg.uris:
                out.say(tr("Ignoring guests on $uri URI", uri=uri))
        # ON_BOOT=ignore still connects when a guest's own policy may say on_boot="start".
        hvs = connect_all(self.ctx, [uri for uri, _ in configured], retry_for=self.cfg.connect_timeout)
        plans: list[tuple[Hypervisor, UriStartPlan]] = []
        for uri, uuids in configured:
            hv = hvs[uri]
            if hv is None:
                self.retained.setdefault(uri, []).extend(uuids)
                continue
            try:
                plan = plan_start(hv, uuids, self.cfg, journal)
            except VirtError as err:
                out.error(f"{uri}: cannot look up the recorded guests: {err}")
                self.retained.setdefault(uri, []).extend(uuids)
                self.failed = True
                continue
            for warning in plan.warnings:
                out.warn(warning)
            plans.append((hv, plan))
        self.tally.total = sum(len(plan.items) for _hv, plan in plans)
        with Heartbeat(lambda: f"Starting guests: {self.tally.done()} of {self.tally.total} done"):
            if self.cfg.start_delay > 0:
                for hv, plan in plans:  # one after another, with START_DELAY between starts
                    self._run_uri(hv, plan)
            else:
                each_at_once(lambda pair: self._run_uri(*pair), plans)
        close_all(hvs.values())
        remaining = [(uri, self.retained[uri]) for uri, _ in entries if self.retained.get(uri)]
        if write_list(paths.list_file, remaining):
            (journal or Journal(paths.state_file)).save("start-incomplete")  # the next stop or start goes on
        else:
            remove(paths.state_file)
        touch_marker(paths.lock_file)
        counts = self.tally.counts
        if self.tally.total:
            out.say(
                f"libvirt-guests start: {self.tally.total} guests in {time.monotonic() - started:.1f} s: "
                f"{counts['started']} started, {counts['already active']} already active, "
                f"{counts['ignored']} ignored, {counts['missing']} no longer defined, {counts['failed']} failed"
            )
        return 1 if self.failed else 0

    def _run_uri(self, hv: Hypervisor, plan: UriStartPlan) -> None:
        self.ctx.out.say(tr("Resuming guests on $uri URI...", uri=hv.uri))
        parallel = self.cfg.start_delay == 0
        slots = Slots(self.cfg.parallel_start if parallel else 1)
        for group in plan.groups:
            tickets = [slots.reserve() for _ in group]
            threads = [
                threading.Thread(target=self._start_one, args=(hv, item, slots, ticket), name=f"start-{item.uuid}")
                for item, ticket in zip(group, tickets, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            delay = max((item.policy.start_delay for item in group if item.policy), default=0.0)
            if delay:
                time.sleep(delay)

    def _gap(self) -> None:
        """START_DELAY between two actual starts, never before the first."""
        if self.cfg.start_delay <= 0:
            return
        with self._delay_lock:
            if self._first_start:
                self._first_start = False
            else:
                time.sleep(self.cfg.start_delay)

    def _start_one(self, hv: Hypervisor, item: StartItem, slots: Slots, ticket: object) -> None:
        slots.wait(ticket)
        try:
            outcome = self._act(hv, item)
        finally:
            slots.release()
        self.tally.add(outcome)
        if outcome == "failed":
            self.failed = True
            self.retained.setdefault(hv.uri, []).append(item.uuid)

    def _act(self, hv: Hypervisor, item: StartItem) -> str:
        out = self.ctx.out
        guest = item.guest
        if guest is None:
            out.say(tr("Resuming guest $name: ", name=item.uuid) + "no longer defined, forgotten")
            return "missing"
        label = tr("Resuming guest $name: ", name=guest.name)
        try:
            if item.action == "already active":
                out.say(label + tr("already active"))
                self._sync_time(item)
                return "already active"
            if item.action == "ignore":
                out.say(label + "ignored (on_boot=ignore)")
                return "ignored"
            self._gap()
            if item.action == "resume":
                guest.resume()
            else:
                flags = libvirt.VIR_DOMAIN_START_BYPASS_CACHE if self.cfg.bypass_cache else 0
                guest.start(flags)
        except VirtError as err:
            if err.vanished:
                out.say(label + "no longer defined, forgotten")
                return "missing"
            if err.disconnected:
                try:
                    hv.reconnect(self.cfg.connect_timeout, on_retry=out.warn)
                    return self._act(hv, item)
                except VirtError:
                    pass
            out.say(label + f"failed: {err}", level=WARNING)
            return "failed"
        out.say(label + tr("done"))
        self._sync_time(item)
        return "started"

    def _sync_time(self, item: StartItem) -> None:
        if not self.cfg.sync_time or item.guest is None:
            return
        try:
            item.guest.sync_time()
        except VirtError as err:
            self.ctx.out.warn(f"cannot sync the time of guest {item.guest.name}: {err}")


def start(ctx: Context) -> int:
    return StartRun(ctx).run()
