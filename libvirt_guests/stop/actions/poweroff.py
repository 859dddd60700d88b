"""The poweroff action: pulled plug, as the original's last resort."""

from __future__ import annotations

from libvirt_guests.outcomes import Outcome
from libvirt_guests.output import shown
from libvirt_guests.stop.actions.base import Action, Step
from libvirt_guests.stop.items import StopItem
from libvirt_guests.virt.errors import VirtError


class Poweroff(Action):
    """Pull the plug (virDomainDestroy): the last resort of a chain."""

    name = "poweroff"

    def act(self, item: StopItem, last: bool) -> Step:
        guest = item.guest
        self.out.say(f"Powering off guest {shown(guest.name)}")
        try:
            guest.destroy()
        except VirtError as err:
            if err.vanished or err.disconnected:
                raise
            stopped = self.begin(item)
            if stopped is not None:
                return stopped
            self.out.error(f"cannot power off guest {shown(guest.name)}: {err}")
            return Step.NEXT
        self.out.say(f"Power-off of guest {shown(guest.name)} complete.")
        self.ledger.finish(item, Outcome.POWEROFF)
        return Step.DONE


