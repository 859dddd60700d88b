"""start and the guests a stop may have moved to a peer: "here" is
test:///default, the peer a second, independent test-driver instance
(test:///ABSOLUTE/node.xml) whose file may define a guest with the same
UUID, running there. No real migration: the test driver has none."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt

from .support import TEST_URI, Driver, Files, peer_uri

UNREACHABLE = "test:///nonexistent/lgt-peer.xml"


def make_peer(tmp_path: Path, *doms: libvirt.virDomain) -> str:
    """A peer on which each of doms runs (same name and UUID)."""
    domains = "".join(
        f"<domain type='test'><name>{d.name()}</name><uuid>{d.UUIDString()}</uuid><memory>65536</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>" for d in doms)
    return peer_uri(tmp_path, domains)


def write_state(files: Files, listed: list[libvirt.virDomain], records: list[dict], phase: str = "stopped") -> None:
    if listed:
        files.list_file.write_text(f"{TEST_URI} {' '.join(d.UUIDString() for d in listed)}\n")
    files.state_file.write_text(json.dumps({"version": 1, "phase": phase, "guests": records}))
    files.state_file.chmod(0o600)
    files.list_file.chmod(0o600) if listed else None


def record(dom: libvirt.virDomain, outcome: str, peer: str = "", recorded: bool = True, **extra: object) -> dict:
    return {"uri": TEST_URI, "uuid": dom.UUIDString(), "name": dom.name(), "recorded": recorded,
            "outcome": outcome, "detail": peer if outcome == "migrated" else "", "peer": peer, **extra}


def journal(files: Files) -> dict[str, dict]:
    return {g["name"]: g for g in json.loads(files.state_file.read_text())["guests"]}


def test_a_listed_guest_running_on_the_peer_is_left_there(files: Files, driver: Driver, run,
                                                          tmp_path: Path) -> None:
    """A stop killed mid-migration: listed here (shut off), running on the peer."""
    dom = driver.guest(running=False)
    dom.setAutostart(1)
    peer = make_peer(tmp_path, dom)
    files.write_config(MIGRATE_URI=peer)
    write_state(files, [dom], [record(dom, "pending", peer)], phase="stopping")
    result = run("start")
    assert result.code == 0, result.err
    assert f"Resuming guest {dom.name()}: running on {peer}, left there" in result.out
    assert driver.state(dom) == "off"
    assert not files.list_file.exists()
    entry = journal(files)[dom.name()]
    assert (entry["outcome"], entry["peer"], entry["recorded"]) == ("migrated", peer, False)
    status = run("status")
    assert f"{dom.name()} of {TEST_URI}: migrated to {peer}" in status.out
    assert json.loads(run("status", "--json").out)["migrated"][0]["name"] == dom.name()
    plan = run("plan", "start")
    assert f"on a peer: {dom.name()} of {TEST_URI} runs on {peer}" in plan.out


def test_the_peer_named_by_the_journal_is_asked_even_without_migrate_uri(files: Files, driver: Driver, run,
                                                                        tmp_path: Path) -> None:
    dom = driver.guest(running=False)
    peer = make_peer(tmp_path, dom)
    files.write_config(MIGRATE_PEERS=peer)  # only a peer of the host configuration is asked (issue 19)
    write_state(files, [dom], [record(dom, "pending", peer)], phase="stopping")
    result = run("start")
    assert result.code == 0 and "left there" in result.out
    assert driver.state(dom) == "off"


def test_a_guest_not_on_the_peer_is_started_here(files: Files, driver: Driver, run, tmp_path: Path) -> None:
    dom = driver.guest(running=False)
    files.write_config(MIGRATE_URI=make_peer(tmp_path))
    write_state(files, [dom], [record(dom, "pending", "")], phase="stopping")
    result = run("start")
    assert result.code == 0, result.err
    assert driver.state(dom) == "running"


def test_migrated_and_peer_unreachable_is_held_and_stays_recorded(files: Files, driver: Driver, run) -> None:
    dom = driver.guest(running=False)
    files.write_config(MIGRATE_PEERS=UNREACHABLE)
    write_state(files, [dom], [record(dom, "migrated", UNREACHABLE)])
    result = run("start")
    assert result.code == 1
    assert f"the last stop migrated it to {UNREACHABLE}, and {UNREACHABLE} cannot be asked" in result.out
    assert driver.state(dom) == "off"
    assert dom.UUIDString() in files.list_file.read_text()
    assert journal(files)[dom.name()]["outcome"] == "migrated"
    assert "held (peer cannot be asked)" in result.out


def test_killed_mid_migration_and_peer_unreachable_is_held(files: Files, driver: Driver, run) -> None:
    """Nothing says the stop did not move it: keep it listed, exit 1, a human decides."""
    dom = driver.guest(running=False)
    files.write_config(MIGRATE_PEERS=UNREACHABLE)
    write_state(files, [dom], [record(dom, "pending", UNREACHABLE)], phase="stopping")
    result = run("start")
    assert result.code == 1
    assert "it may be running on" in result.out and "it stays listed" in result.out
    assert driver.state(dom) == "off"
    assert dom.UUIDString() in files.list_file.read_text()


def test_no_journal_record_and_peer_unreachable_is_held(files: Files, driver: Driver, run) -> None:
    dom = driver.guest(running=False)
    files.write_config(MIGRATE_URI=UNREACHABLE)
    write_state(files, [dom], [])
    assert run("start").code == 1
    assert driver.state(dom) == "off"


def test_saved_here_is_started_even_when_the_peer_is_unreachable(files: Files, driver: Driver, run) -> None:
    """This host's stop saved it: the peer cannot have it, a dead peer must not keep it down."""
    saved, off = driver.guest(), driver.guest(running=False)
    saved.managedSave(0)
    files.write_config(MIGRATE_URI=UNREACHABLE)
    write_state(files, [saved, off], [record(saved, "saved"), record(off, "shutdown")])
    result = run("start")
    assert result.code == 0, result.out + result.err
    assert (driver.state(saved), driver.state(off)) == ("running", "running")


def test_migrate_back_failure_keeps_the_guest_on_the_peer(files: Files, driver: Driver, run,
                                                          tmp_path: Path) -> None:
    """The test driver cannot migrate: the way back fails, the guest stays recorded as migrated."""
    dom = driver.guest(running=False)
    peer = make_peer(tmp_path, dom)
    files.write_config(MIGRATE_BACK="1", MIGRATE_PEERS=peer)
    write_state(files, [], [record(dom, "migrated", peer, recorded=False, autostart_here=True)])
    result = run("start")
    assert result.code == 1
    assert f"Bringing guest {dom.name()} back: this host cannot take it back: the guest needs 64 MiB, this host " \
        in result.out, result.out
    assert journal(files)[dom.name()]["outcome"] == "migrated"
    assert dom.autostart() == 0 and driver.state(dom) == "off"
    # without MIGRATE_BACK the journal is kept and the guest left alone
    files.write_config()
    result = run("start")
    assert result.code == 0 and "Bringing" not in result.out
    assert journal(files)[dom.name()]["outcome"] == "migrated"


def test_migrate_back_of_a_guest_no_longer_on_the_peer_restores_autostart(files: Files, driver: Driver, run,
                                                                          tmp_path: Path) -> None:
    dom = driver.guest(running=False)
    peer = make_peer(tmp_path)  # the peer does not have it
    files.write_config(MIGRATE_BACK="1", MIGRATE_PEERS=peer)
    write_state(files, [], [record(dom, "migrated", peer, recorded=False, autostart_here=True)])
    result = run("start")
    assert result.code == 0, result.out + result.err
    assert "no longer running on" in result.out
    assert dom.autostart() == 1
    assert not files.state_file.exists()


def test_an_old_journal_without_the_migrate_fields_still_loads(files: Files, driver: Driver, run) -> None:
    dom = driver.guest(running=False)
    old = {k: v for k, v in record(dom, "saved").items() if k not in ("peer",)}
    write_state(files, [dom], [old])
    assert run("start").code == 0
    assert driver.state(dom) == "running"


def test_a_stop_keeps_the_autostart_flags_of_guests_still_on_the_peer(files: Files, driver: Driver, run,
                                                                      tmp_path: Path) -> None:
    """Issue 19: the autostart flag a stop turned off here, remembered for a
    guest still on its peer, outlives the next stops (one with guests here
    to handle, one with none) until the guest comes back."""
    away = driver.guest(running=False)  # moved to the peer by an earlier stop, its autostart turned off here
    peer = make_peer(tmp_path)  # ... and since gone from there: the way back restores its flag
    write_state(files, [], [record(away, "migrated", peer, recorded=False, autostart_here=True)])
    other = driver.guest()
    files.write_config(ON_SHUTDOWN="shutdown")
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(other) == "off"
    entry = journal(files)[away.name()]
    assert (entry["outcome"], entry["peer"], entry["autostart_here"]) == ("migrated", peer, True)
    assert run("start").code == 0  # without MIGRATE_BACK: the guest is left on the peer, its record kept
    assert journal(files)[away.name()]["autostart_here"] is True
    assert run("stop").code == 0  # nothing runs here: still kept
    assert journal(files)[away.name()]["autostart_here"] is True
    files.write_config(MIGRATE_BACK="1", MIGRATE_PEERS=peer)
    result = run("start")
    assert result.code == 0, result.out + result.err
    assert "no longer running on" in result.out
    assert away.autostart() == 1


def test_a_guest_found_back_here_by_a_stop_gets_its_autostart_flag_back(files: Files, driver: Driver, run,
                                                                        tmp_path: Path) -> None:
    """Brought back by hand and running here: the stop that meets it puts
    its flag back before its record is replaced (and forgotten)."""
    back = driver.guest()
    write_state(files, [], [record(back, "migrated", make_peer(tmp_path), recorded=False, autostart_here=True)])
    files.write_config(ON_SHUTDOWN="shutdown")
    result = run("stop")
    assert result.code == 0, result
    assert back.autostart() == 1
    assert driver.state(back) == "off"
    assert journal(files)[back.name()]["outcome"] == "shutdown"
