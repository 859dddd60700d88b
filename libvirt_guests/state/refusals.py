"""Which guests' saves QEMU refused, and why: state that decides the next
stop (such a guest goes straight to the next action of its chain), kept apart
from the history and valid only while the guest's devices are unchanged.

The devices are compared through a fingerprint of the <devices> element
alone, without what libvirt fills in for a running guest (aliases, ports,
pty paths): a metadata write or a reboot does not change it, a device added
or removed does. Give it the same kind of XML each time (the inactive
definition, VIR_DOMAIN_XML_INACTIVE, is the steadiest).

load, remember and forget never raise. The file is a regular file owned by
us, written atomically (state/files.py); a damaged one is read as empty
(the guests are then tried again, as before any refusal was learnt)."""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from libvirt_guests.state.files import (
    DamagedState,
    StateError,
    UntrustedState,
    atomic_write,
    put_aside,
    safe_read_bytes,
    unlink,
)

VERSION = 1
KEEP = 1000  # guests remembered (the newest)
MAX_REFUSALS_BYTES = 4 * 1024 * 1024
MAX_REASON = 512
# What libvirt writes into a running guest's devices and changes from boot
# to boot: left out of the fingerprint.
_VOLATILE_ELEMENTS = {"alias", "actual"}
_VOLATILE_ATTRIBUTES = {"port", "websocket", "tty", "autoport"}


def _canonical(element: ET.Element) -> str:
    """A stable text of an element: tag, sorted attributes, text, children."""
    attrs = sorted((k, v) for k, v in element.attrib.items() if k not in _VOLATILE_ATTRIBUTES)
    pty = element.get("type") == "pty"
    children = [c for c in element if c.tag not in _VOLATILE_ELEMENTS and not (pty and c.tag == "source")]
    text = (element.text or "").strip()
    return json.dumps([element.tag, attrs, text, [_canonical(c) for c in children]], separators=(",", ":"))


def devices_fingerprint(xml: str) -> str:
    """A hash of the domain's <devices> element only; "" when there is none
    or the XML cannot be read (an empty fingerprint matches nothing)."""
    try:
        root = ET.fromstring(xml)
        devices = root if root.tag == "devices" else root.find("devices")
        if devices is None:
            return ""
        return hashlib.sha256(_canonical(devices).encode()).hexdigest()
    except Exception:  # noqa: BLE001 - untrusted XML: no fingerprint, no refusal remembered
        return ""


@dataclass(frozen=True)
class Refusal:
    uuid: str
    fingerprint: str
    reason: str  # libvirt's message, one line
    when: float


class Refusals:
    """The refusals as loaded: empty (with .problem) when the file could not be read."""

    def __init__(self, refusals: dict[str, Refusal] | None = None, problem: str | None = None) -> None:
        self.by_uuid = dict(refusals or {})
        self.problem = problem

    @classmethod
    def load(cls, path: Path) -> Refusals:
        """Never raises; nothing is set aside here (remember/forget do)."""
        try:
            return cls(_read(path))
        except StateError as err:
            return cls(problem=f"refusals file {path} cannot be read: {err}")
        except Exception as err:  # noqa: BLE001 - never stops a run
            return cls(problem=f"refusals file {path} cannot be read ({type(err).__name__})")

    def refused(self, uuid: str, fingerprint: str) -> Refusal | None:
        """The guest's remembered refusal, only while its devices are unchanged."""
        refusal = self.by_uuid.get(uuid)
        if refusal is None or not fingerprint or refusal.fingerprint != fingerprint:
            return None
        return refusal


def _read(path: Path) -> dict[str, Refusal]:
    if str(path) == os.devnull:
        return {}
    data = safe_read_bytes(path, MAX_REFUSALS_BYTES)
    if data is None:
        return {}
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DamagedState("damaged") from err
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("refusals"), list):
        raise DamagedState("damaged, or written by another version")
    found: dict[str, Refusal] = {}
    for item in doc["refusals"]:
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("uuid", "fingerprint", "reason"))
                and isinstance(item.get("when"), (int, float)) and not isinstance(item.get("when"), bool)):
            raise DamagedState("damaged: an entry is not a refusal")
        found[item["uuid"]] = Refusal(item["uuid"], item["fingerprint"], item["reason"], float(item["when"]))
    return found


def _rewrite(path: Path, change: dict[str, Refusal | None]) -> str | None:
    if str(path) == os.devnull:
        return None
    problem: str | None = None
    try:
        current = _read(path)
    except StateError as err:
        kind = "untrusted" if isinstance(err, UntrustedState) else "damaged"
        problem = f"refusals file {path} cannot be read: {err}; {put_aside(path, kind)}; starting it afresh"
        current = {}
    before = dict(current)
    for uuid, refusal in change.items():
        current.pop(uuid, None)
        if refusal is not None:
            current[uuid] = refusal  # the newest last
    if current == before and problem is None:
        return None
    kept = sorted(current.values(), key=lambda r: r.when)[-KEEP:]
    try:
        if kept:
            doc = {"version": VERSION, "refusals": [asdict(r) for r in kept]}
            atomic_write(path, (json.dumps(doc, ensure_ascii=True) + "\n").encode())
        else:
            unlink(path)
    except StateError as err:
        return f"{problem}; {err}" if problem else f"cannot record the refusals: {err}"
    return problem


def remember(path: Path, refusal: Refusal) -> str | None:
    """Remember (or renew) a guest's refused save; a one-line problem or None."""
    reason = " ".join(refusal.reason.split())[:MAX_REASON]
    try:
        return _rewrite(path, {refusal.uuid: Refusal(refusal.uuid, refusal.fingerprint, reason, refusal.when)})
    except Exception as err:  # noqa: BLE001 - never stops a run
        return f"cannot record the refusals in {path} ({type(err).__name__}: {err})"


def forget(path: Path, uuid: str) -> str | None:
    """A later save of the guest succeeded: forget its refusal."""
    try:
        return _rewrite(path, {uuid: None})
    except Exception as err:  # noqa: BLE001 - never stops a run
        return f"cannot record the refusals in {path} ({type(err).__name__}: {err})"
