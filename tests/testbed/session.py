"""A second, independent libvirt URI for tests: a session-mode libvirtd run
as an unprivileged user. Root reaches it through its socket, so URIS can name
two daemons with guests of their own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import libvirt

USER = "lgtsession"
HOME = Path("/var/tmp/lgtsession")
RUNTIME = HOME / "run"
SOCKET = RUNTIME / "libvirt" / "libvirt-sock"
URI = f"qemu+unix:///session?socket={SOCKET}"


def _answers() -> bool:
    try:
        libvirt.open(URI).close()
        return True
    except libvirt.libvirtError:
        return False


def ensure_session_daemon(timeout: float = 30) -> str:
    """Create the user if needed, start its session libvirtd; return the URI."""
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        groups = ["-G", "kvm"] if subprocess.run(["getent", "group", "kvm"], capture_output=True,
                                                 check=False).returncode == 0 else []
        subprocess.run(["useradd", "-r", "-m", "-d", str(HOME), "-s", "/usr/sbin/nologin", *groups, USER],
                       check=True, capture_output=True)
    RUNTIME.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{USER}:", str(HOME)], check=True)
    RUNTIME.chmod(0o700)
    if not _answers():
        subprocess.run(["runuser", "-u", USER, "--", "env", f"HOME={HOME}", f"XDG_RUNTIME_DIR={RUNTIME}",
                        "libvirtd", "-d", "--timeout", "0"], check=True)
        end = time.monotonic() + timeout
        while not _answers():
            if time.monotonic() > end:
                raise RuntimeError(f"session libvirtd of {USER} does not answer on {SOCKET}")
            time.sleep(0.2)
    return URI


def stop_session_daemon() -> None:
    """Stop the session daemon, then remove its user and home: the test bed leaves nothing behind."""
    try:
        pid: int | None = int((RUNTIME / "libvirt" / "libvirtd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pid = None
    end = time.monotonic() + 15
    while pid is not None and time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)


def session_xml(xml: str, name: str) -> str:
    """A test-bed domain XML with its serial log where the session user may write."""
    return re.sub(r"(<source path=')[^']*(')", rf"\g<1>{HOME}/{name}.log\g<2>", xml)


def serial_log(name: str) -> Path:
    return HOME / f"{name}.log"
