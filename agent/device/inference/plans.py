"""Per-inference plans: what one step of the loop does in each mode.

A :class:`Plan` names its mode, the lanes it runs and its ``step``: a flat
closure over those lanes, built once with everything it touches bound as a
local, so a step allocates nothing and looks nothing up by attribute.
:func:`serve` is the one step of a single lane, the loop's own plan and the
router's plain mode alike; :func:`shadow` and :func:`weighted` are the
blue/green splits. The loop installs a plan between two inferences (see
:meth:`~agent.device.inference.runner.InferenceLoop.use`), so switching plan
(shadow -> weighted -> promote -> rollback) never fails an inference.

``on_result``, when given, is called after each served inference with the lane that
served it (a result stream's hand-off, :mod:`agent.device.results.handoff`); shadow's
green runs are never offered.

``capture``, when given (:class:`~agent.device.inference.capture_hooks.CaptureHooks`),
is called at fixed points: ``served`` when the step's own countdown (started at
``first``) reaches zero after a served inference, ``compared`` after each shadow
comparison, ``failed`` after a failed inference (its input still in the buffers). A
plan built without it runs the very step it ran before capture existed.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.device.inference.capture_hooks import CaptureHooks
from agent.device.inference.lane import Lane

Step = Callable[[], None]
Fill = Callable[[], int]  # writes the next sample into the inputs; its label or -1
ResultHook = Callable[[Lane], None]  # takes the served lane's outputs (must not block)
NEVER = 2**62  # a countdown that never reaches zero (no ``served`` hook)


def _never(_lane: Lane, _label: int) -> int:
    return NEVER


def _ignore_failed(_lane: Lane, _err: Exception) -> None:
    pass


def _ignore_compared(_blue: Lane, _green: Lane, _agreed: bool, _drift: float) -> None:
    pass


def _hooks(capture: CaptureHooks) -> tuple[Callable[[Lane, int], int], int,
                                           Callable[[Lane, Exception], None],
                                           Callable[[Lane, Lane, bool, float], None]]:
    """A capture's hooks with no-ops for the points it does not watch."""
    served = capture.served if capture.served is not None else _never
    first = max(1, capture.first) if capture.served is not None else NEVER
    failed = capture.failed if capture.failed is not None else _ignore_failed
    compared = capture.compared if capture.compared is not None else _ignore_compared
    return served, first, failed, compared


@dataclass(frozen=True, eq=False)
class Plan:
    """One mode of the loop: ``step`` runs one inference on ``lanes`` (serving lane first)."""

    name: str  # "serve", "shadow" or "weighted"
    lanes: tuple[Lane, ...]
    step: Step


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
    # numpy's argmax allocates (~136 bytes) on every call: callers check a fixed
    # sample of labelled inferences, so that a step stays allocation-free.
    lane.stats.checked += 1
    if lane.outputs[0].argmax() == label:
        lane.stats.correct += 1


def serve(fill: Fill, lane: Lane, *, check_every: int = 1,
          on_result: ResultHook | None = None, capture: CaptureHooks | None = None) -> Plan:
    """Every inference on ``lane``: fill, run, record its latency, check top-1 on every
    ``check_every``-th labelled one.

    Kept flat on purpose (the defaults bind globals as locals): at a few
    microseconds per inference, every attribute lookup shows.
    """
    if check_every < 1:
        raise ValueError("check_every must be >= 1")
    if capture is not None:
        return _serve_captured(fill, lane, check_every, on_result, capture)
    run = lane.run
    counts, edges = lane.stats.histogram.counts, lane.stats.histogram.edges_ns
    countdown = 1

    def step(_now: Callable[[], int] = time.perf_counter_ns,
             _bucket: Callable[[Sequence[int], int], int] = bisect.bisect_left) -> None:
        nonlocal countdown
        label = fill()
        start = _now()
        try:
            run()
        except Exception as err:  # the backend's raw runner: translated right here
            lane.failed(err)
            return
        counts[_bucket(edges, _now() - start)] += 1
        if on_result is not None:
            on_result(lane)
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = check_every
                _check(lane, label)

    return Plan("serve", (lane,), step)


def _serve_captured(fill: Fill, lane: Lane, check_every: int, on_result: ResultHook | None,
                    capture: CaptureHooks) -> Plan:
    """:func:`serve`'s step with the capture hooks: one more countdown."""
    run = lane.run
    counts, edges = lane.stats.histogram.counts, lane.stats.histogram.edges_ns
    served, picks, failed, _ = _hooks(capture)
    countdown = 1

    def step(_now: Callable[[], int] = time.perf_counter_ns,
             _bucket: Callable[[Sequence[int], int], int] = bisect.bisect_left) -> None:
        nonlocal countdown, picks
        label = fill()
        start = _now()
        try:
            run()
        except Exception as err:
            lane.failed(err)
            failed(lane, err)
            return
        counts[_bucket(edges, _now() - start)] += 1
        if on_result is not None:
            on_result(lane)
        picks -= 1
        if not picks:
            picks = served(lane, label)
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = check_every
                _check(lane, label)

    return Plan("serve", (lane,), step)


def shadow(fill: Fill, blue: Lane, green: Lane, stats: ShadowStats, *, every: int,
           lock: threading.Lock | None = None,
           on_result: ResultHook | None = None, capture: CaptureHooks | None = None) -> Plan:
    """Blue serves every inference; green also runs on every ``every``-th input (inline,
    on the same buffers: a copy of the input costs nothing) and is compared, never served.

    Green runs on the loop's thread so that its latency is measured as blue's is (on a
    thread of its own it would also be timed waiting for the interpreter while the loop
    runs, and the latency guardrail would judge that wait). ``lock`` is held around its
    run and comparison: the request path's shadow worker runs the same green.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    green_lock = lock if lock is not None else threading.Lock()
    if capture is not None:
        return _shadow_captured(fill, blue, green, stats, every, green_lock, on_result,
                                capture)
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
        if on_result is not None:
            on_result(blue)
        count += 1
        if count % every:
            return
        with green_lock:
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

    return Plan("shadow", (blue, green), step)


def _shadow_captured(fill: Fill, blue: Lane, green: Lane, stats: ShadowStats, every: int,
                     green_lock: threading.Lock, on_result: ResultHook | None,
                     capture: CaptureHooks) -> Plan:
    """:func:`shadow`'s step with the capture hooks. The served countdown is looked at
    after green's run, so a capture of a shadowed inference holds both variants' outputs."""
    blue_scores, green_scores = blue.outputs[0], green.outputs[0]
    served, picks, failed, compared = _hooks(capture)
    count = 0

    def step(_now: Callable[[], int] = time.perf_counter_ns) -> None:
        nonlocal count, picks
        label = fill()
        start = _now()
        try:
            blue.run()
        except Exception as err:
            blue.failed(err)
            failed(blue, err)
            return
        _record(blue, start)
        if on_result is not None:
            on_result(blue)
        count += 1
        if not count % every:
            with green_lock:
                start = _now()
                try:
                    green.run()
                except Exception as err:
                    green.failed(err)
                    failed(green, err)
                else:
                    _record(green, start)
                    stats.compared += 1
                    agreed = bool(blue_scores.argmax() == green_scores.argmax())
                    if agreed:
                        stats.agreed += 1
                    drift = float(abs(blue_scores - green_scores).mean())
                    stats.drift_sum += drift
                    if label >= 0:
                        _check(blue, label)
                        _check(green, label)
                    compared(blue, green, agreed, drift)
        picks -= 1
        if not picks:
            picks = served(blue, label)

    return Plan("shadow", (blue, green), step)


def weighted(fill: Fill, blue: Lane, green: Lane, green_percent: int, *,
             check_every: int = 1, on_result: ResultHook | None = None,
             capture: CaptureHooks | None = None) -> Plan:
    """Production-variant weights: exactly ``green_percent`` of every 100 consecutive
    inferences go to green, deterministically (an error accumulator, no randomness).
    A green failure is retried on blue, so the request still gets an answer."""
    if check_every < 1:
        raise ValueError("check_every must be >= 1")
    if capture is not None:
        return _weighted_captured(fill, blue, green, green_percent, check_every, on_result,
                                  capture)
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
        if on_result is not None:
            on_result(lane)
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = check_every
                _check(lane, label)

    return Plan("weighted", (blue, green), step)


def _weighted_captured(fill: Fill, blue: Lane, green: Lane, green_percent: int,
                       check_every: int, on_result: ResultHook | None,
                       capture: CaptureHooks) -> Plan:
    """:func:`weighted`'s step with the capture hooks."""
    served, picks, failed, _ = _hooks(capture)
    accumulator = 0
    countdown = 1

    def step(_now: Callable[[], int] = time.perf_counter_ns) -> None:
        nonlocal accumulator, countdown, picks
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
            failed(lane, err)
            if lane is blue:
                return
            lane = blue
            start = _now()
            try:
                blue.run()
            except Exception as again:
                blue.failed(again)
                failed(blue, again)
                return
        _record(lane, start)
        if on_result is not None:
            on_result(lane)
        picks -= 1
        if not picks:
            picks = served(lane, label)
        if label >= 0:
            countdown -= 1
            if not countdown:
                countdown = check_every
                _check(lane, label)

    return Plan("weighted", (blue, green), step)
