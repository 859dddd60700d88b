"""libvirt's own shutdown handling at stop (issue 21): defer to the daemon only
when the host is really shutting down through logind and the daemon's
settings cover the guest; otherwise act as always, with one error line about
the conflict per URI.

Deferring: the guests the daemon covers are not acted on at first; each is
waited for (lifecycle events, virt/waits.py) until it is off, within
SHUTDOWN_TIMEOUT (with 0: the daemon's own auto_shutdown_wait plus
HANDOFF_MARGIN), STOP_DEADLINE and a signal's bound. A guest that went off is
recorded as the daemon left it: saved if it has a managed-save image, shut
down otherwise. One still running at the bound goes through its own chain,
as without the daemon."""

from __future__ import annotations

import time

from libvirt_guests.engine import TICK, each_at_once
from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import shown, shown_uri
from libvirt_guests.stop.chains import RunScope
from libvirt_guests.stop.items import StopItem, UriStopPlan
from libvirt_guests.stop.ledger import GuestLedger
from libvirt_guests.virt.daemonshutdown import DaemonShutdown, daemon_kind, of_hypervisor
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.logind import preparing_for_shutdown

HANDOFF_MARGIN = 30.0  # seconds over the daemon's own auto_shutdown_wait when SHUTDOWN_TIMEOUT is 0


def hand_off(run: RunScope, hvs: dict[str, Hypervisor | None], plans: dict[str, UriStopPlan]) -> None:
    """Before the chains run: for each URI whose daemon has a handling of its own, defer or say the conflict."""
    daemons = {uri: d for uri, plan in plans.items()
               if plan.items and (hv := hvs.get(uri)) is not None and (d := of_hypervisor(hv)) is not None}
    relevant = {uri: d for uri, d in daemons.items()
                if d.state == "on" or (d.state == "unknown" and daemon_kind(d.uri) is not None)}
    if not relevant:
        return
    shutting_down, how = preparing_for_shutdown()
    for uri, daemon in relevant.items():
        plan = plans[uri]
        if shutting_down and daemon.state == "on":
            covered = [item for item in plan.items if daemon.covers(item.persistent)]
            if covered:
                run.out.say(f"{shown_uri(uri)}: the host is shutting down ({how}) and libvirt's own shutdown "
                                f"handling covers {len(covered)} guest(s): waiting for it first")
                _defer(run, hvs[uri], plan, daemon, covered)  # type: ignore[arg-type]
            continue
        what = "is on" if daemon.state == "on" else "may be on"
        why = "not a host shutdown through logind" if not shutting_down else "its settings in use are unknown"
        run.out.error(f"{shown_uri(uri)}: libvirt's own shutdown handling {what} ({daemon.reason}): two "
                          f"actors on the same guests; this stop acts itself ({why}: {how}); set its "
                          "auto_shutdown_* to \"none\" or disable libvirt-guests")


def _bound(run: RunScope, daemon: DaemonShutdown) -> float:
    timeout = float(run.config.shutdown_timeout)
    if not timeout:
        timeout = (daemon.settings.wait if daemon.settings else 0) + HANDOFF_MARGIN
    end = time.monotonic() + timeout
    limit = run.bounds.slot_end()  # STOP_DEADLINE, or at once after a signal
    return end if limit is None else min(end, limit)


def _defer(run: RunScope, hv: Hypervisor, plan: UriStopPlan, daemon: DaemonShutdown, covered: list[StopItem]) -> None:
    end = _bound(run, daemon)

    def wait(item: StopItem) -> bool:
        while True:
            left = end - time.monotonic()
            if left <= 0 or run.bounds.interrupted() or run.bounds.past_deadline():
                return False
            try:
                if item.guest.wait_inactive(min(left, TICK * 10)):
                    return True
            except VirtError:
                return False

    offs = each_at_once(wait, covered)
    out = run.out
    ledger = GuestLedger(plan.uri, run.journal, run.tally, run.bounds, out, run.unlist, run.recorder)
    for item, off in zip(covered, offs, strict=True):
        name = shown(item.guest.name)
        if not off:
            out.say(f"Guest {name} still runs after libvirt's own shutdown handling: its chain goes on")
            continue
        try:
            saved = item.guest.has_managed_save()
        except VirtError:
            saved = False
        outcome = Outcome.SAVED if saved else Outcome.SHUTDOWN
        out.say(f"Guest {name}: {'saved' if saved else 'shut down'} by libvirt's own shutdown handling")
        ledger.finish(item, outcome, "by libvirtd")
        plan.items.remove(item)
