"""Planning asks libvirt a few questions per URI and one per guest (its
policy), not several per guest: on qemu:///system each call is a round trip
to the daemon, thousands in series at 1000 guests (issue 13). Counted, not
timed: every method of virConnect and virDomain that may reach the daemon
is wrapped and counted while planning runs. The answers must be the ones
asking each guest gives, also where a driver cannot filter its listings."""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest

from libvirt_guests.config.load import Config, Paths, load
from libvirt_guests.start.plan import StartAction, plan_start
from libvirt_guests.state.journal import GuestRecord, Journal
from libvirt_guests.stop.plan import UriStopPlan, plan_stop
from libvirt_guests.stop.run import forget_undefined
from libvirt_guests.virt.hypervisor import Hypervisor, parse_uuid

from .support import TEST_URI, Driver, Files, libvirt_error, refuse_list_filters

N = 50
# Answered by the client library from the domain object it holds: no call to the daemon.
LOCAL = frozenset({"UUID", "UUIDString", "name", "ID", "connect", "c_pointer"})


class Calls:
    """Counts of libvirt calls (Class.method) made inside window()."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.counting = False
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def window(self) -> Iterator[Counter[str]]:
        self.counts.clear()
        self.counting = True
        try:
            yield self.counts
        finally:
            self.counting = False

    def wrap(self, label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                with self.lock:
                    self.counts[label] += 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    counter = Calls()
    for cls in (libvirt.virConnect, libvirt.virDomain):
        for attr, value in list(vars(cls).items()):
            if attr.startswith("_") or attr in LOCAL or not inspect.isfunction(value):
                continue
            monkeypatch.setattr(cls, attr, counter.wrap(f"{cls.__name__}.{attr}", value))
    return counter


def _config() -> Config:
    return load(Paths.resolve(), environ={})


def _stop_guests(driver: Driver) -> dict[str, set[str]]:
    """N running guests: some paused, some transient, some skipped by their policy."""
    persistent = [driver.guest() for _ in range(N - 10)]
    transient = [driver.guest(transient=True) for _ in range(5)]
    skipped = [driver.guest(policy='<policy skip="yes"/>') for _ in range(5)]
    for dom in persistent[:7]:
        dom.suspend()
    return {
        "paused": {d.UUIDString() for d in persistent[:7]},
        "persistent": {d.UUIDString() for d in persistent},
        "transient": {d.UUIDString() for d in transient},
        "skipped": {d.UUIDString() for d in skipped},
    }


def _stop_facts(plan: UriStopPlan) -> dict[str, set[str]]:
    return {
        "paused": {i.guest.uuid for i in plan.items if i.was_paused},
        "persistent": {i.guest.uuid for i in plan.items if i.persistent},
        "transient": {g.uuid for g in plan.transient_left},
        "skipped": {g.uuid for g in plan.skipped},
    }


def test_planning_a_stop_asks_each_guest_only_for_its_policy(files: Files, driver: Driver, hv: Hypervisor,
                                                               calls: Calls) -> None:
    """Before: one listing, then per guest isActive, metadata, isPersistent
    and state (4 per guest). Now: three listings, one metadata read each."""
    expected = _stop_guests(driver)
    config = _config()
    with calls.window() as counts:
        plan = plan_stop(hv, config, None, None)
    assert dict(counts) == {"virConnect.listAllDomains": 3, "virDomain.metadata": N}
    assert _stop_facts(plan) == expected
    assert len(plan.running) == N and not plan.warnings


def test_stop_plan_asks_each_guest_where_the_driver_cannot_filter(files: Files, driver: Driver, hv: Hypervisor,
                                                                    calls: Calls,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver whose listings take no filter (VIR_ERR_NO_SUPPORT): the same
    plan, each guest asked whether it is paused and persistent."""
    expected = _stop_guests(driver)
    refuse_list_filters(monkeypatch)
    with calls.window() as counts:
        plan = plan_stop(hv, _config(), None, None)
    assert _stop_facts(plan) == expected
    assert counts["virDomain.metadata"] == counts["virDomain.isPersistent"] == counts["virDomain.state"] == N
    assert counts["virConnect.listAllDomains"] == 1  # the two refused filtered listings are not counted
    assert sum(counts.values()) == 3 * N + 1, counts


def _start_guests(driver: Driver) -> dict[str, list[str]]:
    """N defined guests as a start finds them: most saved, some shut off,
    some running (started by an admin), some paused (one by an interrupted stop)."""
    doms = [driver.guest(running=False) for _ in range(N)]
    saved, off, running, paused = doms[:30], doms[30:40], doms[40:45], doms[45:]
    for dom in saved:
        dom.create()
        dom.managedSave(0)
    for dom in running + paused:
        dom.create()
    for dom in paused:
        dom.suspend()
    return {name: [d.UUIDString() for d in group]
            for name, group in (("saved", saved), ("off", off), ("running", running), ("paused", paused))}


def _journal(tmp_path: Path, uuid: str) -> Journal:
    journal = Journal(tmp_path / "journal")
    journal.add(GuestRecord(TEST_URI, uuid, "paused-by-us", paused_by_us=True))
    return journal


def _expected_start(groups: dict[str, list[str]], gone: str) -> dict[str, StartAction]:
    expected = {u: StartAction.RESTORE for u in groups["saved"]}
    expected |= {u: StartAction.START for u in groups["off"]}
    expected |= {u: StartAction.ALREADY_ACTIVE for u in groups["running"] + groups["paused"][1:]}
    expected[groups["paused"][0]] = StartAction.RESUME
    expected[gone] = StartAction.MISSING
    return expected


def test_planning_a_start_finds_every_guest_in_one_listing(files: Files, driver: Driver, hv: Hypervisor,
                                                            calls: Calls, tmp_path: Path) -> None:
    """Before: per guest lookupByUUIDString, isActive and metadata (the
    policy), state, isActive and maybe hasManagedSaveImage (5-6 per guest).
    Now: three listings, one metadata read each."""
    groups = _start_guests(driver)
    gone = str(uuidlib.uuid4())
    uuids = [u for group in groups.values() for u in group] + [gone]
    journal = _journal(tmp_path, groups["paused"][0])
    with calls.window() as counts:
        plan = plan_start(hv, uuids, _config(), journal)
    assert dict(counts) == {"virConnect.listAllDomains": 3, "virDomain.metadata": N}
    assert {item.uuid: item.action for item in plan.items} == _expected_start(groups, gone)
    assert [item.uuid for item in plan.items] == uuids and not plan.warnings


def test_start_plan_asks_each_guest_where_the_driver_cannot_filter(files: Files, driver: Driver, hv: Hypervisor,
                                                                     calls: Calls, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    groups = _start_guests(driver)
    gone = str(uuidlib.uuid4())
    uuids = [u for group in groups.values() for u in group] + [gone]
    refuse_list_filters(monkeypatch)
    with calls.window() as counts:
        plan = plan_start(hv, uuids, _config(), _journal(tmp_path, groups["paused"][0]))
    assert {item.uuid: item.action for item in plan.items} == _expected_start(groups, gone)
    assert counts["virDomain.state"] == N  # paused? asked of each guest
    assert counts["virDomain.hasManagedSaveImage"] == len(groups["saved"]) + len(groups["off"])
    assert "virDomain.isActive" not in counts and "virConnect.lookupByUUIDString" not in counts


def test_start_plan_looks_guests_up_one_by_one_when_the_listing_fails(files: Files, driver: Driver,
                                                                       hv: Hypervisor, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    groups = _start_guests(driver)
    gone = str(uuidlib.uuid4())
    uuids = [u for group in groups.values() for u in group] + [gone]
    real = libvirt.virConnect.listAllDomains

    def failing(self: libvirt.virConnect, flags: int = 0) -> list[libvirt.virDomain]:
        if flags == 0 and self is hv.conn:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: injected listing failure")
        return real(self, flags)

    monkeypatch.setattr(libvirt.virConnect, "listAllDomains", failing)
    plan = plan_start(hv, uuids, _config(), _journal(tmp_path, groups["paused"][0]))
    assert {item.uuid: item.action for item in plan.items} == _expected_start(groups, gone)


def test_forgetting_undefined_guests_lists_each_uri_once(files: Files, driver: Driver, hv: Hypervisor,
                                                          calls: Calls) -> None:
    """Before: one lookupByUUIDString per recorded guest (and a lookupByName
    for each one gone). Now: one listing per URI."""
    present = [driver.guest().UUIDString() for _ in range(N)]
    gone = [str(uuidlib.uuid4()) for _ in range(3)]
    unlisted: list[str] = []
    run = SimpleNamespace(entries=[(TEST_URI, [*present[:20], gone[0], *present[20:], *gone[1:]])],
                          unlist=lambda uri, uuid: unlisted.append(uuid))
    with calls.window() as counts:
        forget_undefined(run, {TEST_URI: hv})  # type: ignore[arg-type]
    assert dict(counts) == {"virConnect.listAllDomains": 1}
    assert unlisted == gone


def test_forgetting_undefined_guests_looks_each_up_when_the_listing_fails(
    files: Files, driver: Driver, hv: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = [driver.guest().UUIDString() for _ in range(3)]
    gone = str(uuidlib.uuid4())
    unlisted: list[str] = []
    run = SimpleNamespace(entries=[(TEST_URI, [*present, gone])], unlist=lambda uri, uuid: unlisted.append(uuid))

    real = libvirt.virConnect.listAllDomains

    def failing(self: libvirt.virConnect, flags: int = 0) -> list[libvirt.virDomain]:
        if self is hv.conn:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: injected listing failure")
        return real(self, flags)

    monkeypatch.setattr(libvirt.virConnect, "listAllDomains", failing)
    forget_undefined(run, {TEST_URI: hv})  # type: ignore[arg-type]
    assert unlisted == [gone]


def _define(driver: Driver, name: str) -> libvirt.virDomain:
    return driver.conn.defineXML(f"""<domain type='test'><name>{name}</name><memory>65536</memory>
        <vcpu>1</vcpu><os><type>hvm</type></os></domain>""")


def test_lookup_all_finds_what_lookup_finds(driver: Driver, hv: Hypervisor) -> None:
    """By UUID as libvirt parses it (case, dashes, blanks), else by name."""
    a, b = driver.guest(), driver.guest(running=False)
    ua = a.UUIDString()
    named_like_a = _define(driver, ua.upper())  # a's UUID is found first
    unused = str(uuidlib.uuid4())
    named_like_unused = _define(driver, unused)  # a UUID no domain has: found by name
    pairs = [ua.replace("-", "")[i:i + 2] for i in range(0, 32, 2)]
    idents = [ua, ua.upper(), ua.replace("-", ""), f" \t{ua}\n ", "- " + " -".join(pairs), "-".join(pairs),
              ua + "-", ua[:-1], ua + "0", a.name(), b.name(), b.UUIDString(), unused, named_like_a.name(),
              named_like_unused.UUIDString(), "no-such-guest", "", "zz" * 16, a.name().upper()]
    found = hv.lookup_all(idents)
    for ident in idents:
        one = hv.lookup(ident)
        assert (found[ident].uuid if found[ident] else None) == (one.uuid if one else None), ident
    assert found[ua.upper()].uuid == ua  # type: ignore[union-attr]
    assert found[unused].uuid == named_like_unused.UUIDString()  # type: ignore[union-attr]
    assert found["no-such-guest"] is None


def test_parse_uuid_reads_as_libvirt_does() -> None:
    canonical = "0123abcd-4567-89ef-0123-456789abcdef"
    assert parse_uuid("0123ABCD456789EF0123456789ABCDEF") == canonical
    assert parse_uuid("  01 23-ab-cd 4567 89ef 0123 4567 89ab cdef\t") == canonical
    assert parse_uuid("-0123abcd-4567-89ef-0123-456789abcdef") == canonical
    for bad in ("", "0123abcd-4567-89ef-0123-456789abcde", "0123abcd-4567-89ef-0123-456789abcdef0",
                "0123abcd-4567-89ef-0123-456789abcdef-", "0-123abcd-4567-89ef-0123-456789abcdef", "x" * 32):
        assert parse_uuid(bad) is None, bad


def test_a_guest_gone_between_listing_and_planning_is_dropped(files: Files, driver: Driver, hv: Hypervisor,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """As before: a guest that vanished after the listing is not planned (and
    its policy that could not be read is no warning)."""
    stays, goes = driver.guest(), driver.guest(transient=True)
    real = Hypervisor.running

    def listing_then_gone(self: Hypervisor, persistent: bool | None = None) -> list:  # type: ignore[type-arg]
        guests = real(self, persistent)
        goes.destroy()
        return guests

    monkeypatch.setattr(Hypervisor, "running", listing_then_gone)
    plan = plan_stop(hv, _config(), None, None)
    assert [g.name for g in plan.running] == [stays.name(), goes.name()]
    assert [item.guest.uuid for item in plan.items] == [stays.UUIDString()]
    assert not plan.transient_left and not plan.warnings


def test_a_guest_gone_between_listing_and_start_planning_is_missing(files: Files, driver: Driver,
                                                                    hv: Hypervisor,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stays, goes = driver.guest(running=False), driver.guest(running=False)
    real = Hypervisor.lookup_all

    def listing_then_gone(self: Hypervisor, idents: list[str], facts: bool = True) -> dict:  # type: ignore[type-arg]
        found = real(self, idents, facts)
        goes.undefine()
        return found

    monkeypatch.setattr(Hypervisor, "lookup_all", listing_then_gone)
    plan = plan_start(hv, [stays.UUIDString(), goes.UUIDString()], _config(), None)
    assert [item.action for item in plan.items] == [StartAction.START, StartAction.MISSING]
    assert not plan.warnings


def test_a_policy_that_cannot_be_read_stays_with_its_guest(files: Files, driver: Driver, hv: Hypervisor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The one call per guest left (its policy) fails for one guest: that
    guest gets the host's settings with a warning, the others their own."""
    a, b = driver.guest(), driver.guest(policy='<policy on_shutdown="shutdown"/>')
    real = libvirt.virDomain.metadata

    def flaky(self: libvirt.virDomain, *args: Any) -> str:
        if self.UUIDString() == a.UUIDString():
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: injected metadata failure")
        return real(self, *args)

    monkeypatch.setattr(libvirt.virDomain, "metadata", flaky)
    plan = plan_stop(hv, _config(), None, None)
    chains = {item.guest.uuid: item.chain for item in plan.items}
    assert chains == {a.UUIDString(): ("suspend",), b.UUIDString(): ("shutdown",)}
    assert len(plan.warnings) == 1 and a.name() in plan.warnings[0] and "injected metadata failure" in plan.warnings[0]
