"""What ``edge-agent bench api`` measures in the benchmark's own process: the fixed
request of each model, the in-process inference loop, and the result stream's cost.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.core.model_layout import read_model_info
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, read_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.results.build import ShmSink
from agent.device.results.config import ResultsConfig
from agent.device.results.shm_ring import ResultRingWriter
from agent.device.results.stream import ResultStream
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend
from agent.device.runtime.dlr.backend import DlrBackend
from agent.tools.bench.api_paths import CHECK_EVERY, Case

CHUNK = 256  # loop steps between clock reads
SAMPLE = 4  # the test sample every request sends (for vision-v1: the orange picture)


def load_case(model_dir: Path) -> Case:
    """Test sample :data:`SAMPLE` of ``model_dir`` and the class its host DLR artifact
    gives it here, in process."""
    info = read_model_info(model_dir)
    resolved = resolve_model(model_dir, backend="dlr", profile=detect_profile())
    backend = DlrBackend(artifact_dir=resolved.load_dir)
    try:
        spec = backend.inputs[0]
        assert resolved.testset is not None, f"{model_dir} has no test set"
        data = read_testset(resolved.testset, backend.inputs)
        x = np.ascontiguousarray(data.inputs[0][SAMPLE].reshape(spec.shape), dtype=spec.dtype)
        buffer = np.zeros(spec.shape, spec.dtype)
        (scores,) = backend.bind([buffer])
        buffer[...] = x
        backend.run()
        expected = int(scores.argmax())
    finally:
        backend.close()
    return Case(model=info.name, input=info.inputs[0], output=info.outputs[0], x=x,
                expected=expected)


def _replay_loop(model_dir: Path, backend: str) -> InferenceLoop:
    resolved = resolve_model(model_dir, backend=backend, profile=detect_profile())
    assert resolved.testset is not None
    runtime = load_backend(resolved.load_dir, DlrConfig() if backend == "dlr" else OnnxConfig())
    data = read_testset(resolved.testset, runtime.inputs)
    sample_shape = runtime.inputs[0].shape[1:]
    x = data.inputs[0].reshape((len(data), *sample_shape))
    return InferenceLoop(backend=runtime, check_every=CHECK_EVERY,
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=data.labels))


def inproc_loop(model_dir: Path, backend: str = "dlr") -> Callable[[float], float]:
    """The agent's inference loop on ``model_dir`` (test-set replay) in this process, on
    ``backend``: seconds -> inferences per second."""
    return _stepper(_replay_loop(model_dir, backend))


def _stepper(loop: InferenceLoop) -> Callable[[float], float]:
    def run(seconds: float) -> float:
        done = 0
        started = time.perf_counter()
        deadline = started + seconds
        now = started
        while now < deadline:
            for _ in range(CHUNK):
                loop.step()  # looked up each time, as the loop's own run() does
            done += CHUNK
            now = time.perf_counter()
        return done / (now - started)

    return run


def stream_overhead(model_dir: Path, *, rounds: int, seconds: float,
                    backend: str = "dlr") -> tuple[float, int]:
    """Unpaced loop throughput with a result stream on over off (median of interleaved
    rounds), and how many results the stream published meanwhile.

    Both loops run through a :class:`VariantRouter`, as the agent's does; the stream has
    the agent's default settings (``results`` with no overrides: at most 5 results a
    second) and publishes into a shared-memory result ring, a destination that needs no
    broker or nucleus, so what is measured is what the stream costs the inference path.
    """
    info = read_model_info(model_dir)
    version = f"{info.name}-v{info.version}"
    off, on = _replay_loop(model_dir, backend), _replay_loop(model_dir, backend)
    VariantRouter(loop=off, blue_version=version)
    ring = ResultRingWriter(f"bench-results-{os.getpid()}", on.backend.outputs)
    stream = ResultStream(config=ResultsConfig(), thing="bench", model=info.name,
                          metadata=info.metadata, outputs=on.backend.outputs, source=on.source,
                          version=version, sinks=[ShmSink(ring)])
    VariantRouter(loop=on, blue_version=version, results=stream)
    stream.start()
    runs = {"on": _stepper(on), "off": _stepper(off)}
    ratios = []
    try:
        for r in range(rounds):
            rates = {name: runs[name](seconds)
                     for name in (("on", "off") if r % 2 == 0 else ("off", "on"))}
            ratios.append(rates["on"] / rates["off"])
    finally:
        stream.stop()
        off.close()
        on.close()
    return statistics.median(ratios), stream.counts().published
