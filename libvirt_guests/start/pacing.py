"""The waits of a start: START_DELAY between two guests, a policy's
start_delay after an order group, each bounded so that a typo never holds
the boot for good."""

from __future__ import annotations

import math
import threading
import time

from libvirt_guests.config.load import Config
from libvirt_guests.output import Output

# The longest a start waits between two guests or after an order group
# (START_DELAY, a policy's start_delay): beyond it a value is a typo, and
# waiting longer would hold the boot for good.
MAX_DELAY = 86400.0


def bounded_delay(seconds: float, maximum: float | None = None) -> tuple[float, str | None]:
    """A delay time.sleep takes (never NaN, negative or beyond `maximum`),
    and what to say when the value had to be changed."""
    limit = MAX_DELAY if maximum is None else maximum
    if math.isnan(seconds) or seconds < 0:
        return 0.0, f"{seconds:g} s is not a delay; not waiting"
    if seconds > limit:
        return limit, f"{seconds:g} s is more than the {limit:g} s a start waits at most; waiting {limit:g} s"
    return seconds, None


class Pacing:
    """The waits of a start: START_DELAY between two actual starts, and a
    policy's start_delay after an order group, each bounded (bounded_delay)."""

    def __init__(self, cfg: Config, out: Output) -> None:
        self.cfg = cfg
        self.out = out
        self._first_start = True
        self._delay_told = False
        self._lock = threading.Lock()

    def sleep(self, seconds: float, what: str) -> None:
        delay, note = bounded_delay(seconds)
        if note:
            self.out.warn(f"{what}: {note}")
        if delay:
            time.sleep(delay)

    def gap(self) -> None:
        """START_DELAY between two actual starts, never before the first."""
        if not self.cfg.start_delay > 0:
            return
        with self._lock:
            if self._first_start:
                self._first_start = False
                return
            delay, note = bounded_delay(self.cfg.start_delay)
            if note and not self._delay_told:
                self._delay_told = True
                self.out.warn(f"START_DELAY: {note}")
            if delay:
                time.sleep(delay)
