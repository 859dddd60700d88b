"""The start's tables: every StartAction has its unit and its outcome, and
the values stay the words `plan start --json` has always printed."""

from __future__ import annotations

import json

from libvirt_guests.outcomes import StartOutcome
from libvirt_guests.start.plan import StartAction
from libvirt_guests.start.units import START_UNITS


def test_every_start_action_has_a_unit_and_an_outcome() -> None:
    assert set(START_UNITS) == set(StartAction)
    assert all(START_UNITS[action].action is action for action in StartAction)
    assert all(isinstance(action.outcome, StartOutcome) for action in StartAction)


def test_start_actions_are_the_words_plan_json_prints() -> None:
    assert json.loads(json.dumps([action for action in StartAction])) == [
        "start", "restore", "resume", "already active", "ignore", "missing", "failed", "on peer", "held"]
    assert f"{StartAction.ALREADY_ACTIVE}" == "already active"


def test_only_the_actions_that_start_a_guest_here_ask_its_peer() -> None:
    assert [action for action in StartAction if action.asks_peer()] == [StartAction.START, StartAction.RESTORE]
    assert not any(action.asks_peer() and action.final() for action in StartAction)
