"""The plans as `libvirt-guests plan` shows them (--json: these dicts)."""

from __future__ import annotations

from typing import Any

from libvirt_guests.config.load import Config
from libvirt_guests.output import redact
from libvirt_guests.start.plan import UriStartPlan
from libvirt_guests.stop.plan import UriStopPlan


def describe_stop(plan: UriStopPlan, config: Config) -> dict[str, Any]:
    """The stop plan of one URI as data (for `plan` and `plan --json`)."""
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
                "migrate_to": (redact(item.policy.migrate_to) or None) if "migrate" in item.chain else None,
                "peer_can_take": None if item.peer_reasons is None else not item.peer_reasons,
                "peer_reasons": item.peer_reasons or [],
            })
        groups.append(entries)
    return {
        "uri": redact(plan.uri),
        "groups": groups,
        "transient_not_handled": [g.name for g in plan.transient_left],
        "skipped": [g.name for g in plan.skipped],
        "warnings": plan.warnings,
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

