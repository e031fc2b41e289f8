"""Application requests on the inference thread: one request, the bounded queue they wait
in, and the counters of the request path.

A front end (the HTTP server, the native socket) builds an :class:`InferenceRequest`
over the request's tensors (views on a client's shared memory, or arrays decoded from
the body) and hands it to the loop
(:meth:`~agent.device.inference.runner.InferenceLoop.answer`). While the loop has a
continuous source, the request waits in the model's :class:`RequestQueue` and the loop's
thread, the runtime's only caller, answers it between two steps; with no continuous
source (``api``) the caller's own thread answers it, holding the runtime's lock, which
spares two thread switches per request. Either way it runs through the router's request
plan, so weights, shadow tests, promotes and rollbacks act on application traffic
exactly as on the loop's. A full queue refuses at once
(:class:`~agent.core.errors.ServerBusyError`): memory held by waiting requests is bounded
by the queue's size.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from agent.core.errors import AgentError, DeadlineExceededError, ServerBusyError
from agent.core.histogram import LatencyHistogram
from agent.device.inference.capture_hooks import CaptureAsk

_now = time.perf_counter_ns


@dataclass(eq=False)
class InferenceRequest:
    """One request: its tensors, its deadline, and (once done) who answered and how fast.

    ``inputs`` and ``outputs`` hold one C-contiguous array per model input and output,
    of the model's exact dtype and shape; the runtime reads and writes them in place.
    ``shared`` says the inputs live in memory the client may reuse as soon as it has its
    answer (shared memory), so a shadow run after the reply must work on a snapshot.
    ``capture`` is the application's ask to keep the request's input (``capture=true``
    with its label or note); ``capture_id`` is set by the capture tap, before the answer
    is sent, when it kept the request.
    """

    inputs: tuple[np.ndarray, ...]
    outputs: tuple[np.ndarray, ...]
    deadline_ns: int = 0  # perf_counter_ns; 0 = none
    shared: bool = False
    enqueued_ns: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    variant: str = ""
    version: str = ""
    error: AgentError | None = None
    capture: CaptureAsk | None = None
    capture_id: str = ""
    done: threading.Event | None = None  # made when the request is queued (see submit)
    _state: int = 0  # 0 waiting, 1 running, 2 finished, 3 abandoned
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_ns(self) -> int:
        return self.finished_ns - self.started_ns if self.finished_ns else 0

    @property
    def queue_ns(self) -> int:
        return self.started_ns - self.enqueued_ns if self.started_ns else 0

    def claim(self) -> bool:
        """The inference thread takes the request; False when the client gave up first
        (its memory may be gone: the request must not run)."""
        with self._lock:
            if self._state != 0:
                return False
            self._state = 1
        return True

    def finish(self, *, variant: str = "", version: str = "",
               error: AgentError | None = None) -> None:
        self.finished_ns = _now()
        self.variant, self.version, self.error = variant, version, error
        with self._lock:
            self._state = 2
        if self.done is not None:
            self.done.set()

    def abandon(self) -> bool:
        """The client gives up (deadline, disconnect). True when the request had not started,
        so it never will; False when it runs or ran: wait for :attr:`done` before the
        memory it uses is released."""
        with self._lock:
            if self._state == 0:
                self._state = 3
                return True
            return False

    def wait(self, timeout_s: float | None) -> None:
        """Wait for the answer; on timeout, abandon the request if it has not started
        (and raise :class:`DeadlineExceededError`), else wait for the run to end."""
        done = self.done
        if done is None:
            raise RuntimeError("the request was never queued")
        if done.wait(timeout_s):
            return
        if self.abandon():
            raise DeadlineExceededError(
                f"no answer within {timeout_s:.3f} s (the request waited in the queue)")
        done.wait()  # it is running: its buffers are in use until it ends


@dataclass
class RequestStats:
    """Counters of the request path (written by the inference thread and the front ends).

    ``latency`` is what the client sees inside the agent (queue wait included), ``queue``
    the wait alone; each lane's own histogram holds the model time.
    """

    served: int = 0
    failed: int = 0
    busy: int = 0  # refused: the queue was full
    expired: int = 0  # deadline passed while queued
    abandoned: int = 0  # the client went away before the request ran
    by_variant: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    queue: LatencyHistogram = field(default_factory=LatencyHistogram)

    def record(self, request: InferenceRequest) -> None:
        if request.error is not None:
            self.failed += 1
            return
        self.served += 1
        self.by_variant[request.variant] = self.by_variant.get(request.variant, 0) + 1
        self.latency.record_ns(request.finished_ns - request.enqueued_ns)
        self.queue.record_ns(request.queue_ns)

    def to_dict(self) -> dict[str, object]:
        return {"served": self.served, "failed": self.failed, "busy": self.busy,
                "expired": self.expired, "abandoned": self.abandoned,
                "by_variant": dict(self.by_variant),
                "latency_p50_us": round(self.latency.quantile_us(0.5), 2),
                "latency_p99_us": round(self.latency.quantile_us(0.99), 2),
                "queue_p99_us": round(self.queue.quantile_us(0.99), 2)}


class RequestQueue:
    """A bounded FIFO of requests for one model's inference thread."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.stats = RequestStats()
        self._items: collections.deque[InferenceRequest] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self.pending = 0  # read without the lock by the loop: a hint, checked under it
        self.direct = 0  # requests in flight on their callers' threads (see admit)
        self.closed = False

    def submit(self, request: InferenceRequest) -> None:
        """Queue ``request``; :class:`ServerBusyError` at once when the queue is full."""
        with self._ready:
            if self.closed:
                raise ServerBusyError("the model is shutting down")
            if len(self._items) >= self.capacity:
                self.stats.busy += 1
                raise ServerBusyError(
                    f"the model's queue is full ({self.capacity} waiting): retry later")
            request.enqueued_ns = _now()
            if request.done is None:
                request.done = threading.Event()
            self._items.append(request)
            self.pending = len(self._items)
            self._ready.notify()

    def take(self, timeout_s: float = 0.0) -> InferenceRequest | None:
        """The oldest request the client still waits for; None when none came in time.
        Requests whose deadline passed in the queue are answered with
        :class:`DeadlineExceededError` here, never run."""
        end = time.monotonic() + timeout_s
        with self._ready:
            while True:
                while self._items:
                    request = self._items.popleft()
                    self.pending = len(self._items)
                    if not request.claim():
                        self.stats.abandoned += 1
                        continue
                    if request.deadline_ns and _now() > request.deadline_ns:
                        self.stats.expired += 1
                        request.finish(error=DeadlineExceededError(
                            "the request's deadline passed while it waited in the queue"))
                        continue
                    return request
                left = end - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._ready.wait(left)

    def admit(self) -> None:
        """Count one request answered on its caller's thread (no continuous source) against
        the capacity; :class:`ServerBusyError` when ``capacity`` are in flight already.
        Pair with :meth:`leave`."""
        with self._ready:
            if self.closed:
                raise ServerBusyError("the model is shutting down")
            if self.direct >= self.capacity:
                self.stats.busy += 1
                raise ServerBusyError(
                    f"the model's queue is full ({self.capacity} waiting): retry later")
            self.direct += 1

    def leave(self) -> None:
        with self._ready:
            self.direct -= 1

    def close(self) -> None:
        """Refuse new requests and answer the waiting ones with a busy error."""
        with self._ready:
            self.closed = True
            items, self._items = list(self._items), collections.deque()
            self.pending = 0
            self._ready.notify_all()
        for request in items:
            if request.claim():
                request.finish(error=ServerBusyError("the model is shutting down"))
