"""Per-guest policy in the domain's own metadata, on real guests."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import libvirt

from libvirt_guests.virt.hypervisor import start_event_loop

from .support import SYSTEM_URI, Tool, state

NS = "urn:libvirt-guests:policy:1"


def _set_policy_with_virsh(dom: libvirt.virDomain, xml: str) -> None:
    """The README's virsh command, exactly as an admin types it."""
    subprocess.run(["virsh", "-c", SYSTEM_URI, "metadata", dom.name(), "--uri", NS, "--key", "guests", "--set", xml,
                    "--config", "--live"], check=True, capture_output=True)


class Events:
    """Lifecycle events of some guests, with their arrival times."""

    def __init__(self, names: set[str]) -> None:
        start_event_loop()
        self.names = names
        self.seen: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.conn = libvirt.open(SYSTEM_URI)
        self.cb = self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on, None)

    def _on(self, _conn: object, dom: libvirt.virDomain, event: int, _detail: int, _opaque: object) -> None:
        if dom.name() in self.names:
            with self.lock:
                self.seen.append((time.monotonic(), dom.name(), event))

    def order(self, event: int) -> list[str]:
        with self.lock:
            return [name for _t, name, ev in sorted(self.seen) if ev == event]

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self.cb)
        self.conn.close()


def test_mixed_policies_in_one_stop(guests, tool: Tool, system_conn) -> None:
    saved, down, skipped = guests.create(3)
    _set_policy_with_virsh(down, '<policy on_shutdown="shutdown poweroff" shutdown_timeout="120" order="10"/>')
    _set_policy_with_virsh(skipped, '<policy skip="yes"/>')
    tool.configure(ON_SHUTDOWN="suspend")
    plan = json.loads(tool.run("plan", "stop", "--json").stdout)
    planned = {e["name"]: e["actions"] for g in plan["uris"][0]["groups"] for e in g}
    assert planned == {saved.name(): ["suspend"], down.name(): ["shutdown", "poweroff"]}
    assert plan["uris"][0]["skipped"] == [skipped.name()]
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert state(system_conn, saved) == "saved"
    assert state(system_conn, down) == "off"
    assert state(system_conn, skipped) == "running"
    assert sorted(tool.list_lines()[0][1:]) == sorted([saved.UUIDString(), down.UUIDString()])
    shown = json.loads(tool.run("policy", down.name(), "--json").stdout)
    assert shown["policy"]["shutdown_timeout"] == 120 and shown["sources"]["order"] == "guest metadata"
    assert tool.run("start").returncode == 0
    assert state(system_conn, saved) == state(system_conn, down) == "running"


def test_order_seen_in_event_timestamps(guests, tool: Tool, system_conn) -> None:
    first, second, unordered = guests.create(3)
    tool.run("policy", first.name(), "--order", "1", "--start-delay", "1")
    tool.run("policy", second.name(), "--order", "2")
    # a guest's start_delay above START_DELAY (0) needs the host's ceiling (issue 19)
    tool.configure(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN="3", POLICY_MAX_START_DELAY="1")
    events = Events({first.name(), second.name(), unordered.name()})
    try:
        assert tool.run("stop").returncode == 0
        # stop: guests without an order first, then descending order
        assert events.order(libvirt.VIR_DOMAIN_EVENT_STOPPED) == [unordered.name(), second.name(), first.name()]
        assert tool.run("start").returncode == 0
        started = events.order(libvirt.VIR_DOMAIN_EVENT_STARTED)
        assert started == [first.name(), second.name(), unordered.name()]
        times = {name: t for t, name, ev in events.seen if ev == libvirt.VIR_DOMAIN_EVENT_STARTED}
        assert times[second.name()] - times[first.name()] >= 1.0  # start_delay after the first group
    finally:
        events.close()


def test_invalid_metadata_falls_back_to_host_settings(guests, tool: Tool, system_conn) -> None:
    (dom,) = guests.create(1)
    _set_policy_with_virsh(dom, '<policy on_shutdown="hibernate" order="soon" save_timeout="-1"/>')
    tool.configure(ON_SHUTDOWN="suspend")
    result = tool.run("stop")
    assert result.returncode == 0
    (line,) = [line for line in result.stderr.splitlines() if dom.name() in line]  # one line per guest (issue 19)
    for attribute, value in (("on_shutdown", "hibernate"), ("order", "soon"), ("save_timeout", "-1")):
        assert f"policy {attribute}={value!r} is not valid" in line
    assert line.startswith(f"libvirt-guests: warning: guest {dom.name()}: policy ")
    assert state(system_conn, dom) == "saved"  # the host-wide action
    assert tool.run("start").returncode == 0


def test_plan_matches_what_the_stop_does(guests, tool: Tool, system_conn) -> None:
    normal, stubborn = guests.create(1)[0], guests.create(1, mode="stubborn")[0]
    tool.run("policy", stubborn.name(), "--on-shutdown", "shutdown poweroff", "--shutdown-timeout", "3")
    tool.configure(ON_SHUTDOWN="suspend")
    plan = tool.run("plan", "stop").stdout
    assert f"{normal.name()}: suspend" in plan
    assert f"{stubborn.name()}: shutdown -> poweroff (shutdown timeout 3 per guest)" in plan
    result = tool.run("stop")
    assert result.returncode == 0
    assert state(system_conn, normal) == "saved"
    assert f"Powering off guest {stubborn.name()}" in result.stdout
    assert state(system_conn, stubborn) == "off"
    plan_start = tool.run("plan", "start").stdout
    assert f"{normal.name()}: restore" in plan_start and f"{stubborn.name()}: start" in plan_start
    assert tool.run("start").returncode == 0
