"""The inference loop on its own thread, with a consistent view for telemetry.

The loop thread is the only writer of its counters; telemetry copies them at
report time. Copying a list of ints is atomic under the GIL, so a report never
sees a half-updated histogram, and the loop never waits for a report.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.loop.runner import InferenceLoop


@dataclass(frozen=True)
class LoopSnapshot:
    counts: tuple[int, ...]  # cumulative latency bucket counts since the loop started
    errors: int
    checked: int
    correct: int
    last_error: str


class InferenceWorker:
    """Runs an :class:`InferenceLoop` until stopped; never blocks on the network."""

    def __init__(self, *, loop: InferenceLoop, name: str = "inference") -> None:
        self.loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.loop.run(stop=self._stop)
        except BaseException as err:  # surfaced through `failure` and is_alive()
            self.failure = err

    def snapshot(self) -> LoopSnapshot:
        stats = self.loop.stats
        return LoopSnapshot(counts=tuple(stats.histogram.counts), errors=stats.errors,
                            checked=stats.checked, correct=stats.correct,
                            last_error=stats.last_error)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
