"""The critical path of a parallel shutdown (issue 13: N=8 at 1.79x the
floor): what stands between the listing and the shutdown requests, and
between the last guest going off and the end of the run. Counts and
ordering, never a duration, except "returned long before a 30 s tick"."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_guests import engine
from libvirt_guests.stop import bounds as stop_bounds
from libvirt_guests.stop import run as stop
from libvirt_guests.stop.actions import Shutdown
from libvirt_guests.stop.actions import shutdown as shutdown_action
from libvirt_guests.stop.actions import suspend as actions
from libvirt_guests.virt import waits as virt
from libvirt_guests.virt.guest import Guest

from .support import Driver, Files

SLOW_TICK = 30.0  # a wait that needed a tick or a poll would take this long


def _count_looks_before_request(monkeypatch: pytest.MonkeyPatch,
                                local: threading.local | None = None) -> Counter[str]:
    """Per guest name: the state queries (state, isActive) the shutdown unit
    makes for that guest before its shutdown request (from where `local.guest`
    is set: Shutdown.perform, or the caller's own wrapper)."""
    looks: Counter[str] = Counter()
    local = local or threading.local()
    real_perform, real_shutdown = Shutdown.perform, Guest.shutdown

    def perform(self: Shutdown, item: object, last: bool) -> object:
        local.guest, local.requested = item.guest.name, False  # type: ignore[attr-defined]
        try:
            return real_perform(self, item, last)  # type: ignore[arg-type]
        finally:
            local.guest = None

    def shutdown(self: Guest) -> None:
        local.requested = True
        real_shutdown(self)

    def counting(real: Callable[[Guest], object]) -> Callable[[Guest], object]:
        def query(self: Guest) -> object:
            if getattr(local, "guest", None) == self.name and not local.requested:
                looks[self.name] += 1
            return real(self)

        return query

    for name in ("state", "is_active"):
        monkeypatch.setattr(Guest, name, counting(getattr(Guest, name)))
    monkeypatch.setattr(Shutdown, "perform", perform)
    monkeypatch.setattr(Guest, "shutdown", shutdown)
    return looks


def test_a_shutdown_looks_at_its_guest_once_before_the_request(files: Files, driver: Driver, run,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call before the request delays it, and the daemon answers the
    calls of N guests in turn: one state query, not isActive then state."""
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4")
    doms = [driver.guest() for _ in range(3)]
    looks = _count_looks_before_request(monkeypatch)
    result = run("stop")
    assert result.code == 0, result
    assert all(driver.state(d) == "off" for d in doms)
    assert looks == {d.name(): 1 for d in doms}


def test_a_paused_guest_is_still_resumed_before_its_shutdown(files: Files, driver: Driver, run,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The one look also tells a paused guest (it cannot act on the request)."""
    files.write_config(ON_SHUTDOWN="shutdown")
    dom = driver.guest()
    real_perform = Shutdown.perform

    def pause_first(self: Shutdown, item: object, last: bool) -> object:
        dom.suspend()  # paused after the plan, before the unit looks
        return real_perform(self, item, last)  # type: ignore[arg-type]

    monkeypatch.setattr(Shutdown, "perform", pause_first)
    looks = _count_looks_before_request(monkeypatch)
    result = run("stop")
    assert result.code == 0, result
    assert f"Shutdown of guest {dom.name()} complete." in result.out
    assert driver.state(dom) == "off"
    assert looks == {dom.name(): 1}


def test_a_guest_found_off_by_the_one_look_is_not_asked(files: Files, driver: Driver, run,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that went off between the plan and its turn: recorded as
    stopped by itself, no request sent."""
    files.write_config(ON_SHUTDOWN="shutdown")
    dom = driver.guest()
    requests: list[str] = []
    real_perform = Shutdown.perform

    def off_first(self: Shutdown, item: object, last: bool) -> object:
        dom.destroy()
        return real_perform(self, item, last)  # type: ignore[arg-type]

    monkeypatch.setattr(Shutdown, "perform", off_first)
    monkeypatch.setattr(Guest, "shutdown", lambda self: requests.append(self.name))
    result = run("stop")
    assert result.code == 0, result
    assert requests == []
    assert "Starting shutdown on guest" not in result.out
    assert ": 0 saved, 1 shut down, 0 powered off" in result.out
    assert '"detail": "stopped by itself"' in files.state_file.read_text() or \
        "stopped by itself" in Path(f"{files.state_file}.log").read_text()


def test_guests_going_off_after_the_request_end_the_stop_on_their_events(
        files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tick or poll on the critical path: with every tick and the poll
    fallback at 30 s, a stop whose guests go off a moment after their
    shutdown request returns on the lifecycle events, long before a tick."""
    for module in (engine, actions, shutdown_action, stop):  # cli reads engine.TICK when it runs
        monkeypatch.setattr(module, "TICK", SLOW_TICK)
    monkeypatch.setattr(virt, "POLL_FALLBACK", SLOW_TICK)
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4")
    doms = [driver.guest() for _ in range(4)]
    real_shutdown = Guest.shutdown

    def later(self: Guest) -> None:
        threading.Timer(0.2, real_shutdown, args=(self,)).start()  # goes off after the wait began

    monkeypatch.setattr(Guest, "shutdown", later)
    started = time.monotonic()
    result = run("stop")
    took = time.monotonic() - started
    assert result.code == 0, result
    assert all(driver.state(d) == "off" for d in doms)
    assert took < SLOW_TICK / 3, took


def _count_list_writes(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, list[str]]]]:
    writes: list[list[tuple[str, list[str]]]] = []
    real_write_list = stop.write_list

    def counting(path: Path, entries: list[tuple[str, list[str]]]) -> bool:
        writes.append([(uri, list(uuids)) for uri, uuids in entries])
        return real_write_list(path, entries)

    monkeypatch.setattr(stop, "write_list", counting)
    return writes


def test_an_unchanged_list_is_written_once(files: Files, driver: Driver, run,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The list is on disk before any guest is touched; when the run ends
    with the same lines, writing it again (two fsyncs after the last guest
    went off) adds nothing."""
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4")
    doms = [driver.guest() for _ in range(3)]
    writes = _count_list_writes(monkeypatch)
    result = run("stop")
    assert result.code == 0, result
    assert len(writes) == 1
    assert files.list_file.read_text().split()[1:] == [d.UUIDString() for d in doms]


def test_a_list_that_changed_during_the_stop_is_written_again(files: Files, driver: Driver, run,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Sibling: a guest undefined while the stop ran leaves the list (no
    start may fail on it), so the list is written a second time."""
    files.write_config(ON_SHUTDOWN="shutdown")
    kept, gone = driver.guest(), driver.guest()
    real_perform = Shutdown.perform

    def undefine_after(self: Shutdown, item: object, last: bool) -> object:
        step = real_perform(self, item, last)  # type: ignore[arg-type]
        if item.guest.uuid == gone.UUIDString():  # type: ignore[attr-defined]
            gone.undefine()
        return step

    monkeypatch.setattr(Shutdown, "perform", undefine_after)
    writes = _count_list_writes(monkeypatch)
    result = run("stop")
    assert result.code == 0, result
    assert len(writes) == 2
    assert files.list_file.read_text().split()[1:] == [kept.UUIDString()]


def test_a_waiting_shutdown_asks_libvirt_on_events_not_on_every_slice(files: Files, driver: Driver, run,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The shutdown wait looks at its bounds every TICK; it used to ask
    libvirt twice per TICK too (4 calls a second per waiting guest, 4000 at
    N=1000). With events, libvirt is asked once, then again only on an event
    (or a close, or every POLL_FALLBACK: here 30 s, so never), and once
    more when its time is up (issue 19: an event may be late or lost)."""
    monkeypatch.setattr(virt, "POLL_FALLBACK", SLOW_TICK)
    files.write_config(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="2")
    dom = driver.guest()
    asks = 0
    local = threading.local()
    real_wait, real_is_active = Shutdown._wait, Guest.is_active

    def waiting(self: Shutdown, item: object, last: bool) -> bool:
        local.waiting = True
        try:
            return real_wait(self, item, last)  # type: ignore[arg-type]
        finally:
            local.waiting = False

    def is_active(self: Guest) -> bool:
        nonlocal asks
        if getattr(local, "waiting", False):
            asks += 1
        return real_is_active(self)

    monkeypatch.setattr(Shutdown, "_wait", waiting)
    monkeypatch.setattr(Guest, "is_active", is_active)
    monkeypatch.setattr(Guest, "shutdown", lambda self: None)  # a guest that does not go off
    result = run("stop")
    assert result.code == 1, result
    assert f"Shutdown of guest {dom.name()} failed to complete in time." in result.out
    assert asks == 2  # was 1 before issue 19's last look at the end; 8 before issue 13


def test_without_events_a_shutdown_still_sees_its_guests_go_off(files: Files, driver: Driver, run,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Sibling: on a connection without lifecycle events nothing wakes the
    wait, so libvirt is still asked every POLL_FALLBACK seconds."""
    import libvirt

    def no_events(*_args: object) -> int:
        raise libvirt.libvirtError("no domain events here")

    monkeypatch.setattr(libvirt.virConnect, "domainEventRegisterAny", no_events)
    files.write_config(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="4", SHUTDOWN_TIMEOUT="60")
    doms = [driver.guest() for _ in range(3)]
    real_shutdown = Guest.shutdown
    monkeypatch.setattr(Guest, "shutdown",
                        lambda self: threading.Timer(0.2, real_shutdown, args=(self,)).start())
    started = time.monotonic()
    result = run("stop")
    took = time.monotonic() - started
    assert result.code == 0, result
    assert "no domain events" in result.err
    assert all(f"Shutdown of guest {d.name()} complete." in result.out for d in doms)
    assert took < 20, took  # seen by the polling, not at the 60 s timeout


def test_at_the_deadline_a_shutdown_also_looks_once_before_the_request(files: Files, driver: Driver, run,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Sibling, the other path to a shutdown request: at STOP_DEADLINE each
    guest not yet done gets its last action at once (its wait is watched per
    URI), with one look at it first, not two."""
    from libvirt_guests.stop import chains

    from .test_stop_safety import _save_until_aborted, bounded

    release = threading.Event()
    monkeypatch.setattr(stop_bounds, "DEADLINE_GRACE", 1.0)
    monkeypatch.setattr(stop_bounds, "ABORT_WAIT", 1.0)
    monkeypatch.setattr(actions, "ABORT_WAIT", 1.0)
    _save_until_aborted(monkeypatch, release)
    files.write_config(ON_SHUTDOWN="suspend shutdown", PARALLEL_SAVE="1", PAUSE_BEFORE_SAVE="0", STOP_DEADLINE="1")
    doms = [driver.guest() for _ in range(3)]
    local = threading.local()
    looks = _count_looks_before_request(monkeypatch, local)
    real_watched = chains.GuestChain._shutdown_watched

    def watched(self: object, last: bool) -> object:
        local.guest, local.requested = self.item.guest.name, False  # type: ignore[attr-defined]
        try:
            return real_watched(self, last)  # type: ignore[arg-type]
        finally:
            local.guest = None

    monkeypatch.setattr(chains.GuestChain, "_shutdown_watched", watched)
    try:
        result, _took = bounded(run, "stop", limit=20)
    finally:
        release.set()
    assert result.code == 0, result
    assert all(f"Shutdown of guest {d.name()} complete." in result.out for d in doms), result.out
    assert looks == {d.name(): 1 for d in doms}


def _lose_lifecycle_events(monkeypatch: pytest.MonkeyPatch, doms: list) -> list[str]:  # noqa: ANN001
    """A fault at libvirt's event boundary: the lifecycle events of doms
    never reach the run (late past every bound, or lost); what was dropped."""
    from libvirt_guests.virt.hypervisor import Hypervisor

    uuids = {d.UUIDString() for d in doms}
    dropped: list[str] = []
    real = Hypervisor._on_lifecycle

    def on_lifecycle(self: Hypervisor, conn: object, dom: object, event: int, detail: int, opaque: object) -> None:
        if dom.UUIDString() in uuids:  # type: ignore[attr-defined]
            dropped.append(dom.name())  # type: ignore[attr-defined]
            return
        real(self, conn, dom, event, detail, opaque)

    monkeypatch.setattr(Hypervisor, "_on_lifecycle", on_lifecycle)
    return dropped


def test_at_the_deadline_a_guest_whose_event_is_lost_is_looked_at_when_its_time_is_up(
        files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: the deadline's shutdowns, waited for together (OffWatch).
    Every guest is looked at once when it is handed to the watch, and goes
    off only once all were asked (the 20th's request powers all off); their
    lifecycle events are lost and the poll is 30 s away. The watch must look
    once more when their time is up, not call them out of time unseen."""
    from libvirt_guests.stop import offwatch

    from .test_stop_safety import _save_until_aborted, bounded

    release = threading.Event()
    monkeypatch.setattr(stop_bounds, "DEADLINE_GRACE", 1.0)
    monkeypatch.setattr(stop_bounds, "ABORT_WAIT", 1.0)
    monkeypatch.setattr(actions, "ABORT_WAIT", 1.0)
    monkeypatch.setattr(virt, "POLL_FALLBACK", SLOW_TICK)
    monkeypatch.setattr(offwatch, "POLL_FALLBACK", SLOW_TICK)
    _save_until_aborted(monkeypatch, release)
    files.write_config(ON_SHUTDOWN="suspend shutdown", PARALLEL_SAVE="1", PAUSE_BEFORE_SAVE="0", STOP_DEADLINE="1")
    doms = [driver.guest() for _ in range(20)]
    dropped = _lose_lifecycle_events(monkeypatch, doms)
    asked: list[str] = []
    lock = threading.Lock()

    def shutdown(self: Guest) -> None:
        with lock:
            asked.append(self.name)
            everyone = len(asked) == len(doms)
        if everyone:
            for dom in doms:
                dom.destroy()

    monkeypatch.setattr(Guest, "shutdown", shutdown)
    try:
        result, _took = bounded(run, "stop", limit=20)
    finally:
        release.set()
    assert sorted(dropped) == sorted(d.name() for d in doms)  # the fault did happen
    assert "failed to complete in time" not in result.out, result.out
    assert all(f"Shutdown of guest {d.name()} complete." in result.out for d in doms), result.out
    assert result.code == 0, result


def test_a_waiting_shutdown_whose_event_is_lost_is_looked_at_when_its_time_is_up(
        files: Files, driver: Driver, run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sibling, the worker's wait (Shutdown._wait, SHUTDOWN_TIMEOUT): the
    guest goes off right after its first look said no, its event is lost,
    the poll is 30 s away: one last look when SHUTDOWN_TIMEOUT is up."""
    monkeypatch.setattr(virt, "POLL_FALLBACK", SLOW_TICK)
    files.write_config(ON_SHUTDOWN="shutdown", SHUTDOWN_TIMEOUT="1")
    (dom,) = [driver.guest()]
    dropped = _lose_lifecycle_events(monkeypatch, [dom])
    asked = threading.Event()
    real_is_active = Guest.is_active

    def ignores_the_button(self: Guest) -> None:
        asked.set()

    def goes_off_after_saying_no(self: Guest) -> bool:
        active = real_is_active(self)
        if active and asked.is_set() and self.uuid == dom.UUIDString():
            dom.destroy()  # right after its look said "running"
        return active

    monkeypatch.setattr(Guest, "shutdown", ignores_the_button)
    monkeypatch.setattr(Guest, "is_active", goes_off_after_saying_no)
    result = run("stop")
    assert dropped == [dom.name()]
    assert "failed to complete in time" not in result.out, result.out
    assert f"Shutdown of guest {dom.name()} complete." in result.out, result.out
    assert result.code == 0, result
