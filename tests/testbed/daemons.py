"""Start and stop the libvirt daemons (virtlogd, libvirtd) without systemd.

The test bed runs on machines where PID 1 is not systemd, so the daemons are
started by hand (``virtlogd -d``, ``libvirtd -d``) and stopped by SIGTERM via
their pid files.  Only daemons started here are ever stopped here; the names
of those are also recorded in a state file so that a shell script can
``start`` and later ``stop`` them with ``python -m tests.testbed.daemons``.

libvirtd runs under a small subreaper process (:func:`run_reaped`) so that
exited QEMUs are reaped at once, as under systemd.

Fault tests use :func:`kill_libvirtd` (SIGKILL) / :func:`start_libvirtd` or
:func:`restart_libvirtd`; QEMU guests survive a libvirtd restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

URI = "qemu:///system"
LIBVIRTD_PID = Path("/run/libvirtd.pid")
VIRTLOGD_PID = Path("/run/virtlogd.pid")
LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
DEV_KVM = Path("/dev/kvm")
STATE_FILE = Path("/run/libvirt-guests-testbed.daemons")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
POLL = 0.2

_DAEMON_PID_FILES = {"libvirtd": LIBVIRTD_PID, "virtlogd": VIRTLOGD_PID}


class DaemonError(RuntimeError):
    """A libvirt daemon could not be started or stopped."""


def _read_pid(pid_file: Path) -> int | None:
    """Return the pid stored in ``pid_file``, or None if absent/garbled."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` runs; zombies count as dead.

    PID 1 on these machines reaps orphans only every ~2 s, so a killed daemon
    lingers as a zombie that ``kill(pid, 0)`` would still report as alive.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 (state) follows the ")" closing the command name.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def daemon_pid(name: str) -> int | None:
    """Return the pid of the running daemon ``name``, or None."""
    pid = _read_pid(_DAEMON_PID_FILES[name])
    if pid is not None and pid_alive(pid):
        return pid
    return None


def _load_state() -> set[str]:
    """Return the daemon names recorded as started by the test bed."""
    try:
        return {w for w in STATE_FILE.read_text().split() if w in _DAEMON_PID_FILES}
    except OSError:
        return set()


def _save_state(names: set[str]) -> None:
    """Record which daemons the test bed started (empty: remove the file)."""
    if names:
        STATE_FILE.write_text("\n".join(sorted(names)) + "\n")
    else:
        STATE_FILE.unlink(missing_ok=True)


def _mark_started(name: str) -> None:
    """Add ``name`` to the started-daemons state."""
    _save_state(_load_state() | {name})


def libvirtd_answers(uri: str = URI) -> bool:
    """Tell whether a connection to ``uri`` can be opened right now."""
    if uri == URI and not LIBVIRT_SOCK.exists():
        return False
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def fix_dev_kvm() -> None:
    """Make /dev/kvm ``root:kvm 0660`` as udev would.

    Without it libvirtd re-probes QEMU capabilities on every domain start
    (about 3.5 s each).
    """
    if not DEV_KVM.exists():
        return
    subprocess.run(["chgrp", "kvm", str(DEV_KVM)], check=False)
    subprocess.run(["chmod", "660", str(DEV_KVM)], check=False)


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate()`` every 0.2 s until true or raise DaemonError."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise DaemonError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


# Runs a self-daemonising command under a child subreaper (see run_reaped).
_REAPER = r"""# libvirt-guests test bed: subreaper for a daemon
import ctypes, os, subprocess, sys, tempfile
r, w = os.pipe()
if os.fork():
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    rc, _, err = data.decode(errors="replace").partition("\n")
    sys.stderr.write(err)
    sys.exit(int(rc) if rc.strip().lstrip("-").isdigit() else 1)
os.close(r)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, b"lgt-reaper", 0, 0, 0)  # PR_SET_NAME
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
with tempfile.TemporaryFile() as err:
    try:
        rc = subprocess.call(sys.argv[1:], stdin=null, stdout=null, stderr=err)
    except OSError as exc:
        rc = 127
        err.write(str(exc).encode())
    err.seek(0)
    os.write(w, b"%d\n" % rc + err.read())
os.close(w)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        pass
"""


def run_reaped(argv: list[str]) -> None:
    """Run a self-daemonising ``argv`` (``libvirtd -d``) under a subreaper.

    PID 1 on these machines reaps orphans only every ~2 s, and libvirt takes
    a zombie QEMU for a live one: every destroy/shutdown then lasts ~2 s
    instead of ~0.2 s.  A small detached Python process marked
    PR_SET_CHILD_SUBREAPER adopts the daemon and the QEMUs it spawns, reaps
    them at once, and exits when none is left (as systemd would).
    ``LGT_NO_REAPER=1`` runs ``argv`` directly instead.
    """
    if os.environ.get("LGT_NO_REAPER") == "1":
        subprocess.run(argv, check=True)
        return
    proc = subprocess.run([sys.executable, "-c", _REAPER, *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DaemonError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def start_virtlogd() -> bool:
    """Start ``virtlogd -d`` unless running; return True if started."""
    if daemon_pid("virtlogd") is not None:
        return False
    subprocess.run(["virtlogd", "-d"], check=True)
    _wait_until(lambda: daemon_pid("virtlogd") is not None, START_TIMEOUT, "virtlogd")
    _mark_started("virtlogd")
    return True


def start_libvirtd(timeout: float = START_TIMEOUT) -> bool:
    """Start ``libvirtd -d`` (and virtlogd) and wait until it answers.

    Returns True if a libvirtd process was started.  A started libvirtd is
    recorded so that :func:`stop_started_daemons` stops it later.
    """
    start_virtlogd()
    started = False
    if daemon_pid("libvirtd") is None:
        fix_dev_kvm()
        run_reaped(["libvirtd", "-d"])
        _mark_started("libvirtd")
        started = True
    _wait_until(libvirtd_answers, timeout, f"libvirtd to answer on {URI}")
    return started


def ensure_libvirtd() -> bool:
    """Make ``qemu:///system`` answer; return True if anything was started."""
    if libvirtd_answers():
        return False
    started_logd = start_virtlogd()
    started_libvirtd = start_libvirtd()
    return started_logd or started_libvirtd


def _signal_and_wait(name: str, sig: int, timeout: float = STOP_TIMEOUT) -> bool:
    """Send ``sig`` to daemon ``name`` and wait for it to exit.

    Returns True if a process was signalled.
    """
    pid = daemon_pid(name)
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    _wait_until(lambda: not pid_alive(pid), timeout, f"{name} (pid {pid}) to exit")
    return True


def kill_libvirtd() -> bool:
    """SIGKILL libvirtd (a crash, for fault tests); True if one was killed."""
    return _signal_and_wait("libvirtd", signal.SIGKILL)


def stop_libvirtd() -> bool:
    """SIGTERM libvirtd and wait for exit; True if one was stopped."""
    return _signal_and_wait("libvirtd", signal.SIGTERM)


def restart_libvirtd(*, hard: bool = False) -> None:
    """Stop libvirtd (SIGKILL if ``hard`` else SIGTERM) and start it again."""
    if hard:
        kill_libvirtd()
    else:
        stop_libvirtd()
    start_libvirtd()


def stop_started_daemons() -> list[str]:
    """Stop only the daemons the test bed started: libvirtd, then virtlogd.

    Returns the names of the daemons that were stopped.
    """
    started = _load_state()
    stopped: list[str] = []
    for name in ("libvirtd", "virtlogd"):
        if name in started:
            if _signal_and_wait(name, signal.SIGTERM):
                stopped.append(name)
            started.discard(name)
            _save_state(started)
    return stopped


def status() -> dict[str, int | None]:
    """Return the pid (or None) of each daemon."""
    return {name: daemon_pid(name) for name in _DAEMON_PID_FILES}


def main(argv: list[str]) -> int:
    """Command line: ``start``, ``stop`` or ``status``."""
    if len(argv) != 1 or argv[0] not in ("start", "stop", "status"):
        print("usage: python -m tests.testbed.daemons start|stop|status", file=sys.stderr)
        return 2
    cmd = argv[0]
    # Keep libvirt's default "libvirt: error : ..." lines off the terminal.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if cmd == "start":
        started = ensure_libvirtd()
        print("started" if started else "already running")
    elif cmd == "stop":
        stopped = stop_started_daemons()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing"))
    else:
        for name, pid in status().items():
            print(f"{name}: {'running, pid ' + str(pid) if pid else 'not running'}")
        recorded = sorted(_load_state())
        print(f"started by test bed: {', '.join(recorded) if recorded else 'none'}")
        print(f"{URI}: {'answers' if libvirtd_answers() else 'does not answer'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
