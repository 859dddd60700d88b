"""stop/handoff.py on libvirt's test driver: the daemon's settings stand in for
a QEMU daemon's (the classifier is proven on its own, and with real poweroffs in
tests/systemd/test_daemon_shutdown.py), logind is a fake busctl. What is proven
here is the decision and the wait: defer only at a logind shutdown and only
for covered guests, record what the daemon left, fall back to our chain at the
bound, and say the conflict in one error line otherwise."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from libvirt_guests.stop import handoff
from libvirt_guests.virt import logind
from libvirt_guests.virt.daemonshutdown import DaemonShutdown, Settings

from .support import TEST_URI, Driver, Files

ON = DaemonShutdown(TEST_URI, "on", "qemu.conf: auto_shutdown_try_shutdown=persistent",
                    Settings(shutdown="persistent"))


@pytest.fixture
def daemon_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "of_hypervisor", lambda hv: ON)


def busctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    script = tmp_path / "busctl"
    script.write_text(f"#!/bin/sh\necho '{{\"type\":\"b\",\"data\":{answer}}}'\n")
    script.chmod(0o755)
    monkeypatch.setenv(logind.ENV_BUSCTL, str(script))


def test_manual_stop_acts_with_one_error_line(files: Files, driver: Driver, run, daemon_on, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    busctl(tmp_path, monkeypatch, "false")
    a, b = driver.guest(), driver.guest()
    result = run("stop")
    conflict = [line for line in result.err.splitlines() if "libvirt's own shutdown handling is on" in line]
    assert len(conflict) == 1 and "not a host shutdown through logind" in conflict[0], result
    assert driver.state(a) == driver.state(b) == "saved"
    assert "Suspending" in result.out and result.code == 0


def test_logind_shutdown_defers_and_records_what_the_daemon_did(files: Files, driver: Driver, run, daemon_on,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    busctl(tmp_path, monkeypatch, "true")
    files.write_config(SHUTDOWN_TIMEOUT="20")
    a, b = driver.guest(), driver.guest()
    t = driver.guest(transient=True)  # not covered (persistent only): ours, and left alone as always
    for dom in (a, b):  # "the daemon" shuts them down a moment later
        threading.Timer(0.5, dom.destroy).start()
    result = run("stop")
    assert result.code == 0, result
    assert "waiting for it first" in result.out
    for dom in (a, b):
        assert f"Guest {dom.name()}: shut down by libvirt's own shutdown handling" in result.out
        assert f"Suspending {dom.name()}" not in result.out
    assert "libvirt's own shutdown handling is" not in result.err
    assert driver.conn.lookupByName(t.name()).isActive()
    assert "2 shut down" in result.out


def test_a_guest_the_daemon_leaves_running_gets_our_chain_at_the_bound(
        files: Files, driver: Driver, run, daemon_on, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busctl(tmp_path, monkeypatch, "true")
    files.write_config(SHUTDOWN_TIMEOUT="2")
    (a,) = [driver.guest()]
    result = run("stop")
    assert f"Guest {a.name()} still runs after libvirt's own shutdown handling" in result.out, result
    assert f"Suspending {a.name()}: done" in result.out
    assert driver.state(a) == "saved" and result.code == 0


def test_uncovered_guests_are_not_waited_for(files: Files, driver: Driver, run, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    busctl(tmp_path, monkeypatch, "true")
    transient_only = DaemonShutdown(TEST_URI, "on", "x", Settings(poweroff="transient"))
    monkeypatch.setattr(handoff, "of_hypervisor", lambda hv: transient_only)
    a = driver.guest()
    result = run("stop")
    assert "waiting for it first" not in result.out and f"Suspending {a.name()}: done" in result.out
