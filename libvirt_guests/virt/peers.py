"""The connections to peer hosts for the length of a run: opened once each,
only to the peers the host configuration names (MIGRATE_URI, MIGRATE_PEERS).
Used by stop's migrate action and by start (asking a peer, bringing guests
back)."""

from __future__ import annotations

import threading
from collections.abc import Collection

from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.hypervisor import Hypervisor
from libvirt_guests.virt.migrate import open_peer

PEER_ASK_TIMEOUT = 5.0  # seconds start waits for a peer to answer "does it run there?" (no retries)


class Peers:
    """One connection per peer URI for the length of a run (shared by the
    threads of a stop); a peer that could not be opened is remembered with
    its error, so it costs its timeout once."""

    def __init__(self, timeout: float = PEER_ASK_TIMEOUT, retry_for: float = 0.0,
                 allowed: Collection[str] = ()) -> None:
        self.timeout = timeout
        self.retry_for = retry_for
        self.allowed = frozenset(allowed)  # the host configuration's peers: nothing else is ever opened
        self._open: dict[str, Hypervisor | VirtError] = {}
        self._lock = threading.Lock()

    def get(self, uri: str) -> Hypervisor:
        """The open peer; raises the VirtError it could not be opened with."""
        with self._lock:
            return self._get(uri)

    def _get(self, uri: str) -> Hypervisor:
        if uri not in self.allowed:
            raise VirtError("not one of the host's peers (MIGRATE_URI, MIGRATE_PEERS); not opened")
        if uri not in self._open:
            try:
                if self.retry_for:
                    self._open[uri] = open_peer(uri, self.retry_for)
                else:
                    hv = Hypervisor(uri)
                    hv.connect(retry_for=0, answer_within=self.timeout)
                    self._open[uri] = hv
            except VirtError as err:
                self._open[uri] = err
        found = self._open[uri]
        if isinstance(found, VirtError):
            raise found
        return found

    def close(self) -> None:
        for hv in self._open.values():
            if isinstance(hv, Hypervisor):
                hv.close()
        self._open.clear()
