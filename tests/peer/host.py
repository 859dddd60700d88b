"""A peer host for migration tests: a second, independent libvirtd in a
systemd-nspawn container (the systemd tests' cached Debian 12 root, see
:mod:`tests.systemd.harness`), reachable from the host at
``qemu+tcp://127.0.0.1:<port>/system``.

What it takes (each point was needed on this machine):

* its own ``host_uuid`` in ``libvirtd.conf``: the container would read the
  host's, and libvirt refuses to migrate to a host with the same UUID;
* ``auth_tcp = "none"`` and ``libvirtd-tcp.socket`` with a drop-in
  ``ListenStream=127.0.0.1:<port>``: the container shares the host's network
  (no ``--private-network``), so the port must be free on the host;
* ``qemu.conf`` with ``cgroup_controllers = [ ]`` (the cached root has it) and
  no ``migration_address``/``migration_host`` of 127.0.0.1 (libvirtd refuses
  to start: "must not be the address of the local machine");
* the guests' kernel, initramfs and serial-log directory at the same paths
  inside (the harness copies the boot files);
* a host name the host cannot resolve (``lgt-peer``): without a data URI the
  migration stream goes to that name and fails, a ready-made fallback.

libvirtd runs without ``--timeout`` so it does not exit while idle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

from tests.systemd.harness import ENV, Container, ContainerError
from tests.testbed.guests import serial_dir

HOSTNAME = "lgt-peer"
DEFAULT_PORT = 16599
LIBVIRTD_CONF = """
# libvirt-guests migration test bed: the peer host
host_uuid = "{uuid}"
auth_tcp = "none"
"""
TCP_DROPIN = """[Socket]
ListenStream=
ListenStream=127.0.0.1:{port}
"""


def free_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` if nothing listens on 127.0.0.1 there, else a free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as systemd's listener: TIME_WAIT is no clash
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free TCP port on 127.0.0.1")


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (for 'peer unreachable' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


class PeerHost:
    """The peer: a booted container whose libvirtd answers on :attr:`uri`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.uri = f"qemu+tcp://127.0.0.1:{self.port}/system"
        self.host_uuid = str(uuidlib.uuid4())
        self.box = Container(workdir, HOSTNAME)
        try:
            self._configure()
        except BaseException:
            self.box.close()
            raise

    def _configure(self) -> None:
        box = self.box
        box.write("/etc/hostname", HOSTNAME + "\n")
        with open(box.path("/etc/libvirt/libvirtd.conf"), "a") as f:
            f.write(LIBVIRTD_CONF.format(uuid=self.host_uuid))
        box.write("/etc/default/libvirtd", 'LIBVIRTD_ARGS=""\n')
        box.write("/etc/systemd/system/libvirtd-tcp.socket.d/lgt-peer.conf", TCP_DROPIN.format(port=self.port))
        wants = box.path("/etc/systemd/system/sockets.target.wants")
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "libvirtd-tcp.socket"
        if not link.is_symlink():
            link.symlink_to("/lib/systemd/system/libvirtd-tcp.socket")
        serial = box.path(str(serial_dir()))  # the host guests' serial logs, same path inside
        serial.mkdir(parents=True, exist_ok=True)
        serial.chmod(0o755)

    def start(self, timeout: float = 180.0) -> float:
        """Boot the container and wait until libvirtd answers on :attr:`uri`; return the seconds."""
        t0 = time.monotonic()
        self.box.boot(timeout)
        self.wait_answers(timeout - (time.monotonic() - t0))
        return time.monotonic() - t0

    def wait_answers(self, timeout: float = 60.0) -> None:
        """Wait until the peer's libvirtd answers over TCP (systemd starts it on the first connection)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.virsh("-c", self.uri, "uri", check=False, local=False, timeout=30)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ContainerError(f"peer libvirtd does not answer on {self.uri}: {proc.stderr.strip()}")
            time.sleep(0.3)

    # -- inside the container -----------------------------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the peer (nsenter), as root."""
        return self.box.run(*cmd, check=check, timeout=timeout)

    def virsh(self, *args: str, check: bool = True, local: bool = True,
              timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``virsh`` against the peer's libvirtd: inside over its socket (``local``), or from the host over TCP."""
        if local:
            return self.run("virsh", "-c", "qemu:///system", *args, check=check, timeout=timeout)
        proc = subprocess.run(["virsh", *args], capture_output=True, text=True, env=ENV, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise ContainerError(f"virsh {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def domstate(self, name: str) -> str:
        """``virsh domstate --reason`` on the peer ('' if the peer does not know the guest)."""
        proc = self.virsh("domstate", "--reason", name, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def libvirtd_pid(self) -> int | None:
        """The peer's libvirtd main pid as seen inside the container (None when not running)."""
        out = self.run("systemctl", "show", "-P", "MainPID", "libvirtd.service", check=False).stdout.strip()
        return int(out) if out.isdigit() and out != "0" else None

    def kill_libvirtd(self) -> int | None:
        """SIGKILL the peer's libvirtd (a crash: its QEMUs survive, KillMode=process); return its pid."""
        pid = self.libvirtd_pid()
        if pid is not None:  # the minimal root has no kill(1); only the main process, not the QEMUs
            self.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "libvirtd.service")
        return pid

    def signal_libvirtd(self, signal: str) -> int | None:
        """Send ``signal`` (e.g. SIGSTOP, SIGCONT) to the peer's libvirtd main process; return its pid."""
        pid = self.libvirtd_pid()
        if pid is not None:
            self.run("systemctl", "kill", "--kill-whom=main", f"--signal={signal}", "libvirtd.service")
        return pid

    def remove_guests(self) -> list[str]:
        """Destroy and undefine every guest on the peer; return their names."""
        names = self.virsh("list", "--all", "--name", check=False).stdout.split()
        for name in names:
            self.virsh("destroy", name, check=False)
            self.virsh("undefine", "--managed-save", name, check=False)
        return names

    def close(self) -> None:
        """Tear the container down: its guests, every process in it, the overlay, the work directory.

        The container's init is killed from the host first: killing only
        ``systemd-nspawn`` (what the harness's ``kill`` does) leaves the
        container's systemd, libvirtd and QEMUs running, re-parented to PID 1."""
        pid1 = self.box.pid1
        with contextlib.suppress(Exception):
            if pid1 is not None:
                self.remove_guests()
        if pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)  # the kernel then kills the whole PID namespace
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid1}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.box.close()


@contextlib.contextmanager
def peer_host(workdir: Path, port: int | None = None) -> Iterator[PeerHost]:
    """A started peer, always torn down on the way out."""
    peer = PeerHost(workdir, port)
    try:
        peer.start()
        yield peer
    finally:
        peer.close()


if __name__ == "__main__":  # manual check: python -m tests.peer.host
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lgt-peer-") as tmp, peer_host(Path(tmp)) as p:
        print(p.uri, p.host_uuid)
        print(p.virsh("-c", p.uri, "sysinfo", local=False, check=False).stdout[:0] or "answers")
        print(p.virsh("-c", p.uri, "capabilities", local=False).stdout.split("<uuid>")[1].split("<")[0])
