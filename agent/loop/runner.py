"""The inference loop: fill in place, run, time, check — with nothing allocated per step.

Input buffers are allocated once from the backend's specs and bound once; the
source writes each sample into them and the backend's output arrays hold each
result. Latency goes into a fixed-bucket histogram. Nothing here touches the
network, so the loop runs the same with no connectivity at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.errors import InferenceError
from agent.loop.histogram import LatencyHistogram
from agent.loop.sources import Source
from agent.runtime.base import Backend, allocate_inputs


@dataclass
class LoopStats:
    """Counters of one loop; ``histogram`` holds the per-inference latency."""

    inferences: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    elapsed_s: float = 0.0
    last_error: str = ""
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def throughput(self) -> float:
        return self.inferences / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

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
            "labelled": self.labelled,
            "last_error": self.last_error,
        }


class InferenceLoop:
    """Runs one backend on one source; :meth:`step` is the whole per-inference path."""

    def __init__(self, *, backend: Backend,
                 make_source: Callable[[tuple[np.ndarray, ...]], Source],
                 rate_hz: float = 0.0) -> None:
        self.backend = backend
        self.inputs = allocate_inputs(backend.inputs)
        self.outputs = backend.bind(self.inputs)
        self.source = make_source(self.inputs)
        self.rate_hz = rate_hz
        self.stats = LoopStats()
        self._fill = self.source.fill
        self._run = backend.run
        self._record = self.stats.histogram.record_ns
        self._scores = self.outputs[0]

    def step(self) -> None:
        label = self._fill()
        start = time.perf_counter_ns()
        try:
            self._run()
        except InferenceError as err:
            self.stats.errors += 1
            self.stats.last_error = str(err)
            return
        self._record(time.perf_counter_ns() - start)
        stats = self.stats
        stats.inferences += 1
        if label >= 0:
            stats.labelled += 1
            if self._scores.argmax() == label:
                stats.correct += 1

    def run(self, *, duration_s: float | None = None, max_inferences: int | None = None,
            stop: threading.Event | None = None,
            on_tick: Callable[[LoopStats], None] | None = None,
            tick_s: float = 1.0) -> LoopStats:
        """Step until the duration, count or stop event ends it, pacing to ``rate_hz``."""
        stats = self.stats
        period = 1.0 / self.rate_hz if self.rate_hz > 0 else 0.0
        started = time.monotonic()
        deadline = started + duration_s if duration_s is not None else float("inf")
        next_tick = started + tick_s
        next_at = started
        step = self.step
        steps = 0
        while True:
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                break
            if max_inferences is not None and steps >= max_inferences:
                break
            step()
            steps += 1
            if period:
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -period:
                    next_at = time.monotonic()  # fell behind: do not burst to catch up
            if on_tick is not None and now >= next_tick:
                stats.elapsed_s = now - started
                on_tick(stats)
                next_tick += tick_s
        stats.elapsed_s = time.monotonic() - started
        return stats

    def close(self) -> None:
        self.source.close()
        self.backend.close()
