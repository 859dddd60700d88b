"""The migrate action in the configuration: the settings, chains, per-guest
policy and check-config."""

from __future__ import annotations

import json

import pytest

from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.policy import GuestPolicy, effective, parse_policy
from libvirt_guests.config.settings import SettingError, parse_chain, parse_peer_uri

from .support import Driver, Files


def test_migrate_is_an_action_of_chains() -> None:
    assert parse_chain("migrate suspend shutdown") == ("migrate", "suspend", "shutdown")
    with pytest.raises(SettingError, match="migrate, suspend, shutdown, poweroff"):
        parse_chain("migrate teleport")
    with pytest.raises(SettingError, match="at most once"):
        parse_chain("migrate suspend migrate")


@pytest.mark.parametrize("text", ["peer", "qemu+ssh://a b/system", "://x", "qemu+ssh://peer/system junk"])
def test_a_peer_uri_is_one_uri(text: str) -> None:
    with pytest.raises(SettingError):
        parse_peer_uri(text)


def test_defaults_and_values(files: Files) -> None:
    cfg = load(Paths.resolve())
    assert (cfg.migrate_uri, cfg.migrate_data_uri, cfg.parallel_migrate, cfg.migrate_timeout,
            cfg.migrate_undefine, cfg.migrate_back) == ("", "", 2, 300, False, False)
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI="qemu+tcp://10.0.0.2/system",
                       MIGRATE_DATA_URI="tcp://10.0.0.2", PARALLEL_MIGRATE="3", MIGRATE_TIMEOUT="0",
                       MIGRATE_UNDEFINE="1", MIGRATE_BACK="1")
    cfg = load(Paths.resolve())
    assert not cfg.problems
    assert (cfg.on_shutdown, cfg.migrate_uri, cfg.migrate_data_uri, cfg.parallel_migrate, cfg.migrate_timeout,
            cfg.migrate_undefine, cfg.migrate_back) == (("migrate", "suspend"), "qemu+tcp://10.0.0.2/system",
                                                        "tcp://10.0.0.2", 3, 0, True, True)


def test_persistent_only_default_is_false_when_the_chain_begins_with_migrate(files: Files) -> None:
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI="qemu+tcp://p/system")
    cfg = load(Paths.resolve())
    assert cfg.persistent_only_for(cfg.on_shutdown) is False
    assert cfg.persistent_only_for(("suspend", "migrate")) is True
    files.write_config(ON_SHUTDOWN="migrate suspend", PERSISTENT_ONLY="true")
    assert load(Paths.resolve()).persistent_only_for(("migrate",)) is True


def test_a_bad_migrate_value_fails_only_the_operation_that_reads_it(files: Files) -> None:
    files.write_config(MIGRATE_URI="peer", MIGRATE_BACK="yes")
    problems = {p.variable: p for p in load(Paths.resolve()).problems}
    assert set(problems) == {"MIGRATE_URI", "MIGRATE_BACK"}
    assert problems["MIGRATE_URI"].concerns("stop") and problems["MIGRATE_URI"].concerns("start")
    assert problems["MIGRATE_BACK"].concerns("start") and not problems["MIGRATE_BACK"].concerns("stop")


def test_check_config_flags_a_chain_with_migrate_and_no_peer(files: Files, run) -> None:
    files.write_config(ON_SHUTDOWN="migrate suspend")
    result = run("check-config")
    assert result.code == 6
    assert "has migrate but MIGRATE_URI is empty" in result.err
    data = json.loads(run("check-config", "--json").out)
    assert not data["valid"] and data["problems"][0]["variable"] == "MIGRATE_URI"
    assert data["settings"]["PARALLEL_MIGRATE"] == {"value": "2", "source": "default"}
    files.write_config(ON_SHUTDOWN="migrate suspend", MIGRATE_URI="qemu+tcp://127.0.0.1:16599/system")
    assert run("check-config").code == 0


def test_check_config_notes_migrate_back_without_on_boot_start(files: Files, run) -> None:
    files.write_config(MIGRATE_BACK="1", ON_BOOT="ignore")
    result = run("check-config")
    assert result.code == 0 and "MIGRATE_BACK=1 has no effect with ON_BOOT=ignore" in result.out


def test_policy_migrate_to_and_its_own_chain(files: Files) -> None:
    # a guest's own peer and data URI must be among the host's (issue 19)
    files.write_config(MIGRATE_PEERS="qemu+tcp://b/system", MIGRATE_DATA_URIS="tcp://10.1.1.1")
    cfg = load(Paths.resolve())
    policy = parse_policy('<policy xmlns="urn:libvirt-guests:policy:1" on_shutdown="migrate shutdown" '
                          'migrate_to="qemu+tcp://b/system" migrate_data_uri="tcp://10.1.1.1"/>', "g")
    assert not policy.warnings
    eff = effective(cfg, policy)
    assert (eff.on_shutdown, eff.migrate_to, eff.migrate_data_uri) == (
        ("migrate", "shutdown"), "qemu+tcp://b/system", "tcp://10.1.1.1")
    assert eff.sources["migrate_to"] == "guest metadata"
    bad = parse_policy('<policy xmlns="urn:libvirt-guests:policy:1" migrate_to="b c"/>', "g")
    assert bad.warnings and "migrate_to" in bad.warnings[0]
    files.write_config(MIGRATE_URI="qemu+tcp://a/system", MIGRATE_DATA_URI="tcp://10.0.0.1")
    eff = effective(load(Paths.resolve()), GuestPolicy())
    assert (eff.migrate_to, eff.migrate_data_uri) == ("qemu+tcp://a/system", "tcp://10.0.0.1")
    assert eff.sources["migrate_to"] == "MIGRATE_URI (file)"


def test_policy_command_sets_migrate_to(files: Files, driver: Driver, run) -> None:
    files.write_config(MIGRATE_PEERS="qemu+tcp://b/system")  # the policy command refuses a peer stop would refuse
    dom = driver.guest()
    assert run("policy", dom.name(), "--migrate-to", "qemu+tcp://b/system", "--on-shutdown", "migrate").code == 0
    data = json.loads(run("policy", dom.name(), "--json").out)
    assert data["policy"]["migrate_to"] == "qemu+tcp://b/system"
    assert data["policy"]["on_shutdown"] == ["migrate"]
