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

import numpy as np

from agent.device.inference import plans
from agent.device.inference.lane import Lane, LoopStats
from agent.device.inference.pacing import Pacer
from agent.device.inference.plans import Plan, Step
from agent.device.inference.sources import Source
from agent.device.runtime.base import Backend, allocate_inputs

__all__ = ["InferenceLoop", "Lane", "LoopStats"]


class InferenceLoop:
    """Runs one source through the installed :class:`~agent.device.inference.plans.Plan`.

    :attr:`step` is the whole per-inference path: the plan's step, bound once by
    :meth:`use`. The loop starts on :func:`~agent.device.inference.plans.serve` over
    its own lane; :meth:`run` looks ``step`` up before every inference, so a plan
    installed from another thread lands between two inferences.
    """

    plan: Plan
    step: Step

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
        self.steps_done = 0  # by run(): lets a plan switch wait until the old plan is done
        self.running = False
        self.use(plans.serve(self.source.fill, self.lane, check_every=check_every))

    def use(self, plan: Plan) -> None:
        """Install ``plan``: the next inference runs its step."""
        self.plan = plan
        self.step = plan.step

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
