"""One reference script (issue 21): Debian 13's libvirt-guests.sh is Debian
12's plus PERSISTENT_ONLY and the messages for shutting down transient guests.
Ours follows Debian 13's on both releases: here its script (copied from the
cached Debian 13 root, tests/systemd/root.py) and ours run side by side on
this host's libvirt (Debian 12's 9.0 in CI), on a persistent and a transient
guest each, and must leave the same guests in the same states, record the
same ones, and print the same line about the transient guest.

The sandbox (support.Original) redirects Debian 13's ``initconfdir`` too:
without that, its copy would read this host's /etc/default/libvirt-guests.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import libvirt
import pytest

from tests.systemd.root import root_dir

from .support import SYSTEM_URI, Original, Tool, state

DEBIAN13_SCRIPT = root_dir("trixie") / "usr/lib/libvirt/libvirt-guests.sh"
CASES = [("suspend", "default"), ("suspend", "false"), ("shutdown", "default"), ("shutdown", "true")]


@pytest.fixture
def debian13(tmp_path: Path) -> Original:
    if not DEBIAN13_SCRIPT.exists():
        pytest.skip("no Debian 13 root: python -m tests.systemd.root trixie builds it")
    return Original(tmp_path / "debian13", source=DEBIAN13_SCRIPT)


def test_the_sandbox_never_reads_the_hosts_files(debian13: Original, tmp_path: Path) -> None:
    text = debian13.script.read_text()
    assert f'initconfdir="{debian13.root}/etc/default"' in text
    debian13.configure(URIS="test:///default", ON_BOOT="ignore")
    debian13.list_file.write_text("test:///default 00000000-0000-0000-0000-000000000001\n")
    result = debian13.run("start")  # reads the sandbox's file: ON_BOOT=ignore says so
    assert "configured not to start any guests on boot" in result.stdout, result


def _outcome(runner: Original | Tool, guests, system_conn, on_shutdown: str, persistent_only: str) -> dict:
    (persistent,) = guests.create(1)
    (transient,) = guests.create(1, transient=True)
    runner.configure(URIS=SYSTEM_URI, ON_SHUTDOWN=on_shutdown, PERSISTENT_ONLY=persistent_only,
                     SHUTDOWN_TIMEOUT="60")
    result = runner.run("stop")
    roles = {persistent.name(): "P", transient.name(): "T"}
    lines = [re.sub("|".join(map(re.escape, roles)), lambda m: roles[m.group(0)], line)
             for line in result.stdout.splitlines() if "transient" in line]
    listed = runner.list_file.read_text().split() if runner.list_file.exists() else []
    alive = transient.isActive() if _exists(system_conn, transient) else False
    outcome = {"persistent": state(system_conn, persistent), "transient": "running" if alive else "gone",
               "recorded": sorted(r for d, r in ((persistent, "P"), (transient, "T")) if d.UUIDString() in listed),
               "lines": lines}
    for dom in (transient, persistent):  # the next run sees only its own guests
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        persistent.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    return outcome


def _exists(conn, dom) -> bool:
    try:
        conn.lookupByUUIDString(dom.UUIDString())
        return True
    except libvirt.libvirtError:
        return False


@pytest.mark.parametrize(("on_shutdown", "persistent_only"), CASES)
def test_persistent_only_and_the_transient_messages_follow_debian13(
    debian13: Original, tool: Tool, guests, system_conn, on_shutdown: str, persistent_only: str
) -> None:
    theirs = _outcome(debian13, guests, system_conn, on_shutdown, persistent_only)
    ours = _outcome(tool, guests, system_conn, on_shutdown, persistent_only)
    print(f"{on_shutdown}/{persistent_only}: Debian 13 {theirs}, ours {ours}")
    assert ours["persistent"] == theirs["persistent"]
    # A deliberate difference (README): we never record a transient guest (it cannot be started again once
    # off); Debian 13 lists it when it handles it (PERSISTENT_ONLY false), and its start cannot find it.
    handled = persistent_only == "false" or (persistent_only == "default" and on_shutdown == "shutdown")
    assert theirs["recorded"] == (["P", "T"] if handled else ["P"])
    assert ours["recorded"] == ["P"]
    assert ours["lines"] == theirs["lines"]
    if (on_shutdown, persistent_only) == ("suspend", "false"):
        # A deliberate difference (issue 22, README "Planning the stop"): Debian 13 tries (and fails) to save
        # the transient guest, which keeps running for the host to kill; we do not try (a transient guest cannot
        # be saved) and, its chain having nothing after the save, shut it down instead.
        assert theirs["transient"] == "running"
        assert ours["transient"] == "gone"
    else:
        assert ours["transient"] == theirs["transient"]
