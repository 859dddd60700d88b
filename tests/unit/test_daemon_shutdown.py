"""The classifier of libvirt's own shutdown handling (virt/daemonshutdown.py),
its strict reader of libvirt's configuration syntax (virt/virtconf.py), the
system daemon's start time (virt/daemonproc.py) and the logind query
(virt/logind.py), over every combination of the settings."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from libvirt_guests.virt import daemonproc, logind
from libvirt_guests.virt.daemonshutdown import (
    ACTIONS,
    ENV_QEMU_CONF,
    KEYS,
    SCOPES,
    SESSION_DEFAULTS,
    SYSTEM_DEFAULTS,
    classify,
    conf_path,
    daemon_kind,
)
from libvirt_guests.virt.virtconf import ConfSyntaxError, parse

SYSTEM = "qemu:///system"
ROOTS = Path("/var/cache/libvirt-guests-testbed")


def conf_text(save: str | None, shutdown: str | None, poweroff: str | None, restore: int | None) -> str:
    lines = ["# written by the test", 'security_driver = "none"', "cgroup_controllers = [ ]"]
    for key, value in zip(KEYS.values(), (save, shutdown, poweroff), strict=True):
        lines.append(f"#{key} = \"all\"")  # commented out: never counts
        if value is not None:
            lines.append(f'{key} = "{value}"')
    if restore is not None:
        lines.append(f"auto_shutdown_restore = {restore}")
    return "\n".join(lines) + "\n"


COMBINATIONS = list(itertools.product((None, *SCOPES), (None, *SCOPES), (None, *SCOPES), (None, 0, 1)))


@pytest.mark.parametrize("kind", ["system", "session"])
def test_every_combination(kind: str, tmp_path: Path) -> None:
    """5 x 5 x 5 x 3 files (each key absent or one of the four scopes; restore absent, 0, 1), per daemon kind:
    the state, the guests covered (persistent, transient), the restore."""
    defaults = SYSTEM_DEFAULTS if kind == "system" else SESSION_DEFAULTS
    conf = tmp_path / "qemu.conf"
    seen_states = set()
    for save, shutdown, poweroff, restore in COMBINATIONS:
        conf.write_text(conf_text(save, shutdown, poweroff, restore))
        result = classify(f"qemu:///{kind}", conf=conf)
        scopes = {"save": save or defaults.save, "shutdown": shutdown or defaults.shutdown,
                  "poweroff": poweroff or defaults.poweroff}
        case = (kind, save, shutdown, poweroff, restore)
        seen_states.add(result.state)
        if scopes["save"] in ("transient", "all"):
            assert result.state == "unknown" and "refuses" in result.reason, case
            assert result.covers(True) is None and result.restores(True) is None, case
            continue
        on = any(v != "none" for v in scopes.values())
        assert result.state == ("on" if on else "off"), case
        for persistent in (True, False):
            wanted = {"all", "persistent"} if persistent else {"all", "transient"}
            actions = tuple(a for a in ACTIONS if scopes[a] in wanted)
            assert result.actions_for(persistent) == actions, (case, persistent)
            assert result.covers(persistent) is bool(actions)
            restores = bool(actions) and persistent and restore != 0
            assert result.restores(persistent) is restores, (case, persistent)
    assert seen_states == {"on", "off", "unknown"}


def test_restore_alone_does_nothing_and_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text("auto_shutdown_restore = 1\nauto_shutdown_wait = 0\n")
    result = classify(SYSTEM, conf=conf)
    assert result.state == "off" and result.covers(True) is False and result.restores(True) is False
    assert result.settings is not None and result.settings.wait == 30  # 0: libvirt's built-in 30 s
    missing = classify(SYSTEM, conf=tmp_path / "absent.conf")
    assert missing.state == "off" and "defaults" in missing.reason
    session = classify("qemu:///session", conf=tmp_path / "absent.conf")
    assert session.state == "on" and session.actions_for(True) == ("save", "shutdown", "poweroff")
    assert session.actions_for(False) == ("shutdown", "poweroff") and session.restores(False) is False


@pytest.mark.parametrize("uri", ["qemu+ssh://host/system", "qemu+tcp://h/system", "lxc:///system",
                                 "test:///default", "qemu:///embed?root=/tmp/x", "xen:///system",
                                 "qemu+unix:///system?socket=/tmp/sock", "qemu:///system#x", "default",
                                 "qemu://user:secret@host/system"])
def test_other_uris_are_unknown(uri: str, tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('auto_shutdown_try_save = "persistent"\n')
    result = classify(uri, conf=conf)
    assert result.state == "unknown" and result.covers(True) is None
    assert "secret" not in result.reason


def test_local_forms() -> None:
    assert daemon_kind("qemu:///system") == daemon_kind("qemu+unix:///system") == "system"
    assert daemon_kind("qemu:///session") == "session"


def test_conf_paths(tmp_path: Path) -> None:
    assert conf_path("system", {}) == Path("/etc/libvirt/qemu.conf")
    assert conf_path("system", {ENV_QEMU_CONF: str(tmp_path / "q")}) == tmp_path / "q"
    assert conf_path("session", {"HOME": "/home/u"}) == Path("/home/u/.config/libvirt/qemu.conf")
    assert conf_path("session", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}) == Path("/x/libvirt/qemu.conf")
    assert conf_path("session", {"HOME": "/home/u", "XDG_CONFIG_HOME": "rel"}).parts[:3] == ("/", "home", "u")


def test_old_daemon_has_none(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('auto_shutdown_try_save = "persistent"\n')
    assert classify(SYSTEM, conf=conf, version=9_000_000).state == "off"
    assert classify(SYSTEM, conf=conf, version=11_001_000).state == "off"
    assert classify(SYSTEM, conf=conf, version=11_002_000).state == "on"
    assert classify(SYSTEM, conf=conf, version=11_003_000).state == "on"


def test_changed_since_the_daemon_started_is_unknown(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('auto_shutdown_try_save = "none"\n')
    now = time.time()
    os.utime(conf, (now, now))
    assert classify(SYSTEM, conf=conf, daemon_started=now - 60).state == "unknown"
    assert "after the daemon started" in classify(SYSTEM, conf=conf, daemon_started=now - 60).reason
    assert classify(SYSTEM, conf=conf, daemon_started=now + 1).state == "off"
    # the start is known to the second: written just before a restart within the same second is not "since"
    assert classify(SYSTEM, conf=conf, daemon_started=now - 0.9).state == "off"
    assert classify(SYSTEM, conf=conf, daemon_started=None).state == "off"


@pytest.mark.parametrize("text, why", [
    ('auto_shutdown_try_save = "sometimes"\n', "not one of"),
    ("auto_shutdown_try_save = 1\n", "not one of"),
    ('auto_shutdown_poweroff = ["all"]\n', "not one of"),
    ('auto_shutdown_try_save = "all"\n', "refuses"),
    ('auto_shutdown_try_save = "transient"\n', "refuses"),
    ('auto_shutdown_restore = 2\n', "0 or 1"),
    ('auto_shutdown_restore = "1"\n', "0 or 1"),
    ('auto_shutdown_wait = -1\n', "seconds"),
    ('auto_shutdown_wait = "30"\n', "seconds"),
    ('auto_shutdown_poweroff = "all"\nauto_shutdown_poweroff = "none"\n', "twice"),
    ('auto_shutdown_poweroff = "all\n', "syntax"),
    ('auto_shutdown_poweroff "all"\n', "syntax"),
    ('auto_shutdown_poweroff = all\n', "syntax"),
    ('auto_shutdown_poweroff = "all" x\n', "syntax"),
    ('$(reboot) = "all"\n', "syntax"),
    ('x = [ "a", [ "b" ] ]\n', "syntax"),
])
def test_what_libvirt_refuses_is_unknown(text: str, why: str, tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text(text)
    result = classify(SYSTEM, conf=conf)
    assert result.state == "unknown" and why in result.reason, result


def test_unreadable_and_huge_files_are_unknown(tmp_path: Path) -> None:
    assert classify(SYSTEM, conf=tmp_path).state == "unknown"  # a directory
    huge = tmp_path / "huge.conf"
    huge.write_text("# x\n" * 300_000)
    assert classify(SYSTEM, conf=huge).state == "unknown"
    odd = tmp_path / "odd.conf"
    odd.write_bytes(b'# \xff\xfe\nauto_shutdown_poweroff = "\x1b[31mall"\n')
    result = classify(SYSTEM, conf=odd)
    assert result.state == "unknown" and "\x1b" not in result.reason


def test_syntax() -> None:
    text = ('a = 1 ; b = -2 # c\n\n  d="x" \ne = \'y\'\nf = [ "p", 3,\n  # inside\n  "q", ]\n'
            'g = []\nh = """two\nlines"""\ni.j = "k"\n')
    assert [(n, v) for n, v, _ in parse(text)] == [
        ("a", 1), ("b", -2), ("d", "x"), ("e", "y"), ("f", ["p", 3, "q"]), ("g", []), ("h", "two\nlines"),
        ("i.j", "k")]
    with pytest.raises(ConfSyntaxError) as err:
        parse('ok = 1\nbad = "x\n')
    assert err.value.line == 2


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_the_releases_own_qemu_conf(release: str) -> None:
    """Debian's shipped qemu.conf (with the test bed's lines) reads as libvirt reads it: off."""
    conf = ROOTS / f"nspawn-root-{release}" / "etc/libvirt/qemu.conf"
    if not conf.exists():
        pytest.skip(f"no {release} root (tests/systemd/root.py builds it)")
    assert classify(SYSTEM, conf=conf).state == "off"
    names = [name for name, _, _ in parse(conf.read_text())]
    assert "security_driver" in names and not [n for n in names if n.startswith("auto_shutdown")]


def test_daemon_start_time_from_proc(tmp_path: Path) -> None:
    proc, run = tmp_path / "proc", tmp_path / "run"
    (proc / "4242").mkdir(parents=True)
    run.mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1000000\n")
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 18 + [str(50 * ticks)] + ["0"] * 10
    (proc / "4242" / "stat").write_text("4242 (virt qemud)) " + " ".join(fields) + "\n")
    (proc / "4242" / "comm").write_text("virtqemud\n")
    (proc / "4242" / "status").write_text("Name:\tvirtqemud\nUid:\t0\t0\t0\t0\n")
    assert daemonproc.system_daemon_started(proc, run) == 1000050  # found by name
    (run / "virtqemud.pid").write_text("4242\n")
    assert daemonproc.system_daemon_started(proc, run) == 1000050  # by its pid file
    (proc / "4242" / "status").write_text("Name:\tvirtqemud\nUid:\t1000\t1000\t1000\t1000\n")
    assert daemonproc.system_daemon_started(proc, run) is None  # a user's daemon is not the system's
    assert daemonproc.system_daemon_started(tmp_path / "none", run) is None


def fake_busctl(tmp_path: Path, body: str) -> str:
    script = tmp_path / "busctl"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("body, expected", [
    ("echo '{\"type\":\"b\",\"data\":true}'", True),
    ("echo '{\"type\":\"b\",\"data\":false}'", False),
    ("echo '{\"type\":\"s\",\"data\":\"true\"}'", False),
    ("echo 'true'", False),
    ("echo 'Failed to get property: Connection refused' >&2; exit 1", False),
    ("sleep 30", False),
])
def test_logind_answers(body: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logind.ENV_BUSCTL, fake_busctl(tmp_path, body))
    t0 = time.monotonic()
    shutting, how = logind.preparing_for_shutdown(timeout=1)
    assert shutting is expected and how
    assert time.monotonic() - t0 < 5


def test_logind_query_is_bounded_and_never_starts_logind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = tmp_path / "args"
    body = f'echo "$@" > {args}; echo \'{{"type":"b","data":true}}\''
    monkeypatch.setenv(logind.ENV_BUSCTL, fake_busctl(tmp_path, body))
    assert logind.preparing_for_shutdown()[0] is True
    line = args.read_text()
    assert "--auto-start=no" in line and "--timeout=" in line and "PreparingForShutdown" in line
    monkeypatch.setenv(logind.ENV_BUSCTL, str(tmp_path / "no-such-busctl"))
    assert logind.preparing_for_shutdown()[0] is False


def test_logind_on_this_machine_answers_false() -> None:
    """The real busctl of the machine running the tests (not shutting down; in CI there may be no system bus
    at all): false, quickly. The true case with a real logind is tests/systemd/test_daemon_shutdown.py's."""
    shutting, how = logind.preparing_for_shutdown()
    assert shutting is False, how
