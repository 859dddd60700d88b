"""The Debian postrm (issue 10, fault 15): purge removes the journal, its run
lock and what runs left behind; remove and purge keep a list file that still
names guests, say why it matters (the original's stop is a no-op while it
exists) and give one command that starts those guests and removes it.

Runs the script itself with /bin/sh, its files in a temporary folder and
stand-ins for dpkg-divert and virsh: nothing of the host is touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

POSTRM = Path(__file__).resolve().parents[1] / "packaging" / "debian" / "postrm"
U1, U2, U3 = ("6695eb01-f6a4-8304-79aa-97f2502e193f", "7288a24a-080c-4765-b8a1-f5ae3e5d39a7",
              "80f5b428-43b2-480e-9b97-8849ff469b45")


@pytest.fixture
def bed(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("dpkg-divert", "virsh"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        stub.chmod(0o755)
    state = tmp_path / "lib"
    state.mkdir()
    return {"bin": bin_dir, "calls": calls, "list": state / "libvirt-guests", "state": state / "libvirt-guests.state"}


def _postrm(bed: dict[str, Path], action: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bed['bin']}:/usr/sbin:/usr/bin:/sbin:/bin", "LIBVIRT_GUESTS_LIST_FILE": str(bed["list"])}
    return subprocess.run(["/bin/sh", str(POSTRM), action], env=env, capture_output=True, text=True, check=False,
                          timeout=60)


def _calls(bed: dict[str, Path]) -> list[str]:
    return bed["calls"].read_text().splitlines() if bed["calls"].exists() else []


def _leftovers(bed: dict[str, Path]) -> list[Path]:
    state = bed["state"]
    made = [state, Path(f"{state}.lock"), Path(f"{state}.damaged-20260101T000000"),
            Path(f"{state}.untrusted-20260101T000000"), state.parent / f".{state.name}.4242.0badf00d",
            state.parent / f".{bed['list'].name}.77.deadbeef", Path(f"{state}.log"),
            Path(f"{state}.log.damaged-20260101T000000"), Path(f"{state}.log.untrusted-20260101T000000")]
    for path in made:
        path.write_text("x")
    return made


def test_purge_removes_the_journal_and_its_company(bed: dict[str, Path]) -> None:
    made = _leftovers(bed)
    other = bed["list"].parent / "unrelated"
    other.write_text("keep")
    result = _postrm(bed, "purge")
    assert result.returncode == 0, result
    assert [p.name for p in made if p.exists()] == []
    assert other.exists()
    assert result.stderr == ""  # no list file: nothing to say


def test_purge_keeps_the_list_and_gives_the_command_that_starts_its_guests(bed: dict[str, Path]) -> None:
    _leftovers(bed)
    bed["list"].write_text(f"default {U1}\nqemu:///system {U2} {U3}\n")
    result = _postrm(bed, "purge")
    assert result.returncode == 0, result
    assert bed["list"].exists() and not bed["state"].exists()
    assert f"{bed['list']} is kept" in result.stderr
    assert "does nothing when the host shuts down" in result.stderr
    command = result.stderr.strip().splitlines()[-1].strip()
    assert command.startswith("virsh start ")
    done = subprocess.run(["/bin/sh", "-c", command], env={**os.environ, "PATH": f"{bed['bin']}:/usr/bin:/bin"},
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done
    assert _calls(bed) == [f"virsh start {U1}", f"virsh -c qemu:///system start {U2}",
                           f"virsh -c qemu:///system start {U3}"]
    assert not bed["list"].exists()


def test_remove_undiverts_keeps_state_and_tells_about_the_list(bed: dict[str, Path]) -> None:
    made = _leftovers(bed)
    bed["list"].write_text(f"qemu:///system {U2}\n")
    result = _postrm(bed, "remove")
    assert result.returncode == 0, result
    assert [c.split()[:3] for c in _calls(bed)] == [["dpkg-divert", "--package", "libvirt-guests-python"]] * 2
    assert all(p.exists() for p in made)  # remove is not purge
    assert bed["list"].exists()
    assert f"virsh -c 'qemu:///system' start {U2} && rm -f '{bed['list']}'" in result.stderr


def test_junk_in_the_list_never_reaches_the_command(bed: dict[str, Path]) -> None:
    bed["list"].write_text(f"qemu:///system $(reboot) {U1} ;rm\n")
    result = _postrm(bed, "purge")
    assert result.returncode == 0, result
    command = result.stderr.strip().splitlines()[-1]
    assert "reboot" not in command and ";rm" not in command and U1 in command
