"""A result stream on a real DLR loop: the counts add up, every published result is a valid
v1 result, variants and request answers are labelled, and the model's metadata names and
ranks the classes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.core.model_metadata import ModelMetadata
from agent.device.inference.lane import Lane
from agent.device.inference.requests import InferenceRequest, RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ApiSource, ReplaySource, load_testset
from agent.device.results.config import ResultsConfig
from agent.device.results.stream import ResultStream, Sink
from agent.device.runtime import DlrBackend
from agent.wire.results import Result, ResultCounts, parse_result

ARTIFACT = "dlr/linux_x86_64-x86_64"


class Recorder(Sink):
    destination = "local"

    def __init__(self) -> None:
        super().__init__()
        self.results: list[Result] = []
        self.outputs: list[np.ndarray] = []

    def publish(self, result: dict[str, Any], payload: bytes,
                outputs: Sequence[np.ndarray]) -> None:
        assert json.loads(payload) == result
        self.results.append(parse_result(payload))
        self.outputs.append(outputs[0].copy())


def config(**settings: Any) -> ResultsConfig:
    return ResultsConfig.model_validate(settings)


def backend(models: Path, name: str = "digits-v1") -> DlrBackend:
    return DlrBackend(artifact_dir=models / name / ARTIFACT)


def replay_loop(models: Path, rate_hz: float = 0.0) -> InferenceLoop:
    x, y = load_testset(models / "digits-v1" / "testset.npz")
    return InferenceLoop(backend=backend(models), rate_hz=rate_hz,
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=y))


def total(counts: ResultCounts) -> int:
    return counts.published + sum(counts.suppressed.values()) + counts.dropped


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def stream_on(loop: InferenceLoop, sink: Sink, settings: ResultsConfig,
              metadata: ModelMetadata | None = None) -> ResultStream:
    stream = ResultStream(config=settings, thing="cam-1", model="digits", metadata=metadata,
                          outputs=loop.backend.outputs, source=loop.source,
                          version="digits-v1", sinks=[sink])
    stream.start()
    return stream


def test_counts_add_up_and_every_published_result_is_valid(built_models: Path,
                                                           recorder: Recorder) -> None:
    loop = replay_loop(built_models)
    stream = stream_on(loop, recorder, config(policy={"everyN": 7, "maxPerSecond": None},
                                              handoffSlots=8))
    VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
    try:
        loop.run(max_inferences=3000)
    finally:
        stream.stop()
        loop.close()
    counts = stream.counts()
    assert counts.seen == 3000 and total(counts) == 3000
    assert counts.suppressed["every_n"] == 3000 - 3000 // 7
    assert counts.published == len(recorder.results) > 0
    assert [r.seq for r in recorder.results] == list(range(1, counts.published + 1))
    assert all(r.frame.id % 7 == 0 and r.variant == "blue" and r.version == "digits-v1"
               and r.source == "digits" and r.thing == "cam-1" for r in recorder.results)
    assert len({r.run for r in recorder.results}) == 1
    first = recorder.results[0]
    assert len(first.top_k) == 5 and first.top_k[0].label is None
    assert first.outputs is not None and len(first.outputs["probabilities"].data) == 10
    assert first.top_k[0].index == int(np.argmax(recorder.outputs[0]))
    assert abs(first.frame.time - time.time()) < 60


def test_the_rate_cap_holds_with_a_fast_loop(built_models: Path, recorder: Recorder) -> None:
    loop = replay_loop(built_models, rate_hz=400)
    stream = stream_on(loop, recorder, config(policy={"maxPerSecond": 10}))
    VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
    try:
        loop.run(duration_s=1.0)
    finally:
        stream.stop()
        loop.close()
    counts = stream.counts()
    assert 8 <= counts.published <= 11 and counts.published == len(recorder.results)
    assert counts.dropped == 0 and total(counts) == counts.seen
    assert counts.suppressed["rate"] == counts.seen - counts.published
    gaps = np.diff([r.frame.time for r in recorder.results])
    assert gaps.min() >= 0.09


def test_each_result_names_the_variant_that_served_it(built_models: Path,
                                                      recorder: Recorder) -> None:
    loop = replay_loop(built_models, rate_hz=500)
    stream = stream_on(loop, recorder, config(policy={"maxPerSecond": None}))
    router = VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        router.load_green(backend(built_models, "digits-v2"), "digits-v2")
        router.set_weights(50, 50)
        time.sleep(0.4)
        router.shadow(1.0)  # green only compared: every result is blue's
        mark = len(recorder.results)
        time.sleep(0.3)
        shadowed = recorder.results[mark + 2:]
        router.promote()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
        stream.stop()
        loop.close()
    seen = {(r.variant, r.version) for r in recorder.results}
    assert {("blue", "digits-v1"), ("green", "digits-v2"), ("blue", "digits-v2")} <= seen
    assert shadowed and all(r.variant == "blue" and r.version == "digits-v1" for r in shadowed)
    assert recorder.results[-1].variant == "blue" and recorder.results[-1].version == "digits-v2"


def test_requests_are_published_when_asked(built_models: Path, recorder: Recorder) -> None:
    def run(settings: ResultsConfig) -> tuple[ResultStream, list[np.ndarray]]:
        model = backend(built_models)
        loop = InferenceLoop(backend=model, make_source=lambda _b: ApiSource(),
                             requests=RequestQueue(4))
        stream = stream_on(loop, recorder, settings)
        VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
        answers = []
        rng = np.random.default_rng(1)
        for _ in range(5):
            spec = model.inputs[0]
            request = InferenceRequest(
                inputs=(rng.random(spec.shape, dtype=np.float32),),
                outputs=tuple(np.zeros(o.shape, o.dtype) for o in model.outputs))
            loop.answer(request, 5.0)
            assert request.error is None
            answers.append(request.outputs[0].copy())
        time.sleep(0.2)
        stream.stop()
        loop.close()
        return stream, answers

    quiet, _ = run(config(policy={"maxPerSecond": None}))
    assert quiet.on_request is None and recorder.results == []
    stream, answers = run(config(requests=True, policy={"maxPerSecond": None,
                                                        "everyN": 3}))
    assert stream.counts().published == 5 and stream.counts().seen == 5  # not everyN
    assert [(r.source, r.frame.id) for r in recorder.results] == [("api", i) for i in range(1, 6)]
    for result, answer in zip(recorder.results, answers, strict=True):
        assert result.outputs is not None
        assert result.outputs["probabilities"].data == answer.reshape(-1).tolist()


def test_metadata_names_and_ranks_the_classes(built_models: Path, recorder: Recorder) -> None:
    names = [f"digit-{i}" for i in range(10)]
    metadata = ModelMetadata.model_validate(
        {"labels": names, "postprocess": {"softmax": True, "top_k": 3}})
    loop = replay_loop(built_models)
    stream = stream_on(loop, recorder, config(policy={"maxPerSecond": None, "everyN": 50},
                                              rawOutputsMaxBytes=0), metadata)
    VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
    try:
        loop.run(max_inferences=500)
    finally:
        stream.stop()
        loop.close()
    assert recorder.results
    for result, scores in zip(recorder.results, recorder.outputs, strict=True):
        assert result.outputs is None  # rawOutputsMaxBytes 0: never
        assert len(result.top_k) == 3
        soft = np.exp(scores.reshape(-1) - scores.max())
        soft /= soft.sum()
        best = int(np.argmax(soft))
        assert result.top_k[0].index == best and result.top_k[0].label == names[best]
        assert result.top_k[0].score == pytest.approx(float(soft[best]))


def test_labels_that_do_not_fit_are_left_out_and_topk_overrides(built_models: Path,
                                                                recorder: Recorder) -> None:
    metadata = ModelMetadata.model_validate({"labels": ["a", "b"]})
    loop = replay_loop(built_models)
    stream = stream_on(loop, recorder, config(policy={"maxPerSecond": None, "everyN": 100},
                                              topK=2), metadata)
    VariantRouter(loop=loop, blue_version="digits-v1", results=stream)
    loop.run(max_inferences=200)
    stream.stop()
    loop.close()
    assert recorder.results and all(len(r.top_k) == 2 and r.top_k[0].label is None
                                    for r in recorder.results)


class _Backend:
    inputs = ()


def test_scores_that_are_not_finite_publish_no_ranking_and_no_raw_outputs(
        recorder: Recorder) -> None:
    from agent.core.model_layout import TensorSpec

    specs = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),)
    lane = Lane(backend=_Backend(), outputs=(np.array([[np.nan, 1.0, 0.0]], np.float32),),  # type: ignore[arg-type]
                run=lambda: None)

    class Source:
        name = "test"
        frame_id = 41
        frame_time = 1234.5

    stream = ResultStream(config=config(policy={"maxPerSecond": None}), thing="t",
                          model="m", metadata=None, outputs=specs, source=Source(),
                          sinks=[recorder])
    stream.serving({lane: ("green", "m-2")})
    stream.start()
    stream.on_result(lane)
    lane.outputs[0][:] = [[0.1, 0.7, 0.2]]
    time.sleep(0.1)
    stream.on_result(lane)
    time.sleep(0.1)
    stream.stop()
    nan, fine = recorder.results
    assert nan.top_k == [] and nan.outputs is None
    assert (nan.frame.id, nan.frame.time, nan.variant, nan.version) == (41, 1234.5, "green", "m-2")
    assert fine.top_k[0].index == 1 and fine.outputs is not None


@pytest.fixture
def no_threads_left() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    assert "results" not in {t.name for t in threading.enumerate()} - before


def test_stop_publishes_what_was_handed_off_and_ends_the_thread(
        no_threads_left: None, recorder: Recorder) -> None:
    from agent.core.model_layout import TensorSpec

    specs = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),)
    lane = Lane(backend=_Backend(), outputs=(np.array([[0.2, 0.5, 0.3]], np.float32),),  # type: ignore[arg-type]
                run=lambda: None)
    stream = ResultStream(config=config(policy={"maxPerSecond": None}), thing="t",
                          model="m", metadata=None, outputs=specs, source=object(),
                          sinks=[recorder])
    for _ in range(5):  # handed off before the publisher even started
        stream.on_result(lane)
    stream.start()
    stream.stop()
    assert len(recorder.results) == 5 and recorder.results[0].source == "loop"
    stream.on_result(lane)  # after stop the hook only counts
    assert stream.counts().seen == 6 and stream.counts().published == 5


def test_a_source_that_breaks_the_hand_off_never_breaks_the_loop(recorder: Recorder) -> None:
    from agent.core.model_layout import TensorSpec

    specs = (TensorSpec(name="probs", dtype="float32", shape=(1, 3)),)
    lane = Lane(backend=_Backend(), outputs=(np.array([[0.2, 0.5, 0.3]], np.float32),),  # type: ignore[arg-type]
                run=lambda: None)

    class Broken:
        name = "broken"
        frame_id = "not a number"

    stream = ResultStream(config=config(policy={"maxPerSecond": None}), thing="t",
                          model="m", metadata=None, outputs=specs, source=Broken(),
                          sinks=[recorder])
    for _ in range(3):
        stream.on_result(lane)  # raises nothing
    counts = stream.counts()
    assert counts.seen == 3 and counts.dropped == 3 and counts.published == 0
