"""The stop's budget as `plan stop` shows it (issue 22): per guest the
action chosen and why, the predicted duration; per URI the totals against
the free space and the deadline (--json: these dicts)."""

from __future__ import annotations

from typing import Any

from libvirt_guests.output import plain_number
from libvirt_guests.stop.budget import MIB, Budget, Decision


def describe_decision(decision: Decision | None) -> dict[str, Any] | None:
    """One guest's decision (None: it was not planned, e.g. its definition could not be read)."""
    if decision is None:
        return None
    return {
        "action": decision.chain[0] if decision.chain else None,
        "actions": list(decision.chain),
        "configured": list(decision.configured),
        "as_configured": decision.as_configured,
        "reason": decision.reason or None,
        "why": decision.why or None,
        "saves": decision.saves,
        "fallback": decision.fallback,
        "bound_bytes": decision.bound_bytes,
        "predicted_bytes": decision.predicted_bytes,
        "predicted_seconds": round(decision.predicted_seconds, 2),
    }


def describe_budget(budget: Budget) -> dict[str, Any]:
    saved = [d for d in budget.decisions if d.saves]
    return {
        "guests": len(budget.decisions),
        "saved": len(saved),
        "not_as_configured": sum(1 for d in budget.decisions if not d.as_configured),
        "room_bytes": budget.room_bytes,
        "bound_bytes": budget.bound_bytes,
        "save_rate_bytes_per_second": round(budget.save_rate),
        "save_rate_source": budget.rate_source,
        "predicted_seconds": round(budget.predicted_seconds, 2),
        "deadline_seconds": budget.deadline,
        "all_as_configured": budget.all_as_configured,
        "notes": budget.notes,
    }


def budget_lines(budget: dict[str, Any] | None) -> list[str]:
    """The totals, for people; nothing when no guest is saved, none falls
    back, and there is neither a deadline nor a known free space to compare."""
    if not budget or (budget["deadline_seconds"] is None and budget["room_bytes"] is None
                      and budget["all_as_configured"]):
        return []
    lines = []
    for decision_line in _fallbacks(budget):
        lines.append(decision_line)
    room = ("(free space not checked)" if budget["room_bytes"] is None
            else f"of {budget['room_bytes'] // MIB} MiB free in the save directory less SAVE_RESERVE")
    lines.append(f"saves: {budget['saved']} of {budget['guests']} guests, up to {budget['bound_bytes'] // MIB} MiB "
                 f"{room}")
    deadline = budget["deadline_seconds"]
    rate = f"{budget['save_rate_bytes_per_second'] // MIB} MiB/s ({budget['save_rate_source']})"
    total = plain_number(round(budget["predicted_seconds"], 1))
    lines.append(f"predicted: {total} s" + (f" of the {plain_number(deadline)} s deadline" if deadline else "")
                 + f"; saves at {rate}")
    lines += [f"note: {note}" for note in budget["notes"]]
    return lines


def _fallbacks(budget: dict[str, Any]) -> list[str]:
    if budget["all_as_configured"]:
        return []
    count = budget["not_as_configured"]
    return [f"{count} guest{'s' if count > 1 else ''} cannot be saved as configured (exit code 150)"]
