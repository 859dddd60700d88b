"""Helpers of the unit tests: the redirected file layout, the test-driver
guest factory and the result of one in-process run of the command line.

Fixtures that hand them out live in conftest.py."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from libvirt_guests.virt.hypervisor import start_event_loop

TEST_URI = "test:///default"
_names = itertools.count(1)


@dataclass
class Files:
    config: Path
    list_file: Path
    lock_file: Path
    state_file: Path

    def write_config(self, **values: str) -> None:
        lines = [f"URIS={TEST_URI}"] if "URIS" not in values else []
        lines += [f'{name}="{value}"' for name, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")


class Driver:
    """Creates domains on test:///default and removes every one at the end."""

    def __init__(self) -> None:
        start_event_loop()
        self.conn = libvirt.open(TEST_URI)
        self._wipe()

    def _wipe(self) -> None:
        for dom in self.conn.listAllDomains():
            persistent = dom.isPersistent()
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError as err:
                    # A run the test gave up on, released at its end, may power it off meanwhile.
                    if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
            if persistent:
                if dom.hasManagedSaveImage():
                    dom.managedSaveRemove()
                dom.undefine()

    def guest(self, *, transient: bool = False, running: bool = True, policy: str | None = None) -> libvirt.virDomain:
        name = f"unit-{os.getpid()}-{next(_names)}"
        xml = f"""<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>
            <os><type>hvm</type></os></domain>"""
        if transient:
            dom = self.conn.createXML(xml, 0)
        else:
            dom = self.conn.defineXML(xml)
            if running:
                dom.create()
        if policy is not None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if transient else (
                libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if running else 0))
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, policy, "guests",
                            "urn:libvirt-guests:policy:1", flags)
        return dom

    def state(self, dom: libvirt.virDomain) -> str:
        fresh = self.conn.lookupByUUIDString(dom.UUIDString())
        state = fresh.state()[0]
        if state == libvirt.VIR_DOMAIN_RUNNING:
            return "running"
        if state == libvirt.VIR_DOMAIN_PAUSED:
            return "paused"
        return "saved" if fresh.hasManagedSaveImage() else "off"


@dataclass
class Result:
    code: int
    out: str
    err: str


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it, with its error code."""
    err = libvirt.libvirtError(message)
    err.err = (code, libvirt.VIR_FROM_NONE, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return err


def refuse_list_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """listAllDomains as a driver without its filters has it: only active or
    inactive, anything else VIR_ERR_NO_SUPPORT."""
    real = libvirt.virConnect.listAllDomains

    def unfiltered(self: libvirt.virConnect, flags: int = 0) -> list[libvirt.virDomain]:
        if flags & ~(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE | libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            raise libvirt_error(libvirt.VIR_ERR_NO_SUPPORT, "this function is not supported by the connection driver")
        return real(self, flags)

    monkeypatch.setattr(libvirt.virConnect, "listAllDomains", unfiltered)


PEER_NODE = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes><sockets>1</sockets>
  <cores>2</cores><threads>1</threads></cpu>
  <memory>8388608</memory>
  {domains}
</node>
"""


def peer_uri(tmp_path: Path, domains: str = "") -> str:
    """A peer host: a second, independent test-driver instance
    (test:///ABSOLUTE/node.xml) defining `domains` (domain XML)."""
    node = tmp_path / "peer-node.xml"
    node.write_text(PEER_NODE.format(domains=domains))
    return f"test://{node}"
