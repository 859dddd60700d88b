"""Guests that libvirt's daemon starts itself (issue 21): its own shutdown
handling (auto_shutdown_restore, libvirt 11.2) marks the guests it took down
"autostart once" (virDomainGetAutostartOnce) and starts them at its next
start, as our start would. Such a guest is left to the daemon: we wait for it
to run (events, bounded by DAEMON_START_WAIT) and start it ourselves only if
the daemon did not, so that no guest is started twice and none is lost."""

from __future__ import annotations

import libvirt

from libvirt_guests.virt.errors import VirtError
from libvirt_guests.virt.guest import Guest

DAEMON_START_WAIT = 30.0  # seconds the daemon has to start a guest it marked, before we do


def marked_autostart_once(guest: Guest) -> bool:
    """The daemon will start this guest itself (False where libvirt or its binding predates the flag)."""
    try:
        with guest.errors():
            dom = guest.dom
            ask = getattr(dom, "autostartOnce", None)
            return bool(ask()) if ask is not None else False
    except (VirtError, libvirt.libvirtError):
        return False


def started_by_daemon(guest: Guest, timeout: float = DAEMON_START_WAIT) -> bool:
    """True when the daemon started (or starts, within ``timeout``) this guest: then we must not."""
    try:
        if guest.is_active():
            return True
    except VirtError:
        return False
    if not marked_autostart_once(guest):
        return False

    def running() -> bool:
        try:
            return guest.is_active()
        except VirtError:
            return False

    return guest.hv.waits.until(running, timeout, guest.uuid)
