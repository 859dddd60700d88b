"""Building, installing and purging our .deb in tests, shared by the packaging
tests (tests/test_packaging.py, tests/test_sysv.py).

They run as root on Debian 12 with libvirt-daemon-system and the packages of
packaging/ci-packages.txt installed (``bash tests/testbed/setup.sh``).
Installing the .deb diverts /usr/lib/libvirt/libvirt-guests.sh: do not run
these tests in parallel with tests that use the original script.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

DEB_PACKAGE = "libvirt-guests-python"
ORIGINAL = Path("/usr/lib/libvirt/libvirt-guests.sh")
DIVERTED = {  # path -> where the package moves libvirt's file
    ORIGINAL: Path("/usr/lib/libvirt/libvirt-guests.sh.distrib"),
    Path("/usr/share/man/man8/libvirt-guests.8.gz"): Path("/usr/share/man/man8/libvirt-guests.distrib.8.gz"),
}
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # keeps pyenv/venv interpreters out of builds and installed tools
SERVICE_ENV = {"PATH": SYSTEM_PATH, "LC_ALL": "C"}  # roughly what a service gets: untranslated messages


def run(*args: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{shlex.join(result.args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool, path=SYSTEM_PATH) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install the packages of packaging/ci-packages.txt "
                    "(bash tests/testbed/setup.sh)")


def copy_source(dest: Path) -> Path:
    """A copy of the repository without VCS data, caches or build output."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".*cache", ".hypothesis", "build", "dist", ".venv"))
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def our_diversions() -> list[str]:
    return [line for line in run("dpkg-divert", "--list").stdout.splitlines() if line.endswith(f" {DEB_PACKAGE}")]


def purge_and_restore() -> None:
    """Remove the package whatever state a failure left it in, and undo its diversions."""
    if run("dpkg", "--purge", DEB_PACKAGE, check=False).returncode != 0:
        run("dpkg", "--purge", "--force-remove-reinstreq", DEB_PACKAGE, check=False)
    for path, diverted in DIVERTED.items():
        if not our_diversions():
            break
        if diverted.exists() and path.exists():
            path.unlink()  # our shim or man page, left behind by a failed removal
        run("dpkg-divert", "--package", DEB_PACKAGE, "--remove", "--rename", "--divert", diverted, path, check=False)


def build_deb(tmp_path: Path) -> Path:
    source = copy_source(tmp_path / "src")
    shutil.copytree(PACKAGING / "debian", source / "debian")
    run("dpkg-buildpackage", "-b", "-us", "-uc", cwd=source, env={"PATH": SYSTEM_PATH, "HOME": str(tmp_path)})
    return tmp_path / f"{DEB_PACKAGE}_{VERSION}_all.deb"
