"""The inference loop on its own thread.

The loop thread is the only writer of its counters; telemetry reads them at
report time (the metrics reporter copies the histogram's list of ints, which is
atomic under the GIL), so the loop never waits for a report.
"""

from __future__ import annotations

import threading

from agent.device.inference.runner import InferenceLoop


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

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
