"""What the parts of a start may use (start/groups.py, start/units.py,
start/peers.py): the run (start/run.py) makes one StartScope and hands it
down, so that no part reaches into the run object."""

from __future__ import annotations

from dataclasses import dataclass

from libvirt_guests.config.load import Config
from libvirt_guests.output import Output
from libvirt_guests.start.connections import StartConnections
from libvirt_guests.start.ledger import StartLedger
from libvirt_guests.start.pacing import Pacing


@dataclass(frozen=True)
class StartScope:
    """One start's configuration, output, ledger (outcomes, the journal, whether
    it failed), waits and connections."""

    cfg: Config
    out: Output
    ledger: StartLedger
    pacing: Pacing
    connections: StartConnections
    ignore_mode: bool  # ON_BOOT=ignore: only the guests whose policy says start
