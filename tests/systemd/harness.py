"""A Debian systemd host in a container, for end-to-end tests of the unit.

:class:`Container` boots a copy of the cached root of a release (Debian 12 or
13, :mod:`tests.systemd.root`)
with ``systemd-nspawn -b --register=no --keep-unit`` (no systemd as PID 1 is
needed on this side), runs commands inside by entering the namespaces of the
container's systemd with ``nsenter``, powers it off with ``systemctl
poweroff`` and boots it again.  Each container runs on an overlay of the
cached root, so every session starts from a clean root, and the overlay's
upper layer is what survives a poweroff (guests' save images, the list file,
the persistent journal).

Guests are the test bed's tiny TCG guests (kernel + busybox initramfs, see
:mod:`tests.testbed.images`), copied into the container at the same path;
their serial logs are in the container's ``/var/log/lgt``.

The container has its own libvirtd: nothing here touches the host's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.systemd.root import DEFAULT_RELEASE, SYSTEM_PATH, ensure_root
from tests.testbed.guests import domain_xml
from tests.testbed.images import Images, ensure_images

REPO = Path(__file__).resolve().parents[2]
SERIAL_DIR = "/var/log/lgt"
GUEST_PREFIX = "lgt-sd-"
ENV = {"PATH": SYSTEM_PATH, "LC_ALL": "C", "HOME": "/root", "TERM": "dumb", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}


class ContainerError(RuntimeError):
    """The container did not boot, answer or power off as expected."""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Container:
    """One systemd host on an overlay of the cached root, booted on demand."""

    def __init__(self, workdir: Path, name: str = "lgt", release: str = DEFAULT_RELEASE) -> None:
        self.workdir = workdir
        self.name = name
        self.release = release
        self.root = ensure_root(release)
        self.images: Images = ensure_images()
        self.merged = workdir / "merged"
        self.boots = 0
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        for sub in ("upper", "work", "merged"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.root},upperdir={workdir / 'upper'},workdir={workdir / 'work'}",
                        str(self.merged)], check=True)
        self._mounted = True
        for image in (self.images.kernel, self.images.initrd):  # the guests' boot files, same path inside
            dest = self.path(str(image))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, dest)
        self.path(SERIAL_DIR).mkdir(parents=True, exist_ok=True)

    # -- files ------------------------------------------------------------------------------------------------

    def path(self, inside: str) -> Path:
        """The host path of a path inside the container."""
        return self.merged / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        dest = self.path(inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)

    # -- life cycle -------------------------------------------------------------------------------------------

    def boot(self, timeout: float = 180.0) -> float:
        """Boot; return the seconds until systemd says the system is up (running or degraded)."""
        if self.nspawn is not None:
            raise ContainerError("already booted")
        self.boots += 1
        t0 = time.monotonic()
        with open(self.workdir / f"console-{self.boots}.log", "wb") as console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "-q", "-b", "--register=no", "--keep-unit", f"--machine={self.name}",
                 "-D", str(self.merged)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={**ENV, "SYSTEMD_NSPAWN_TMPFS_TMP": "1"}, start_new_session=True)
        deadline = t0 + timeout
        while self.pid1 is None:
            if self.nspawn.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self.nspawn.returncode}: {self.console()[-2000:]}")
            if time.monotonic() > deadline:
                raise ContainerError("no systemd in the container")
            for child in _children(self.nspawn.pid):
                if _comm(child) == "systemd":
                    self.pid1 = child
            time.sleep(0.1)
        while True:
            state = self.run("systemctl", "is-system-running", check=False, timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise ContainerError(f"system state {state!r} after {timeout:.0f} s:\n"
                                     + self.run("systemctl", "list-jobs", check=False).stdout)
            time.sleep(0.2)

    def poweroff(self, timeout: float = 600.0) -> float:
        """``systemctl poweroff``; return the seconds until the container has halted."""
        assert self.nspawn is not None
        t0 = time.monotonic()
        self.run("systemctl", "--no-block", "poweroff")
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ContainerError(f"no halt within {timeout:.0f} s") from None
        finally:
            self.nspawn, self.pid1 = None, None
        return time.monotonic() - t0

    def kill(self) -> None:
        """End the container whatever state it is in. The container's own
        init is not in nspawn's process group: killing only nspawn leaves it
        (with libvirtd and its QEMUs) running, adopted by the host's PID 1.
        SIGKILL to a PID namespace's init ends everything in it."""
        if self.pid1 is not None and _comm(self.pid1) == "systemd":  # not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        if self.nspawn is not None and self.nspawn.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(30)
        self.nspawn, self.pid1 = None, None

    def close(self) -> None:
        self.kill()
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.merged)], check=False)
            self._mounted = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def console(self) -> str:
        return (self.workdir / f"console-{self.boots}.log").read_text(errors="replace")

    # -- commands ---------------------------------------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True, input: str | None = None,  # noqa: A002
            timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the booted container, as root."""
        if self.pid1 is None:
            raise ContainerError("not booted")
        full = ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", *cmd]
        proc = subprocess.run(full, capture_output=True, text=True, input=input, env=ENV, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise ContainerError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check, timeout=timeout)

    def journal(self, *args: str) -> list[dict[str, str]]:
        """Journal entries (JSON) of all boots so far, read from the host: works powered off too."""
        proc = subprocess.run(["journalctl", "-D", str(self.path("/var/log/journal")), "-o", "json",
                               "--no-pager", *args], capture_output=True, text=True, env=ENV, check=False)
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    # -- packages and configuration ---------------------------------------------------------------------------

    def install_deb(self, deb: Path) -> None:
        """``dpkg -i`` our .deb (its dependencies are in the root already)."""
        self.write(f"/root/{deb.name}", "")
        shutil.copy2(deb, self.path(f"/root/{deb.name}"))
        self.run("dpkg", "-i", f"/root/{deb.name}")

    def install_unit(self, unit: Path) -> None:
        """Put our own unit file in /etc/systemd/system (it shadows Debian's) and reload."""
        self.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
        self.run("systemctl", "daemon-reload")

    def configure(self, **values: str) -> None:
        """Write /etc/default/libvirt-guests with these variables."""
        self.write("/etc/default/libvirt-guests",
                   "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))

    # -- guests -----------------------------------------------------------------------------------------------

    def define_guests(self, count: int, *, memory_mib: int = 128, dirty_mib: int = 0, mode: str = "normal",
                      prefix: str = GUEST_PREFIX, start: bool = True, slow_seconds: int = 5) -> list[str]:
        """Define (and start) ``count`` test-bed guests in the container's qemu:///system (``slow_seconds``:
        how long a ``slow`` guest takes to power off after the ACPI button)."""
        names = [f"{prefix}{i}" for i in range(1, count + 1)]
        for name in names:
            xml = domain_xml(name, mode=mode, memory_mib=memory_mib, dirty_mib=dirty_mib, images=self.images,
                             slow_seconds=slow_seconds)
            xml = xml.replace(str(self.images.cache_dir / "serial"), SERIAL_DIR)
            xml = xml.replace("<domain type='kvm'>", "<domain type='qemu'>")  # no KVM inside
            self.write(f"/root/{name}.xml", xml)
            self.run("virsh", "-q", "define", f"/root/{name}.xml")
            if start:
                self.run("virsh", "-q", "start", name)
        return names

    def wait_ready(self, names: list[str], timeout: float = 300.0) -> None:
        """Wait until every guest printed LGT-READY on its serial port."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in list(pending):
                log = self.path(f"{SERIAL_DIR}/{name}.log")
                text = log.read_text(errors="replace") if log.exists() else ""
                if "LGT-FAILED" in text:
                    raise ContainerError(f"{name}: {text[-500:]}")
                if "LGT-READY" in text:
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise ContainerError(f"not ready after {timeout:.0f} s: {sorted(pending)}")
            time.sleep(0.5)

    def domstates(self, names: list[str]) -> dict[str, str]:
        """``virsh domstate --reason`` of each guest."""
        return {n: self.run("virsh", "domstate", "--reason", n, check=False).stdout.strip() for n in names}

    def wait_states(self, names: list[str], want: str, timeout: float = 300.0) -> tuple[dict[str, str], float]:
        """Poll until every guest's ``domstate --reason`` is ``want``; return the states and the seconds waited."""
        t0 = time.monotonic()
        while True:
            states = self.domstates(names)
            if all(s == want for s in states.values()) or time.monotonic() - t0 > timeout:
                return states, time.monotonic() - t0
            time.sleep(0.5)


@contextlib.contextmanager
def container(workdir: Path, name: str = "lgt", release: str = DEFAULT_RELEASE) -> Iterator[Container]:
    box = Container(workdir, name, release)
    try:
        yield box
    finally:
        box.close()


# -- the .deb -------------------------------------------------------------------------------------------------

DEB_PACKAGE = "libvirt-guests-python"


def build_deb(dest: Path, release: str = DEFAULT_RELEASE, prepare: Callable[[Path], None] | None = None) -> Path:
    """Build our .deb from the work tree into ``dest``, inside ``release``'s own root.

    The root is used read-only (``systemd-nspawn --read-only``, no boot); only
    ``dest`` is bound in, writable: the sources are copied to ``dest/src`` as
    tests/test_packaging.py does (``prepare``, if given, may then change that
    copy), and dpkg-buildpackage leaves the .deb in ``dest``.  ``-d``: the root
    has the build dependencies but not build-essential (a C compiler), which an
    arch-all package does not use.
    """
    source = dest / "src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".*cache", ".hypothesis", "build", "dist", ".venv"))
    shutil.copytree(REPO / "packaging" / "debian", source / "debian")
    if prepare is not None:
        prepare(source)
    proc = subprocess.run(
        ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--read-only", "--as-pid2", "--resolv-conf=off",
         "--timezone=off", "--link-journal=no", "-D", str(ensure_root(release)), f"--bind={dest}:/mnt",
         "--chdir=/mnt/src", "--setenv=HOME=/mnt", "--setenv=LC_ALL=C.UTF-8",
         "dpkg-buildpackage", "-b", "-us", "-uc", "-d"],
        capture_output=True, text=True, env={"PATH": SYSTEM_PATH, "HOME": str(dest), "LC_ALL": "C"}, check=False)
    if proc.returncode != 0:
        raise ContainerError(f"dpkg-buildpackage in the {release} root exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (deb,) = dest.glob(f"{DEB_PACKAGE}_*_all.deb")
    return deb


# -- what the journal says about a poweroff -------------------------------------------------------------------


def unit_events(entries: list[dict[str, str]], boot: str | None = None) -> list[tuple[float, str, str]]:
    """(seconds, unit, message) of systemd's own lines about units, in order."""
    out = []
    for e in entries:
        if boot and e.get("_BOOT_ID") != boot:
            continue
        unit = e.get("UNIT")
        if unit and e.get("_PID") == "1":
            out.append((int(e["__REALTIME_TIMESTAMP"]) / 1e6, unit, e.get("MESSAGE", "")))
    return out


def service_lines(entries: list[dict[str, str]], unit: str = "libvirt-guests.service",
                  boot: str | None = None) -> list[tuple[float, int, str]]:
    """(seconds, priority, message) of a service's own output lines."""
    out = []
    for e in entries:
        if boot and e.get("_BOOT_ID") != boot:
            continue
        if e.get("_SYSTEMD_UNIT") == unit and e.get("_PID") != "1":
            msg = e.get("MESSAGE", "")
            if isinstance(msg, list):  # non-UTF-8 lines come as bytes
                msg = bytes(msg).decode(errors="replace")
            out.append((int(e["__REALTIME_TIMESTAMP"]) / 1e6, int(e.get("PRIORITY", 6)), msg))
    return out


def boot_ids(entries: list[dict[str, str]]) -> list[str]:
    seen: list[str] = []
    for e in entries:
        if e.get("_BOOT_ID") and e["_BOOT_ID"] not in seen:
            seen.append(e["_BOOT_ID"])
    return seen
