"""How many bytes a managed save wrote: the size of the guest's image in
libvirt's save directory, for the history (state/history.py). Only a local
daemon's directory can be seen from here; a guest's name (untrusted) only
ever names a file inside it, which is examined (lstat), never opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from libvirt_guests.virt.guest import Guest

SYSTEM_SAVE_DIR = Path("/var/lib/libvirt/qemu/save")
ENV_SAVE_DIR = "LIBVIRT_GUESTS_SAVE_DIR"  # tests: where a local daemon saves (test:///default has no directory)


def save_dir_of(uri: str) -> tuple[Path | None, str]:
    """libvirt's save directory for a URI, or None and why it is not known."""
    override = os.environ.get(ENV_SAVE_DIR)
    if override:
        return Path(override), ""
    parts = urlsplit(uri)
    driver, _, transport = parts.scheme.partition("+")
    if parts.hostname or transport not in ("", "unix"):
        return None, f"{uri} is a remote daemon: its save directory cannot be seen from here"
    if driver != "qemu":
        return None, f"no managed save directory known for the {driver or uri} driver"
    if parts.path == "/system":
        return SYSTEM_SAVE_DIR, ""
    if parts.path == "/session":
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "libvirt/qemu/save", ""
    return None, f"no managed save directory known for {uri}"


def save_dir(uri: str) -> Path | None:
    """libvirt's managed save directory for a local qemu URI (or the
    LIBVIRT_GUESTS_SAVE_DIR override); None for any other."""
    return save_dir_of(uri)[0]


def image_bytes(uri: str, name: str) -> int | None:
    """The size of the guest's managed save image, None when it cannot be
    known (a remote daemon, no image, a name that is not a plain file name)."""
    directory = save_dir(uri)
    if directory is None or not name or "/" in name or "\0" in name or name in (".", ".."):
        return None
    try:
        st = os.lstat(directory / f"{name}.save")
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def memory_bytes(guest: Guest) -> int | None:
    """The guest's memory (its definition's <memory>, as libvirt's info
    reports it), in bytes; None when libvirt cannot say."""
    try:
        return int(guest.dom.info()[1]) * 1024
    except Exception:  # noqa: BLE001 - for the history only: never costs the guest anything
        return None
