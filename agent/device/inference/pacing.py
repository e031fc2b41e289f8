"""Pacing a loop to a target rate without drifting and without bursting to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Sleeps after each iteration until the next slot of a fixed-rate schedule.

    A rate of 0 means unpaced. When an iteration overruns by more than one
    period the schedule restarts from now rather than running back-to-back to
    make up the lost slots.

    ``sleep`` spends each gap: by default it sleeps; the inference loop answers
    application requests in it instead.
    """

    def __init__(self, rate_hz: float, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.period = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self._next_at = time.monotonic()
        self._sleep = sleep

    def wait(self) -> None:
        period = self.period
        if not period:
            return
        self._next_at += period
        delay = self._next_at - time.monotonic()
        if delay > 0:
            self._sleep(delay)
        elif delay < -period:
            self._next_at = time.monotonic()
