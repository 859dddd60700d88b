"""The actions of a stop chain, one module each (see base.py for their
contract)."""

from libvirt_guests.stop.actions.base import Action, ActionScope, OffWaiter, Step
from libvirt_guests.stop.actions.migrate import Migrate
from libvirt_guests.stop.actions.poweroff import Poweroff
from libvirt_guests.stop.actions.shutdown import Shutdown
from libvirt_guests.stop.actions.suspend import Suspend

# action word (config.settings.ACTIONS) -> its unit: the chain runner makes one of each per URI;
# the rest of the code asks a word's traits here (ACTIONS[word].saves), never compares words.
ACTIONS: dict[str, type[Action]] = {unit.name: unit for unit in (Migrate, Suspend, Shutdown, Poweroff)}


def any_saves(chain: tuple[str, ...] | list[str]) -> bool:
    return any(ACTIONS[word].saves for word in chain)


def any_moves(chain: tuple[str, ...] | list[str]) -> bool:
    return any(ACTIONS[word].moves for word in chain)


def any_waits_off(chain: tuple[str, ...] | list[str]) -> bool:
    return any(ACTIONS[word].waits_off for word in chain)


__all__ = ["ACTIONS", "Action", "ActionScope", "Migrate", "OffWaiter", "Poweroff", "Shutdown", "Step", "Suspend",
           "any_moves", "any_saves", "any_waits_off"]
