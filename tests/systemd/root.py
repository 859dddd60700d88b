"""Build (once per release) the Debian root file systems the systemd tests boot.

One root per supported release (:data:`RELEASES`: Debian 12 "bookworm" and
Debian 13 "trixie"), cached outside the work tree in
``/var/cache/libvirt-guests-testbed/nspawn-root-RELEASE`` (``LGT_CACHE_DIR``
moves the parent), each with its own lock and stamp, rebuilt only when
missing or when :data:`ROOT_FORMAT` changes.  Each holds systemd as PID 1,
dbus, libvirt's daemons and QEMU, the dependencies of our .deb (so
installing it in a test needs no network) and what building the .deb needs
(debhelper, dh-python: the .deb is built inside the release's own root).

Built with ``debootstrap --variant=minbase`` from Debian's mirror plus, in a
chroot, the libvirt packages: with ``--include`` polkitd fails to configure.
Debian 12's debootstrap (1.0.128+nmu2+deb12u2) and debian-archive-keyring
(2023.3+deb12u2) already know trixie (a symlink to the sid script, the
trixie keys), so a Debian 12 host builds both roots with its own packages.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.testbed.images import cache_dir

#: Bump to force a rebuild when the recipe below changes.
ROOT_FORMAT = 2
#: Supported releases: suite name -> Debian version.  The first is the default root (tests/peer uses it).
RELEASES = {"bookworm": "12", "trixie": "13"}
DEFAULT_RELEASE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "libpam-systemd"]
CHROOT_PACKAGES = [
    "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86",
    # our .deb's dependencies: installed in tests with dpkg -i, offline
    "python3-libvirt", "python3-dotenv",
    # building our .deb inside the root (dpkg-buildpackage -d: no build-essential, the package is arch all)
    "dpkg-dev", "make", "debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-setuptools",
]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_CONF = """
# libvirt-guests test container: cgroups are read-only inside systemd-nspawn,
# and there is no AppArmor or SELinux.
cgroup_controllers = [ ]
security_driver = "none"
"""
# Units that only slow boot and poweroff down in a container.
MASKED = ["systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
          "man-db.timer", "e2scrub_all.timer", "fstrim.timer", "logrotate.timer", "dpkg-db-backup.timer",
          "getty@tty1.service", "console-getty.service"]


class RootBuildError(RuntimeError):
    """debootstrap or apt in the chroot failed."""


def root_dir(release: str = DEFAULT_RELEASE) -> Path:
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r} (known: {', '.join(RELEASES)})")
    return cache_dir() / f"nspawn-root-{release}"


def missing_tools() -> list[str]:
    return [t for t in ("debootstrap", "systemd-nspawn", "nsenter", "journalctl")
            if shutil.which(t, path=SYSTEM_PATH) is None]


def _run(cmd: list[str], **kw: object) -> None:
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RootBuildError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _build(dest: Path, release: str) -> None:
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", release, str(dest), MIRROR])
    policy = dest / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    for fs, where in (("proc", "proc"), ("sysfs", "sys")):
        _run(["mount", "-t", fs, fs, str(dest / where)])
    try:
        _run(["chroot", str(dest), "apt-get", "install", "-y", "--no-install-recommends", *CHROOT_PACKAGES])
        _run(["chroot", str(dest), "apt-get", "clean"])
        _run(["chroot", str(dest), "systemctl", "mask", *MASKED])
    finally:
        for where in ("sys", "proc"):
            subprocess.run(["umount", "-l", str(dest / where)], check=False)
    policy.unlink()
    with open(dest / "etc/libvirt/qemu.conf", "a") as f:
        f.write(QEMU_CONF)
    (dest / "var/log/journal").mkdir(exist_ok=True)  # persistent journal: read after poweroff
    (dest / "etc/hostname").write_text("lgt-nspawn\n")
    # one fixed id: the journal of every boot of a copy is in one directory, read from the host
    (dest / "etc/machine-id").write_text("8d1f7c6a9b5e4d3c2b1a0f9e8d7c6b5a\n")


def ensure_root(release: str = DEFAULT_RELEASE) -> Path:
    """Return the cached root of ``release``, building it if it is missing or stale (a few minutes)."""
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    root = root_dir(release)
    stamp = base / f"{root.name}.stamp"
    with open(base / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = json.loads(stamp.read_text()).get("format")
        except (OSError, ValueError):
            current = None
        if current == ROOT_FORMAT and (root / "usr/sbin/libvirtd").exists():
            return root
        tmp = base / f"{root.name}.build-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for old in (root, tmp):
            shutil.rmtree(old, ignore_errors=True)
        t0 = time.monotonic()
        try:
            _build(tmp, release)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(root)
        stamp.write_text(json.dumps({"format": ROOT_FORMAT, "release": release, "seconds": round(time.monotonic() - t0),
                                     "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    return root


if __name__ == "__main__":  # python -m tests.systemd.root [RELEASE...]: build the roots ahead of the tests
    for name in sys.argv[1:] or list(RELEASES):
        t0 = time.monotonic()
        print(ensure_root(name), f"in {time.monotonic() - t0:.0f} s")
