"""The start's tables: every StartAction has its unit and its outcome, and
the values stay the words `plan start --json` has always printed."""

from __future__ import annotations

import json

from libvirt_guests.outcomes import Outcome, StartOutcome
from libvirt_guests.start.peers import STAYED_HERE
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


def test_stayed_here_is_derived_from_the_outcomes() -> None:
    """The journal words that spare a guest's peer the question: every stop
    outcome that keeps the guest here, and every word a start records; the
    set that was written out by hand before issue 20."""
    by_hand = {"saved", "shutdown", "poweroff", "left-running", "failed", "vanished", "start-failed", "started",
               "ignored"}
    assert by_hand == STAYED_HERE
    assert not {Outcome.PENDING, Outcome.NOT_HANDLED, Outcome.MIGRATED} & STAYED_HERE
    assert all(outcome.stays_here() == (outcome in STAYED_HERE) for outcome in Outcome)


def test_every_start_outcome_is_recorded_as_the_journal_word_it_always_was() -> None:
    assert {outcome: outcome.recorded_as() for outcome in StartOutcome} == {
        StartOutcome.RESTORED: "started", StartOutcome.BOOTED: "started", StartOutcome.RESUMED: "started",
        StartOutcome.ALREADY_ACTIVE: "started", StartOutcome.RETURNED: "started", StartOutcome.IGNORED: "ignored",
        StartOutcome.FAILED: "start-failed", StartOutcome.MISSING: "vanished", StartOutcome.NOT_ON_PEER: "vanished",
        StartOutcome.ON_PEER: "migrated", StartOutcome.HELD: None, StartOutcome.KEPT: None}
    assert all(word is None or word in STAYED_HERE or word == Outcome.MIGRATED
               for word in (outcome.recorded_as() for outcome in StartOutcome))
