"""The SysV path on this machine (no systemd as PID 1): Debian's
/etc/init.d/libvirt-guests (package libvirt-daemon-system-sysv) with our .deb
installed runs ours, which saves and restores real guests.

Debian's init script only execs /usr/lib/libvirt/libvirt-guests.sh, the path
our .deb diverts and fills with its shim.  The script and the tool use the
host's real files (/etc/default/libvirt-guests, the list file in
/var/lib/libvirt, the lock in /var/lock): the test renames whatever is there
out of the way, writes the configuration it needs, and renames everything
back at the end, pass or fail.  A `stop` acts on every guest of
qemu:///system: run it under `flock /tmp/realguest.lock` like the other
real-guest tests; it refuses to run beside guests that are not its own.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.packaging_support import (
    DEB_PACKAGE,
    DIVERTED,
    ORIGINAL,
    SERVICE_ENV,
    build_deb,
    need,
    our_diversions,
    purge_and_restore,
    run,
    sha256,
)
from tests.testbed.daemons import URI

pytestmark = pytest.mark.packaging

SYSV_PACKAGE = "libvirt-daemon-system-sysv"
INIT_SCRIPT = Path("/etc/init.d/libvirt-guests")
CONFIG = Path("/etc/default/libvirt-guests")
LIST_FILE = Path("/var/lib/libvirt/libvirt-guests")
LOCK_FILE = Path("/var/lock/libvirt-guests")
# Every file Debian's script or ours may read or write with their built-in paths.
HOST_FILES = (
    CONFIG,
    Path("/etc/sysconfig/libvirt-guests"),  # ours would read it first
    LIST_FILE,
    Path(f"{LIST_FILE}.state"),
    Path(f"{LIST_FILE}.state.lock"),
    LOCK_FILE,
    Path("/var/lock/subsys/libvirt-guests"),
)
ASIDE = ".lgt-sysv-aside"
TEST_CONFIG = f"URIS={URI}\nON_BOOT=start\nON_SHUTDOWN=suspend\n"


def aside(path: Path) -> Path:
    return path.with_name(path.name + ASIDE)


def identity(path: Path) -> tuple[object, ...] | None:
    """What must be the same after the test: content, inode, owner, mode, times (None: absent)."""
    if not path.exists():
        return None
    st = path.stat()
    return sha256(path), st.st_ino, st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns


@contextlib.contextmanager
def host_files_aside() -> Iterator[None]:
    """Rename the host's libvirt-guests files out of the way; rename them back afterwards, pass or fail.

    A run killed in between leaves them next to their place as NAME.lgt-sysv-aside; the next run
    refuses to start until they are put back by hand."""
    left = [str(aside(p)) for p in HOST_FILES if aside(p).exists()]
    if left:
        pytest.fail(f"an interrupted run left the host's files aside: put back {', '.join(left)} "
                    f"(remove the {ASIDE} suffix) first", pytrace=False)
    moved: list[Path] = []
    try:
        for path in HOST_FILES:
            if path.exists():
                path.rename(aside(path))
                moved.append(path)
        yield
    finally:
        for path in HOST_FILES:
            if path in moved:
                os.replace(aside(path), path)
            else:
                path.unlink(missing_ok=True)


def init_script(command: str) -> tuple[str, int]:
    """stdout and exit code of `/etc/init.d/libvirt-guests COMMAND`, run as a SysV rc would."""
    result = run(INIT_SCRIPT, command, check=False, env=SERVICE_ENV)
    assert result.stderr == "", f"{command}: {result.stderr}"
    return result.stdout, result.returncode


def original_status() -> tuple[str, int]:
    """Debian's own answer to `status` from the same files (its script, moved aside by our .deb)."""
    result = run(DIVERTED[ORIGINAL], "status", check=False, env=SERVICE_ENV)
    return result.stdout, result.returncode


def guest_state(conn: libvirt.virConnect, dom: libvirt.virDomain) -> tuple[int, int, bool]:
    """(state, reason, has a managed save image) of a guest, looked up afresh."""
    fresh = conn.lookupByUUIDString(dom.UUIDString())
    state, reason = fresh.state()
    return state, reason, bool(fresh.hasManagedSaveImage())


def test_init_script_runs_ours_and_saves_and_restores_real_guests(tmp_path: Path, guests, system_conn) -> None:
    need("dpkg-buildpackage", "dh", "dpkg-divert")
    assert os.geteuid() == 0, "installing the .deb needs root"
    status = run("dpkg-query", "-W", "-f=${db:Status-Status}", SYSV_PACKAGE, check=False).stdout
    if status != "installed":
        pytest.fail(f"{SYSV_PACKAGE} is not installed: apt-get install {SYSV_PACKAGE} "
                    "(packaging/ci-packages.txt)", pytrace=False)
    assert re.search(rf"^exec {re.escape(str(ORIGINAL))} \"\$@\"$", INIT_SCRIPT.read_text(), re.M), \
        "Debian's init script no longer execs the script our .deb diverts"
    assert not our_diversions()
    assert not Path("/usr/bin/libvirt-guests").exists(), "/usr/bin/libvirt-guests would be overwritten"
    scripts_before = {path: sha256(path) for path in (INIT_SCRIPT, ORIGINAL)}
    host_before = {path: identity(path) for path in HOST_FILES}
    deb = build_deb(tmp_path)

    doms = guests.create(2)
    running = {d.name() for d in system_conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
    if running != {d.name() for d in doms}:
        pytest.fail(f"other guests run on {URI} ({', '.join(sorted(running - {d.name() for d in doms}))}): "
                    "the init script's stop would save them too", pytrace=False)

    with host_files_aside():
        CONFIG.write_text(TEST_CONFIG)
        CONFIG.chmod(0o644)
        try:
            run("dpkg", "-i", deb)
            assert sha256(INIT_SCRIPT) == scripts_before[INIT_SCRIPT]  # Debian's script, untouched
            assert sha256(DIVERTED[ORIGINAL]) == scripts_before[ORIGINAL]

            # boot: nothing saved yet, so start only marks the service started
            assert init_script("start") == ("", 0)
            assert init_script("status") == original_status() == ("started\n", 0)

            # shutdown
            out, code = init_script("stop")
            assert code == 0, out
            summary = re.search(r"^libvirt-guests stop: 2 guests in [\d.]+ s: 2 saved, 0 shut down, .*", out, re.M)
            assert summary, out
            print(summary.group())  # the figure README quotes (pytest -rP shows it)
            for dom in doms:
                assert f"Suspending {dom.name()}: done\n" in out
                assert guest_state(system_conn, dom) == (libvirt.VIR_DOMAIN_SHUTOFF,
                                                         libvirt.VIR_DOMAIN_SHUTOFF_SAVED, True)
            uri, *uuids = LIST_FILE.read_text().split()
            assert (uri, sorted(uuids)) == (URI, sorted(d.UUIDString() for d in doms))
            assert not LOCK_FILE.exists()
            # the original's line and exit code, then (documented in README) the guests still to be started
            out, code = init_script("status")
            first, *pending = out.splitlines()
            assert (f"{first}\n", code) == original_status() == ("stopped, with saved guests\n", 3)
            assert sorted(pending) == sorted(f"  {d.name()} on {URI}: saved" for d in doms)

            # next boot
            out, code = init_script("start")
            assert code == 0, out
            summary = re.search(r"^libvirt-guests start: 2 guests in [\d.]+ s: 2 restored, 0 booted, 0 already "
                                r"active, .*", out, re.M)
            assert summary, out
            print(summary.group())
            for dom in doms:
                assert f"Resuming guest {dom.name()}: done\n" in out
                assert guest_state(system_conn, dom) == (libvirt.VIR_DOMAIN_RUNNING,
                                                         libvirt.VIR_DOMAIN_RUNNING_RESTORED, False)
            assert not LIST_FILE.exists()
            assert init_script("status") == original_status() == ("started\n", 0)

            run("dpkg", "--purge", DEB_PACKAGE)  # its own postrm must give the original back
        finally:
            purge_and_restore()

        assert not our_diversions()
        assert not Path("/usr/bin/libvirt-guests").exists()
        assert {path: sha256(path) for path in scripts_before} == scripts_before
        # the init script runs Debian's script again (the sha256 above), on the same files
        assert init_script("status") == ("started\n", 0)

    assert {path: identity(path) for path in HOST_FILES} == host_before
