"""A lane: one backend bound to the loop's input buffers, with counters of its own.

The loop serves from one lane; a candidate model (green) is a second lane on the
same inputs, so both see exactly the same samples with no copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.core.errors import InferenceError
from agent.core.histogram import LatencyHistogram
from agent.device.runtime.base import Backend


@dataclass
class LoopStats:
    """Counters of one lane; ``histogram`` holds the per-inference latency."""

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
    """One backend bound to the loop's input buffers, with counters of its own."""

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
