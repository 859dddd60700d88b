"""What a failed libvirt call becomes for the engines, and the domain states
by name."""

from __future__ import annotations

import libvirt

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class VirtError(Exception):
    """A failed libvirt call, classified for the engines. Its text is made
    for printing: libvirt's message redacted and escaped (shown_error)."""

    shown = True

    def __init__(self, message: str, *, vanished: bool = False, disconnected: bool = False) -> None:
        super().__init__(message)
        self.vanished = vanished
        self.disconnected = disconnected


class NoAnswer(VirtError):
    """libvirt accepted the connection and did not answer in time."""


