"""When the local system daemon that serves qemu:///system started (to tell
whether its qemu.conf changed since): virtqemud (modular daemons) or
libvirtd, found by its pid file, else by its name among root's processes."""

from __future__ import annotations

import os
from pathlib import Path

DAEMONS = ("virtqemud", "libvirtd")  # the modular daemon serves qemu:///system when it runs


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _is_daemon(proc: Path, pid: str) -> bool:
    comm = _read(proc / pid / "comm")
    status = _read(proc / pid / "status") or ""
    uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), None)
    return comm is not None and comm.strip() in DAEMONS and uid == "0"


def _started(proc: Path, pid: str) -> float | None:
    """A process's start, in epoch seconds: boot time plus /proc/PID/stat's starttime (clock ticks)."""
    stat = _read(proc / pid / "stat")
    boot = _read(proc / "stat")
    if stat is None or boot is None or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    btime = next((line.split()[1] for line in boot.splitlines() if line.startswith("btime ")), None)
    try:
        return int(btime or "") + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError):
        return None


def system_daemon_started(proc: Path = Path("/proc"), run: Path = Path("/run")) -> float | None:
    """When the running system daemon started (epoch seconds), or None if none runs (or it cannot be told)."""
    for name in DAEMONS:
        pid = (_read(run / f"{name}.pid") or "").strip()
        if pid.isdigit() and _is_daemon(proc, pid):
            return _started(proc, pid)
    try:
        pids = sorted((p.name for p in proc.iterdir() if p.name.isdigit()), key=int)
    except OSError:
        return None
    for name in DAEMONS:
        for pid in pids:
            if (_read(proc / pid / "comm") or "").strip() == name and _is_daemon(proc, pid):
                return _started(proc, pid)
    return None
