"""The capture tap on the plans, with a fake four-class model whose scores are its input:
random sampling within statistical bounds and reproducible by seed, low confidence (on
probabilities and on logits), shadow disagreement and drift, errors, application
requests, one capture per inference, and a writer that refuses."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from agent.core.errors import AgentError, InferenceError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.device.capture.config import CaptureRules
from agent.device.capture.record import Capture, decode, encode
from agent.device.capture.scores import scores_view, top1_score, view_top1
from agent.device.capture.tap import CaptureTap, loop_frame_info
from agent.device.inference import plans
from agent.device.inference.capture_hooks import CaptureAsk
from agent.device.inference.lane import Lane
from agent.device.inference.plans import ShadowStats
from agent.device.inference.requests import InferenceRequest

CLASSES = 4
SPEC = (TensorSpec(name="x", dtype="float32", shape=(1, CLASSES)),)
OFF = {"sample_rate": 0.0, "disagreement": False, "errors": False, "requests": False}


class Boom(Exception):
    pass


class Fake:
    name = "fake"
    inputs = SPEC
    outputs = (TensorSpec(name="scores", dtype="float32", shape=(1, CLASSES)),)

    def __init__(self, *, wrong: bool = False) -> None:
        self.wrong, self.failing = wrong, False
        self._out = np.zeros((1, CLASSES), np.float32)

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        self._view = inputs[0][:, ::-1] if self.wrong else inputs[0]
        return (self._out,)

    def run_with(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        np.copyto(outputs[0], inputs[0][:, ::-1] if self.wrong else inputs[0])

    def runner(self) -> Callable[[], None]:
        def run() -> None:
            if self.failing:
                raise Boom("fake runtime failed")
            np.copyto(self._out, self._view)
        return run

    def translate(self, err: Exception) -> AgentError:
        return InferenceError(str(err))


class Rig:
    """A buffer fed from ``samples`` in order (frame id = samples filled so far), blue and
    an optional green lane on it, and a tap whose captures are collected."""

    def __init__(self, samples: np.ndarray, rules: CaptureRules, *, green_wrong: bool = False,
                 metadata: ModelMetadata | None = None, accept: bool = True) -> None:
        self.samples = samples
        self.buffer = np.zeros((1, CLASSES), np.float32)
        self.n = 0
        self.blue_backend = Fake()
        self.blue = Lane.bind(self.blue_backend, (self.buffer,))  # type: ignore[arg-type]
        self.green = Lane.bind(Fake(wrong=green_wrong), (self.buffer,))  # type: ignore[arg-type]
        self.captures: list[Capture] = []
        self.accept = accept
        roles = {self.blue: ("blue", "v1"), self.green: ("green", "v2")}
        self.tap = CaptureTap(rules, thing="dev-1", model="toy", inputs=[("x", self.buffer)],
                              output_names=["scores"], source_name="testset",
                              frame_info=lambda: (self.n, 1000.0 + self.n),
                              roles=lambda: roles, offer=self._offer, metadata=metadata)

    def _offer(self, capture: Capture) -> bool:
        if self.accept:
            self.captures.append(capture)
        return self.accept

    def fill(self) -> int:
        self.buffer[0] = self.samples[self.n % len(self.samples)]
        self.n += 1
        return -1

    def run(self, steps: int, mode: str = "serve") -> None:
        hooks = self.tap.hooks()
        plan = plans.serve(self.fill, self.blue, capture=hooks) if mode == "serve" else \
            plans.shadow(self.fill, self.blue, self.green, ShadowStats(), every=1,
                         capture=hooks)
        for _ in range(steps):
            plan.step()

    def frames(self) -> list[int]:
        return [c.frame_id for c in self.captures]


def _one_hot(n: int) -> np.ndarray:
    return np.eye(CLASSES, dtype=np.float32)[np.arange(n) % CLASSES]


def test_random_rate_is_within_four_sigma_and_a_seed_repeats_its_picks() -> None:
    n, rate = 40_000, 0.02
    runs = []
    for seed in (11, 11, 12):
        rig = Rig(_one_hot(8), CaptureRules(**{**OFF, "sample_rate": rate, "seed": seed}))
        rig.run(n)
        runs.append(rig.frames())
        assert {c.rule for c in rig.captures} == {"sample"}
        assert rig.tap.fired["sample"] == len(rig.captures)
    sigma = math.sqrt(n * rate * (1 - rate))
    for frames in runs:
        assert abs(len(frames) - n * rate) < 4 * sigma, len(frames)
    assert runs[0] == runs[1], "the same seed picks the same inferences"
    assert runs[0] != runs[2]
    assert len(set(runs[0])) == len(runs[0]) and runs[0] == sorted(runs[0])


def test_sample_rate_one_keeps_everything_and_zero_nothing() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "sample_rate": 1.0}))
    rig.run(50)
    assert rig.frames() == list(range(1, 51))
    rig = Rig(_one_hot(4), CaptureRules(**OFF))
    assert rig.tap.hooks().served is None
    rig.run(50)
    assert rig.captures == []


def test_low_confidence_keeps_exactly_the_inferences_below_the_threshold() -> None:
    rng = np.random.default_rng(3)
    raw = rng.random((200, CLASSES)).astype(np.float32)
    probs = raw / raw.sum(axis=1, keepdims=True)
    rig = Rig(probs, CaptureRules(**{**OFF, "low_confidence": 0.4}))
    rig.run(200)
    expected = [i + 1 for i in range(200) if probs[i].max() < 0.4]
    assert 10 < len(expected) < 190
    assert rig.frames() == expected
    for capture in rig.captures:
        assert capture.rule == "low_confidence" and capture.score is not None
        assert capture.score < 0.4
        np.testing.assert_array_equal(capture.inputs["x"][0], probs[capture.frame_id - 1])
        assert set(capture.outputs) == {"blue"} and capture.served_by == "blue"


def test_low_confidence_on_logits_takes_the_softmax() -> None:
    logits = np.array([[4.0, 0.0, 0.0, 0.0], [1.0, 0.9, 0.8, 0.7]], np.float32)
    meta = ModelMetadata.model_validate({"postprocess": {"softmax": True}})
    rig = Rig(logits, CaptureRules(**{**OFF, "low_confidence": 0.5}), metadata=meta)
    rig.run(2)
    assert rig.frames() == [2], "the first is 0.95 after a softmax, the second 0.29"
    assert rig.captures[0].score == pytest.approx(top1_score(logits[1], True))
    assert top1_score(logits[0], True) == pytest.approx(np.exp(4) / (np.exp(4) + 3))


def test_sampling_and_low_confidence_together_keep_each_inference_once() -> None:
    rig = Rig(_one_hot(4) * 0.3, CaptureRules(**{**OFF, "sample_rate": 1.0,
                                                 "low_confidence": 0.5}))
    rig.run(20)
    assert rig.frames() == list(range(1, 21))
    assert {c.rule for c in rig.captures} == {"sample"}


def test_shadow_disagreement_keeps_exactly_where_top1_differs_with_both_outputs() -> None:
    rng = np.random.default_rng(5)
    samples = rng.random((300, CLASSES)).astype(np.float32)
    rig = Rig(samples, CaptureRules(**{**OFF, "disagreement": True}), green_wrong=True)
    rig.run(300, mode="shadow")
    expected = [i + 1 for i in range(300) if samples[i].argmax() != samples[i][::-1].argmax()]
    assert rig.frames() == expected and len(expected) > 100
    for capture in rig.captures:
        assert capture.rule == "disagreement"
        assert capture.variants == {"blue": "v1", "green": "v2"}
        blue, green = capture.outputs["blue"]["scores"], capture.outputs["green"]["scores"]
        assert blue.argmax() != green.argmax()
        np.testing.assert_array_equal(green[0], capture.inputs["x"][0][::-1])
        assert decode(encode(capture)).outputs["green"]["scores"].tolist() == green.tolist()


def test_drift_and_a_sampled_shadow_inference_holds_both_variants() -> None:
    samples = np.array([[0.9, 0.1, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1]], np.float32)
    rig = Rig(samples, CaptureRules(**{**OFF, "drift_above": 0.3}), green_wrong=True)
    rig.run(2, mode="shadow")
    assert rig.frames() == [1] and rig.captures[0].rule == "drift"  # 0.45 vs 0.2
    rig = Rig(samples, CaptureRules(**{**OFF, "sample_rate": 1.0, "disagreement": True}),
              green_wrong=True)
    rig.run(4, mode="shadow")
    assert rig.frames() == [1, 2, 3, 4], "kept once each"
    assert [c.rule for c in rig.captures] == ["disagreement"] * 4
    rig = Rig(np.full((1, CLASSES), 0.25, np.float32),
              CaptureRules(**{**OFF, "sample_rate": 1.0}))
    rig.run(1, mode="shadow")
    assert set(rig.captures[0].outputs) == {"blue", "green"}


def test_a_failed_inference_keeps_its_input_and_error() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "errors": True}))
    rig.run(2)
    rig.blue_backend.failing = True
    rig.run(1)
    (capture,) = rig.captures
    assert capture.rule == "error" and capture.served_by == "" and capture.outputs == {}
    assert capture.error is not None and "fake runtime failed" in capture.error
    assert capture.inputs["x"].argmax() == 2 and capture.frame_id == 3
    assert capture.variants == {"blue": "v1"}


def _request(rig: Rig, sample: np.ndarray, ask: CaptureAsk | None) -> InferenceRequest:
    request = InferenceRequest(inputs=(sample.reshape(1, CLASSES).copy(),),
                               outputs=(np.zeros((1, CLASSES), np.float32),), capture=ask)
    np.copyto(request.outputs[0], request.inputs[0])
    return request


def test_an_application_request_is_kept_with_its_label_and_gets_its_id() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "requests": True}))
    hook = rig.tap.hooks().request
    assert hook is not None
    asked = _request(rig, _one_hot(4)[1], CaptureAsk(label="one", note="from the door"))
    plain = _request(rig, _one_hot(4)[2], None)
    hook(asked, "blue", "v1", None)
    hook(plain, "blue", "v1", None)
    (capture,) = rig.captures
    assert asked.capture_id == capture.capture_id and plain.capture_id == ""
    assert (capture.rule, capture.label, capture.note, capture.source) == \
        ("request", "one", "from the door", "api")
    assert capture.outputs["blue"]["scores"].argmax() == 1 and capture.score == 1.0


def test_requests_off_ignores_the_ask_and_a_full_writer_sets_no_id() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**OFF))
    assert rig.tap.hooks().request is None
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "requests": True}), accept=False)
    request = _request(rig, _one_hot(4)[0], CaptureAsk(label="zero"))
    hook = rig.tap.hooks().request
    assert hook is not None
    hook(request, "blue", "v1", None)
    assert request.capture_id == "" and rig.tap.refused == 1 and rig.tap.offered == 0


def test_a_hook_that_fails_never_reaches_the_loop() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "sample_rate": 1.0}))

    def broken(_capture: Capture) -> bool:
        raise RuntimeError("the writer is gone")

    rig.tap.offer = broken
    rig.run(5)
    assert rig.tap.failures == 5 and rig.blue.stats.inferences == 5


def test_frame_info_from_a_source_of_frames_or_the_loop_steps() -> None:
    source = SimpleNamespace(frame_id=41, frame_time=1234.5)
    assert loop_frame_info(source, lambda: 7)() == (41, 1234.5)
    frame_id, at = loop_frame_info(object(), lambda: 7)()
    assert frame_id == 8 and at > 1e9


def test_the_per_hour_cap_drops_picks_before_copying_and_refills() -> None:
    rig = Rig(_one_hot(4), CaptureRules(**{**OFF, "sample_rate": 1.0}))
    now = [0.0]
    rig.tap = CaptureTap(rig.tap.rules, thing="dev-1", model="toy",
                         inputs=[("x", rig.buffer)], output_names=["scores"],
                         source_name="testset", frame_info=lambda: (rig.n, 0.0),
                         roles=lambda: {rig.blue: ("blue", "v1")}, offer=rig._offer,
                         max_per_hour=10, clock=lambda: now[0])
    rig.run(100)
    assert rig.frames() == list(range(1, 11))
    assert rig.tap.skipped_rate == 90 and rig.tap.fired["sample"] == 100
    now[0] += 360.0  # a tenth of an hour: one more capture
    rig.run(5)
    assert rig.frames()[-1] == 101 and len(rig.captures) == 11


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "uint8"])
@pytest.mark.parametrize("logits", [False, True])
def test_the_view_scores_as_numpy_does(dtype: str, logits: bool) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = (rng.random((1, 7)) * 8).astype(dtype)
        view = scores_view(scores)
        assert isinstance(view, np.ndarray if dtype == "float16" else memoryview)
        assert view_top1(view, logits) == pytest.approx(top1_score(scores, logits), rel=1e-6)
        scores[0, 3] = 100 if dtype in ("int8", "uint8") else 1e3
        assert view_top1(view, logits) == pytest.approx(top1_score(scores, logits), rel=1e-6), \
            "the view follows the buffer"
    strided = np.zeros((4, 4), np.float32)[:, 1]
    assert scores_view(strided) is strided
    assert scores_view(np.array([True, False])) is not None


def test_the_tap_lets_a_retired_model_go() -> None:
    rig = Rig(_one_hot(4) * 0.3, CaptureRules(**{**OFF, "low_confidence": 0.5}),
              green_wrong=True)
    rig.run(3, mode="shadow")
    assert len(rig.captures) == 3
    probe = weakref.ref(rig.green)
    rig.tap.roles = dict  # the router no longer names it
    rig.green = None  # type: ignore[assignment]
    rig.captures.clear()  # captures made on it are the writer's, then gone
    gc.collect()
    assert probe() is None


def test_shadowed_api_requests_keep_exactly_where_green_disagrees() -> None:
    """The request path's shadow worker (its own thread, after each answer) hands each
    comparison to the tap: a request green disagrees on is kept with both outputs."""
    import threading
    import time

    from agent.device.inference import request_plans
    from agent.device.inference.requests import RequestStats

    rng = np.random.default_rng(9)
    samples = rng.random((60, CLASSES)).astype(np.float32)
    rig = Rig(samples, CaptureRules(**{**OFF, "disagreement": True}), green_wrong=True)
    hooks = rig.tap.hooks()
    assert hooks.shadowed is not None
    stats = ShadowStats()
    worker = request_plans.ShadowWorker(rig.green, stats, threading.Lock(),
                                        on_compared=hooks.shadowed)
    plan = request_plans.shadow(rig.blue, "v1", worker, 1, RequestStats(),
                                capture=hooks.request)
    try:
        for i, sample in enumerate(samples):
            plan.step(_request(rig, sample, None))
            deadline = time.monotonic() + 10
            while stats.compared <= i and time.monotonic() < deadline:
                time.sleep(0.001)
            assert stats.compared == i + 1
    finally:
        worker.stop()
    expected = [s for s in samples if s.argmax() != s[::-1].argmax()]
    assert len(rig.captures) == len(expected) > 10
    for capture, sample in zip(rig.captures, expected, strict=True):
        assert (capture.rule, capture.source, capture.served_by) == \
            ("disagreement", "api", "blue")
        assert capture.variants == {"blue": "v1", "green": "v2"}
        np.testing.assert_array_equal(capture.inputs["x"][0], sample)
        np.testing.assert_array_equal(capture.outputs["green"]["scores"][0], sample[::-1])
        np.testing.assert_array_equal(capture.outputs["blue"]["scores"][0], sample)
