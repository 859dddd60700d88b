"""The stop's deadline learnt from a UPS on battery, asked of NUT's upsd over
its network protocol (RFC 9271): `GET VAR <ups> ups.status` and
`GET VAR <ups> battery.runtime`, nothing else (no login: reading variables
needs none).

The whole query, name resolution included, is bounded by QUERY_SECONDS: it
runs in a thread that is abandoned if it has not answered by then. Nothing
here raises: any failure falls back to the configured STOP_DEADLINE, said in
one line."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass

from libvirt_guests.config.load import Config
from libvirt_guests.config.settings import split_nut_ups
from libvirt_guests.output import Output
from libvirt_guests.state.files import shown

QUERY_SECONDS = 2.0
MAX_REPLY = 64 * 1024  # two answers are a few dozen bytes; more is not upsd
VARIABLES = ("ups.status", "battery.runtime")
_RUNTIME = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")  # seconds; some drivers send decimals


class UpsError(Exception):
    """upsd could not be asked, or did not answer as RFC 9271 says."""


@dataclass(frozen=True)
class UpsReading:
    status: tuple[str, ...]  # the words of ups.status: OL, OB, LB, CHRG...
    runtime: str | None  # battery.runtime as upsd sent it (seconds), None if it has none

    @property
    def on_battery(self) -> bool:
        return "OB" in self.status


def _unquote(text: str) -> str:
    """A value of a VAR line: "..." with \\" and \\\\ escaped (RFC 9271 3.2)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise UpsError(f"unexpected answer {shown(text)}")
    out, escaped = [], False
    for char in text[1:-1]:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _answer(line: str, ups: str, variable: str) -> str | None:
    """The value of one answer line; None for ERR VAR-NOT-SUPPORTED."""
    if line == "ERR VAR-NOT-SUPPORTED":
        return None
    if line.startswith("ERR "):
        raise UpsError(f"upsd answered {shown(line[4:])} for {variable}")
    prefix = f"VAR {ups} {variable} "
    if not line.startswith(prefix):
        raise UpsError(f"unexpected answer {shown(line)}")
    return _unquote(line[len(prefix):])


def _ask(ups: str, host: str, port: int, deadline: float) -> UpsReading:
    """One connection, two questions, the answers; UpsError or OSError."""
    with socket.create_connection((host, port), timeout=max(0.05, deadline - time.monotonic())) as sock:
        sock.sendall("".join(f"GET VAR {ups} {v}\n" for v in VARIABLES).encode("ascii") + b"LOGOUT\n")
        data = b""
        while data.count(b"\n") < len(VARIABLES):
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpsError("upsd did not answer in time")
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                raise UpsError("upsd closed the connection without answering")
            data += chunk
            if len(data) > MAX_REPLY:
                raise UpsError("upsd's answer is too long")
    lines = data.decode("utf-8", errors="replace").split("\n")
    status = _answer(lines[0].rstrip("\r"), ups, VARIABLES[0])
    if status is None:
        raise UpsError("upsd has no ups.status for it")
    return UpsReading(tuple(status.split()), _answer(lines[1].rstrip("\r"), ups, VARIABLES[1]))


def query(nut_ups: str, timeout: float = QUERY_SECONDS) -> UpsReading:
    """Ask upsd about a UPS named as NUT_UPS names it; UpsError (one line)
    for anything but an answer within timeout seconds."""
    address = split_nut_ups(nut_ups)
    if address is None:
        raise UpsError("not a UPS name")
    ups, host, port = address
    deadline = time.monotonic() + timeout
    result: list[UpsReading | BaseException] = []

    def worker() -> None:
        try:
            result.append(_ask(ups, host, port, deadline))
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            result.append(err)

    thread = threading.Thread(target=worker, name="nut-query", daemon=True)
    thread.start()
    thread.join(timeout + 0.1)
    if not result:
        raise UpsError(f"no answer within {timeout:g} s")
    answer = result[0]
    if isinstance(answer, UpsReading):
        return answer
    if isinstance(answer, UpsError):
        raise answer
    if isinstance(answer, (TimeoutError, socket.timeout)):
        raise UpsError(f"no answer within {timeout:g} s")
    if isinstance(answer, OSError):
        raise UpsError(answer.strerror or str(answer) or type(answer).__name__)
    raise UpsError(f"{type(answer).__name__}")


@dataclass(frozen=True)
class UpsDeadline:
    seconds: int  # the deadline the stop uses (0: none)
    message: str | None  # one line for the log, None when NUT_UPS is off
    problem: bool = False  # the message is a warning: the UPS could not be read


def stop_deadline(configured: int, nut_ups: str, reserve: int, timeout: float = QUERY_SECONDS) -> UpsDeadline:
    """The stop's deadline: with the UPS on battery, the smaller of the
    configured one (0: none) and its runtime less the reserve (at least 1 s);
    else, or if it cannot be read, the configured one. Never raises."""
    if not nut_ups:
        return UpsDeadline(configured, None)
    name = shown(nut_ups, 80)
    keeps = f"the stop deadline stays STOP_DEADLINE={configured}" + (" (none)" if not configured else "")
    try:
        reading = query(nut_ups, timeout)
    except UpsError as err:
        return UpsDeadline(configured, f"UPS {name}: cannot ask upsd: {err}; {keeps}", True)
    except Exception as err:  # noqa: BLE001 - the stop goes on with its configured deadline
        return UpsDeadline(configured, f"UPS {name}: cannot ask upsd ({type(err).__name__}); {keeps}", True)
    status = shown(" ".join(reading.status), 80)
    if not reading.on_battery:
        return UpsDeadline(configured, f"UPS {name} is not on battery (status {status}); {keeps}")
    text = reading.runtime.strip() if reading.runtime is not None else ""
    if not _RUNTIME.fullmatch(text):
        said = "no battery.runtime" if reading.runtime is None else f"battery.runtime {shown(text)}"
        return UpsDeadline(configured, f"UPS {name} is on battery but reports {said}; {keeps}", True)
    runtime = int(float(text))
    left = max(1, runtime - reserve)
    if configured and configured <= left:
        return UpsDeadline(configured, f"UPS {name} is on battery with {runtime} s of runtime; {keeps}, "
                                       f"shorter than the runtime less NUT_RESERVE={reserve}")
    return UpsDeadline(left, f"UPS {name} is on battery with {runtime} s of runtime: the stop deadline is "
                             f"{left} s (the runtime less NUT_RESERVE={reserve})")

def ups_deadline(cfg: Config, out: Output) -> int:
    """STOP_DEADLINE, or with NUT_UPS on battery its runtime less NUT_RESERVE if shorter (one line says which)."""
    found = stop_deadline(cfg.stop_deadline, cfg.nut_ups, cfg.nut_reserve)
    if found.message:
        (out.warn if found.problem else out.say)(found.message)
    return found.seconds

