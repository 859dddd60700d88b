"""The migrate action end to end: our `stop`, `start` and `plan` as separate
processes against the host's qemu:///system and a peer libvirtd in a
container (tests.peer.host). Run under the test bed's lock:
``flock /tmp/realguest.lock .venv/bin/python -m pytest -q tests/peer/test_stop_migrate.py``."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import libvirt
import pytest

from tests.peer.host import PeerHost, closed_port
from tests.realguest.support import Tool, state
from tests.testbed.guests import GuestFactory

DATA_URI = "tcp://127.0.0.1"


@pytest.fixture
def tool(system_conn: libvirt.virConnect, tmp_path: Path) -> Tool:
    """Our tool on temporary paths; refuses to run beside guests the test bed did not make (stop acts on all)."""
    foreign = [d.name() for d in system_conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
               if not d.name().startswith("lgt-")]
    if foreign:
        pytest.fail(f"guests not made by the test bed are running ({', '.join(foreign)})", pytrace=False)
    return Tool(tmp_path / "ours")


def journal(tool: Tool) -> dict[str, dict]:
    return {g["name"]: g for g in json.loads(tool.state_file.read_text())["guests"]}


def listed(tool: Tool) -> set[str]:
    return {uuid for line in tool.list_lines() for uuid in line[1:]}


def test_stop_migrates_running_guests_live_start_leaves_them_migrate_back_brings_them_home(
        guests: GuestFactory, system_conn: libvirt.virConnect, peer: PeerHost, peer_hv: object, tool: Tool) -> None:
    doms = guests.create(3)
    doms[0].setAutostart(1)
    names = [d.name() for d in doms]
    tool.configure(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=peer.uri, MIGRATE_DATA_URI=DATA_URI)

    plan = tool.run("plan", "stop")
    for name in names:
        assert f"{name}: migrate -> suspend (peer {peer.uri} can take it)" in plan.stdout, plan.stdout

    result = tool.run("stop")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 migrated" in result.stdout
    for dom in doms:
        assert peer.domstate(dom.name()) == "running (migrated)"
        assert system_conn.lookupByUUIDString(dom.UUIDString()).state() == [
            libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED]
    assert doms[0].autostart() == 0
    assert not listed(tool) & {d.UUIDString() for d in doms}
    entries = journal(tool)
    assert all(entries[n]["outcome"] == "migrated" and entries[n]["detail"] == peer.uri for n in names)
    assert entries[names[0]]["autostart_here"] is True
    status = tool.run("status")
    for name in names:
        assert f"{name} of qemu:///system: migrated to {peer.uri}" in status.stdout, status.stdout

    # A stop killed after a migration ended but before the list was rewritten leaves the guest listed:
    # what that kill leaves, written by hand (the list and a pending record naming the peer).
    tool.list_file.write_text(f"qemu:///system {doms[1].UUIDString()}\n")
    tool.list_file.chmod(0o600)
    data = json.loads(tool.state_file.read_text())
    for g in data["guests"]:
        if g["name"] == names[1]:
            g.update(outcome="pending", detail="", recorded=True)
    data["phase"] = "stopping"
    tool.state_file.write_text(json.dumps(data))
    result = tool.run("start")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resuming guest {names[1]}: running on {peer.uri}, left there" in result.stdout
    for dom in doms:  # none booted here, autostart set or not
        assert state(system_conn, dom) == "off"
        assert peer.domstate(dom.name()) == "running (migrated)"
    assert not tool.list_file.exists()
    assert all(e["outcome"] == "migrated" for e in journal(tool).values())

    tool.configure(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=peer.uri, MIGRATE_BACK="1",
                   MIGRATE_BACK_DATA_URI=DATA_URI)
    assert "migrate back" in tool.run("plan", "start").stdout
    result = tool.run("start")
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    for dom in doms:
        assert state(system_conn, dom) == "running"
        assert peer.domstate(dom.name()) == ""  # undefined there
    assert doms[0].autostart() == 1 and doms[1].autostart() == 0
    assert not tool.state_file.exists()


def throttled(guests: GuestFactory) -> libvirt.virDomain:
    (dom,) = guests.create(1, memory_mib=256, dirty_mib=184)
    dom.migrateSetMaxSpeed(1, 0)
    return dom


@pytest.mark.parametrize("fault", ["peer unreachable", "data URI unreachable", "peer refuses", "too slow",
                                   "peer libvirtd killed"])
def test_each_fallback_ends_with_the_guest_saved_here(
        fault: str, guests: GuestFactory, system_conn: libvirt.virConnect, peer: PeerHost, peer_hv: object,
        tool: Tool) -> None:
    settings = {"ON_SHUTDOWN": "migrate suspend", "MIGRATE_URI": peer.uri, "MIGRATE_DATA_URI": DATA_URI,
                "CONNECT_TIMEOUT": "3"}
    killer = None
    if fault in ("too slow", "peer libvirtd killed"):
        dom = throttled(guests)
    else:
        (dom,) = guests.create(1)
    dom.setAutostart(1)
    if fault == "peer unreachable":
        settings["MIGRATE_URI"] = f"qemu+tcp://127.0.0.1:{closed_port()}/system"
    elif fault == "data URI unreachable":
        del settings["MIGRATE_DATA_URI"]  # the stream goes to the peer's name, which does not resolve here
    elif fault == "peer refuses":
        other = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
            dom.UUIDString(), "11111111-2222-3333-4444-555555555555")
        peer.box.write("/root/clash.xml", other)
        peer.virsh("define", "/root/clash.xml")
    elif fault == "too slow":
        settings["MIGRATE_TIMEOUT"] = "8"
    else:
        killer = threading.Thread(target=lambda: (time.sleep(5), peer.kill_libvirtd()))
        killer.start()
    tool.configure(**settings)
    t0 = time.monotonic()
    result = tool.run("stop")
    seconds = time.monotonic() - t0
    if killer is not None:
        killer.join()
    print(fault, f"{seconds:.1f} s", result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state(system_conn, dom) == "saved"
    assert dom.UUIDString() in listed(tool)
    entry = journal(tool)[dom.name()]
    assert (entry["outcome"], entry["peer"]) == ("saved", "")
    assert dom.autostart() == 1
    assert f"Migrating guest {dom.name()}: " in result.stdout
    if fault == "too slow":
        assert "MIGRATE_TIMEOUT (8 s) expired" in result.stdout
        assert seconds < 60
    if fault == "peer refuses":
        assert "cannot take it: another guest named" in result.stdout


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_aborts_the_migration_under_way_and_the_guest_stays_here(
        signum: int, code: int, guests: GuestFactory, system_conn: libvirt.virConnect, peer: PeerHost,
        peer_hv: object, tool: Tool) -> None:
    """Issue 19: SIGTERM or SIGINT during a migration (a guest dirtying its
    memory, at 1 MiB/s: minutes) aborts it within the signal bound (10 s,
    and the abort's own wait); the guest keeps running here, recorded as
    interrupted, its autostart flag back, no peer left in its record."""
    dom = throttled(guests)
    dom.setAutostart(1)
    tool.configure(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=peer.uri, MIGRATE_DATA_URI=DATA_URI)
    proc = tool.spawn("stop")
    try:
        seen = ""
        assert proc.stdout is not None
        while f"Migrating guest {dom.name()}: to " not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        time.sleep(2)  # the job is under way
        assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_UNBOUNDED, seen
        signalled = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
        out = seen + out
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"{took:.1f} s after the signal", out)
    assert proc.returncode == code, out
    assert took < 10 + 5 + 3, out  # INTERRUPT_GRACE, the abort's wait (ABORT_GRACE), slack
    assert f"Migrating guest {dom.name()}: failed after" in out and "came, aborted; it keeps running here" in out
    assert state(system_conn, dom) == "running"
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert peer.domstate(dom.name()) == ""  # nothing left on the peer
    assert dom.autostart() == 1
    assert dom.UUIDString() in listed(tool)
    entry = journal(tool)[dom.name()]
    assert (entry["outcome"], entry["peer"]) == ("not-handled", ""), entry
    assert json.loads(tool.state_file.read_text())["phase"] == "stopping"


def test_plan_stop_reports_a_guest_the_peer_cannot_take(
        guests: GuestFactory, peer: PeerHost, peer_hv: object, tool: Tool) -> None:
    ok, clashing = guests.create(2)
    other = clashing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
        clashing.UUIDString(), "11111111-2222-3333-4444-555555555556")
    peer.box.write("/root/clash.xml", other)
    peer.virsh("define", "/root/clash.xml")
    tool.configure(ON_SHUTDOWN="migrate shutdown", MIGRATE_URI=peer.uri, MIGRATE_DATA_URI=DATA_URI)
    result = tool.run("plan", "stop", "--json")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for g in json.loads(result.stdout)["uris"][0]["groups"] for e in g}
    assert entries[ok.name()]["peer_can_take"] is True
    assert entries[clashing.name()]["peer_can_take"] is False
    assert entries[clashing.name()]["peer_reasons"] == [
        f"another guest named '{clashing.name()}' is defined on the peer (UUID 11111111-2222-3333-4444-555555555556)"]
