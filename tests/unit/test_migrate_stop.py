"""The migrate unit of a stop chain on the test driver, which cannot migrate:
every path ends with the guest still here, taken by the next action."""

from __future__ import annotations

import json
from pathlib import Path

from .support import Driver, Files
from .test_migrate_start import make_peer


def journal(files: Files) -> dict[str, dict]:
    return {g["name"]: g for g in json.loads(files.state_file.read_text())["guests"]}


def test_no_peer_skips_the_migrate_step_with_one_line(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    files.write_config(ON_SHUTDOWN="migrate suspend")
    result = run("stop")
    assert result.code == 0, result.out + result.err
    assert result.out.count(f"Migrating guest {dom.name()}: skipped: no peer") == 1
    assert driver.state(dom) == "saved"
    assert dom.UUIDString() in files.list_file.read_text()


def test_unreachable_peer_falls_back_to_the_next_action(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    a.setAutostart(1)
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI="test:///nonexistent/lgt-peer.xml",
                       CONNECT_TIMEOUT="1")
    result = run("stop")
    assert result.code == 0, result.out + result.err
    assert "cannot reach the peer test:///nonexistent/lgt-peer.xml" in result.out
    assert (driver.state(a), driver.state(b)) == ("saved", "saved")
    assert a.autostart() == 1
    entries = journal(files)
    assert entries[a.name()]["outcome"] == "saved" and entries[a.name()]["peer"] == ""


def test_a_failed_migration_restores_autostart_and_goes_on(files: Files, driver: Driver, run,
                                                           tmp_path: Path, monkeypatch) -> None:
    """check_peer passes (patched), migrate3 fails on the test driver: autostart back on, guest saved."""
    from libvirt_guests.stop.actions import migrate as actions

    dom = driver.guest()
    dom.setAutostart(1)
    monkeypatch.setattr(actions, "check_peer", lambda guest, peer: [])
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI=make_peer(tmp_path))
    result = run("stop")
    assert result.code == 0, result.out + result.err
    assert f"Migrating guest {dom.name()}: failed after" in result.out and "it keeps running here" in result.out
    assert driver.state(dom) == "saved" and dom.autostart() == 1
    entry = journal(files)[dom.name()]
    assert (entry["outcome"], entry["peer"], entry["autostart_here"]) == ("saved", "", None)


def test_the_peer_refuses_a_guest_it_cannot_hold(files: Files, driver: Driver, run, tmp_path: Path) -> None:
    dom = driver.guest()
    files.write_config(ON_SHUTDOWN="migrate shutdown", MIGRATE_URI=make_peer(tmp_path))
    result = run("stop")
    assert "cannot take it: the guest needs 64 MiB, the peer has 0 MiB free; it stays here" in result.out
    assert driver.state(dom) == "off"
