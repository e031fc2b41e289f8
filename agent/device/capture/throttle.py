"""A token bucket in bytes: what keeps capture uploads within the configured bandwidth.

The bucket holds at most ``burst_bytes`` and fills at ``rate`` bytes a second. Taking
more than it holds runs it into debt, and the caller sleeps until the debt is paid, so a
chunk of any size is paced and the average over a long transfer stays at ``rate``. A rate
of 0 means unlimited: :meth:`Throttle.take` never waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_BURST = 64 * 1024


class Throttle:
    """``Throttle(rate)``; :meth:`take` ``(n)`` before sending ``n`` bytes. Thread-safe.
    ``clock`` and ``sleep`` are injectable (tests; the uploader's ``sleep`` returns early
    when it is stopped, and the bucket still counts time by ``clock``)."""

    def __init__(self, rate_bytes_per_second: float, *, burst_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if rate_bytes_per_second < 0:
            raise ValueError("a bandwidth cannot be negative")
        self.rate = float(rate_bytes_per_second)
        default_burst = min(DEFAULT_BURST, max(1, int(self.rate)))
        self.burst = max(1, burst_bytes if burst_bytes is not None else default_burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._last = clock()
        self.waited_s = 0.0  # total time callers were told to wait

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def set_rate(self, rate_bytes_per_second: float) -> None:
        """Change the rate (0: unlimited); what was already owed stays owed."""
        with self._lock:
            self._refill()
            self.rate = max(0.0, float(rate_bytes_per_second))

    def _refill(self) -> None:
        now = self._clock()
        if self.rate > 0:
            self._tokens = min(float(self.burst),
                               self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` from the bucket and return how long the caller must wait
        before sending them (0 when the bucket held them)."""
        if nbytes < 0:
            raise ValueError("a byte count cannot be negative")
        with self._lock:
            if self.rate <= 0:
                return 0.0
            self._refill()
            self._tokens -= nbytes
            if self._tokens >= 0:
                return 0.0
            wait = -self._tokens / self.rate
            self.waited_s += wait
            return wait

    def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may be sent."""
        wait = self.reserve(nbytes)
        if wait > 0:
            self._sleep(wait)
