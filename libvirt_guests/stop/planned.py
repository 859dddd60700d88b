"""The budget applied to a URI's stop plan (issue 22): the facts of every
planned guest (stop/facts.py), the decisions (stop/budget.py), and each
StopItem's chain rewritten by them, so that the stop executes exactly what
`plan stop` prints. Also what a save QEMU refused teaches the next stop
(the refusals store)."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.output import shown, shown_error
from libvirt_guests.state.history import History
from libvirt_guests.state.refusals import Refusal, Refusals, devices_fingerprint, forget, remember
from libvirt_guests.stop.budget import Budget, Decision, GuestFacts, plan_budget
from libvirt_guests.stop.facts import HostSettings, guest_facts, host_facts
from libvirt_guests.stop.items import StopItem, UriStopPlan
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest

# What libvirt and QEMU say when a save is refused for a migration blocker
# (QEMU: "... is disabled when using ...", "migration is blocked", libvirt:
# "cannot migrate domain", "domain has assigned non-USB host devices").
_REFUSED = re.compile(r"cannot migrate domain|migration is (disabled|blocked|not supported)|"
                      r"non-USB host devices|is not migratable|migration blocker", re.I)


@dataclass
class Planned:
    """A URI's budget and what it said (one line each)."""

    budget: Budget
    by_uuid: dict[str, Decision] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def settings_of(config: Config, deadline: float | None) -> HostSettings:
    return HostSettings(reserve_bytes=config.save_reserve, deadline=deadline, parallel_save=config.parallel_save,
                        pause_before_save=config.pause_before_save, bypass_cache=config.bypass_cache,
                        parallel_shutdown=config.parallel_shutdown, shutdown_timeout=config.shutdown_timeout)


def rank_of(config: Config, guest: Guest) -> int | None:
    """The guest's place in SAVE_PRIORITY (the host's word alone), by name or UUID."""
    for index, word in enumerate(config.save_priority):
        if word in (guest.name, guest.uuid):
            return index
    return None


def _xml(guest: Guest) -> tuple[str, str]:
    with guest.errors():
        dom = guest.dom
        return dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def apply_budget(
    plan: UriStopPlan, config: Config, history: History, refusals: Refusals, deadline: float | None
) -> Planned:
    """Plan the room and the time of this URI's guests and rewrite their
    chains. `deadline`: seconds left for the stop (None: no deadline). A
    guest whose definition cannot be read keeps its chain, outside the
    budget, with a warning."""
    facts: list[GuestFacts] = []
    items: dict[str, StopItem] = {}
    warnings: list[str] = []
    for group, members in enumerate(plan.groups):
        for item in members:
            guest = item.guest
            chain = item.policy.on_shutdown if not item.persistent else item.chain
            try:
                live, inactive = _xml(guest)
            except VirtError as err:
                if not err.vanished:
                    warnings.append(f"guest {shown(guest.name)}: cannot read its definition ({err}); it is not "
                                    "planned for room and time and keeps its chain")
                continue
            g = guest_facts(guest.uuid, guest.name, chain, group, live, inactive, history, refusals,
                            rank_of(config, guest))
            if not item.persistent and "suspend" in chain:
                g = dataclasses.replace(g, blockers=("a transient guest",))
            facts.append(g)
            items[guest.uuid] = item
    budget = plan_budget(facts, host_facts(plan.uri, settings_of(config, deadline), history))
    planned = Planned(budget, {d.uuid: d for d in budget.decisions}, warnings)
    for decision in budget.decisions:
        _rewrite(items[decision.uuid], decision, deadline is not None)
        if decision.fallback:
            planned.warnings.append(f"guest {shown(decision.name)}: {decision.why}")
    return planned


def _rewrite(item: StopItem, decision: Decision, deadline: bool) -> None:
    if decision.as_configured:
        return
    # what was configured: a transient guest's chain lost its save in plan_stop already
    item.configured = item.chain if item.persistent else item.policy.on_shutdown
    item.budget_reason = decision.reason
    item.chain = decision.chain
    item.note = "; ".join(n for n in (item.note if item.note != "transient: cannot be saved" else "",
                                      f"not saved ({decision.reason}): {decision.why}") if n)
    if decision.fallback and deadline and "poweroff" in decision.chain:
        # shut down, powered off only at the deadline: its shutdown waits until then
        item.policy = dataclasses.replace(item.policy, shutdown_timeout=0)


def load_memory(history_file: Path, refusals_file: Path) -> tuple[History, Refusals, list[str]]:
    """The history and the refusals store, with their problems as warnings (never raises)."""
    history = History.load(history_file)
    refusals = Refusals.load(refusals_file)
    problems = [p for p in (history.problem, refusals.problem) if p]
    return history, refusals, problems


def is_refusal(err: VirtError) -> bool:
    """A save refused for a migration blocker (not a full disk, not a lost connection)."""
    return not (err.vanished or err.disconnected) and bool(_REFUSED.search(str(err)))


def learn(path: Path, guest: Guest, err: VirtError | None) -> str | None:
    """After a save: remember a refusal (with its devices' fingerprint), or
    forget an earlier one when the save worked. Returns a problem line or None."""
    try:
        if err is None:
            return forget(path, guest.uuid)
        if not is_refusal(err):
            return None
        _live, inactive = _xml(guest)
        reason = shown_error(err)
        return remember(path, Refusal(guest.uuid, devices_fingerprint(inactive), reason, time.time()))
    except VirtError as problem:
        return f"cannot remember why the save of {shown(guest.name)} was refused: {problem}"
