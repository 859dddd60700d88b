"""NUT's real upsd and dummy-ups driver on a private port and configuration
directory, for the UPS tests (no systemd, nothing of the machine's own NUT
touched). The driver serves ups.status and battery.runtime from a file that
the test rewrites; set() waits until upsd answers with the new values."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

NUT_DIRS = (Path("/lib/nut"), Path("/usr/lib/nut"))
UPS = "dummy"


def nut_binary(name: str) -> Path | None:
    return next((d / name for d in NUT_DIRS if (d / name).exists()), None)


def available() -> bool:
    return nut_binary("upsd") is not None and nut_binary("dummy-ups") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(port: int, question: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(question.encode() + b"\n")
        return sock.recv(4096).decode().strip()


class NutServer:
    """upsd + dummy-ups in a directory of their own; stop() ends exactly the
    two processes it started."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.dev = directory / "dummy.dev"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._mtime = time.time()

    @property
    def ups(self) -> str:
        return f"{UPS}@127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        d = str(self.dir)
        return {**os.environ, "NUT_CONFPATH": d, "NUT_STATEPATH": d, "NUT_ALTPIDPATH": d}

    def _write(self, status: str, runtime: str | None) -> None:
        lines = [f"ups.status: {status}"] + ([f"battery.runtime: {runtime}"] if runtime is not None else [])
        self.dev.write_text("\n".join(lines) + "\n")
        # dummy-ups re-reads the file when its mtime (in whole seconds) changes
        self._mtime += 10
        os.utime(self.dev, (self._mtime, self._mtime))

    def start(self, status: str = "OL", runtime: str | None = "1200") -> NutServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ups.conf").write_text(f"[{UPS}]\n  driver = dummy-ups\n  port = {self.dev}\n  desc = \"test\"\n")
        (self.dir / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {self.port}\n")
        (self.dir / "upsd.users").write_text("")
        for name in ("ups.conf", "upsd.conf", "upsd.users"):
            (self.dir / name).chmod(0o600)
        self._write(status, runtime)
        user = ["-u", "root"] if os.geteuid() == 0 else []
        log = (self.dir / "nut.log").open("ab")
        driver, upsd = nut_binary("dummy-ups"), nut_binary("upsd")
        assert driver and upsd
        self.procs.append(subprocess.Popen([str(driver), "-a", UPS, "-F", "-i", "1", *user], env=self._env(),
                                           stdout=log, stderr=log, start_new_session=True))
        for _ in range(50):  # the driver's socket, before upsd looks for it
            if any(p.name.startswith(f"dummy-ups-{UPS}") for p in self.dir.iterdir()):
                break
            time.sleep(0.1)
        self.procs.append(subprocess.Popen([str(upsd), "-F", *user], env=self._env(), stdout=log, stderr=log,
                                           start_new_session=True))
        self.wait_for(status, runtime)
        return self

    def set(self, status: str, runtime: str | None) -> None:
        self._write(status, runtime)
        self.wait_for(status, runtime)

    def wait_for(self, status: str, runtime: str | None) -> None:
        want = f'VAR {UPS} ups.status "{status}"'
        want_runtime = f'VAR {UPS} battery.runtime "{runtime}"' if runtime is not None else "ERR VAR-NOT-SUPPORTED"
        seen = ""
        for _ in range(100):
            try:
                seen = ask(self.port, f"GET VAR {UPS} ups.status")
                if seen == want and ask(self.port, f"GET VAR {UPS} battery.runtime") == want_runtime:
                    return
            except OSError as err:
                seen = str(err)
            time.sleep(0.1)
        log = (self.dir / "nut.log").read_text(errors="replace")
        raise AssertionError(f"upsd did not serve {status}/{runtime} (last: {seen!r}); log:\n{log}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session, started above
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.procs.clear()
