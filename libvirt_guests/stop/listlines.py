"""The list file's lines during a stop: what an interrupted run recorded,
merged with the guests listed now, and taken out as guests leave."""

from __future__ import annotations

import threading
from collections.abc import Callable

from libvirt_guests.state.listfile import ListEntries
from libvirt_guests.stop.items import UriStopPlan


class ListLines:
    """The list file's lines of a stop, and their one owner: the libvirt
    work merges the guests it lists and takes out those that leave (unlist);
    once the calling thread takes the lines to write them (abandon), the
    work changes nothing any more."""

    def __init__(self, entries: ListEntries) -> None:
        self.entries = [(uri, list(uuids)) for uri, uuids in entries]
        self.abandoned = False  # gave up on the libvirt work: it must not write any more
        self._lock = threading.Lock()

    def merge(self, plans: dict[str, UriStopPlan], write: Callable[[ListEntries], None]) -> bool:
        """Add the guests listed now and hand the lines to write, under the
        lock (the calling thread writes only after it); False if abandoned."""
        with self._lock:
            if self.abandoned:
                return False
            self.entries = merge_list_lines(self.entries, plans)
            write([(uri, list(uuids)) for uri, uuids in self.entries])
            return True

    def abandon(self) -> ListEntries:
        """The lines as they are; from here on, only the calling thread writes."""
        with self._lock:
            self.abandoned = True
            return [(uri, list(uuids)) for uri, uuids in self.entries]

    def unlist(self, uri: str, uuid: str) -> None:
        """Take a guest out of the list file's lines: it runs on a peer now, or
        no longer exists (no start, ours or the original's, may boot it here)."""
        with self._lock:
            if self.abandoned:
                return
            for line_uri, uuids in self.entries:
                if line_uri == uri and uuid in uuids:
                    uuids.remove(uuid)



def merge_list_lines(previous: ListEntries, plans: dict[str, UriStopPlan]) -> ListEntries:
    """Lines of the list file: what an interrupted run recorded, plus
    the guests listed now, one line per URI, URIs in first-seen order."""
    merged: dict[str, dict[str, None]] = {}  # uri -> its UUIDs, in order, once each
    for uri, uuids in previous:
        merged.setdefault(uri, {}).update(dict.fromkeys(uuids))
    for uri, plan in plans.items():
        merged.setdefault(uri, {}).update(dict.fromkeys(plan.recorded_uuids))
    return [(uri, list(uuids)) for uri, uuids in merged.items()]
