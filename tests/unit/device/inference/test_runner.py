"""The inference loop: in-place sources, bound buffers, histogram, no per-step allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import InputSpecError
from agent.core.histogram import BUCKET_EDGES_US, LatencyHistogram, quantile_us
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.shm import ShmSource
from agent.device.inference.sources import RandomSource, ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend
from agent.device.runtime.base import Backend
from agent.tools.bench.alloc import bytes_per_call


def _backend(built_models: Path, kind: str, name: str = "digits-v1") -> Backend:
    res = resolve_model(built_models / name, backend=kind, profile=detect_profile())
    return load_backend(res.load_dir, DlrConfig() if kind == "dlr" else OnnxConfig())


def _replay(built_models: Path, name: str = "digits-v1"):  # type: ignore[no-untyped-def]
    x, y = load_testset(built_models / name / "testset.npz")
    return lambda buffers: ReplaySource(buffer=buffers[0], x=x, y=y)


def test_histogram_edges_and_quantiles() -> None:
    assert BUCKET_EDGES_US[0] == 1.0 and BUCKET_EDGES_US[10] == 10.0
    assert list(BUCKET_EDGES_US) == sorted(set(BUCKET_EDGES_US))
    hist = LatencyHistogram()
    for _ in range(99):
        hist.record_ns(10_000)  # 10 us
    hist.record_ns(5_000_000)  # one 5 ms outlier
    assert 7.9 <= hist.quantile_us(0.5) <= 10.0
    assert hist.quantile_us(0.999) > 3000
    other = LatencyHistogram()
    other.record_ns(10_000)
    hist.merge(other)
    assert hist.total == 101 and sum(hist.counts) == 101
    assert quantile_us([0, 0], [1.0], 0.5) == 0.0
    with pytest.raises(ValueError):
        hist.quantile_us(1.5)


@pytest.mark.parametrize("kind", ["dlr", "onnx"])
def test_replay_loop_reports_accuracy_and_latency(built_models: Path, kind: str) -> None:
    loop = InferenceLoop(backend=_backend(built_models, kind), make_source=_replay(built_models))
    stats = loop.run(max_inferences=2000)
    loop.close()
    assert stats.inferences == 2000 and stats.errors == 0
    assert stats.accuracy is not None and stats.accuracy >= 0.95
    summary = stats.to_dict()
    assert 0 < summary["latency_p50_us"] <= summary["latency_p99_us"]
    assert stats.histogram.total == 2000


def test_random_source_runs_any_model_from_its_spec(built_models: Path) -> None:
    backend = _backend(built_models, "dlr", "digits-v2")
    loop = InferenceLoop(backend=backend,
                         make_source=lambda b: RandomSource(buffers=b, specs=backend.inputs))
    stats = loop.run(max_inferences=300)
    # Read before close(): DLR outputs are views on the runtime's memory, freed by close().
    assert abs(float(loop.outputs[0].sum()) - 1.0) < 1e-4
    loop.close()
    assert stats.inferences == 300 and stats.checked == 0 and stats.accuracy is None


def test_shared_memory_producer_feeds_the_loop(built_models: Path) -> None:
    testset = built_models / "digits-v1" / "testset.npz"
    backend = _backend(built_models, "dlr")
    loop = InferenceLoop(backend=backend, make_source=lambda b: ShmSource.spawn(
        buffer=b[0], testset=testset, rate_hz=0.0))
    try:
        stats = loop.run(max_inferences=1500, duration_s=60)
    finally:
        loop.close()
    assert stats.inferences == 1500 and stats.checked == 1500
    assert stats.accuracy is not None and stats.accuracy >= 0.95


def test_replay_rejects_a_dataset_of_another_shape(built_models: Path) -> None:
    with pytest.raises(InputSpecError):
        ReplaySource(buffer=np.zeros((1, 64), np.float32), x=np.zeros((3, 32), np.float32),
                     y=np.zeros(3, np.int64))


def test_paced_loop_does_not_exceed_its_rate(built_models: Path) -> None:
    loop = InferenceLoop(backend=_backend(built_models, "dlr"),
                         make_source=_replay(built_models), rate_hz=200)
    stats = loop.run(duration_s=0.5)
    loop.close()
    assert 20 <= stats.inferences <= 102


@pytest.mark.parametrize(("kind", "budget"), [("dlr", 320), ("onnx", 128)])
def test_a_step_allocates_no_array(built_models: Path, kind: str, budget: int) -> None:
    loop = InferenceLoop(backend=_backend(built_models, kind), make_source=_replay(built_models),
                         check_every=16)
    ours = bytes_per_call(loop.step)
    extra: list[np.ndarray] = []

    def with_one_small_array() -> None:
        extra.append(np.empty(10, np.float32))  # alive across the step, as a result array is
        loop.step()
        extra.pop()

    control = bytes_per_call(with_one_small_array)
    loop.close()
    assert ours <= budget, f"{kind}: {ours} bytes per inference"
    assert control - ours >= 100, "the measure must see one small numpy array"
