"""Per-inference plans: what one step of the loop does in each variant mode.

Each plan is a closure over the lanes it uses, installed as the loop's
``step``; the loop looks ``step`` up before every inference, so switching plan
(shadow -> weighted -> promote -> rollback) lands between two inferences and
no inference ever fails because of it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.device.inference.runner import InferenceLoop, Lane

Step = Callable[[], None]


@dataclass
class ShadowStats:
    """Green's outputs compared with blue's on the shadowed inferences."""

    compared: int = 0
    agreed: int = 0
    drift_sum: float = 0.0  # sum of mean |blue - green| over the output vector

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def drift(self) -> float | None:
        return self.drift_sum / self.compared if self.compared else None


def _record(lane: Lane, started: int, _now: Callable[[], int] = time.perf_counter_ns,
            _bucket: Callable[[Sequence[int], int], int] = bisect.bisect_left) -> None:
    hist = lane.stats.histogram
    hist.counts[_bucket(hist.edges_ns, _now() - started)] += 1


def _check(lane: Lane, label: int) -> None:
    lane.stats.checked += 1
    if lane.outputs[0].argmax() == label:
        lane.stats.correct += 1


def serve(loop: InferenceLoop, lane: Lane) -> Step:
    """Every inference on ``lane`` (after a promote: the new blue)."""
    fill, run, every = loop.source.fill, lane.run, loop.check_every
    counts, edges = lane.stats.histogram.counts, lane.stats.histogram.edges_ns
    countdown = 1

    def step(_now: Callable[[], int] = time.perf_counter_ns,
             _bucket: Callable[[Sequence[int], int], int] = bisect.bisect_left) -> None:
        nonlocal countdown
        label = fill()
        start = _now()
        try:
            run()
        except Exception as err:
            lane.failed(err)
            return
        counts[_bucket(edges, _now() - start)] += 1
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = every
                _check(lane, label)

    return step


def shadow(loop: InferenceLoop, blue: Lane, green: Lane, stats: ShadowStats,
           every: int) -> Step:
    """Blue serves every inference; green also runs on every ``every``-th input (the
    same buffers: a copy of the input costs nothing) and is compared, never served."""
    fill = loop.source.fill
    blue_scores, green_scores = blue.outputs[0], green.outputs[0]
    count = 0

    def step(_now: Callable[[], int] = time.perf_counter_ns) -> None:
        nonlocal count
        label = fill()
        start = _now()
        try:
            blue.run()
        except Exception as err:
            blue.failed(err)
            return
        _record(blue, start)
        count += 1
        if count % every:
            return
        start = _now()
        try:
            green.run()
        except Exception as err:  # counted against green; blue's answer is unaffected
            green.failed(err)
            return
        _record(green, start)
        stats.compared += 1
        if blue_scores.argmax() == green_scores.argmax():
            stats.agreed += 1
        stats.drift_sum += float(abs(blue_scores - green_scores).mean())
        if label >= 0:
            _check(blue, label)
            _check(green, label)

    return step


def weighted(loop: InferenceLoop, blue: Lane, green: Lane, green_percent: int) -> Step:
    """Production-variant weights: exactly ``green_percent`` of every 100 consecutive
    inferences go to green, deterministically (an error accumulator, no randomness).
    A green failure is retried on blue, so the request still gets an answer."""
    fill, every = loop.source.fill, loop.check_every
    accumulator = 0
    countdown = 1

    def step(_now: Callable[[], int] = time.perf_counter_ns) -> None:
        nonlocal accumulator, countdown
        label = fill()
        accumulator += green_percent
        lane = blue
        if accumulator >= 100:
            accumulator -= 100
            lane = green
        start = _now()
        try:
            lane.run()
        except Exception as err:
            lane.failed(err)
            if lane is blue:
                return
            lane = blue  # fall back: the request is answered by blue
            start = _now()
            try:
                blue.run()
            except Exception as again:
                blue.failed(again)
                return
        _record(lane, start)
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = every
                _check(lane, label)

    return step
