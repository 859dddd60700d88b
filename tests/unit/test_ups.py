"""The stop's deadline from a UPS on battery, against NUT's real upsd and
dummy-ups driver (tests/testbed/nut.py, on a private port), and against
servers that misbehave (slow, garbage, silent) for the bound and the fallback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_guests.config.load import Paths, load
from libvirt_guests.stop.ups import UpsError, query, stop_deadline
from tests.testbed import nut

from .support import Files


@pytest.fixture(scope="module")
def upsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nut.NutServer]:
    if not nut.available():
        pytest.fail("NUT's upsd and dummy-ups are missing: run `bash tests/testbed/setup.sh` as root", pytrace=False)
    server = nut.NutServer(tmp_path_factory.mktemp("nut"))
    try:
        server.start("OL", "1200")
        yield server
    finally:
        server.stop()


def test_on_line_power_keeps_the_configured_deadline(upsd: nut.NutServer) -> None:
    upsd.set("OL CHRG", "1200")
    reading = query(upsd.ups)
    assert reading.status == ("OL", "CHRG") and reading.runtime == "1200" and not reading.on_battery
    found = stop_deadline(300, upsd.ups, 60)
    assert found.seconds == 300 and not found.problem
    assert found.message == f"UPS {upsd.ups} is not on battery (status OL CHRG); the stop deadline stays " \
                            "STOP_DEADLINE=300"


def test_on_battery_the_runtime_less_the_reserve_wins(upsd: nut.NutServer) -> None:
    upsd.set("OB DISCHRG", "240")
    assert query(upsd.ups).on_battery
    found = stop_deadline(0, upsd.ups, 60)
    assert found.seconds == 180 and not found.problem
    assert found.message == f"UPS {upsd.ups} is on battery with 240 s of runtime: the stop deadline is 180 s " \
                            "(the runtime less NUT_RESERVE=60)"
    assert stop_deadline(600, upsd.ups, 60).seconds == 180
    kept = stop_deadline(100, upsd.ups, 60)
    assert kept.seconds == 100 and "stays STOP_DEADLINE=100" in (kept.message or "")
    assert stop_deadline(0, upsd.ups, 500).seconds == 1  # less than the reserve left: stop at once, not "none"
    upsd.set("OB LB", "90.5")
    assert stop_deadline(0, upsd.ups, 30).seconds == 60


def test_on_battery_without_runtime_falls_back(tmp_path: Path) -> None:
    # dummy-ups never drops a variable it served: a driver of its own, that never had one
    server = nut.NutServer(tmp_path)
    try:
        server.start("OB", None)
        assert query(server.ups).runtime is None
        found = stop_deadline(300, server.ups, 60)
    finally:
        server.stop()
    assert found.seconds == 300 and found.problem
    assert found.message == f"UPS {server.ups} is on battery but reports no battery.runtime; the stop deadline " \
                            "stays STOP_DEADLINE=300"


def test_on_battery_with_garbage_runtime_falls_back(upsd: nut.NutServer) -> None:
    upsd.set("OB", "5min")
    found = stop_deadline(0, upsd.ups, 60)
    assert found.seconds == 0 and found.problem
    assert "battery.runtime 5min; the stop deadline stays STOP_DEADLINE=0 (none)" in (found.message or "")


def test_unknown_ups_and_no_server_fall_back(upsd: nut.NutServer) -> None:
    found = stop_deadline(120, f"nosuch@127.0.0.1:{upsd.port}", 60)
    assert found.seconds == 120 and found.problem
    assert "cannot ask upsd: upsd answered UNKNOWN-UPS for ups.status" in (found.message or "")
    closed = nut.free_port()
    found = stop_deadline(120, f"dummy@127.0.0.1:{closed}", 60)
    assert found.seconds == 120 and found.problem and "Connection refused" in (found.message or "")
    assert stop_deadline(120, "", 60).message is None


class FakeServer:
    """A TCP server that answers every connection with `reply` after `delay` s (None: never)."""

    def __init__(self, reply: bytes, delay: float | None = 0.0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.reply, self.delay = reply, delay
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            if self.delay is None:
                self.closing.wait(10)
                return
            self.closing.wait(self.delay)
            conn.sendall(self.reply)
            self.closing.wait(1)

    def close(self) -> None:
        self.closing.set()
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("reply", [b"garbage\ngarbage\n", b"\xff\xfe\x00\n\n", b"VAR dummy ups.status OB\nx\n",
                                   b'VAR other ups.status "OB"\nVAR other battery.runtime "1"\n', b"x" * 100000, b""])
def test_garbage_answers_fall_back_in_one_line(reply: bytes) -> None:
    server = FakeServer(reply)
    try:
        found = stop_deadline(77, f"dummy@127.0.0.1:{server.port}", 60)
    finally:
        server.close()
    assert found.seconds == 77 and found.problem
    assert found.message and "\n" not in found.message and "cannot ask upsd" in found.message


@pytest.mark.parametrize("delay", [None, 3.0])
def test_slow_or_silent_upsd_is_bounded(delay: float | None) -> None:
    server = FakeServer(b'VAR dummy ups.status "OB"\nVAR dummy battery.runtime "100"\n', delay)
    try:
        began = time.monotonic()
        found = stop_deadline(50, f"dummy@127.0.0.1:{server.port}", 10, timeout=0.5)
        took = time.monotonic() - began
    finally:
        server.close()
    assert found.seconds == 50 and found.problem and "within 0.5 s" in (found.message or "")
    assert took < 2.0  # the bound holds with a margin (timings proper are in bench/)


def test_control_characters_from_upsd_are_escaped() -> None:
    server = FakeServer(b'VAR dummy ups.status "OB \\"\x1b[2J"\nVAR dummy battery.runtime "\x1b]0;x\x07"\n')
    try:
        found = stop_deadline(0, f"dummy@127.0.0.1:{server.port}", 10)
    finally:
        server.close()
    assert found.seconds == 0 and found.problem and "\x1b" not in (found.message or "")
    assert "battery.runtime \\x1b]0;x\\x07;" in (found.message or "")


def test_a_fast_enough_fake_answer_is_read() -> None:
    server = FakeServer(b'VAR dummy ups.status "OB"\nVAR dummy battery.runtime "100"\n', 0.05)
    try:
        assert stop_deadline(0, f"dummy@127.0.0.1:{server.port}", 10).seconds == 90
    finally:
        server.close()


def test_not_a_ups_name_is_refused_at_the_door(files: Files, tmp_path: Path) -> None:
    with pytest.raises(UpsError):
        query("a b")
    files.write_config(NUT_UPS="ups@host:99999", NUT_RESERVE="x")
    config = load(Paths.resolve())
    assert config.nut_ups == "" and config.nut_reserve == 60
    assert {p.variable for p in config.problems} == {"NUT_UPS", "NUT_RESERVE"}
    files.write_config(NUT_UPS="ups@[::1]:3493", NUT_RESERVE="30")
    config = load(Paths.resolve())
    assert (config.nut_ups, config.nut_reserve, config.problems) == ("ups@[::1]:3493", 30, ())
