"""Output: translations through the libvirt text domain, syslog priority
prefixes under the journal, sd_notify datagrams."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .support import Driver, Files

DE_CATALOG = Path("/usr/share/locale/de/LC_MESSAGES/libvirt.mo")


def _tool(args: list[str], env: dict[str, str], stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "libvirt_guests", *args], env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, check=False)


@pytest.mark.skipif(not DE_CATALOG.exists(), reason="needs Debian's libvirt-l10n (CI installs it)")
def test_messages_use_the_shipped_libvirt_translations(files: Files) -> None:
    env = {**os.environ, "LANGUAGE": "de", "LANG": "de_DE.UTF-8"}
    env.pop("LC_ALL", None)
    result = _tool(["status"], env)
    assert result.returncode == 3
    assert result.stdout == "angehalten, ohne gespeicherte Gäste\n"
    usage = _tool(["bogus"], env)
    assert usage.stdout.startswith("Verwendung: ")


def test_syslog_priority_prefixes_under_the_journal(files: Files, tmp_path: Path) -> None:
    files.config.write_text("URIS='qemu+unix:///system?socket=/nonexistent'\nBOGUS_VARIABLE=1\n")
    out_path = tmp_path / "out"
    with out_path.open("w") as out:
        st = os.fstat(out.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        result = subprocess.run([sys.executable, "-m", "libvirt_guests", "stop"], env=env, stdout=out,
                                stderr=subprocess.PIPE, text=True, check=False)
    lines = out_path.read_text().splitlines()
    assert result.returncode == 0
    assert "<4>Can't connect to qemu+unix:///system?socket=/nonexistent. Skipping." in lines
    assert all(line[:3] in ("<6>", "<4>", "<3>") for line in lines)
    assert not result.stderr.startswith("<")  # stderr is not the journal stream here: no prefix


def test_sd_notify_status_and_extend_timeout(files: Files, driver: Driver, tmp_path: Path, run,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sock_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        driver.guest()
        assert run("stop").code == 0
        message = sock.recv(4096).decode()
    assert "STATUS=Stopping guests: " in message
    assert "EXTEND_TIMEOUT_USEC=" in message
