"""What happened to each guest, kept (issue 22), and the stop's deadline from a
UPS on battery, with real guests: the history a stop and a start record, read
back through `report`; NUT's real upsd and dummy-ups driver (tests/testbed/nut.py)
shortening the deadline of a stop whose guests would otherwise be waited for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.testbed import nut

from .support import SYSTEM_URI, Tool, state

SAVE_DIR = Path("/var/lib/libvirt/qemu/save")


def history_of(tool: Tool) -> dict:
    result = tool.run("report", "--json")
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def test_stop_and_start_are_recorded_with_the_bytes_written(guests, tool: Tool, system_conn) -> None:
    saved, down = guests.create(1, memory_mib=192, dirty_mib=64)[0], guests.create(1)[0]
    down.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, '<policy on_shutdown="shutdown"/>', "guests",
                     "urn:libvirt-guests:policy:1", libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    tool.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert state(system_conn, saved) == "saved" and state(system_conn, down) == "off"
    image = (SAVE_DIR / f"{saved.name()}.save").stat().st_size
    result = tool.run("start")
    assert result.returncode == 0, result
    assert state(system_conn, saved) == state(system_conn, down) == "running"

    report = history_of(tool)
    by_uuid = {g["uuid"]: g["events"] for g in report["guests"]}
    stop_saved, start_saved = by_uuid[saved.UUIDString()]
    assert (stop_saved["kind"], stop_saved["action"], stop_saved["planned"], stop_saved["result"]) == \
        ("stop", "suspend", "suspend", "saved")
    assert stop_saved["bytes_written"] == image > 64 * 1024 * 1024  # the dirtied memory is in it
    assert stop_saved["memory_bytes"] == 192 * 1024 * 1024
    assert 0 < stop_saved["seconds"] < 120
    assert (start_saved["kind"], start_saved["action"]) == ("start", "restore")
    stop_down, start_down = by_uuid[down.UUIDString()]
    assert (stop_down["action"], stop_down["result"], stop_down["bytes_written"]) == ("shutdown", "shutdown", None)
    assert stop_down["seconds"] > 0
    assert (start_down["kind"], start_down["action"]) == ("start", "boot")
    (uri_stops,) = report["stops"]
    (record,) = uri_stops["records"]
    assert (record["uri"], record["saved"], record["bytes_saved"]) == (SYSTEM_URI, 1, image)
    assert 0 < record["save_seconds"] <= stop_saved["seconds"] + 1

    text = tool.run("report")
    assert text.returncode == 0, text
    assert f"{saved.name()} ({saved.UUIDString()}) on {SYSTEM_URI}:" in text.stdout
    assert f"Saves on {SYSTEM_URI}, the last stop:" in text.stdout


def test_a_damaged_history_sets_nothing_else_aside(guests, tool: Tool, system_conn) -> None:
    dom = guests.create(1)[0]
    history = Path(f"{tool.list_file}.history")
    history.write_bytes(b"\x00 not a history")
    tool.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert "history" in result.stderr and "set aside" in result.stderr
    assert state(system_conn, dom) == "saved"
    assert tool.list_lines() == [[SYSTEM_URI, dom.UUIDString()]]
    aside = sorted(p.name for p in history.parent.iterdir() if "-2" in p.name)
    assert aside and all(name.startswith(history.name + ".damaged-") for name in aside), aside
    assert tool.run("start").returncode == 0
    assert state(system_conn, dom) == "running"
    assert [e["kind"] for g in history_of(tool)["guests"] for e in g["events"]] == ["stop", "start"]


@pytest.fixture
def upsd(tmp_path: Path) -> Iterator[nut.NutServer]:
    assert nut.available(), "NUT's upsd and dummy-ups are missing: run `bash tests/testbed/setup.sh` as root"
    server = nut.NutServer(tmp_path / "nut")
    try:
        yield server.start("OL", "1200")
    finally:
        server.stop()


def test_ups_on_battery_shortens_the_stop_deadline(guests, tool: Tool, system_conn, upsd: nut.NutServer) -> None:
    """Guests that ignore the power button, SHUTDOWN_TIMEOUT=0 (wait for ever),
    no STOP_DEADLINE: only the UPS's runtime less the reserve ends the stop."""
    stubborn = guests.create(2, mode="stubborn")
    upsd.set("OB DISCHRG", "66")
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="0", STOP_DEADLINE="0", NUT_UPS=upsd.ups,
                   NUT_RESERVE="60")
    started = time.monotonic()
    result = tool.run("stop", timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result
    assert (f"UPS {upsd.ups} is on battery with 66 s of runtime: the stop deadline is 6 s "
            "(the runtime less NUT_RESERVE=60)") in result.stdout + result.stderr
    assert "Stop deadline reached" in result.stdout
    assert all(state(system_conn, d) == "off" for d in stubborn)
    assert 6 <= took < 6 + 10
    # both listed (in libvirt's listing order, which is not the order they were made in)
    assert [(uri, sorted(uuids)) for uri, *uuids in tool.list_lines()] == \
        [(SYSTEM_URI, sorted(d.UUIDString() for d in stubborn))]


def test_ups_that_cannot_be_asked_keeps_the_configured_deadline(guests, tool: Tool, system_conn) -> None:
    stubborn = guests.create(1, mode="stubborn")
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="0", STOP_DEADLINE="4",
                   NUT_UPS=f"dummy@127.0.0.1:{nut.free_port()}")
    started = time.monotonic()
    result = tool.run("stop", timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result
    assert "cannot ask upsd" in result.stderr and "the stop deadline stays STOP_DEADLINE=4" in result.stderr
    assert all(state(system_conn, d) == "off" for d in stubborn)
    assert 4 <= took < 4 + 10
