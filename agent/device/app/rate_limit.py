"""Token buckets, and reports that are let through at a bounded rate and summed up after.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` per second;
:meth:`TokenBucket.take` spends some if they are there and says whether it did, so
it never waits. :class:`ReportLimiter` puts one in front of a kind of report (an
event and its log line): while tokens last each report goes out as it happens,
the rest are counted, and :meth:`ReportLimiter.summary` hands the counts over at
most once per interval, for one summary report in their place.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` held; thread-safe and never blocking."""

    def __init__(self, *, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a token bucket needs rate >= 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, tokens: float = 1.0) -> bool:
        """Spend ``tokens`` if the bucket holds them; False (and nothing spent) if not."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < tokens:
                return False
            self._tokens -= tokens
            return True


class ReportLimiter:
    """Lets reports through while its bucket has tokens; counts the others by key."""

    def __init__(self, *, per_minute: float, burst: int, summary_interval_s: float,
                 clock: Clock = time.monotonic) -> None:
        self._bucket = TokenBucket(rate=per_minute / 60.0, burst=burst, clock=clock)
        self._interval = summary_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._suppressed: Counter[str] = Counter()
        self._summarised_at = clock()
        self.suppressed_total = 0

    def allow(self, key: str) -> bool:
        """Whether to report this one now; if not, it is counted under ``key``."""
        if self._bucket.take():
            return True
        self.count(key)
        return False

    def count(self, key: str, n: int = 1) -> None:
        """Count ``n`` that are never reported one by one (only in the summary)."""
        with self._lock:
            self._suppressed[key] += n
            self.suppressed_total += n

    def summary(self) -> dict[str, int]:
        """The counts since the last summary, if there are any and the interval has
        passed since then (they are reset); otherwise an empty dict."""
        with self._lock:
            now = self._clock()
            if not self._suppressed or now - self._summarised_at < self._interval:
                return {}
            counts, self._suppressed = dict(self._suppressed), Counter()
            self._summarised_at = now
            return counts
