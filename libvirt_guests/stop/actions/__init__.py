"""The actions of a stop chain, one module each (see base.py for their
contract)."""

from libvirt_guests.stop.actions.base import Action, Step
from libvirt_guests.stop.actions.migrate import Migrate
from libvirt_guests.stop.actions.poweroff import Poweroff
from libvirt_guests.stop.actions.shutdown import Shutdown
from libvirt_guests.stop.actions.suspend import Suspend

# action name -> its unit: the chain runner makes one of each per URI.
ACTIONS: dict[str, type[Action]] = {unit.name: unit for unit in (Migrate, Suspend, Shutdown, Poweroff)}

__all__ = ["ACTIONS", "Action", "Migrate", "Poweroff", "Shutdown", "Step", "Suspend"]
