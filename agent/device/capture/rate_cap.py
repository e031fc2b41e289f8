"""The capture store's per-hour cap: a token bucket of ``per_hour`` tokens, refilled
``per_hour`` per hour of the store's clock (which tests may run fast). It starts full.
A clock that steps back refills nothing; one that jumps forward refills at most the
bucket."""

from __future__ import annotations

HOUR_S = 3600.0


class HourlyCap:
    """``take(now)`` is True (and uses a token) when one is left."""

    def __init__(self, per_hour: int, now: float) -> None:
        self.per_hour = per_hour
        self._tokens = float(per_hour)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.per_hour),
                               self._tokens + (now - self._at) * self.per_hour / HOUR_S)
        self._at = now

    def available(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        if not self.available(now):
            return False
        self._tokens -= 1.0
        return True

    def set_rate(self, per_hour: int, now: float) -> None:
        """A new cap; the tokens left stay (at most the new bucket)."""
        self._refill(now)
        self.per_hour = per_hour
        self._tokens = min(self._tokens, float(per_hour))
