"""The facts stop/budget.py plans with, gathered without acting (issue 22):
each guest's memory and migration blockers from its definition, what the
refusals store and the history say of it; the save directory of the URI,
its free space, qemu.conf's save_image_format, the configured caps.

A guest's definition is read, never QEMU's monitor (pass-through taints the
guest). Only what reliably blocks a save in every QEMU we support counts as
a blocker; what blocks only sometimes (a 9p share: only while mounted) is
learnt from a refused save (state/refusals.py)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from libvirt_guests.outcomes import Outcome
from libvirt_guests.state.history import GuestEvent, History, StopRecord
from libvirt_guests.state.refusals import Refusals, devices_fingerprint
from libvirt_guests.stop.budget import GuestFacts, HostFacts, SaveRecord
from libvirt_guests.virt.saveimage import save_dir_of

SYSTEM_QEMU_CONF = Path("/etc/libvirt/qemu.conf")
_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
          "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4, "tib": 1024**4}
_FORMAT = re.compile(r'^\s*save_image_format\s*=\s*"([^"]*)"', re.M)


@dataclass(frozen=True)
class Definition:
    """What a guest's live definition says of its save."""

    memory_bytes: int
    extra_ram_bytes: int
    blockers: tuple[str, ...]


def _bytes(element: ET.Element | None, default_unit: str = "KiB") -> int:
    if element is None or not (element.text or "").strip().isdigit():
        return 0
    return int((element.text or "0").strip()) * _UNITS.get(element.get("unit", default_unit).lower(), 1024)


def read_definition(xml: str) -> Definition:
    """Memory, video RAM and the migration blockers of a domain's XML; an
    unreadable XML gives zeros and no blocker (the save is then tried)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return Definition(0, 0, ())
    memory = _bytes(root.find("memory"))
    extra = 0
    for model in root.findall("devices/video/model"):
        for attr in ("ram", "vram", "vram64", "vgamem"):
            value = model.get(attr, "")
            extra += int(value) * 1024 if value.isdigit() else 0
    return Definition(memory, extra, blockers(root))


def blockers(root: ET.Element) -> tuple[str, ...]:
    """What in the definition makes QEMU or libvirt refuse a managed save."""
    found: list[str] = []
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    for hostdev in devices.findall("hostdev"):
        kind = hostdev.get("type") or hostdev.get("mode") or "device"
        address = hostdev.find("source/address")
        where = ""
        if address is not None:
            where = " " + ":".join(address.get(k, "") for k in ("domain", "bus", "slot", "function") if address.get(k))
        found.append(f"host device passthrough ({kind}{where})")
    if devices.find("interface[@type='hostdev']") is not None:
        found.append("network interface passed through from the host (interface type='hostdev')")
    for fs in devices.findall("filesystem"):
        driver = fs.find("driver")
        if driver is not None and driver.get("type") == "virtiofs":
            target = fs.find("target")
            tag = target.get("dir", "") if target is not None else ""
            found.append(f"virtiofs shared file system{f' {tag!r}' if tag else ''}")
    for shmem in devices.findall("shmem"):
        # QEMU's ivshmem blocks migration in peer mode, its default (master=off);
        # libvirt's live XML leaves the role out: only role master is savable.
        if (shmem.findtext("role") or "").strip() != "master":
            found.append(f"shared memory device {shmem.get('name', '')!r} in peer mode (shmem without role master)")
    for feature in root.findall("cpu/feature"):
        if feature.get("name") == "invtsc" and feature.get("policy") in ("require", "force"):
            found.append("CPU feature invtsc (invariant TSC)")
    return tuple(found)


def free_bytes(path: Path) -> tuple[int | None, str]:
    """The free bytes of the file system holding path: f_bavail, without the
    blocks reserved for root (libvirt writes as root and may use them: the
    stricter count keeps them for the rest of the host)."""
    try:
        st = os.statvfs(path)
    except OSError as err:
        return None, f"cannot read the free space of {path}: {err.strerror or err}"
    return st.f_bavail * st.f_frsize, ""


def image_format(qemu_conf: Path = SYSTEM_QEMU_CONF) -> str:
    """qemu.conf's save_image_format (raw when unset or unreadable)."""
    try:
        found = _FORMAT.findall(qemu_conf.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return "raw"
    return found[-1] if found else "raw"


def history_of(events: Sequence[GuestEvent], memory_bytes: int) -> tuple[int | None, tuple[float, ...]]:
    """Its last save image (of the same memory size), and its earlier shutdowns' seconds."""
    image = None
    for event in events:
        if (event.kind == "stop" and event.action == "suspend" and event.result == Outcome.SAVED
                and event.bytes_written and event.memory_bytes in (None, memory_bytes)):
            image = event.bytes_written
    downs = tuple(e.seconds for e in events if e.kind == "stop" and e.action == "shutdown"
                  and e.result == Outcome.SHUTDOWN and e.seconds > 0)
    return image, downs


def save_records(stops: Sequence[StopRecord]) -> tuple[SaveRecord, ...]:
    return tuple(SaveRecord(s.bytes_saved, s.save_seconds, s.parallel_save, s.pause_before_save, s.bypass_cache)
                 for s in stops if s.saved > 0)


def guest_facts(
    uuid: str, name: str, chain: tuple[str, ...], group: int, live_xml: str, inactive_xml: str | None,
    history: History, refusals: Refusals, rank: int | None,
) -> GuestFacts:
    """One guest's facts from its XML (live for memory and devices; inactive for the refusals' fingerprint)."""
    definition = read_definition(live_xml)
    refusal = refusals.refused(uuid, devices_fingerprint(inactive_xml or live_xml))
    image, downs = history_of(history.guest(uuid), definition.memory_bytes)
    return GuestFacts(uuid=uuid, name=name, chain=chain, group=group, max_memory_bytes=definition.memory_bytes,
                      extra_ram_bytes=definition.extra_ram_bytes, blockers=definition.blockers,
                      refused=refusal.reason if refusal else None, rank=rank, last_image_bytes=image,
                      shutdown_seconds=downs)


@dataclass(frozen=True)
class HostSettings:
    """The configuration's part in HostFacts (from config.load.Config)."""

    reserve_bytes: int
    deadline: float | None
    parallel_save: int
    pause_before_save: bool
    bypass_cache: bool
    parallel_shutdown: int
    shutdown_timeout: float


def host_facts(uri: str, settings: HostSettings, history: History, qemu_conf: Path = SYSTEM_QEMU_CONF) -> HostFacts:
    directory, why = save_dir_of(uri)
    free: int | None = None
    if directory is not None:
        free, why = free_bytes(directory)
    fmt = image_format(qemu_conf) if directory is not None else "raw"
    return HostFacts(free_bytes=free, save_dir=str(directory) if directory else None,
                     reserve_bytes=settings.reserve_bytes, deadline=settings.deadline, image_format=fmt,
                     parallel_save=settings.parallel_save, pause_before_save=settings.pause_before_save,
                     bypass_cache=settings.bypass_cache, parallel_shutdown=settings.parallel_shutdown,
                     shutdown_timeout=settings.shutdown_timeout, records=save_records(history.stops(uri)),
                     room_unknown_why=why)
