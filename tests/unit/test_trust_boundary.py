"""Issue 19: the host configuration is the admin's, the domain XML is not.
A guest's metadata may only choose among the peers and data URIs the host
configuration lists (never opened as written), may shorten the host's
timeouts but not lengthen them past a host ceiling, and GUEST_POLICY=0
turns it off. On the test driver; the real-guest cases are in
tests/realguest/test_trust_boundary.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt
import pytest

from libvirt_guests.config import policy as policy_module
from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.policy import effective, parse_policy
from libvirt_guests.start.pacing import Pacing

from .support import TEST_URI, Driver, Files, peer_uri

NS = 'xmlns="urn:libvirt-guests:policy:1"'


def policy(**attrs: str) -> str:
    return f"<policy {NS} " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + "/>"


def marker_script(tmp_path: Path) -> tuple[Path, Path]:
    """A script that leaves a marker file when anything runs it."""
    marker = tmp_path / "ran-as-root"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    script.chmod(0o755)
    return script, marker


def command_uris(script: Path) -> list[str]:
    """URIs whose opening runs `script` (libvirt's ext and ssh transports' command=)."""
    return [f"test+ext:///x?command={script}", f"qemu+ext:///system?command={script}",
            f"qemu+ssh://localhost/system?command={script}", f"test+ssh://localhost/default?command={script}"]


def every_command(run, dom: libvirt.virDomain) -> list[str]:
    """plan stop, stop, plan start, start, policy (show): all that may open a peer."""
    outputs = []
    for args in (("plan", "stop"), ("plan", "stop", "--json"), ("stop",), ("plan", "start"), ("start",),
                 ("policy", dom.name()), ("status",)):
        result = run(*args)
        outputs.append(result.out + result.err)
    return outputs


@pytest.mark.parametrize("index", range(4))
def test_a_command_uri_in_metadata_is_never_opened(files: Files, driver: Driver, run, tmp_path: Path,
                                                   index: int) -> None:
    """The critical hole: migrate_to naming a command made root run it at plan stop, stop and start."""
    script, marker = marker_script(tmp_path)
    uri = command_uris(script)[index]
    dom = driver.guest(policy=policy(on_shutdown="migrate suspend", migrate_to=uri))
    outputs = every_command(run, dom)
    assert not marker.exists(), marker.read_text()
    stop = outputs[2]
    assert stop.count(f"warning: guest {dom.name()}: policy migrate_to=") == 1, stop  # one warning
    assert "refused, never opened" in stop
    assert f"Suspending {dom.name()}: done" in stop  # the rest of its chain
    assert driver.state(dom) == "running"  # restored by start


def test_a_command_uri_in_the_policy_command_is_refused(files: Files, driver: Driver, run, tmp_path: Path) -> None:
    script, marker = marker_script(tmp_path)
    dom = driver.guest()
    for uri in command_uris(script):
        result = run("policy", dom.name(), "--migrate-to", uri, "--on-shutdown", "migrate")
        assert result.code == 2, result  # as the policy command's other refusals (usage errors)
        assert "is not one of the host's peers" in result.err
    shown = json.loads(run("policy", dom.name(), "--json").out)
    assert shown["metadata"] == {}  # nothing was stored
    result = run("policy", dom.name(), "--migrate-data-uri", "tcp://attacker:1234")
    assert result.code == 2 and "is not one of the host's data URIs" in result.err
    assert not marker.exists()


def test_a_file_named_by_metadata_is_never_read(files: Files, driver: Driver, run, tmp_path: Path) -> None:
    """test:///PATH makes the test driver read PATH (the issue: the first line of a root-only file in the plan)."""
    secret = tmp_path / "root-only"
    secret.write_text("SECRET-FIRST-LINE-4711\n")
    secret.chmod(0o600)
    others = [f"qemu+tls://localhost/system?pkipath={tmp_path}", f"qemu+ssh://localhost/system?keyfile={secret}",
              f"qemu+unix:///system?socket={secret}", f"test://{secret}"]
    doms = [driver.guest(policy=policy(on_shutdown="migrate suspend", migrate_to=uri)) for uri in others]
    outputs = every_command(run, doms[0])
    text = "\n".join(outputs) + files.state_file.read_text() if files.state_file.exists() else "\n".join(outputs)
    assert "SECRET-FIRST-LINE" not in text
    assert all(driver.state(dom) == "running" for dom in doms)


def test_only_the_exact_host_string_is_chosen(files: Files, tmp_path: Path) -> None:
    """Whitespace and case variants of an allowed peer do not match; a match uses the host's own string."""
    peer = peer_uri(tmp_path)
    files.write_config(MIGRATE_PEERS=f"qemu+ssh://b/system {peer}")
    cfg = load(Paths.resolve())
    for variant in (f" {peer}", f"{peer} ", peer.upper(), peer.replace("test://", "TEST://"), f"{peer}/",
                    f"{peer}?command=/bin/true", peer.replace("/", "//", 1), f"{peer}\n"):
        eff = effective(cfg, pol := parse_policy(policy(migrate_to=variant), "g"))
        assert eff.migrate_to == "", variant
        assert any("policy migrate_to=" in w for w in pol.warnings), (variant, pol.warnings)  # refused or invalid
    eff = effective(cfg, parse_policy(policy(migrate_to=peer), "g"))
    chosen = next(u for u in cfg.allowed_peers() if u == peer)
    assert eff.migrate_to is chosen  # the configuration's object, not the metadata's text
    eff = effective(cfg, parse_policy(policy(migrate_to="qemu+ssh://b/system"), "g"))
    assert eff.migrate_to == "qemu+ssh://b/system"


def test_migrate_uri_is_allowed_and_metadata_data_uris_are_chosen_among_the_hosts(files: Files) -> None:
    files.write_config(MIGRATE_URI="qemu+ssh://a/system", MIGRATE_DATA_URI="tcp://10.0.0.1",
                       MIGRATE_DATA_URIS="tcp://10.0.0.2")
    cfg = load(Paths.resolve())
    assert effective(cfg, parse_policy(policy(migrate_to="qemu+ssh://a/system"), "g")).migrate_to \
        == "qemu+ssh://a/system"
    ok = effective(cfg, parse_policy(policy(migrate_data_uri="tcp://10.0.0.2"), "g"))
    assert ok.migrate_data_uri == "tcp://10.0.0.2"
    pol = parse_policy(policy(migrate_data_uri="tcp://attacker:4444"), "g")
    bad = effective(cfg, pol)
    assert bad.migrate_data_uri == "tcp://10.0.0.1"  # the host's MIGRATE_DATA_URI, with a warning
    assert any("is not one of the host's data URIs" in w for w in pol.warnings)


def test_bad_migrate_peers_entries_are_a_check_config_problem(files: Files, run) -> None:
    files.write_config(MIGRATE_PEERS="qemu+ssh://b/system not-a-uri")
    result = run("check-config")
    assert result.code == 6
    assert "MIGRATE_PEERS=" in result.err and "'not-a-uri' is not one" in result.err
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_PEERS="qemu+ssh://b/system")
    result = run("check-config")
    assert result.code == 6 and "does not choose one of MIGRATE_PEERS" in result.err
    files.write_config(GUEST_POLICY="0", MIGRATE_PEERS="qemu+ssh://b/system")
    result = run("check-config")
    assert "have no effect with GUEST_POLICY=0" in result.out


def test_a_journal_peer_not_allowed_is_held_and_never_opened(files: Files, driver: Driver, run,
                                                             tmp_path: Path) -> None:
    """A journal written by an older version (or by hand) names a peer the host does not list."""
    script, marker = marker_script(tmp_path)
    uri = f"test+ext:///x?command={script}"
    dom = driver.guest(running=False)
    files.list_file.write_text(f"{TEST_URI} {dom.UUIDString()}\n")
    files.state_file.write_text(json.dumps({"version": 1, "phase": "stopping", "guests": [
        {"uri": TEST_URI, "uuid": dom.UUIDString(), "name": dom.name(), "recorded": True, "outcome": "pending",
         "detail": "", "peer": uri}]}))
    for path in (files.list_file, files.state_file):
        path.chmod(0o600)
    result = run("start")
    assert result.code == 1
    assert f"start it with: virsh -c {TEST_URI} start {dom.UUIDString()}" in result.out
    assert driver.state(dom) == "off"
    assert dom.UUIDString() in files.list_file.read_text()  # stays listed
    assert run("plan", "start").code == 0
    assert not marker.exists()
    # a migrated record with MIGRATE_BACK=1: not brought back, never asked
    files.write_config(MIGRATE_BACK="1")
    files.list_file.unlink()
    files.state_file.write_text(json.dumps({"version": 1, "phase": "stopped", "guests": [
        {"uri": TEST_URI, "uuid": dom.UUIDString(), "name": dom.name(), "recorded": False, "outcome": "migrated",
         "detail": uri, "peer": uri}]}))
    result = run("start")
    assert result.code == 1 and "is not one of the host's peers" in result.out
    assert "never asked" in run("plan", "start").out
    assert not marker.exists()


# --- bounds --------------------------------------------------------------------------------------------------------


def test_zero_from_metadata_is_the_hosts_value(files: Files) -> None:
    """The reproduced hang: shutdown_timeout="0" in metadata was 'wait for ever' with SHUTDOWN_TIMEOUT=2."""
    files.write_config(SHUTDOWN_TIMEOUT="2", SAVE_TIMEOUT="30")
    cfg = load(Paths.resolve())
    eff = effective(cfg, parse_policy(policy(shutdown_timeout="0", save_timeout="0"), "g"))
    assert eff.shutdown_timeout is None  # the host's rule: 2 s (or the per-URI budget)
    assert eff.save_timeout == 30


def test_metadata_may_shorten_but_not_lengthen_past_the_ceiling(files: Files) -> None:
    files.write_config(SHUTDOWN_TIMEOUT="60", SAVE_TIMEOUT="100", START_DELAY="5")
    cfg = load(Paths.resolve())
    short = effective(cfg, parse_policy(policy(shutdown_timeout="10", save_timeout="20", start_delay="1"), "g"))
    assert (short.shutdown_timeout, short.save_timeout, short.start_delay) == (10, 20, 1.0)
    pol = parse_policy(policy(shutdown_timeout="86400", save_timeout="604800", start_delay="86400"), "g")
    long = effective(cfg, pol)
    assert (long.shutdown_timeout, long.save_timeout, long.start_delay) == (60, 100, 5)
    assert len([w for w in pol.warnings if "above the host's ceiling" in w]) == 3
    assert long.sources["shutdown_timeout"] == "guest metadata, cut to the host's ceiling"
    files.write_config(SHUTDOWN_TIMEOUT="60", POLICY_MAX_SHUTDOWN_TIMEOUT="600", POLICY_MAX_SAVE_TIMEOUT="0",
                       POLICY_MAX_START_DELAY="30")
    cfg = load(Paths.resolve())
    eff = effective(cfg, parse_policy(policy(shutdown_timeout="3600", save_timeout="604800", start_delay="60"), "g"))
    assert (eff.shutdown_timeout, eff.save_timeout, eff.start_delay) == (600, 604800, 30)


def test_a_host_timeout_of_zero_is_the_admins_choice(files: Files) -> None:
    """SHUTDOWN_TIMEOUT=0 (for ever) and SAVE_TIMEOUT=0 (no limit): any shorter guest value stands."""
    files.write_config(SHUTDOWN_TIMEOUT="0")
    cfg = load(Paths.resolve())
    eff = effective(cfg, parse_policy(policy(shutdown_timeout="7200", save_timeout="7200"), "g"))
    assert (eff.shutdown_timeout, eff.save_timeout) == (7200, 7200)


def test_start_delay_from_metadata_is_cut_to_start_delay_by_default(files: Files) -> None:
    cfg = load(Paths.resolve())  # START_DELAY=0
    pol = parse_policy(policy(start_delay="86400", order="-1000000"), "g")
    assert effective(cfg, pol).start_delay == 0
    assert policy_module.start_delay_total(cfg) == 86400  # never reached: each guest's is 0


def test_the_sum_of_start_delays_is_bounded(files: Files, driver: Driver, run,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """order=-1000000 with start_delay=86400 delayed every other guest by a day."""
    waits: list[float] = []
    monkeypatch.setattr(Pacing, "sleep", lambda self, seconds, what: waits.append(seconds))
    files.write_config(POLICY_MAX_START_DELAY="0", POLICY_MAX_START_DELAY_TOTAL="100")
    doms = [driver.guest(running=False, policy=policy(order=str(-1000000 + i), start_delay="86400"))
            for i in range(3)]
    doms.append(driver.guest(running=False))
    files.list_file.write_text(f"{TEST_URI} {' '.join(d.UUIDString() for d in doms)}\n")
    files.list_file.chmod(0o600)
    result = run("start")
    assert result.code == 0, result.out + result.err
    assert sum(waits) <= 100 and waits == [100.0], waits
    assert result.err.count("POLICY_MAX_START_DELAY_TOTAL") == 1
    assert all(driver.state(d) == "running" for d in doms)


def test_the_sum_default_is_one_guests_ceiling(files: Files) -> None:
    files.write_config(START_DELAY="10")
    assert policy_module.start_delay_total(load(Paths.resolve())) == 10
    files.write_config(POLICY_MAX_START_DELAY="30")
    assert policy_module.start_delay_total(load(Paths.resolve())) == 30
    files.write_config(POLICY_MAX_START_DELAY="30", POLICY_MAX_START_DELAY_TOTAL="0")
    assert policy_module.start_delay_total(load(Paths.resolve())) is None


def test_a_stubborn_guests_zero_timeout_does_not_hold_the_stop(files: Files, driver: Driver, run,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On the test driver a guest whose shutdown request does nothing: its shutdown_timeout="0" is the
    host's 2 s, then poweroff (the real-guest version is in tests/realguest/test_trust_boundary.py)."""
    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self: 0)  # ignores the power button
    dom = driver.guest(policy=policy(shutdown_timeout="0"))
    files.write_config(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="2")
    started = time.monotonic()
    result = run("stop")
    took = time.monotonic() - started
    assert took < 10, (took, result.out)
    assert driver.state(dom) == "off"
    assert "Power-off of guest" in result.out


# --- the switch ------------------------------------------------------------------------------------------------------


def test_guest_policy_off_ignores_metadata(files: Files, driver: Driver, run) -> None:
    dom = driver.guest(policy=policy(on_shutdown="shutdown", skip="yes", order="3"))
    files.write_config(GUEST_POLICY="0", ON_SHUTDOWN="suspend")
    data = json.loads(run("plan", "stop", "--json").out)
    entries = [e for g in data["uris"][0]["groups"] for e in g]
    assert [e["name"] for e in entries] == [dom.name()]  # skip="yes" not read
    assert entries[0]["actions"] == ["suspend"] and entries[0]["order"] is None
    assert data["guest_policy_ignored"] is True
    assert "note: GUEST_POLICY=0: the guests' own policies (metadata) are ignored" in run("plan", "stop").out
    shown = run("policy", dom.name())
    assert "GUEST_POLICY=0: its policy metadata is ignored" in shown.err
    assert run("stop").code == 0
    assert driver.state(dom) == "saved"


def test_guest_policy_off_reads_no_metadata(files: Files, driver: Driver, run,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Off means the metadata is not even read: a guest's broken XML cannot matter."""
    calls: list[str] = []
    real = libvirt.virDomain.metadata
    monkeypatch.setattr(libvirt.virDomain, "metadata", lambda self, *a, **k: calls.append("x") or real(self, *a, **k))
    driver.guest(policy=policy(on_shutdown="shutdown"))
    files.write_config(GUEST_POLICY="0")
    assert run("plan", "stop").code == 0
    assert run("stop").code == 0
    assert calls == []
