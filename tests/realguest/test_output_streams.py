"""Issue 19: the fate of real guests when the output streams are closed or
fail. Whatever happens to standard output and standard error (closed at
start, a reader gone, a full device), stop saves every guest, writes the
list file and exits as it would without the fault; start restores them."""

from __future__ import annotations

import os
import subprocess
import time

import libvirt
import pytest

from .support import Tool, state

# How the shell runs the command: `sh -c 'exec "$@" REDIRECTIONS' sh COMMAND...`
FAULTS = {
    "stdout closed": ">&-",
    "stderr closed": "2>&-",
    "stdout and stderr closed": ">&- 2>&-",
    "stdin closed": "<&-",
    "stdout on /dev/full": ">/dev/full",
    "stderr on /dev/full": "2>/dev/full",
    "stdout and stderr on /dev/full": ">/dev/full 2>&1",
}


def _under(tool: Tool, redirections: str, *args: str, extra: dict[str, str] | None = None) -> int:
    script = f'exec "$@" {redirections}'
    done = subprocess.run(["sh", "-c", script, "sh", *tool.command(*args)], env=tool.env(extra),
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=240, check=False)
    return done.returncode


def _broken_pipe(tool: Tool, *args: str) -> int:
    """Standard output and standard error a pipe whose reader has exited (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen(tool.command(*args), env=tool.env(), stdin=subprocess.DEVNULL, stdout=write_end,
                                stderr=write_end)
    finally:
        os.close(write_end)
    return proc.wait(timeout=240)


@pytest.fixture(scope="module")
def pair(module_guests, system_conn: libvirt.virConnect) -> list[libvirt.virDomain]:
    return module_guests.create(2)


def _revived(conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> bool:
    """Every guest running again, also after an earlier case failed half-way."""
    for dom in doms:
        fresh = conn.lookupByUUIDString(dom.UUIDString())
        if state(conn, dom) in ("saved", "off"):
            fresh.create()
        elif state(conn, dom) == "paused":
            fresh.resume()
    return _running(conn, doms)


def _running(conn: libvirt.virConnect, doms: list[libvirt.virDomain], within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(state(conn, d) == "running" for d in doms):
            return True
        time.sleep(0.2)
    return False


def _saved_and_listed(tool: Tool, conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> None:
    assert [state(conn, d) for d in doms] == ["saved", "saved"]
    listed = {uuid for line in tool.list_lines() for uuid in line[1:]}
    assert {d.UUIDString() for d in doms} <= listed


@pytest.mark.parametrize("warning", [False, True], ids=["clean configuration", "one warning to print"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_stop_saves_every_guest_whatever_the_output(pair, tool: Tool, system_conn, fault: str,
                                                    warning: bool) -> None:
    assert _running(system_conn, pair)
    extra = {"BOGUS_VARIABLE": "1"} if warning else {}  # an unknown variable: one warning line
    tool.configure(ON_SHUTDOWN="suspend", **extra)
    assert _under(tool, FAULTS[fault], "stop") == 0
    _saved_and_listed(tool, system_conn, pair)
    assert tool.run("start").returncode == 0
    assert _running(system_conn, pair)


def test_stop_into_a_broken_pipe_saves_every_guest(pair, tool: Tool, system_conn) -> None:
    assert _revived(system_conn, pair)
    tool.configure(ON_SHUTDOWN="suspend")
    assert _broken_pipe(tool, "stop") == 0
    _saved_and_listed(tool, system_conn, pair)
    assert _broken_pipe(tool, "start") == 0
    assert _running(system_conn, pair)


@pytest.mark.parametrize("fault", ["stdout closed", "stdout and stderr closed", "stdout on /dev/full"])
def test_start_restores_every_guest_with_its_output_gone(pair, tool: Tool, system_conn, fault: str) -> None:
    assert _revived(system_conn, pair)
    tool.configure(ON_SHUTDOWN="suspend")
    assert tool.run("stop").returncode == 0
    _saved_and_listed(tool, system_conn, pair)
    assert _under(tool, FAULTS[fault], "start") == 0
    assert _running(system_conn, pair)
    assert not tool.list_file.exists()
