"""One guest (a libvirt domain) as the engines see it: found by UUID again
after a reconnect, every call's libvirtError made a VirtError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import libvirt

from libvirt_guests.virt.errors import STATE_NAMES, VirtError
from libvirt_guests.virt.waits import Waits


class Connection(Protocol):
    """What a guest uses of its virt.hypervisor.Hypervisor (a Protocol:
    hypervisor.py makes the guests, so this module does not import it)."""

    uri: str
    conn: libvirt.virConnect | None
    waits: Waits

    def alive(self) -> bool: ...

    def _require(self) -> libvirt.virConnect: ...

    def _error(self, err: libvirt.libvirtError) -> VirtError: ...


@dataclass
class JobProgress:
    processed: int
    total: int


@dataclass(frozen=True)
class Listed:
    """What the listing that found a guest said about it: planning's answers,
    got for all guests of a URI in a few calls instead of one call per guest
    and question. None: that listing could not say, the guest is asked.
    Never used to act: what an action depends on is asked again just before
    (an admin or libvirt's autostart may have changed it since)."""

    active: bool
    paused: bool | None = None
    persistent: bool | None = None
    managed_save: bool | None = None


class AsListed:
    """A guest's planning-time answers: the listing's where it had them,
    else the guest's own (one call each)."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.listed = guest.listed

    def is_active(self) -> bool:
        return self.listed.active if self.listed is not None else self.guest.is_active()

    def is_paused(self) -> bool:
        known = self.listed.paused if self.listed is not None else None
        return known if known is not None else self.guest.is_paused()

    def is_persistent(self) -> bool:
        known = self.listed.persistent if self.listed is not None else None
        return known if known is not None else self.guest.is_persistent()

    def has_managed_save(self) -> bool:
        known = self.listed.managed_save if self.listed is not None else None
        return known if known is not None else self.guest.has_managed_save()


class Guest:
    """A domain of one Hypervisor, re-resolved by UUID after a reconnect.
    Its methods ask libvirt every time; `as_listed` answers from the listing."""

    def __init__(
        self, hv: Connection, uuid: str, name: str, dom: libvirt.virDomain | None = None, listed: Listed | None = None
    ) -> None:
        self.hv = hv
        self.uuid = uuid
        self.name = name
        self.listed = listed
        self._dom = dom
        self._conn = hv.conn

    def __repr__(self) -> str:
        return f"Guest({self.hv.uri!r}, {self.name!r})"

    @property
    def dom(self) -> libvirt.virDomain:
        conn = self.hv._require()
        if self._dom is None or self._conn is not conn:
            try:
                self._dom = conn.lookupByUUIDString(self.uuid)
            except libvirt.libvirtError as err:
                raise self.hv._error(err) from None
            self._conn = conn
        return self._dom

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Around a direct libvirt call: its libvirtError becomes a VirtError
        (vanished, disconnected) that the engines understand."""
        try:
            yield
        except libvirt.libvirtError as err:
            raise self.hv._error(err) from None

    def state(self) -> int:
        with self.errors():
            return int(self.dom.state()[0])

    def state_name(self) -> str:
        return STATE_NAMES.get(self.state(), "unknown")

    def is_paused(self) -> bool:
        return self.state() == libvirt.VIR_DOMAIN_PAUSED

    @property
    def as_listed(self) -> AsListed:
        """Planning's view of this guest (see Listed)."""
        return AsListed(self)

    def is_active(self) -> bool:
        with self.errors():
            return bool(self.dom.isActive())

    def is_persistent(self) -> bool:
        with self.errors():
            return bool(self.dom.isPersistent())

    def has_managed_save(self) -> bool:
        with self.errors():
            return bool(self.dom.hasManagedSaveImage(0))

    def domain_id(self) -> int:
        with self.errors():
            return int(self.dom.ID())

    def managed_save(self, flags: int) -> None:
        with self.errors():
            self.dom.managedSave(flags)

    def remove_managed_save(self) -> None:
        with self.errors():
            self.dom.managedSaveRemove(0)

    def abort_job(self) -> None:
        with self.errors():
            self.dom.abortJob()

    def job_active(self) -> bool:
        """True while a job (such as a save started by an earlier, killed run) runs."""
        try:
            return self.dom.jobInfo()[0] not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED)
        except (libvirt.libvirtError, VirtError):
            return False

    def job_progress(self) -> JobProgress | None:
        """Bytes written of the running job, or None if the driver cannot say."""
        try:
            stats = self.dom.jobStats(0)
        except (libvirt.libvirtError, VirtError):
            return None
        for prefix in ("memory", "data"):
            total = stats.get(f"{prefix}_total")
            if total:
                return JobProgress(int(stats.get(f"{prefix}_processed", 0)), int(total))
        return None

    def shutdown(self) -> None:
        with self.errors():
            self.dom.shutdown()

    def destroy(self) -> None:
        with self.errors():
            self.dom.destroy()

    def pause(self) -> None:
        with self.errors():
            self.dom.suspend()

    def resume(self) -> None:
        with self.errors():
            self.dom.resume()

    def start(self, flags: int = 0) -> None:
        with self.errors():
            self.dom.createWithFlags(flags)

    def sync_time(self) -> None:
        with self.errors():
            self.dom.setTime(None, libvirt.VIR_DOMAIN_TIME_SYNC)

    def metadata(self, namespace: str, live: bool | None = None) -> str | None:
        """The metadata element of `namespace`: the running definition's
        (live), the persistent one's, or (None) the running one's if the
        guest runs, else the persistent one's, decided by libvirt in the
        same call (VIR_DOMAIN_AFFECT_CURRENT)."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CURRENT
        if live is not None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        try:
            return self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, flags)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise self.hv._error(err) from None

    def set_metadata(self, xml: str | None, key: str, namespace: str, flags: int) -> None:
        with self.errors():
            self.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, key if xml else None, namespace, flags)

    def is_off(self) -> bool:
        """Not running here (shut off, or gone), asked now."""
        try:
            return not self.is_active()
        except VirtError as err:
            if err.vanished:
                return True
            raise

    def wait_inactive(self, timeout: float | None) -> bool:
        return self.hv.waits.until(self.is_off, timeout, self.uuid)
