"""The inference loop: fill in place, run, time, check — with nothing allocated per step.

Input buffers are allocated once from the backend's specs and bound once; the
source writes each sample into them and the backend's output arrays hold each
result. Latency goes into a fixed-bucket histogram. Nothing here touches the
network, so the loop runs the same with no connectivity at all.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.core.errors import InferenceError
from agent.core.histogram import LatencyHistogram
from agent.device.inference.pacing import Pacer
from agent.device.inference.sources import Source
from agent.device.runtime.base import Backend, allocate_inputs


@dataclass
class LoopStats:
    """Counters of one loop; ``histogram`` holds the per-inference latency."""

    errors: int = 0
    checked: int = 0  # labelled inferences whose top-1 was checked
    correct: int = 0
    elapsed_s: float = 0.0
    last_error: str = ""
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def inferences(self) -> int:
        """Successful inferences: every one is in the histogram."""
        return self.histogram.total

    @property
    def throughput(self) -> float:
        return self.inferences / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.checked if self.checked else None

    def to_dict(self) -> dict[str, Any]:
        hist = self.histogram
        return {
            "inferences": self.inferences,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_per_s": round(self.throughput, 1),
            "latency_p50_us": round(hist.quantile_us(0.5), 2),
            "latency_p99_us": round(hist.quantile_us(0.99), 2),
            "latency_mean_us": round(hist.mean_us(), 2),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "checked": self.checked,
            "last_error": self.last_error,
        }


@dataclass(eq=False)
class Lane:
    """One backend bound to the loop's input buffers, with counters of its own.

    The loop serves from one lane; a candidate model (green) is a second lane on
    the same inputs, so both see exactly the same samples with no copy.
    """

    backend: Backend
    outputs: tuple[np.ndarray, ...]
    run: Callable[[], object]  # the backend's raw runner
    stats: LoopStats = field(default_factory=LoopStats)

    @classmethod
    def bind(cls, backend: Backend, inputs: tuple[np.ndarray, ...]) -> Lane:
        outputs = backend.bind(inputs)
        return cls(backend=backend, outputs=outputs, run=backend.runner())

    def failed(self, err: Exception) -> None:
        """Count an inference error; anything that is not one is raised."""
        error = self.backend.translate(err)
        if not isinstance(error, InferenceError):
            raise error from err
        self.stats.errors += 1
        self.stats.last_error = str(error)


class InferenceLoop:
    """Runs one backend on one source; :meth:`step` is the whole per-inference path.

    ``step`` may be replaced on the instance by another plan (a shadow or weighted
    split, see :mod:`agent.device.inference`); :meth:`run` looks it up before every
    inference, so a replacement lands between two inferences.
    """

    def __init__(self, *, backend: Backend,
                 make_source: Callable[[tuple[np.ndarray, ...]], Source],
                 rate_hz: float = 0.0, check_every: int = 1) -> None:
        if check_every < 1:
            raise ValueError("check_every must be >= 1")
        self.backend = backend
        self.inputs = allocate_inputs(backend.inputs)
        self.lane = Lane.bind(backend, self.inputs)
        self.outputs = self.lane.outputs
        self.source = make_source(self.inputs)
        self.rate_hz = rate_hz
        self.check_every = check_every
        self.stats = self.lane.stats
        self._fill = self.source.fill
        self._run = self.lane.run
        self._counts = self.stats.histogram.counts
        self._edges = self.stats.histogram.edges_ns
        self._scores = self.outputs[0]
        # numpy's argmax allocates (~136 bytes) on every call; checking top-1 on a
        # fixed sample of labelled inferences keeps the step allocation-free.
        self._countdown = 1
        self.steps_done = 0  # by run(): lets a plan switch wait until the old plan is done
        self.running = False

    def step(self, _now: Callable[[], int] = time.perf_counter_ns,
             _bucket: Callable[[Sequence[int], int], int] = bisect.bisect_left) -> None:
        """One inference: fill, run, record its latency, sometimes check top-1.

        Kept flat on purpose (the defaults bind globals as locals): at a few
        microseconds per inference, every attribute lookup shows.
        """
        label = self._fill()
        start = _now()
        try:
            self._run()
        except Exception as err:  # the backend's raw runner: translated right here
            self.lane.failed(err)
            return
        self._counts[_bucket(self._edges, _now() - start)] += 1
        if label >= 0:
            self._countdown -= 1
            if not self._countdown:
                self._check(label)

    def _check(self, label: int) -> None:
        self._countdown = self.check_every
        self.stats.checked += 1
        if self._scores.argmax() == label:
            self.stats.correct += 1

    def run(self, *, duration_s: float | None = None, max_inferences: int | None = None,
            stop: threading.Event | None = None,
            on_tick: Callable[[LoopStats], None] | None = None,
            tick_s: float = 1.0) -> LoopStats:
        """Step until the duration, count or stop event ends it, pacing to ``rate_hz``."""
        stats = self.stats
        pace = Pacer(self.rate_hz).wait
        started = time.monotonic()
        deadline = started + duration_s if duration_s is not None else float("inf")
        next_tick = started + tick_s
        steps = 0
        self.running = True
        try:
            while True:
                now = time.monotonic()
                if now >= deadline or (stop is not None and stop.is_set()):
                    break
                if max_inferences is not None and steps >= max_inferences:
                    break
                self.step()  # looked up each time: a new plan lands between two inferences
                steps += 1
                self.steps_done += 1
                pace()
                if on_tick is not None and now >= next_tick:
                    stats.elapsed_s = now - started
                    on_tick(stats)
                    next_tick += tick_s
        finally:
            self.running = False
        stats.elapsed_s = time.monotonic() - started
        return stats

    def close(self) -> None:
        self.source.close()
        self.backend.close()
