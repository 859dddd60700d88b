"""`plan stop` with migrate in a chain: per guest, whether the peer can take
it, before anything is done. The peer is a second, independent test-driver
instance (test:///ABSOLUTE/node.xml), "here" is test:///default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libvirt_guests.stop import plan as plan_module

from .support import Driver, Files, peer_uri


def test_plan_stop_says_why_the_peer_cannot_take_a_guest(files: Files, driver: Driver, run, tmp_path: Path) -> None:
    dom = driver.guest()
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=peer_uri(tmp_path))
    result = run("plan", "stop")
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if dom.name() in line)
    assert "migrate -> suspend" in line
    assert "cannot take it: the guest needs 64 MiB, the peer has 0 MiB free" in line, line
    entry = json.loads(run("plan", "stop", "--json").out)["uris"][0]["groups"][0][0]
    assert entry["peer_can_take"] is False and entry["migrate_to"].startswith("test:///")
    assert entry["peer_reasons"] == ["the guest needs 64 MiB, the peer has 0 MiB free"]
    assert driver.state(dom) == "running"


def test_plan_stop_reports_an_unreachable_peer_once_per_guest(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    files.write_config(ON_SHUTDOWN="migrate shutdown", MIGRATE_URI="test:///nonexistent/lgt-peer.xml")
    groups = json.loads(run("plan", "stop", "--json").out)["uris"][0]["groups"]
    entries = {e["name"]: e for group in groups for e in group}
    for dom in (a, b):
        reasons = entries[dom.name()]["peer_reasons"]
        assert len(reasons) == 1 and reasons[0].startswith("cannot reach the peer test:///nonexistent"), reasons


def test_plan_stop_without_a_peer_says_so(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    files.write_config(ON_SHUTDOWN="migrate suspend")
    out = run("plan", "stop").out
    assert f"{dom.name()}: migrate -> suspend (peer no peer cannot take it: {plan_module.NO_PEER})" in out


def test_plan_stop_can_take_and_unchecked(files: Files, driver: Driver, run, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    moving = driver.guest(policy='<policy xmlns="urn:libvirt-guests:policy:1" on_shutdown="migrate poweroff"/>')
    staying = driver.guest()
    uri = peer_uri(tmp_path)
    files.write_config(ON_SHUTDOWN="suspend", MIGRATE_URI=uri)
    monkeypatch.setattr(plan_module, "check_peer", lambda guest, peer: [])
    out = run("plan", "stop").out
    assert f"{moving.name()}: migrate -> poweroff (peer {uri} can take it)" in out
    staying_line = next(line for line in out.splitlines() if staying.name() in line)
    assert staying_line.endswith(f"{staying.name()}: suspend"), staying_line
    entries = {e["name"]: e for g in json.loads(run("plan", "stop", "--json").out)["uris"][0]["groups"] for e in g}
    assert entries[staying.name()]["peer_can_take"] is None
    assert entries[moving.name()]["peer_can_take"] is True


def test_plan_stop_moves_transient_guests_when_the_chain_begins_with_migrate(files: Files, driver: Driver, run,
                                                                            tmp_path: Path) -> None:
    dom = driver.guest(transient=True)
    files.write_config(ON_SHUTDOWN="migrate shutdown", MIGRATE_URI=peer_uri(tmp_path))
    entries = {e["name"]: e for g in json.loads(run("plan", "stop", "--json").out)["uris"][0]["groups"] for e in g}
    assert entries[dom.name()]["actions"] == ["migrate", "shutdown"]
    files.write_config(ON_SHUTDOWN="suspend migrate", MIGRATE_URI=peer_uri(tmp_path))
    report = json.loads(run("plan", "stop", "--json").out)["uris"][0]
    assert dom.name() in report["transient_not_handled"]
