"""stop, start, plan and policy against libvirt's test driver."""

from __future__ import annotations

import json
import time

import libvirt
import pytest

from .support import TEST_URI, Driver, Files


def _list(files: Files) -> list[list[str]]:
    return [line.split() for line in files.list_file.read_text().splitlines()]


def test_stop_suspend_then_start(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    files.lock_file.touch()
    result = run("stop")
    assert result.code == 0, result
    assert f"Running guests on {TEST_URI} URI: {a.name()}, {b.name()}" in result.out
    assert f"Suspending guests on {TEST_URI} URI..." in result.out
    assert f"Suspending {a.name()}: done" in result.out
    assert _list(files) == [[TEST_URI, a.UUIDString(), b.UUIDString()]]
    assert driver.state(a) == driver.state(b) == "saved"
    assert not files.lock_file.exists()
    assert run("status").code == 3

    result = run("start")
    assert result.code == 0, result
    assert f"Resuming guests on {TEST_URI} URI..." in result.out
    assert f"Resuming guest {a.name()}: done" in result.out
    assert driver.state(a) == driver.state(b) == "running"
    assert not files.list_file.exists()
    assert not files.state_file.exists()
    assert files.lock_file.exists()
    assert run("status").out.strip() == "started"


def test_stop_with_existing_list_file_is_a_no_op(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    files.list_file.write_text(f"{TEST_URI} 00000000-0000-0000-0000-00000000abcd\n")
    result = run("stop")
    assert result.code == 0 and result.out == ""
    assert driver.state(a) == "running"


def test_shutdown_command_forces_shutdown(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    result = run("shutdown")
    assert result.code == 0, result
    assert f"Shutting down guests on {TEST_URI} URI..." in result.out
    assert f"Starting shutdown on guest: {a.name()}" in result.out
    assert f"Shutdown of guest {a.name()} complete." in result.out
    assert driver.state(a) == "off"
    assert _list(files) == [[TEST_URI, a.UUIDString()]]


def test_transient_guests_not_saved_by_default(files: Files, driver: Driver, run) -> None:
    p, t = driver.guest(), driver.guest(transient=True)
    result = run("stop")
    assert result.code == 0, result
    assert f"Not suspending transient guests on URI: {TEST_URI}: {t.name()}" in result.out
    assert driver.conn.lookupByName(t.name()).isActive()
    assert _list(files) == [[TEST_URI, p.UUIDString()]]


def test_transient_guests_shut_down_but_not_recorded(files: Files, driver: Driver, run) -> None:
    files.write_config(ON_SHUTDOWN="shutdown")
    p, t = driver.guest(), driver.guest(transient=True)
    result = run("stop")
    assert result.code == 0, result
    assert f"Shutdown of guest {t.name()} complete." in result.out
    assert _list(files) == [[TEST_URI, p.UUIDString()]]  # a transient guest cannot be started again
    assert run("start").code == 0


def test_persistent_only_false_with_suspend_moves_transient_to_next_action(files: Files, driver: Driver, run):
    files.write_config(ON_SHUTDOWN="suspend shutdown", PERSISTENT_ONLY="false")
    t = driver.guest(transient=True)
    result = run("stop")
    assert result.code == 0, result
    assert f"Shutdown of guest {t.name()} complete." in result.out


def test_persistent_only_false_suspend_alone_shuts_a_transient_guest_down(files: Files, driver: Driver, run) -> None:
    """Issue 22: a guest that cannot be saved and whose chain ends at the save is shut down instead
    (before: left running, exit 1, for the host to kill), with a warning naming why."""
    files.write_config(PERSISTENT_ONLY="false")
    t = driver.guest(transient=True)
    result = run("stop")
    assert result.code == 0, result
    assert f"guest {t.name()}: cannot be saved: a transient guest" in result.err
    assert "it is shut down instead" in result.err
    assert t.name() not in [d.name() for d in driver.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]


def test_on_boot_ignore(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    assert run("stop").code == 0
    files.write_config(ON_BOOT="ignore")
    result = run("start")
    assert result.code == 0
    assert "libvirt-guests is configured not to start any guests on boot" in result.out
    assert driver.state(a) == "saved"
    assert not files.list_file.exists()
    assert files.lock_file.exists()


def test_start_ignores_uris_no_longer_configured(files: Files, driver: Driver, run) -> None:
    files.list_file.write_text("qemu:///elsewhere 6695eb01-f6a4-8304-79aa-97f2502e193f\n")
    result = run("start")
    assert result.code == 0
    assert "Ignoring guests on qemu:///elsewhere URI" in result.out
    assert not files.list_file.exists()


def test_unreachable_uri_is_skipped_on_its_own_line(files: Files, driver: Driver, run) -> None:
    bad = "qemu+unix:///system?socket=/nonexistent/sock"
    files.write_config(URIS=f"{bad} {TEST_URI}")
    a = driver.guest()
    result = run("stop")
    assert f"Can't connect to {bad}. Skipping.\n" in result.out
    assert f"Running guests on {TEST_URI} URI: {a.name()}" in result.out
    assert driver.state(a) == "saved"


def test_vanished_guest_at_start_is_not_an_error(files: Files, driver: Driver, run) -> None:
    a, b = driver.guest(), driver.guest()
    assert run("stop").code == 0
    b.managedSaveRemove(0)
    b.undefine()
    result = run("start")
    assert result.code == 0, result
    assert "no longer defined" in result.out
    assert driver.state(a) == "running"


def test_debian_list_file_is_restored(files: Files, driver: Driver, run) -> None:
    """A list file as the original writes it: URI as written, UUIDs, single spaces."""
    a = driver.guest()
    a.managedSave(0)
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()}\n")
    result = run("start")
    assert result.code == 0
    assert driver.state(a) == "running"


def test_policy_mixed_actions_and_skip(files: Files, driver: Driver, run) -> None:
    saved = driver.guest()
    down = driver.guest(policy='<policy on_shutdown="shutdown"/>')
    skipped = driver.guest(policy='<policy skip="yes"/>')
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(saved) == "saved"
    assert driver.state(down) == "off"
    assert driver.state(skipped) == "running"
    assert _list(files) == [[TEST_URI, saved.UUIDString(), down.UUIDString()]]


def test_invalid_policy_falls_back_with_warning(files: Files, driver: Driver, run) -> None:
    a = driver.guest(policy='<policy on_shutdown="explode" order="x"/>')
    result = run("stop")
    assert result.code == 0
    # one warning line per guest and run (issue 19), naming each bad attribute
    lines = [line for line in result.err.splitlines() if a.name() in line]
    assert len(lines) == 1, result.err
    assert f"guest {a.name()}: policy on_shutdown='explode' is not valid" in lines[0]
    assert " | policy order='x' is not valid" in lines[0]
    assert driver.state(a) == "saved"


def test_stop_order_groups(files: Files, driver: Driver, run) -> None:
    files.write_config(ON_SHUTDOWN="shutdown")
    low = driver.guest(policy='<policy order="1"/>')
    none = driver.guest()
    high = driver.guest(policy='<policy order="5"/>')
    result = run("stop")
    lines = [line for line in result.out.splitlines() if line.startswith("Starting shutdown")]
    assert lines == [f"Starting shutdown on guest: {g.name()}" for g in (none, high, low)]
    result = run("start")
    lines = [line.split(":")[0] for line in result.out.splitlines() if line.startswith("Resuming guest ")]
    assert lines == [f"Resuming guest {g.name()}" for g in (low, high, none)]


def test_plan_json_matches_stop(files: Files, driver: Driver, run) -> None:
    files.write_config(ON_SHUTDOWN="suspend shutdown poweroff", PARALLEL_SHUTDOWN="4")
    a = driver.guest(policy='<policy on_shutdown="shutdown poweroff" shutdown_timeout="7" order="2"/>')
    b = driver.guest()
    result = run("plan", "stop", "--json")
    assert result.code == 0
    plan = json.loads(result.out)
    groups = plan["uris"][0]["groups"]
    assert [[e["name"] for e in g] for g in groups] == [[b.name()], [a.name()]]
    assert groups[1][0]["actions"] == ["shutdown", "poweroff"]
    assert groups[1][0]["shutdown_timeout"] == 7 and groups[1][0]["shutdown_timeout_scope"] == "guest"
    assert groups[0][0]["actions"] == ["suspend", "shutdown", "poweroff"]
    assert groups[0][0]["shutdown_timeout_scope"] == "uri"
    assert driver.state(a) == driver.state(b) == "running"  # plan touches nothing
    assert run("stop").code == 0
    assert driver.state(a) == "off" and driver.state(b) == "saved"


def test_policy_command_set_show_clear(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    result = run("policy", a.name(), "--on-shutdown", "shutdown poweroff", "--order", "3", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["policy"]["on_shutdown"] == ["shutdown", "poweroff"]
    assert data["sources"]["on_shutdown"] == "guest metadata"
    assert data["sources"]["save_timeout"] == "SAVE_TIMEOUT (default)"
    xml = a.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "urn:libvirt-guests:policy:1",
                     libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert 'on_shutdown="shutdown poweroff"' in xml and 'order="3"' in xml
    assert run("policy", a.name(), "--order", "x").code == 2
    assert run("policy", a.name(), "--clear").code == 0
    assert json.loads(run("policy", a.name(), "--json").out)["metadata"] == {}


def test_gueststatus_table(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    result = run("gueststatus")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"* {TEST_URI} URI:"
    assert lines[1].split() == ["Id", "Name", "State"]
    assert set(lines[2]) == {"-"}
    assert lines[3].split()[1:] == [a.name(), "running"]
    data = json.loads(run("gueststatus", "--json").out)
    assert data["uris"][0]["guests"][0]["name"] == a.name()


def test_interrupted_stop_is_finished_by_next_stop(files: Files, driver: Driver, run) -> None:
    """A stop killed after recording: the journal says 'stopping', so the next
    stop finishes the job instead of the original's no-op."""
    a, b = driver.guest(), driver.guest()
    a.managedSave(0)  # the first guest was saved before the crash
    files.list_file.write_text(f"{TEST_URI} {a.UUIDString()} {b.UUIDString()}\n")
    files.state_file.write_text(json.dumps({"version": 1, "phase": "stopping", "guests": []}))
    files.state_file.chmod(0o600)
    result = run("stop")
    assert result.code == 0, result
    assert "Finishing an earlier stop" in result.out
    assert driver.state(b) == "saved"
    assert _list(files) == [[TEST_URI, a.UUIDString(), b.UUIDString()]]
    assert run("start").code == 0
    assert driver.state(a) == driver.state(b) == "running"


def test_poweroff_first_guest_does_not_block_the_shutdown_queue(files: Files, driver: Driver, run) -> None:
    """A guest whose chain starts with poweroff takes no shutdown slot."""
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="0")
    first = driver.guest(policy='<policy on_shutdown="poweroff"/>')
    others = [driver.guest(), driver.guest()]
    result = run("stop")
    assert result.code == 0, result
    assert f"Power-off of guest {first.name()} complete." in result.out
    assert all(driver.state(d) == "off" for d in [first, *others])


def test_state_that_cannot_be_written_does_not_stop_the_work(files: Files, driver: Driver, run,
                                                               monkeypatch, tmp_path) -> None:
    """A full or missing state directory: the guests are still saved, the error is said, exit 1."""
    monkeypatch.setenv("LIBVIRT_GUESTS_LIST_FILE", str(tmp_path / "missing-dir" / "list"))
    monkeypatch.setenv("LIBVIRT_GUESTS_STATE_FILE", str(tmp_path / "state"))
    a = driver.guest()
    result = run("stop")
    assert result.code == 1
    assert "cannot write" in result.err and "not recorded to be started at boot" in result.err
    assert driver.state(a) == "saved"


def test_an_event_wakes_only_the_waiters_of_its_guest(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """N guests waited for at once, going off one by one: each lifecycle event
    makes only its own guest's waiter ask libvirt again, so the state checks
    stay O(N), not N(N+1)/2 (issue 13)."""
    import threading

    from libvirt_guests.virt.guest import Guest
    from libvirt_guests.virt.hypervisor import Hypervisor

    checks = 0
    count_lock = threading.Lock()
    real_is_active = Guest.is_active

    def counting_is_active(self: Guest) -> bool:
        nonlocal checks
        with count_lock:
            checks += 1
        return real_is_active(self)

    monkeypatch.setattr(Guest, "is_active", counting_is_active)
    doms = [driver.guest() for _ in range(60)]
    hv = Hypervisor(TEST_URI)
    hv.connect()
    try:
        guests = {d.UUIDString(): hv.lookup(d.UUIDString()) for d in doms}
        results: list[bool] = []
        waiters = [threading.Thread(target=lambda g=g: results.append(g.wait_inactive(20)))
                   for g in guests.values()]
        for thread in waiters:
            thread.start()
        time.sleep(0.3)  # every waiter has made its first check
        for dom in doms:
            dom.destroy()
            time.sleep(0.01)  # one event at a time, as guests going off one by one
        for thread in waiters:
            thread.join(30)
    finally:
        hv.close()
    assert results == [True] * len(doms)
    assert checks <= 4 * len(doms), checks


@pytest.mark.parametrize("chain", ["suspend", "shutdown"])
def test_stop_threads_do_not_grow_with_the_guests(files: Files, driver: Driver, run, monkeypatch, chain) -> None:
    """No thread per guest (issue 13): the peak number of threads during a
    stop of 200 guests is that of 20, the caps' workers (counted, not timed)."""
    import threading

    from libvirt_guests.virt.guest import Guest

    peak = 0
    count_lock = threading.Lock()

    def counting(real):  # noqa: ANN001, ANN202
        def call(self: Guest, *args: object) -> object:
            nonlocal peak
            with count_lock:
                peak = max(peak, threading.active_count())
            return real(self, *args)
        return call

    monkeypatch.setattr(Guest, "managed_save", counting(Guest.managed_save))
    monkeypatch.setattr(Guest, "shutdown", counting(Guest.shutdown))
    monkeypatch.setattr(Guest, "is_active", counting(Guest.is_active))
    files.write_config(ON_SHUTDOWN=chain, PARALLEL_SAVE="4", PARALLEL_SHUTDOWN="4")
    peaks = {}
    for count in (20, 200):
        doms = [driver.guest() for _ in range(count)]
        peak = 0
        result = run("stop")
        assert result.code == 0, result
        assert all(driver.state(d) in ("saved", "off") for d in doms)
        peaks[count] = peak
        files.list_file.unlink()
        files.state_file.unlink(missing_ok=True)
        driver._wipe()
    assert peaks[200] <= peaks[20] + 2, peaks
    assert peaks[200] < 40, peaks


def test_start_threads_do_not_grow_with_the_guests(files: Files, driver: Driver, run, monkeypatch) -> None:
    """No thread per guest at start either (issue 13): the peak number of
    threads while starting 200 guests is that of 20 (counted, not timed)."""
    import threading

    from libvirt_guests.virt.guest import Guest

    peak = 0
    count_lock = threading.Lock()
    real_start = Guest.start

    def counting_start(self: Guest, *args: object) -> None:
        nonlocal peak
        with count_lock:
            peak = max(peak, threading.active_count())
        real_start(self, *args)

    monkeypatch.setattr(Guest, "start", counting_start)
    files.write_config(PARALLEL_START="4")
    peaks = {}
    for count in (20, 200):
        doms = [driver.guest() for _ in range(count)]
        assert run("stop").code == 0
        peak = 0
        result = run("start")
        assert result.code == 0, result
        assert all(driver.state(d) == "running" for d in doms)
        peaks[count] = peak
        files.list_file.unlink(missing_ok=True)
        files.state_file.unlink(missing_ok=True)
        driver._wipe()
    assert peaks[200] <= peaks[20] + 2, peaks
    assert peaks[200] < 40, peaks
