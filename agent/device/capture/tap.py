"""The capture rules on the inference path: which inferences are kept, and the
:class:`~agent.device.capture.record.Capture` each one becomes.

A :class:`CaptureTap` is built from one :class:`~agent.device.capture.config.CaptureRules`
and hands the plans its :class:`~agent.device.inference.capture_hooks.CaptureHooks`. Each
hook runs on the thread that ran the inference and returns at once: a kept inference
costs a copy of its inputs and outputs and a non-blocking ``offer`` to the capture
writer (a full queue is the writer's to count); an inference no rule picks costs the
loop's countdown only.

- **sample**: a random share ``sample_rate`` of the loop's inferences (and, on a stream
  of its own, of API requests). The gap to the next pick is drawn from a geometric
  distribution of ``numpy.random.Generator(PCG64(seed))``, so the expected share is exactly
  ``sample_rate`` and a fixed ``seed`` picks the same inferences on every run.
- **low_confidence**: the served top-1 score below the threshold. The scores are the
  output the model's metadata names (``postprocess.output``, else the first output); when
  ``postprocess.softmax`` is set they are logits and the score is the softmax's top-1,
  otherwise they are taken as probabilities and the score is their maximum. With this rule
  on, every inference is looked at.
- **disagreement** / **drift**: a shadowed inference where green's top-1 differs from
  blue's, or where the mean |blue - green| is above ``drift_above``.
- **error**: a failed inference's input and its error text (``served_by`` "").
- **request**: an API request that asked for it (``capture=true``), with the
  application's label and note; the request's ``capture_id`` is set when it was kept.

An inference is kept once, under the first rule that picked it: in a shadow test the
comparison is judged before the sample countdown, so a capture of a shadowed input
holds the outputs of both variants. :attr:`CaptureTap.fired` counts the picks of every
rule (kept or not: the writer may still refuse one), :attr:`CaptureTap.offered` and
:attr:`CaptureTap.refused` what the writer took and did not.

``max_per_hour``, when given, is the store's per-hour cap mirrored on the inference path:
a pick over it is counted (:attr:`CaptureTap.skipped_rate`) and dropped before anything
is copied, so a cap that is used up costs the loop next to nothing (the store still
enforces the cap itself).

Frame id and time: ``frame_info`` is read when a capture is made (see
:func:`loop_frame_info`): a source of outside frames gives its ``frame_id`` and
``frame_time``; any other source (a replayed test set, random inputs) gives the loop's
step number (1 for its first inference: for a test set of N samples, sample
``(frame_id - 1) % N``) and the wall clock. An API request's capture (``source`` "api")
is numbered by the requests the tap has seen, and timed by the wall clock.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from agent.core.model_metadata import ModelMetadata
from agent.device.capture.config import RULE_NAMES, CaptureRules
from agent.device.capture.record import MAX_TEXT, Capture
from agent.device.capture.scores import Scores, score_setup, scores_view, top1_score, view_top1
from agent.device.inference.capture_hooks import CaptureHooks
from agent.device.inference.lane import Lane

if TYPE_CHECKING:
    from agent.core.errors import AgentError
    from agent.device.inference.requests import InferenceRequest

log = logging.getLogger("edge_agent.capture")
FrameInfo = Callable[[], tuple[int, float]]
Roles = Callable[[], Mapping[Lane, tuple[str, str]]]
Offer = Callable[[Capture], bool]
NEVER = 2**62  # a sample countdown that never ends (sample rate 0)


def loop_frame_info(source: object, steps: Callable[[], int]) -> FrameInfo:
    """How the loop's current frame is named: the source's ``frame_id`` and ``frame_time``
    when it keeps them (outside frames), else the loop's step number (``steps()`` is the
    number of steps done before the current one) and the wall clock."""
    if hasattr(source, "frame_id"):
        def outside() -> tuple[int, float]:
            frame_time = getattr(source, "frame_time", None)
            return int(getattr(source, "frame_id", 0) or 0), \
                float(frame_time) if frame_time else time.time()
        return outside
    return lambda: (steps() + 1, time.time())


class CaptureTap:
    """One rule set's hooks and the captures they make (see the module's documentation)."""

    def __init__(self, rules: CaptureRules, *, thing: str, model: str,
                 inputs: Sequence[tuple[str, np.ndarray]], output_names: Sequence[str],
                 source_name: str, frame_info: FrameInfo, roles: Roles, offer: Offer,
                 metadata: ModelMetadata | None = None, seed: int | None = None,
                 max_per_hour: int | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rules = rules
        self.thing, self.model = thing, model
        self.inputs = tuple(inputs)
        self.output_names = tuple(output_names)
        self.source_name = source_name
        self.frame_info = frame_info
        self.roles = roles
        self.offer = offer
        self._scores, self._logits = score_setup(metadata, self.output_names)
        root = np.random.SeedSequence(seed if seed is not None else rules.seed)
        loop_seq, request_seq = root.spawn(2)
        self._loop_rng = np.random.Generator(np.random.PCG64(loop_seq))
        self._request_rng = np.random.Generator(np.random.PCG64(request_seq))
        self.fired: dict[str, int] = dict.fromkeys(RULE_NAMES, 0)
        self.offered = 0  # captures the writer took
        self.refused = 0  # captures the writer's full queue refused
        self.failures = 0  # hooks that failed (logged once): never the loop's problem
        self._sample_left = self._gap(self._loop_rng)  # loop inferences to the next pick
        self._request_left = self._gap(self._request_rng)
        self._kept_frame = -1  # the last frame kept (a second rule does not keep it again)
        # green's last shadow run: its frame and (weakly) its lane
        self._compared_frame: tuple[int, weakref.ref[Lane] | None] = (-1, None)
        self._requests = 0  # API requests seen: a request capture's frame id
        self._clock = clock
        self._per_hour = None if max_per_hour is None else float(max_per_hour)
        self._tokens = self._per_hour or 0.0
        self._refilled = clock()
        self.skipped_rate = 0  # picks over the per-hour cap, dropped before any copy
        # each lane's scores output, viewed once (weakly: a retired model is let go)
        self._views: weakref.WeakKeyDictionary[Lane, Scores] = weakref.WeakKeyDictionary()
        self._low = rules.low_confidence if rules.low_confidence is not None else 0.0

    # ---- the hooks -------------------------------------------------------------------

    def hooks(self) -> CaptureHooks:
        """The plans' entry points for these rules (None where no rule needs one)."""
        rules = self.rules
        low = rules.low_confidence is not None
        sampling = rules.sample_rate > 0.0
        shadowed = rules.disagreement or rules.drift_above is not None
        first = 1 if low else self._sample_left
        return CaptureHooks(
            served=self._served_low if (low and not sampling) else
            self._served if (low or sampling) else None, first=first,
            # a sampled shadow inference holds green's outputs too: the comparison says
            # green ran on it
            compared=self._compared if (shadowed or sampling or low) else None,
            failed=self._failed if rules.errors else None,
            request=self._request if (rules.requests or sampling or rules.errors or low)
            else None,
            shadowed=self._request_shadowed if shadowed else None)

    def _gap(self, rng: np.random.Generator) -> int:
        """Inferences up to and including the next random pick (geometric, mean 1/rate)."""
        rate = self.rules.sample_rate
        if rate <= 0.0:
            return NEVER
        if rate >= 1.0:
            return 1
        return int(min(rng.geometric(rate), NEVER))

    def _served_low(self, lane: Lane, label: int) -> int:
        """Every served loop inference, with only the low-confidence rule looking."""
        try:
            view = self._views.get(lane)
            if view is None:
                view = self._views[lane] = scores_view(lane.outputs[self._scores])
            score = view_top1(view, self._logits)
            if score < self._low:
                self._keep_loop("low_confidence", lane, score=score)
        except Exception:
            self._hook_failed()
        return 1

    def _served(self, lane: Lane, label: int) -> int:
        """A served loop inference whose countdown ended; returns the next countdown."""
        try:
            low = self.rules.low_confidence
            if low is None:  # the countdown was the sample's own
                self._sample_left = self._gap(self._loop_rng)
                self._keep_loop("sample", lane)
                return self._sample_left
            self._sample_left -= 1
            view = self._views.get(lane)
            if view is None:
                view = self._views[lane] = scores_view(lane.outputs[self._scores])
            score = view_top1(view, self._logits)
            if not self._sample_left:
                self._sample_left = self._gap(self._loop_rng)
                self._keep_loop("sample", lane, score=score)
            elif score < low:
                self._keep_loop("low_confidence", lane, score=score)
        except Exception:
            self._hook_failed()
        return 1 if self.rules.low_confidence is not None else self._sample_left

    def _compared(self, blue: Lane, green: Lane, agreed: bool, drift: float) -> None:
        try:
            rules = self.rules
            frame_id, _ = self.frame_info()
            self._compared_frame = (frame_id, weakref.ref(green))
            rule = "disagreement" if rules.disagreement and not agreed else \
                "drift" if rules.drift_above is not None and drift > rules.drift_above \
                else None
            if rule is not None:
                self._keep_loop(rule, blue)
        except Exception:
            self._hook_failed()

    def _admit(self) -> bool:
        """Whether the per-hour cap has room for one more capture (a token bucket)."""
        cap = self._per_hour
        if cap is None:
            return True
        now = self._clock()
        self._tokens = min(cap, self._tokens + (now - self._refilled) * cap / 3600.0)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.skipped_rate += 1
        return False

    def _failed(self, lane: Lane, err: Exception) -> None:
        try:
            self.fired["error"] += 1
            if not self._admit():
                return
            frame_id, frame_time = self.frame_info()
            ran = {lane: self.roles().get(lane, ("blue", ""))}
            self._make(rule="error", ran=ran, outputs={}, served_by="",
                       frame_id=frame_id, frame_time=frame_time, source=self.source_name,
                       inputs=self.inputs, error=_text(f"{type(err).__name__}: {err}"))
        except Exception:
            self._hook_failed()

    def _request(self, request: InferenceRequest, variant: str, version: str,
                 error: AgentError | None) -> None:
        try:
            self._requests += 1
            rules = self.rules
            ask = request.capture
            rule: str | None = None
            score: float | None = None
            if ask is not None and rules.requests:
                rule = "request"
            elif error is not None:
                rule = "error" if rules.errors else None
            else:
                if rules.sample_rate > 0.0:
                    self._request_left -= 1
                    if not self._request_left:
                        self._request_left = self._gap(self._request_rng)
                        rule = "sample"
                if rules.low_confidence is not None:
                    score = top1_score(request.outputs[self._scores], self._logits)
                    if rule is None and score < rules.low_confidence:
                        rule = "low_confidence"
            if rule is None:
                return
            self.fired[rule] += 1
            if not self._admit():
                return
            names = [name for name, _ in self.inputs]
            outputs = {} if error is not None else {variant: {
                name: np.array(array, copy=True)
                for name, array in zip(self.output_names, request.outputs, strict=True)}}
            if error is None and score is None and self.output_names:
                score = _score_or_none(request.outputs[self._scores], self._logits)
            capture = Capture(
                thing=self.thing, model=self.model, rule=rule,
                inputs={name: np.array(array, copy=True)
                        for name, array in zip(names, request.inputs, strict=True)},
                outputs=outputs, variants={variant: version},
                served_by="" if error is not None else variant, frame_id=self._requests,
                time=time.time(), source="api", score=score,
                label=_text(ask.label) if ask is not None else None,
                note=_text(ask.note) if ask is not None else None,
                error=None if error is None else _text(f"{type(error).__name__}: {error}"))
            if self._hand_over(capture):
                request.capture_id = capture.capture_id
        except Exception:
            self._hook_failed()

    def _request_shadowed(self, inputs: tuple[np.ndarray, ...], blue: tuple[np.ndarray, ...],
                          green: tuple[np.ndarray, ...], agreed: bool, drift: float) -> None:
        """A shadowed API request green disagreed on (or drifted on): kept with both
        variants' outputs, as a shadowed loop inference is."""
        try:
            rules = self.rules
            rule = "disagreement" if rules.disagreement and not agreed else \
                "drift" if rules.drift_above is not None and drift > rules.drift_above \
                else None
            if rule is None:
                return
            self.fired[rule] += 1
            if not self._admit():
                return
            versions = {variant: version for variant, version in self.roles().values()}
            outputs = {variant: {name: np.array(array, copy=True)
                                 for name, array in zip(self.output_names, arrays,
                                                        strict=True)}
                       for variant, arrays in (("blue", blue), ("green", green))}
            self._hand_over(Capture(
                thing=self.thing, model=self.model, rule=rule,
                inputs={name: np.array(array, copy=True)
                        for (name, _), array in zip(self.inputs, inputs, strict=True)},
                outputs=outputs, variants={v: versions.get(v, "") for v in outputs},
                served_by="blue", frame_id=self._requests, time=time.time(), source="api",
                score=_score_or_none(blue[self._scores], self._logits)))
        except Exception:
            self._hook_failed()

    # ---- making a capture --------------------------------------------------------------

    def _keep_loop(self, rule: str, lane: Lane, *, score: float | None = None) -> None:
        """Keep the loop's current inference, served by ``lane`` (and green's outputs too
        when green ran on it in a shadow test)."""
        frame_id, frame_time = self.frame_info()
        self.fired[rule] += 1
        if frame_id == self._kept_frame:
            return  # a comparison of this very inference kept it already
        self._kept_frame = frame_id
        if not self._admit():
            return
        roles = self.roles()
        ran = {lane: roles.get(lane, ("blue", ""))}
        compared_frame, green_ref = self._compared_frame
        green = green_ref() if green_ref is not None and compared_frame == frame_id else None
        if green is not None and green is not lane:
            ran[green] = roles.get(green, ("green", ""))
        outputs = {role[0]: {name: np.array(array, copy=True)
                             for name, array in zip(self.output_names, each.outputs,
                                                    strict=True)}
                   for each, role in ran.items()}
        if score is None:
            score = _score_or_none(lane.outputs[self._scores], self._logits)
        self._make(rule=rule, ran=ran, outputs=outputs, served_by=ran[lane][0],
                   frame_id=frame_id, frame_time=frame_time, source=self.source_name,
                   inputs=self.inputs, score=score)

    def _make(self, *, rule: str, ran: Mapping[Lane, tuple[str, str]],
              outputs: dict[str, dict[str, np.ndarray]], served_by: str, frame_id: int,
              frame_time: float, source: str, inputs: Sequence[tuple[str, np.ndarray]],
              score: float | None = None, error: str | None = None) -> None:
        capture = Capture(
            thing=self.thing, model=self.model, rule=rule,
            inputs={name: np.array(array, copy=True) for name, array in inputs},
            outputs=outputs, variants={variant: version for variant, version in ran.values()},
            served_by=served_by, frame_id=frame_id, time=frame_time, source=source,
            score=score, error=error)
        self._hand_over(capture)

    def _hand_over(self, capture: Capture) -> bool:
        if self.offer(capture):
            self.offered += 1
            return True
        self.refused += 1
        return False

    def _hook_failed(self) -> None:
        self.failures += 1
        if self.failures == 1:
            log.exception("capture: an inference could not be captured")

    def counts(self) -> dict[str, int]:
        """The picks of every rule, and what the writer took and refused."""
        return {**{f"fired_{rule}": n for rule, n in self.fired.items()},
                "offered": self.offered, "refused_queue": self.refused,
                "skipped_rate": self.skipped_rate, "hook_failures": self.failures}


def _score_or_none(scores: np.ndarray, logits: bool) -> float | None:
    try:
        value = top1_score(scores, logits)
    except (ValueError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _text(value: str | None) -> str | None:
    return None if value is None else value[:MAX_TEXT]
