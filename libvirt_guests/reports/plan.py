"""The plans as `libvirt-guests plan` shows them (--json: these dicts)."""

from __future__ import annotations

from typing import Any

from libvirt_guests.config.commands import EXIT_OK, EXIT_PLAN_FALLBACK
from libvirt_guests.config.load import Config
from libvirt_guests.engine import Context, close_all, connect_all
from libvirt_guests.output import dump_json, plain_number, redact, shown, shown_uri
from libvirt_guests.reports.budget import budget_lines, describe_budget, describe_decision
from libvirt_guests.start.peers import describe_migrated
from libvirt_guests.start.plan import UriStartPlan, plan_start
from libvirt_guests.state.previous import peek_previous
from libvirt_guests.stop.actions import any_moves, any_saves, any_waits_off
from libvirt_guests.stop.budget import MIB
from libvirt_guests.stop.items import UriStopPlan
from libvirt_guests.stop.plan import check_peers, plan_stop
from libvirt_guests.stop.planned import Planned, apply_budget, load_memory
from libvirt_guests.virt.daemonshutdown import DaemonShutdown, of_hypervisor, who_acts


def describe_stop(plan: UriStopPlan, config: Config, planned: Planned | None = None,
                  daemon: DaemonShutdown | None = None) -> dict[str, Any]:
    """The stop plan of one URI as data (for `plan` and `plan --json`); ``daemon``: libvirt's own shutdown
    handling for that URI (QEMU only), which says who acts at a host shutdown through logind."""
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
                "migrate_to": (redact(item.policy.migrate_to) or None) if any_moves(item.chain) else None,
                "peer_can_take": None if item.peer_reasons is None else not item.peer_reasons,
                "peer_reasons": item.peer_reasons or [],
                **({"planned": describe_decision(planned.by_uuid.get(item.guest.uuid))} if planned else {}),
                **({} if daemon is None else {"at_host_shutdown": who_acts(daemon, item.persistent)}),
            })
        groups.append(entries)
    return {
        "uri": redact(plan.uri),
        "groups": groups,
        "transient_not_handled": [g.name for g in plan.transient_left],
        "skipped": [g.name for g in plan.skipped],
        "warnings": plan.warnings + (planned.warnings if planned else []),
        **({"budget": describe_budget(planned.budget)} if planned else {}),
        **({} if daemon is None else {"libvirt_shutdown": {"state": daemon.state, "reason": daemon.reason}}),
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



def plan_command(ctx: Context, which: str, as_json: bool, about: dict[str, Any]) -> int:
    cfg = ctx.config
    previous = peek_previous(ctx.paths.list_file, ctx.paths.state_file)
    journal = previous.journal
    note = ""
    fallback = False
    if which == "stop":
        hvs = connect_all(ctx, cfg.uris, retry_for=0, stdout=not as_json)
        plans = [plan_stop(hv, cfg, None, journal) for hv in hvs.values() if hv is not None]
        history, refusals, problems = load_memory(ctx.paths.history_file, ctx.paths.refusals_file)
        deadline = float(cfg.stop_deadline) if cfg.stop_deadline else None
        budgets = [apply_budget(plan, cfg, history, refusals, deadline) for plan in plans]
        for problem in problems:
            ctx.out.warn(problem)
        check_peers(plans, cfg.allowed_peers())  # before anything is done: can each guest's peer take it?
        daemons = {uri: of_hypervisor(hv) for uri, hv in hvs.items() if hv is not None}
        report = [describe_stop(plan, cfg, planned, daemons.get(plan.uri))
                  for plan, planned in zip(plans, budgets, strict=True)]
        fallback = not all(planned.budget.all_as_configured for planned in budgets)
        # The original's rule, as stop applies it: a list left by a completed stop makes the next stop a no-op.
        if previous.entries is not None and not previous.resumable:
            note = (f"the list file {ctx.paths.list_file} is still there (no start since the last stop): "
                    "the next stop does nothing, as the original")
    else:
        entries = previous.entries
        hvs = connect_all(ctx, [uri for uri, _ in entries or [] if uri in cfg.uris], retry_for=0,
                          stdout=not as_json)
        report = [describe_start(plan_start(hv, uuids, cfg, journal)) for uri, uuids in entries or []
                  if (hv := hvs.get(uri)) is not None]
        if entries is None:
            note = f"no list file {ctx.paths.list_file}: the next start has no guest to start"
        elif cfg.on_boot != "start":
            note = f"ON_BOOT={cfg.on_boot}: the next start starts only guests whose own policy says on_boot=start"
    close_all(hvs.values())
    migrated: list[dict[str, object]] = []
    if which == "start":
        migrated = describe_migrated(journal, cfg)
    if as_json:
        unreachable = [uri for uri, hv in hvs.items() if hv is None]
        extra = {"migrated": migrated} if which == "start" else {}
        ctx.out.block(dump_json({"operation": which, "uris": report, "unreachable": unreachable,
                               "note": note or None, **extra, **about,
                               **({} if cfg.guest_policy else {"guest_policy_ignored": True})}))
        return EXIT_PLAN_FALLBACK if fallback else EXIT_OK
    if note and not (migrated and previous.entries is None):
        ctx.out.say(f"note: {note}")
    if not cfg.guest_policy:
        ctx.out.say("note: GUEST_POLICY=0: the guests' own policies (metadata) are ignored")
    for guest in migrated:
        ctx.out.say(f"on a peer: {shown(guest['name'])} of {shown_uri(guest['uri'])} runs on "
                    f"{shown_uri(guest['peer'])} (migrated by the last stop): {guest['next_start']}")
    for uri_report in report:
        ctx.out.say(f"{which} on {shown_uri(uri_report['uri'])}:")
        daemon = uri_report.get("libvirt_shutdown")
        if daemon and daemon["state"] != "off":
            ctx.out.say(f"  libvirt's own shutdown handling: {daemon['state']} ({daemon['reason']})")
        totals = budget_lines(uri_report.get("budget"))
        for number, group in enumerate(uri_report["groups"], 1):
            for entry in group:
                ctx.out.say(f"  group {number}: " + _describe_entry(which, entry, bool(totals)))
        for name in uri_report.get("transient_not_handled", []):
            ctx.out.say(f"  left alone: {shown(name)} (transient, PERSISTENT_ONLY)")
        for name in uri_report.get("skipped", []):
            ctx.out.say(f"  left alone: {shown(name)} (policy skip=yes)")
        if not uri_report["groups"]:
            empty = "no running guests" if which == "stop" else "no guests to start"
            ctx.out.say(f"  {empty}" if not uri_report.get("skipped") and not uri_report.get(
                "transient_not_handled") else f"  {empty} to act on")
        for line in totals:
            ctx.out.say(f"  {line}")
        for warning in uri_report["warnings"]:
            ctx.out.warn(warning)
    return EXIT_PLAN_FALLBACK if fallback else EXIT_OK


def _describe_entry(which: str, entry: dict[str, Any], predicted: bool = False) -> str:
    if which == "start":
        delay = f", then wait {plain_number(entry['start_delay'])} s" if entry["start_delay"] else ""
        return f"{shown(entry['name'] or entry['uuid'])}: {entry['action']}{delay}"
    timeout = plain_number(entry["shutdown_timeout"]) if entry["shutdown_timeout"] else "no limit"
    text = f"{shown(entry['name'])}: {' -> '.join(entry['actions']) or 'nothing possible'}"
    if any_waits_off(entry["actions"]):
        text += f" (shutdown timeout {timeout} per {entry['shutdown_timeout_scope']})"
    if any_saves(entry["actions"]) and entry["save_timeout"]:
        text += f" (save timeout {plain_number(entry['save_timeout'])})"
    if entry.get("peer_can_take") is not None:
        peer = shown_uri(entry["migrate_to"]) if entry["migrate_to"] else "no peer"
        text += (f" (peer {peer} can take it)" if entry["peer_can_take"]
                 else f" (peer {peer} cannot take it: {'; '.join(entry['peer_reasons'])})")
    if not entry["recorded"]:
        text += " [not recorded: not started at boot]"
    if entry["note"]:
        text += f" [{entry['note']}]"
    if predicted and entry.get("planned") and entry["planned"]["saves"]:
        planned = entry["planned"]
        text += (f" (save: about {plain_number(round(planned['predicted_seconds'], 1))} s, "
                 f"up to {planned['bound_bytes'] // MIB} MiB)")
    actor = entry.get("at_host_shutdown")
    if actor == "libvirtd":
        text += " [at a host shutdown through logind: libvirtd acts, we wait for it, then act if it still runs]"
    elif actor == "unknown":
        text += " [at a host shutdown: libvirtd may act too (its settings are unknown)]"
    return text
