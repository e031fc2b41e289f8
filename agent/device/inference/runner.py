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

from agent.core.errors import DeadlineExceededError
from agent.device.inference import plans, request_plans
from agent.device.inference.lane import Lane, LoopStats
from agent.device.inference.pacing import Pacer
from agent.device.inference.plans import Plan, Step
from agent.device.inference.request_plans import RequestPlan, RequestStep
from agent.device.inference.requests import InferenceRequest, RequestQueue
from agent.device.inference.sources import Source
from agent.device.runtime.base import Backend, allocate_inputs

__all__ = ["InferenceLoop", "Lane", "LoopStats"]

IDLE_WAIT_S = 0.02  # with no continuous source, how long one idle step waits for a request
# While a source has no sample ready the loop answers requests for 1 ms, then 2, 4, up to
# 5 ms at a time: a frame waits at most that long to be noticed, and an idle agent wakes
# 200 times a second, not 1000.
SOURCE_WAIT_S = (0.001, 0.005)


class InferenceLoop:
    """Runs one source through the installed :class:`~agent.device.inference.plans.Plan`.

    :attr:`step` is the whole per-inference path: the plan's step, bound once by
    :meth:`use`. The loop starts on :func:`~agent.device.inference.plans.serve` over
    its own lane; :meth:`run` looks ``step`` up before every inference, so a plan
    installed from another thread lands between two inferences.

    With a :class:`RequestQueue`, the loop's thread also answers application requests
    (it is the runtime's only caller): between two steps, and while it waits for the next
    paced step, it answers what is queued through :attr:`request_step`. A source whose
    ``idle`` attribute is true (``api``) has no samples: the loop then only answers
    requests, and each wait of :data:`IDLE_WAIT_S` counts as a step. A source with a
    ``ready()`` method (frames from outside: video, a camera, a shared-memory ring) is asked
    before each fill; while it has no sample the loop answers requests a few milliseconds
    at a time (:data:`SOURCE_WAIT_S`; :data:`IDLE_WAIT_S` once its ``ended`` is true), each
    wait a step too.
    """

    plan: Plan
    step: Step
    request_plan: RequestPlan
    request_step: RequestStep

    def __init__(self, *, backend: Backend,
                 make_source: Callable[[tuple[np.ndarray, ...]], Source],
                 rate_hz: float = 0.0, check_every: int = 1,
                 requests: RequestQueue | None = None) -> None:
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
        self.requests = requests
        self.idle = bool(getattr(self.source, "idle", False))
        self.runtime_lock = threading.Lock()  # with no continuous source: the runtime's caller
        stats = requests.stats if requests is not None else None
        self.use(plans.serve(self.source.fill, self.lane, check_every=check_every),
                 request_plans.serve(self.lane, "blue", "", stats) if stats else None)

    def use(self, plan: Plan, request_plan: RequestPlan | None = None) -> None:
        """Install ``plan`` (and the request path's twin): the next inference runs it."""
        if request_plan is not None:
            self.request_plan = request_plan
            self.request_step = request_plan.step
        self.plan = plan
        self.step = plan.step

    def answer(self, request: InferenceRequest, timeout_s: float) -> None:
        """Answer ``request`` within ``timeout_s`` (its error, if any, is on the request).

        With a continuous source the request is queued for the loop's thread; with none
        (``api``) it runs on the caller's thread under :attr:`runtime_lock`, at most the
        queue's capacity of them waiting for it.
        """
        requests = self.requests
        if requests is None:
            raise RuntimeError("this loop takes no requests")
        if not self.idle:
            requests.submit(request)
            request.wait(timeout_s)
            return
        requests.admit()
        try:
            request.enqueued_ns = time.perf_counter_ns()
            if not self.runtime_lock.acquire(timeout=timeout_s):
                requests.stats.expired += 1
                raise DeadlineExceededError(
                    f"no answer within {timeout_s:.3f} s (the model was busy)")
            try:
                if request.claim():
                    self.request_step(request)  # read under the lock: the current plan
            finally:
                self.runtime_lock.release()
        finally:
            requests.leave()

    def quiesce(self) -> None:
        """Return once no request runs under a plan installed before this call."""
        with self.runtime_lock:
            pass

    def _answer_until(self, delay_s: float) -> None:
        """Answer requests for ``delay_s`` (the gap before the next paced step)."""
        requests = self.requests
        if requests is None:
            time.sleep(delay_s)
            return
        end = time.monotonic() + delay_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            request = requests.take(left)
            if request is not None:
                self.request_step(request)

    def _answer_queued(self) -> None:
        requests = self.requests
        if requests is None:
            return
        while requests.pending:
            request = requests.take()
            if request is None:
                return
            self.request_step(request)

    def run(self, *, duration_s: float | None = None, max_inferences: int | None = None,
            stop: threading.Event | None = None,
            on_tick: Callable[[LoopStats], None] | None = None,
            tick_s: float = 1.0) -> LoopStats:
        """Step until the duration, count or stop event ends it, pacing to ``rate_hz``."""
        stats = self.stats
        pace = Pacer(self.rate_hz, sleep=self._answer_until).wait
        requests, idle = self.requests, self.idle
        ready = getattr(self.source, "ready", None)
        first_wait, max_wait = SOURCE_WAIT_S
        wait = first_wait
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
                if idle:
                    self._answer_until(IDLE_WAIT_S)
                    self.steps_done += 1
                    continue
                if ready is not None and not ready():
                    ended = getattr(self.source, "ended", False)
                    self._answer_until(IDLE_WAIT_S if ended else wait)
                    wait = min(wait * 2, max_wait)
                    self.steps_done += 1
                    if on_tick is not None and now >= next_tick:
                        stats.elapsed_s = now - started
                        on_tick(stats)
                        next_tick += tick_s
                    continue
                if requests is not None and requests.pending:
                    self._answer_queued()
                self.step()  # looked up each time: a new plan lands between two inferences
                wait = first_wait
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
        if self.requests is not None:
            self.requests.close()
        self.source.close()
        self.backend.close()
