"""The upload bandwidth's token bucket, on an injected clock: the measured average rate
stays within 10 % of the configured one, for small chunks and for chunks bigger than the
bucket, and 0 means unlimited."""

from __future__ import annotations

import threading

import pytest

from agent.device.capture.throttle import Throttle


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.mark.parametrize(("rate", "chunk", "total"), [
    (256 * 1024, 64 * 1024, 16 * 1024 * 1024),   # the default rate, the uploader's chunk
    (10_000, 64 * 1024, 2_000_000),              # chunks far bigger than the bucket
    (1_000_000, 1_000, 5_000_000),               # many small chunks
])
def test_average_rate_within_ten_percent(rate: int, chunk: int, total: int) -> None:
    clock = FakeClock()
    throttle = Throttle(rate, clock=clock, sleep=clock.sleep)
    start = clock.now
    sent = 0
    while sent < total:
        throttle.take(chunk)
        sent += chunk
    elapsed = clock.now - start
    measured = sent / elapsed
    assert abs(measured - rate) / rate <= 0.10, (measured, rate)
    # and never faster than the rate plus one bucket
    assert sent <= rate * elapsed + throttle.burst + 1e-3


def test_pacing_holds_inside_a_transfer() -> None:
    """Every prefix of the transfer is paced too (no burst at the start beyond the
    bucket), so one big file does not leave at full speed."""
    clock = FakeClock()
    throttle = Throttle(100_000, clock=clock, sleep=clock.sleep)
    start = clock.now
    sent = 0
    for _ in range(200):
        throttle.take(10_000)
        sent += 10_000
        assert sent - throttle.burst <= 100_000 * (clock.now - start) + 1e-6


def test_idle_time_refills_at_most_one_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle(1000, burst_bytes=500, clock=clock, sleep=clock.sleep)
    assert throttle.reserve(500) == 0.0
    clock.now += 3600  # an hour idle
    assert throttle.reserve(500) == 0.0  # the bucket is full again, not an hour's worth
    assert throttle.reserve(1000) == pytest.approx(1.0)


def test_zero_is_unlimited() -> None:
    clock = FakeClock()
    throttle = Throttle(0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        throttle.take(10 * 1024 * 1024)
    assert clock.now == 1000.0
    assert throttle.unlimited


def test_rate_change_applies_to_the_next_bytes() -> None:
    clock = FakeClock()
    throttle = Throttle(1000, burst_bytes=1, clock=clock, sleep=clock.sleep)
    throttle.take(1)
    throttle.take(1000)
    assert clock.now == pytest.approx(1001.0)
    throttle.set_rate(0)
    throttle.take(10**9)
    assert clock.now == pytest.approx(1001.0)
    throttle.set_rate(500)
    throttle.take(1000)
    assert clock.now == pytest.approx(1003.0, abs=0.01)


def test_real_clock_paces(tmp_path: object) -> None:
    """With the real clock: 60 KB at 200 KB/s takes about 0.3 s minus the bucket."""
    import time

    throttle = Throttle(200_000, burst_bytes=1000)
    start = time.monotonic()
    for _ in range(60):
        throttle.take(1000)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0, elapsed


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Throttle(-1)
    with pytest.raises(ValueError, match="negative"):
        Throttle(10).reserve(-5)
