"""The bounds of a stop: when each wait ends under STOP_DEADLINE and the
signals (see stop/run.py for the whole story)."""


import time

from libvirt_guests.engine import (
    ABORT_WAIT,
    INTERRUPT_GRACE,
    Interrupt,
)

DEADLINE_GRACE = 5.0  # seconds after STOP_DEADLINE for the last actions begun at the deadline


class StopBounds:
    """When each wait of a stop ends: STOP_DEADLINE and the signals."""

    def __init__(self, interrupt: Interrupt, stop_deadline: int) -> None:
        self.interrupt = interrupt
        self.deadline_at = time.monotonic() + stop_deadline if stop_deadline else None

    def past_deadline(self) -> bool:
        return self.deadline_at is not None and time.monotonic() >= self.deadline_at

    def interrupted(self) -> bool:
        return self.interrupt.is_set()

    def _signal_end(self) -> float | None:
        at = self.interrupt.at
        return None if at is None else at + INTERRUPT_GRACE

    def signal_end(self) -> float | None:
        """When the actions under way after a signal end (None: no signal yet)."""
        return self._signal_end()

    def slot_end(self) -> float | None:
        """Waiting for a slot ends at the deadline, or at once after a signal."""
        return _earliest(self.deadline_at, self.interrupt.at)

    def wait_end(self, last: bool) -> float | None:
        """When waiting for the current action (a shutdown) must end."""
        deadline = self.deadline_at
        if deadline is not None and last:
            deadline += DEADLINE_GRACE
        return _earliest(deadline, self._signal_end())

    def save_end(self, timeout_end: float | None) -> float | None:
        """When a save under way is aborted: its timeout, the deadline (last
        action or not: STOP_DEADLINE ends the stop), or the signal's bound."""
        return _earliest(timeout_end, self.deadline_at, self._signal_end())

    def give_up_at(self) -> float | None:
        """When the run stops waiting for libvirt at all."""
        after_deadline = None if self.deadline_at is None else self.deadline_at + DEADLINE_GRACE + ABORT_WAIT
        after_signal = self._signal_end()
        return _earliest(after_deadline, None if after_signal is None else after_signal + ABORT_WAIT)


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)
