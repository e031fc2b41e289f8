"""A result stream: the loop's hook hands outputs off, a publisher thread turns them into
results (:mod:`agent.wire.results`) and sends them to every destination.

On the inference path only :class:`~agent.device.results.handoff.FrameHook` runs: a count
and, for the inferences the policy may want, a copy of the outputs into a preallocated
slot. The publisher thread does the rest: the publishing policy
(:mod:`agent.device.results.policy`), top-k with label names
(:mod:`agent.device.inference.postprocess`, as the model's metadata describes it), the
JSON, and the hand-over to each :class:`Sink` (local pub/sub, IoT Core through the
spool, the shared-memory ring), none of which may block it for long.

API requests (``results.requests``) are offered with :meth:`ResultStream.on_request`
after they ran and before their answer is sent: they go through the same policy, but
not ``everyN`` (which counts the loop's inferences) and not the hand-off's rate gate
(the rate rule judges them on the publisher's thread).
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.core.errors import AgentError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.device.inference.lane import Lane
from agent.device.inference.postprocess import (
    DEFAULT_TOP_K,
    sample_scores,
    scores_output,
    top_k,
)
from agent.device.results.config import ResultsConfig
from agent.device.results.handoff import FrameHook, Handoff
from agent.device.results.policy import PublishPolicy
from agent.wire.results import DESTINATIONS, Destination, ResultCounts

log = logging.getLogger("edge_agent.results")
IDLE_WAIT_S = 0.5  # how long an idle publisher sleeps before it looks at its stop flag


class Sink(abc.ABC):
    """One destination of results. :meth:`publish` must not block the publisher for long
    and never raises: what it cannot take it counts in :attr:`failed` (the first failure,
    and then one a minute, is logged)."""

    destination: Destination

    def __init__(self) -> None:
        self.failed = 0
        self._last_warning = -60.0

    @abc.abstractmethod
    def publish(self, result: dict[str, Any], payload: bytes,
                outputs: Sequence[np.ndarray]) -> None:
        """Send one result (its document, its JSON bytes and the raw output arrays)."""

    def fail(self, why: str) -> None:
        self.failed += 1
        now = time.monotonic()
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            log.warning("results to %s: %s (%d failed so far)", self.destination, why,
                        self.failed)

    def failures(self) -> int:
        """Results this destination did not take (for the metrics report)."""
        return self.failed

    def close(self) -> None:  # noqa: B027 - most destinations hold nothing to let go of
        """Finish what is in flight (briefly) and let go of the destination."""


class ResultStream:
    """The hook, the publisher thread and the destinations of one model's results."""

    def __init__(self, *, config: ResultsConfig, thing: str, model: str,
                 metadata: ModelMetadata | None, outputs: Sequence[TensorSpec],
                 source: object, version: str = "", sinks: Sequence[Sink] = ()) -> None:
        self.config = config
        self.thing, self.model = thing, model
        self.run_id = uuid.uuid4().hex
        self.source = source
        self.source_name = str(getattr(source, "name", "loop"))
        self.sinks: list[Sink] = list(sinks)
        self.specs = tuple(outputs)
        self.handoff = Handoff(self.specs, config.handoff_slots)
        self.policy = PublishPolicy(config.policy)
        self.frames = FrameHook(self._offer_frame, config.policy.every_n,
                                one_at_a_time=self.policy.rate_limited)
        self.on_result = self.frames.hook
        self.on_request = self._offer_request if config.requests else None
        self.roles: Mapping[Lane, tuple[str, str]] = {}
        self._default_role = ("blue", version)
        self.seq = 0
        self.frames_handed = 0
        self.requests_seen = 0
        self._rank_setup(metadata)
        size = sum(int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
                   for s in self.specs)
        self._raw = 0 < size <= config.raw_outputs_max_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- set-up ----------------------------------------------------------------------

    def _rank_setup(self, metadata: ModelMetadata | None) -> None:
        """Which output to rank, how many classes, their names, softmax or not: decided
        once. Labels that do not fit the scores are left out (logged); a model with no
        output to rank publishes its raw outputs only."""
        names = [s.name for s in self.specs]
        post = metadata.postprocess if metadata is not None else None
        self._k = self.config.top_k or (post.top_k if post is not None else DEFAULT_TOP_K)
        self._softmax = bool(post is not None and post.softmax)
        self._labels: tuple[str, ...] | None = metadata.labels if metadata else None
        self._scores: int | None = None
        try:
            index = names.index(scores_output(metadata, names))
            spec = self.specs[index]
            classes = sample_scores(np.zeros(spec.shape, spec.dtype)).size
        except AgentError as err:
            log.info("results: no top-k (%s); only raw outputs are published", err)
            return
        if self._labels is not None and len(self._labels) != classes:
            log.warning("results: %d labels for %d scores; classes are reported unnamed",
                        len(self._labels), classes)
            self._labels = None
        self._scores = index

    def add_sink(self, sink: Sink) -> None:
        """Add a destination (before :meth:`start`)."""
        self.sinks.append(sink)

    def serving(self, roles: Mapping[Lane, tuple[str, str]]) -> None:
        """Which lane is which variant of which model version (the router, at each change)."""
        self.roles = roles

    # ---- the inference thread ----------------------------------------------------------

    def _offer_frame(self, lane: Lane, seen: int) -> bool:
        handoff = self.handoff
        if handoff.head - handoff.tail >= handoff.slots:  # the publisher is behind
            handoff.dropped += 1
            return False
        source = self.source
        try:
            frame_id = getattr(source, "frame_id", None)
            frame_time = getattr(source, "frame_time", None)
            variant, version = self.roles.get(lane, self._default_role)
            taken = handoff.put(lane.outputs, (
                seen if frame_id is None else int(frame_id),
                float(frame_time) if frame_time else time.time(),
                variant, version, self.source_name, False))
        except Exception:  # never the inference thread's problem: counted, logged once
            self._hook_failed()
            return False
        if taken:
            self.frames_handed += 1
        return taken

    def _offer_request(self, outputs: Sequence[np.ndarray], variant: str,
                       version: str) -> None:
        """An answered API request's outputs (before the answer is sent)."""
        self.requests_seen += 1
        try:
            self.handoff.put(outputs, (self.requests_seen, time.time(), variant, version,
                                       "api", True))
        except Exception:
            self._hook_failed()

    def _hook_failed(self) -> None:
        self.handoff.mismatched += 1
        if self.handoff.mismatched == 1:
            log.exception("results: an inference could not be handed off")

    # ---- the publisher thread ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or not self.sinks:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._thread.start()
        log.info("results of %s published to %s (policy %s)", self.model,
                 ", ".join(s.destination for s in self.sinks),
                 self.config.policy.model_dump(by_alias=True))

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish what was handed off already (within ``timeout_s``), then close the
        destinations."""
        thread, self._thread = self._thread, None
        self.frames.close()
        self._stop.set()
        self.handoff.interrupt()
        if thread is not None:
            thread.join(timeout_s)
        for sink in self.sinks:
            sink.close()

    def _run(self) -> None:
        handoff, policy, frames = self.handoff, self.policy, self.frames
        while True:
            index = handoff.peek()
            if index is not None:
                try:
                    self._process(handoff.buffers[index], handoff.info[index],
                                  time.monotonic())
                except Exception:  # a bug must not end the stream for good
                    log.exception("results: publishing failed")
                handoff.release()
                continue
            if self._stop.is_set():
                return
            wait = IDLE_WAIT_S
            if policy.rate_limited:
                left = policy.next_at - time.monotonic()
                if left <= 0:
                    frames.open()  # the cap lets the next one through: take one more
                else:
                    wait = min(left, IDLE_WAIT_S)
            handoff.wait(wait)

    def _process(self, outputs: tuple[np.ndarray, ...], info: tuple[Any, ...],
                 now: float) -> None:
        frame_id, frame_time, variant, version, source, _request = info
        ranked = self._rank(outputs)
        top1 = ranked[0] if ranked else None
        reason = self.policy.decide(None if top1 is None else top1["index"],
                                    None if top1 is None else top1["score"], now)
        if reason is not None:
            return
        self.seq += 1
        result: dict[str, Any] = {
            "v": 1, "type": "result", "thing": self.thing, "run": self.run_id, "seq": self.seq,
            "model": self.model, "version": version or "unknown", "variant": variant,
            "source": source, "frame": {"id": frame_id, "time": round(frame_time, 6)},
            "top_k": ranked}
        if self._raw:
            raw = self._raw_outputs(outputs)
            if raw is not None:
                result["outputs"] = raw
        payload = json.dumps(result, separators=(",", ":"), allow_nan=False).encode()
        for sink in self.sinks:
            sink.publish(result, payload, outputs)

    def _rank(self, outputs: tuple[np.ndarray, ...]) -> list[dict[str, Any]]:
        if self._scores is None:
            return []
        scores = outputs[self._scores]
        if scores.dtype.kind == "f" and not np.isfinite(scores).all():
            return []  # a NaN or an infinity cannot be ranked (nor sent as JSON)
        return [p.to_dict() for p in top_k(scores, self._k, self._labels, self._softmax)]

    def _raw_outputs(self, outputs: tuple[np.ndarray, ...]) -> dict[str, Any] | None:
        raw: dict[str, Any] = {}
        for spec, array in zip(self.specs, outputs, strict=True):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return None
            raw[spec.name] = {"dtype": str(array.dtype), "shape": list(array.shape),
                              "data": array.reshape(-1).tolist()}
        return raw

    # ---- views -------------------------------------------------------------------------

    def counts(self) -> ResultCounts:
        """The stream's counts so far (any thread; exact once the stream has stopped)."""
        handoff, policy = self.handoff, self.policy
        dropped = handoff.dropped + handoff.mismatched
        seen = self.frames.seen
        every = self.frames.every
        nth = seen // every
        # Every Nth inference was handed off, dropped or held back by the rate gate.
        request_dropped = self.requests_seen - (handoff.head - self.frames_handed)
        frames_dropped = dropped - max(request_dropped, 0)
        gated = max(nth - self.frames_handed - frames_dropped, 0)
        suppressed = dict(policy.counts.suppressed)
        suppressed["every_n"] = seen - nth
        suppressed["rate"] += gated
        failed: dict[Destination, int] = dict.fromkeys(DESTINATIONS, 0)
        for sink in self.sinks:
            failed[sink.destination] += sink.failures()
        return ResultCounts(seen=seen + self.requests_seen, published=policy.counts.published,
                            suppressed=suppressed, dropped=dropped, failed=failed)
