"""Running our tool and Debian's original script against the real libvirtd,
with every path they use redirected into a temporary folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

from libvirt_guests.config.settings import SETTINGS

ORIGINAL = Path("/usr/lib/libvirt/libvirt-guests.sh")
SYSTEM_URI = "qemu:///system"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without any configuration variable."""
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    for name in ("LIBVIRT_DEFAULT_URI", "JOURNAL_STREAM", "NOTIFY_SOCKET", "LIBVIRT_GUESTS_DEFAULTS"):
        env.pop(name, None)
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env


def config_text(values: dict[str, str]) -> str:
    return "".join(f'{name}="{value}"\n' for name, value in values.items())


@dataclass
class Sandbox:
    """The original's file layout (/etc/default, /var/lib/libvirt, /var/lock) under root."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc/default/libvirt-guests"

    @property
    def list_file(self) -> Path:
        return self.root / "var/lib/libvirt/libvirt-guests"

    @property
    def lock_file(self) -> Path:
        return self.root / "var/lock/libvirt-guests"

    def __post_init__(self) -> None:
        for path in (self.config, self.list_file, self.lock_file):
            path.parent.mkdir(parents=True, exist_ok=True)
        self.configure()

    def configure(self, **values: str) -> None:
        raise NotImplementedError


@dataclass
class Tool(Sandbox):
    """Our libvirt-guests, as a separate process, on temporary paths."""

    @property
    def state_file(self) -> Path:
        return Path(f"{self.list_file}.state")

    def configure(self, **values: str) -> None:
        values.setdefault("URIS", SYSTEM_URI)
        self.config.write_text(config_text(values))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_env({
            "LIBVIRT_GUESTS_CONFIG": str(self.config),
            "LIBVIRT_GUESTS_LIST_FILE": str(self.list_file),
            "LIBVIRT_GUESTS_LOCK_FILE": str(self.lock_file),
            **(extra or {}),
        })

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "libvirt_guests", *args]

    def run(
        self, *args: str, timeout: float = 240, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = self.command(*args)
        return subprocess.run(command, env=self.env(env), capture_output=True, text=True, timeout=timeout, check=False)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), env=self.env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def list_lines(self) -> list[list[str]]:
        if not self.list_file.exists():
            return []
        return [line.split() for line in self.list_file.read_text().splitlines()]


@dataclass
class Original(Sandbox):
    """A copy of Debian's libvirt-guests.sh whose /etc and /var point into root: this host's (``source`` None)
    or another release's (Debian 13's reads its file from ``initconfdir="/etc/default"``, Debian 12's from
    ``$sysconfdir/default``: both are redirected, never the host's own file)."""

    source: Path | None = None

    @property
    def script(self) -> Path:
        return self.root / "libvirt-guests.sh"

    def __post_init__(self) -> None:
        text = (self.source or original_path()).read_text()
        assert 'sysconfdir="/etc"' in text and 'localstatedir="/var"' in text, "unexpected original script"
        text = text.replace('sysconfdir="/etc"', f'sysconfdir="{self.root}/etc"')
        text = text.replace('localstatedir="/var"', f'localstatedir="{self.root}/var"')
        text = text.replace('initconfdir="/etc/default"', f'initconfdir="{self.root}/etc/default"')
        assert '"/etc' not in text and "'/etc" not in text, "the copy would read a file of this host's /etc"
        self.root.mkdir(parents=True, exist_ok=True)
        self.script.write_text(text)
        self.script.chmod(0o755)
        super().__post_init__()

    def configure(self, **values: str) -> None:
        values.setdefault("URIS", "default")
        self.config.write_text(config_text(values))

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(self.script), *args], env=clean_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)


def original_path() -> Path:
    """Debian's script, also when our .deb has diverted it."""
    if shutil.which("dpkg-divert"):
        truename = subprocess.run(["dpkg-divert", "--truename", str(ORIGINAL)], capture_output=True, text=True,
                                  check=False).stdout.strip()
        if truename and Path(truename).exists():
            return Path(truename)
    return ORIGINAL


def state(conn: libvirt.virConnect, dom: libvirt.virDomain) -> str:
    """running, paused, saved (managed-save image) or off."""
    fresh = conn.lookupByUUIDString(dom.UUIDString())
    code = fresh.state()[0]
    if code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return "running"
    if code == libvirt.VIR_DOMAIN_PAUSED:
        return "paused"
    if code == libvirt.VIR_DOMAIN_SHUTOFF:
        return "saved" if fresh.hasManagedSaveImage() else "off"
    return f"state-{code}"


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    return out
