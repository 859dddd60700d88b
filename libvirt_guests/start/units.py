"""The actions of a start, one unit each (StartAction -> its unit), as the
stop's actions are in stop/actions/.

Every unit has the same contract. It is made once per URI with the
start's StartScope (start/scope.py: all it may use) and its
`perform(item, label)` is called for one guest, after the plan's action was
asked again from the guest's state (groups.UriStart.act); `label` is
the original's "Resuming guest NAME: ". It prints the guest's one line,
returns the outcome the summary counts (StartAction.outcome) and records
nothing: the ledger (start/ledger.py) does. The units that start a guest
wait for START_DELAY's gap first and raise VirtError to the caller, which
reconnects, or tells a guest started meanwhile from a failure.

Adding an action: its member in plan.StartAction, one unit here, one line in
START_UNITS."""

from __future__ import annotations

from typing import ClassVar

import libvirt

from libvirt_guests.outcomes import StartOutcome
from libvirt_guests.output import ERR, INFO, WARNING, shown, tr
from libvirt_guests.start.daemonstart import started_by_daemon
from libvirt_guests.start.plan import StartAction, StartItem
from libvirt_guests.start.scope import StartScope
from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest


class StartUnit:
    """One thing start does to a guest (see the module's contract)."""

    action: ClassVar[StartAction]
    level: ClassVar[int] = INFO  # of the guest's line

    def __init__(self, scope: StartScope) -> None:
        self.scope = scope
        self.out = scope.out
        self.cfg = scope.cfg

    def perform(self, item: StartItem, label: str) -> StartOutcome:
        self.out.say(label + self.line(item), level=self.level)
        return self.action.outcome

    def line(self, item: StartItem) -> str:
        """What the guest's line says after the label."""
        raise NotImplementedError

    def sync_time(self, guest: Guest) -> None:
        """SYNC_TIME=1: set the guest's clock after it runs again."""
        if not self.cfg.sync_time:
            return
        try:
            guest.sync_time()
        except VirtError as err:
            self.out.warn(f"cannot sync the time of guest {shown(guest.name)}: {err}")


class Failed(StartUnit):
    """Planning it failed (or starting it did): it stays listed for the next start."""

    action = StartAction.FAILED
    level = WARNING

    def line(self, item: StartItem) -> str:
        return f"failed: {item.detail}"


class OnPeer(StartUnit):
    """It runs on its peer: left there (peers.decide wrote the line)."""

    action = StartAction.ON_PEER

    def line(self, item: StartItem) -> str:
        return item.detail


class Held(StartUnit):
    """Its peer cannot be asked and it may run there: not started, kept listed."""

    action = StartAction.HELD
    level = ERR

    def line(self, item: StartItem) -> str:
        return item.detail


class Missing(StartUnit):
    """No longer defined: forgotten."""

    action = StartAction.MISSING

    def line(self, item: StartItem) -> str:
        return "no longer defined, forgotten"


class Ignore(StartUnit):
    """Its policy says on_boot=ignore."""

    action = StartAction.IGNORE

    def line(self, item: StartItem) -> str:
        return "ignored (on_boot=ignore)"


class AlreadyActive(StartUnit):
    """Running already (an admin, libvirt's autostart): its clock is synced."""

    action = StartAction.ALREADY_ACTIVE

    def line(self, item: StartItem) -> str:
        return tr("already active")

    def perform(self, item: StartItem, label: str) -> StartOutcome:
        outcome = super().perform(item, label)
        assert item.guest is not None
        self.sync_time(item.guest)
        return outcome


class Starting(StartUnit):
    """A unit that starts the guest: START_DELAY's gap, the libvirt call,
    "done" and the clock."""

    def perform(self, item: StartItem, label: str) -> StartOutcome:
        guest = item.guest
        assert guest is not None
        if self.action is not StartAction.RESUME and started_by_daemon(guest):  # libvirt's auto_shutdown_restore
            self.out.say(label + "started by libvirtd itself (autostart once)")
            return StartOutcome.ALREADY_ACTIVE
        self.scope.pacing.gap()
        self.act(guest)
        self.out.say(label + tr("done"))
        self.sync_time(guest)
        return self.action.outcome

    def act(self, guest: Guest) -> None:
        raise NotImplementedError


class Resume(Starting):
    """Paused by a stop that was interrupted before saving it: resumed."""

    action = StartAction.RESUME

    def act(self, guest: Guest) -> None:
        guest.resume()


class Boot(Starting):
    """Started (restored from its managed save image when it has one, see Restore)."""

    action = StartAction.START

    def act(self, guest: Guest) -> None:
        guest.start(libvirt.VIR_DOMAIN_START_BYPASS_CACHE if self.cfg.bypass_cache else 0)


class Restore(Boot):
    """Saved by the last stop: libvirt's start restores the image."""

    action = StartAction.RESTORE


# start action -> its unit: the group runner makes one of each per URI.
START_UNITS: dict[StartAction, type[StartUnit]] = {
    unit.action: unit for unit in (Failed, OnPeer, Held, Missing, Ignore, AlreadyActive, Resume, Boot, Restore)
}
