"""Per-variant metrics: cumulative buckets, windows from diffs, exact merges across devices."""

from __future__ import annotations

import random
from typing import Any, NoReturn

import pytest

from agent.core.histogram import (
    BUCKET_EDGES_US,
    LatencyHistogram,
    diff_counts,
    merge_counts,
    quantiles_of,
    window_quantiles,
)
from agent.device.inference.runner import LoopStats
from agent.device.telemetry.metrics import MetricsReporter, VariantSource
from agent.wire.codec import decode, encode
from agent.wire.messages import Metrics

BOOT_ID = "b" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _latencies_ns(seed: int, n: int, scale_us: float) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.lognormvariate(0, 0.6) * scale_us * 1000) for _ in range(n)]


def _histogram(values_ns: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in values_ns:
        hist.record_ns(value)
    return hist


def _record(stats: LoopStats, values_ns: list[int]) -> None:
    for value in values_ns:
        stats.histogram.record_ns(value)


def _expected_quantiles(values_ns: list[int]) -> tuple[float, float, float]:
    hist = _histogram(values_ns)
    p50, p90, p99 = (round(hist.quantile_us(q), 3) for q in (0.5, 0.9, 0.99))
    return p50, p90, p99


def test_windows_come_from_the_diff_of_cumulative_counts() -> None:
    clock = Clock()
    reporter = MetricsReporter(clock=clock)
    stats = LoopStats()
    source = VariantSource(variant="blue", model_version="digits-v1", stats=stats,
                           rollout_id="r1", rollout_seq=2)
    first, second = _latencies_ns(1, 4000, 300.0), _latencies_ns(2, 1500, 900.0)

    _record(stats, first)
    stats.errors = 2
    clock.now = 10.0
    body = reporter.report([source])["blue"]
    assert (body.inferences, body.errors, body.window_s) == (4000, 2, 10.0)
    assert body.throughput_per_s == 400.0
    assert (body.p50_us, body.p90_us, body.p99_us) == _expected_quantiles(first)
    assert body.series == 0 and body.rollout_id == "r1" and body.rollout_seq == 2

    _record(stats, second)
    stats.errors = 5
    clock.now = 25.0
    body = reporter.report([source])["blue"]
    assert (body.inferences, body.errors, body.window_s) == (1500, 3, 15.0)
    assert body.throughput_per_s == 100.0
    assert (body.p50_us, body.p90_us, body.p99_us) == _expected_quantiles(second)
    assert body.buckets.counts == _histogram(first + second).counts  # cumulative since boot
    assert (body.inferences_total, body.errors_total) == (5500, 5)

    clock.now = 30.0
    idle = reporter.report([source])["blue"]
    assert (idle.inferences, idle.throughput_per_s, idle.p50_us, idle.p99_us) == (0, 0.0,
                                                                                  None, None)


def test_counts_never_decrease_within_a_series() -> None:
    clock = Clock()
    reporter = MetricsReporter(clock=clock)
    stats = LoopStats()
    source = VariantSource(variant="green", model_version="digits-v2", stats=stats)
    previous: list[int] | None = None
    for step in range(5):
        _record(stats, _latencies_ns(step, 200, 100.0))
        clock.now += 5.0
        body = reporter.report([source])["green"]
        if previous is not None:
            diff_counts(previous, body.buckets.counts)  # raises if any count went down
        previous = body.buckets.counts


def test_a_replaced_histogram_starts_a_new_series() -> None:
    clock = Clock()
    reporter = MetricsReporter(clock=clock)
    old_stats = LoopStats()
    _record(old_stats, _latencies_ns(3, 100, 50.0))
    clock.now = 5.0
    blue = reporter.report([VariantSource(variant="blue", model_version="v1",
                                          stats=old_stats)])["blue"]
    assert blue.series == 0
    new_stats = LoopStats()  # promote: a new model and loop serve as blue
    fresh = _latencies_ns(4, 30, 80.0)
    _record(new_stats, fresh)
    clock.now = 8.0
    blue = reporter.report([VariantSource(variant="blue", model_version="v2",
                                          stats=new_stats)])["blue"]
    assert (blue.series, blue.inferences, blue.inferences_total, blue.window_s) == (1, 30, 30,
                                                                                   3.0)
    new_stats.histogram.reset()  # counters restarted in place
    clock.now = 9.0
    assert reporter.report([VariantSource(variant="blue", model_version="v2",
                                          stats=new_stats)])["blue"].series == 2


def test_variants_are_windowed_independently() -> None:
    clock = Clock()
    reporter = MetricsReporter(clock=clock)
    blue, green = LoopStats(), LoopStats()
    _record(blue, _latencies_ns(5, 100, 100.0))
    clock.now = 10.0
    reporter.report([VariantSource(variant="blue", model_version="v1", stats=blue)])
    _record(green, _latencies_ns(6, 40, 100.0))
    clock.now = 20.0
    bodies = reporter.report([VariantSource(variant="blue", model_version="v1", stats=blue),
                              VariantSource(variant="green", model_version="v2", stats=green)])
    assert bodies["blue"].inferences == 0 and bodies["blue"].window_s == 10.0
    assert bodies["green"].inferences == 40 and bodies["green"].window_s == 20.0


def test_merging_two_devices_equals_the_histogram_of_the_union() -> None:
    device_a, device_b = _latencies_ns(7, 3000, 200.0), _latencies_ns(8, 1000, 2000.0)
    merged = merge_counts([_histogram(device_a).counts, _histogram(device_b).counts])
    union = _histogram(device_a + device_b)
    assert merged == union.counts
    assert quantiles_of(merged, (0.5, 0.99)) == tuple(
        round(union.quantile_us(q), 3) for q in (0.5, 0.99))
    assert merge_counts([]) == []


def test_controller_windows_from_two_reports() -> None:
    first, second = _latencies_ns(9, 500, 100.0), _latencies_ns(10, 500, 1000.0)
    prev = _histogram(first).counts
    cur = _histogram(first + second).counts
    assert diff_counts(prev, cur) == _histogram(second).counts
    assert window_quantiles(prev, cur) == _expected_quantiles(second)
    assert window_quantiles(cur, cur) == (None, None, None)
    with pytest.raises(ValueError, match="decreased"):
        diff_counts(cur, prev)
    with pytest.raises(ValueError, match="buckets"):
        diff_counts(prev, cur[:-1])
    with pytest.raises(ValueError, match="cannot merge"):
        merge_counts([prev, cur[:-1]])
    with pytest.raises(ValueError, match="needs 80 counts"):
        quantiles_of([1, 2, 3])


def test_metrics_message_round_trips_and_the_controller_recovers_the_window() -> None:
    clock = Clock()
    reporter = MetricsReporter(clock=clock)
    stats = LoopStats()
    source = VariantSource(variant="blue", model_version="digits-v1", stats=stats)
    reports = []
    for seq, seed in enumerate((11, 12)):
        _record(stats, _latencies_ns(seed, 800, 150.0 * (seed - 10)))
        clock.now += 10.0
        message = Metrics(thing="pi-01", seq=seq, sent_at=0, boot_id=BOOT_ID,
                          variants=reporter.report([source]))
        reports.append(decode(encode(message), expect=Metrics))
    prev, cur = (r.variants["blue"] for r in reports)
    assert window_quantiles(prev.buckets.counts, cur.buckets.counts) == (
        cur.p50_us, cur.p90_us, cur.p99_us)
    assert sum(diff_counts(prev.buckets.counts, cur.buckets.counts)) == cur.inferences


class ReadOnlyCounts(list[int]):
    """The loop's counts list, as the reporter must treat it: read, never written."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("the reporter wrote to the hot-path histogram")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


def test_reporting_only_reads_the_hot_path_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = LoopStats()
    _record(stats, _latencies_ns(13, 1000, 100.0))
    live = ReadOnlyCounts(stats.histogram.counts)
    stats.histogram.counts = live
    before = list(live)
    for method in ("record_ns", "reset", "merge"):
        monkeypatch.setattr(stats.histogram, method, ReadOnlyCounts._refuse.__get__(live))
    reporter = MetricsReporter()
    source = VariantSource(variant="blue", model_version="v1", stats=stats)
    body = reporter.report([source])["blue"]
    body_again = reporter.report([source])["blue"]
    assert stats.histogram.counts is live and list(live) == before
    assert body.buckets.counts == before and body.buckets.counts is not live
    assert body_again.inferences == 0
    assert len(BUCKET_EDGES_US) + 1 == len(before)
