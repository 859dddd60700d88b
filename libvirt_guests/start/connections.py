"""The connections of one start, owned here alone: one per URI of this host
(opened for the plans, more when guests are brought back from a peer) and
the peers (virt.peers), all closed at the end."""

from __future__ import annotations

from collections.abc import Iterable

from libvirt_guests.engine import Context, close_all, connect_all
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.peers import Peers


class StartConnections:
    """This host's connections by URI (None: could not be reached) and the peers."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._here: dict[str, Hypervisor | None] = {}
        self.peers = Peers(allowed=ctx.config.allowed_peers())

    def connect(self, uris: Iterable[str], retry_for: float) -> None:
        """Open the URIs not tried yet in this run (one that failed is not tried again)."""
        missing = [uri for uri in uris if uri not in self._here]
        self._here.update(connect_all(self._ctx, missing, retry_for=retry_for))

    def here(self, uri: str) -> Hypervisor | None:
        """The open connection to one of this host's URIs, None if it was not reached."""
        return self._here.get(uri)

    def close(self) -> None:
        close_all(self._here.values())
        self.peers.close()
