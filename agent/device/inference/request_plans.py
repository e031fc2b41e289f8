"""Per-request plans: how the inference thread answers one application request in each
mode of the router, the request-path twin of :mod:`agent.device.inference.plans`.

- :func:`serve`: one lane answers every request;
- :func:`weighted`: exactly ``green_percent`` of every 100 consecutive requests go to
  green (the same error accumulator as the loop's weights); a request green fails is
  answered by blue;
- :func:`shadow`: blue answers; every ``every``-th request is also run on green by the
  :class:`ShadowWorker` on its own thread *after* the answer is out, so a slow green
  never delays a response.

Each answer records the model time in the answering lane's histogram (what the local
and the fleet guardrails judge) and the client-side latency in :class:`RequestStats`.
``on_result``, when given (``results.requests``), takes each successful answer's outputs,
its variant and model version just before the answer is sent (a result stream's hand-off).
``capture``, when given (the capture tap's
:attr:`~agent.device.inference.capture_hooks.CaptureHooks.request`), sees every answered
request, successful or failed, with its variant, version and error, also just before the
answer is sent: it may keep the request's input and set its ``capture_id``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.core.errors import AgentError, InferenceError
from agent.device.inference.capture_hooks import Answered, Shadowed
from agent.device.inference.lane import Lane
from agent.device.inference.plans import ShadowStats
from agent.device.inference.requests import InferenceRequest, RequestStats

RequestStep = Callable[[InferenceRequest], None]
RequestResultHook = Callable[[tuple[np.ndarray, ...], str, str], None]  # must not block
_now = time.perf_counter_ns
log = logging.getLogger("edge_agent.requests")


@dataclass(frozen=True, eq=False)
class RequestPlan:
    """One mode of the request path: ``step`` answers one request."""

    name: str  # "serve", "shadow" or "weighted"
    step: RequestStep


def _run(lane: Lane, request: InferenceRequest) -> AgentError | None:
    """Run ``request`` on ``lane``; its model time goes to the lane's histogram."""
    started = request.started_ns = _now()
    try:
        lane.backend.run_with(request.inputs, request.outputs)
    except Exception as err:
        error = lane.backend.translate(err)
        if isinstance(error, InferenceError):
            lane.stats.errors += 1
            lane.stats.last_error = str(error)
        return error
    lane.stats.histogram.record_ns(_now() - started)
    return None


def _answer(request: InferenceRequest, stats: RequestStats, variant: str, version: str,
            error: AgentError | None, on_result: RequestResultHook | None = None,
            capture: Answered | None = None) -> None:
    if on_result is not None and error is None:
        on_result(request.outputs, variant, version)
    if capture is not None:
        try:
            capture(request, variant, version, error)
        except Exception:  # a capture that fails must never cost the client its answer
            log.exception("the capture hook failed on an API request")
    request.finish(variant=variant, version=version, error=error)
    stats.record(request)


def serve(lane: Lane, variant: str, version: str, stats: RequestStats, *,
          on_result: RequestResultHook | None = None,
          capture: Answered | None = None) -> RequestPlan:
    def step(request: InferenceRequest) -> None:
        _answer(request, stats, variant, version, _run(lane, request), on_result, capture)

    return RequestPlan("serve", step)


def weighted(blue: Lane, green: Lane, green_percent: int, versions: tuple[str, str],
             stats: RequestStats, *,
             on_result: RequestResultHook | None = None,
             capture: Answered | None = None) -> RequestPlan:
    accumulator = 0

    def step(request: InferenceRequest) -> None:
        nonlocal accumulator
        accumulator += green_percent
        if accumulator >= 100:
            accumulator -= 100
            error = _run(green, request)
            if error is None or not isinstance(error, InferenceError):
                _answer(request, stats, "green", versions[1], error, on_result, capture)
                return
        _answer(request, stats, "blue", versions[0], _run(blue, request), on_result, capture)

    return RequestPlan("weighted", step)


def shadow(blue: Lane, version: str, worker: ShadowWorker, every: int,
           stats: RequestStats, *,
           on_result: RequestResultHook | None = None,
           capture: Answered | None = None) -> RequestPlan:
    if every < 1:
        raise ValueError("every must be >= 1")
    count = 0

    def step(request: InferenceRequest) -> None:
        nonlocal count
        error = _run(blue, request)
        count += 1
        if error is None and count % every == 0:
            # Before the answer: the client may reuse its memory as soon as it has it.
            worker.offer(request.inputs, request.outputs)
        _answer(request, stats, "blue", version, error, on_result, capture)

    return RequestPlan("shadow", step)


class _Slot:
    """A shadowed input and blue's outputs for it, held for green's run."""

    def __init__(self, lane: Lane) -> None:
        backend = lane.backend
        self.inputs = tuple(np.zeros(s.shape, s.dtype) for s in backend.inputs)
        self.blue = tuple(np.zeros(s.shape, s.dtype) for s in backend.outputs)
        self.green = tuple(np.zeros(s.shape, s.dtype) for s in backend.outputs)
        self.label = -1


class ShadowWorker:
    """Runs green on shadowed requests on its own thread, after their answers are out.

    Slots are preallocated; a shadowed request finds a free one or is skipped (counted),
    so a slow green never builds a backlog and never delays an answer. The request's
    inputs and blue's outputs are copied into the slot first (the client may reuse its
    shared memory as soon as it has its answer): that copy, on the sampled requests only,
    is the one cost shadowing adds to a response. ``lock`` is held around green's runs:
    the loop's own shadow plan runs the same green inline on the loop's thread.
    """

    def __init__(self, green: Lane, stats: ShadowStats, lock: threading.Lock,
                 *, slots: int = 2, on_compared: Shadowed | None = None) -> None:
        self.green, self.stats, self.lock = green, stats, lock
        self.on_compared = on_compared  # capture: (inputs, blue, green, agreed, drift)
        self._free = collections.deque(_Slot(green) for _ in range(slots))
        self._todo: collections.deque[_Slot] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self.skipped = 0
        self.copied_bytes = 0
        self._stopped = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()

    def offer(self, inputs: tuple[np.ndarray, ...], blue_outputs: tuple[np.ndarray, ...],
              label: int = -1) -> None:
        """Queue green's run on a copy of ``inputs``, to compare with ``blue_outputs``."""
        with self._wake:
            if not self._free or self._stopped:
                self.skipped += 1
                return
            slot = self._free.popleft()
        for dest, src in zip(slot.inputs, inputs, strict=True):
            np.copyto(dest, src)
            self.copied_bytes += src.nbytes
        for dest, src in zip(slot.blue, blue_outputs, strict=True):
            np.copyto(dest, src)
        slot.label = label
        with self._wake:
            self._todo.append(slot)
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._todo and not self._stopped:
                    self._busy = False
                    self._wake.notify_all()
                    self._wake.wait()
                if self._stopped:
                    self._busy = False
                    self._wake.notify_all()
                    return
                slot = self._todo.popleft()
                self._busy = True
            self._shadow(slot)
            with self._wake:
                self._free.append(slot)

    def _shadow(self, slot: _Slot) -> None:
        green, stats = self.green, self.stats
        with self.lock:
            started = _now()
            try:
                green.backend.run_with(slot.inputs, slot.green)
            except Exception as err:
                error = green.backend.translate(err)
                green.stats.errors += 1
                green.stats.last_error = str(error)
                return
            green.stats.histogram.record_ns(_now() - started)
            blue_scores, green_scores = slot.blue[0], slot.green[0]
            stats.compared += 1
            agreed = bool(blue_scores.argmax() == green_scores.argmax())
            if agreed:
                stats.agreed += 1
            drift = float(abs(blue_scores.astype(np.float64)
                              - green_scores.astype(np.float64)).mean())
            stats.drift_sum += drift
            if slot.label >= 0:
                green.stats.checked += 1
                if green_scores.argmax() == slot.label:
                    green.stats.correct += 1
            if self.on_compared is not None:
                try:
                    self.on_compared(slot.inputs, slot.blue, slot.green, agreed, drift)
                except Exception:  # capture must never stop the shadow test
                    log.exception("capture: a shadowed request could not be captured")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Let the run in progress end (green's backend is about to change), then stop."""
        with self._wake:
            self._stopped = True
            self._todo.clear()
            self._wake.notify_all()
        self._thread.join(timeout_s)
