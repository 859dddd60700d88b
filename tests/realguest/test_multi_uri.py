"""Several URIs, worked on at the same time: the system daemon and a second,
independent daemon (session mode, another user)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import libvirt
import pytest

from tests.testbed import session
from tests.testbed.guests import domain_xml

from .support import SYSTEM_URI, Tool, state
from .test_bounded import JobCounter

_names = itertools.count(1)


@pytest.fixture
def session_guests(session_uri: str, images) -> Iterator[tuple[libvirt.virConnect, list[libvirt.virDomain]]]:
    conn = libvirt.open(session_uri)
    doms = []
    try:
        for _ in range(2):
            name = f"lgt-s{os.getpid()}-{next(_names)}"
            session.serial_log(name).unlink(missing_ok=True)
            dom = conn.defineXML(session.session_xml(domain_xml(name, images=images), name))
            dom.create()
            doms.append(dom)
        end = time.monotonic() + 120
        for dom in doms:
            while "LGT-READY" not in session.serial_log(dom.name()).read_text(errors="replace"):
                assert time.monotonic() < end, f"{dom.name()} did not boot"
                time.sleep(0.2)
        yield conn, doms
    finally:
        for dom in doms:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
            session.serial_log(dom.name()).unlink(missing_ok=True)
        conn.close()


def test_two_uris_are_saved_at_the_same_time(guests, session_guests, session_uri: str, tool: Tool,
                                             system_conn) -> None:
    sys_doms = guests.create(2, memory_mib=256, dirty_mib=150)
    sess_conn, sess_doms = session_guests
    tool.configure(URIS=f"{SYSTEM_URI} {session_uri}", ON_SHUTDOWN="suspend", PARALLEL_SAVE="1")
    overlap = {"both": 0}

    with JobCounter(system_conn, sys_doms) as on_system, JobCounter(sess_conn, sess_doms) as on_session:
        proc = tool.spawn("stop")
        while proc.poll() is None:
            if on_system.busy_now and on_session.busy_now:
                overlap["both"] += 1
            time.sleep(0.02)
    out = proc.stdout.read()
    assert proc.returncode == 0, out
    assert overlap["both"] > 0, "the two URIs were never saving at the same time"
    assert on_system.peak == 1 and on_session.peak == 1  # PARALLEL_SAVE is per URI
    assert [line[0] for line in tool.list_lines()] == [SYSTEM_URI, session_uri]
    assert all(state(system_conn, d) == "saved" for d in sys_doms)
    assert all(state(sess_conn, d) == "saved" for d in sess_doms)
    result = tool.run("start")
    assert result.returncode == 0, result
    assert all(state(system_conn, d) == "running" for d in sys_doms)
    assert all(state(sess_conn, d) == "running" for d in sess_doms)
