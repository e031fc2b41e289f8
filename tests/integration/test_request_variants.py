"""Application requests go through the variants: weights, shadow after the answer,
promote and rollback under load, on the real libdlr with the loop idle (source ``api``)
and with the loop running a continuous source beside the requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.device.app.inference import InferenceWorker
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import make_source_factory
from agent.device.runtime import DlrBackend
from agent.device.serving.service import InferenceService, ServedModel

HOST = "dlr/linux_x86_64-x86_64"


@dataclass
class Served:
    service: InferenceService
    router: VariantRouter
    models: Path
    sample: dict[str, np.ndarray]

    def backend(self, name: str) -> DlrBackend:
        return DlrBackend(artifact_dir=self.models / name / HOST)


@pytest.fixture(params=["api", "testset"])
def served(request: pytest.FixtureRequest, built_models: Path) -> Iterator[Served]:
    blue = DlrBackend(artifact_dir=built_models / "digits-v1" / HOST)
    loop = InferenceLoop(backend=blue, rate_hz=500.0, requests=RequestQueue(16),
                         make_source=make_source_factory(
                             request.param, blue, built_models / "digits-v1" / "testset.npz",
                             500.0))
    router = VariantRouter(loop=loop, blue_version="digits-v1")
    worker = InferenceWorker(loop=loop)
    worker.start()
    service = InferenceService(router=router, queue=loop.requests, ready=worker.is_alive,
                               model=ServedModel("digits", "dlr", blue.inputs, blue.outputs))
    x = np.random.default_rng(3).random(blue.inputs[0].shape, dtype=np.float32)
    yield Served(service, router, built_models, {blue.inputs[0].name: x})
    worker.stop()
    loop.close()


def test_weights_send_exactly_n_of_every_100_requests_to_green(served: Served) -> None:
    served.router.load_green(served.backend("digits-v2"), "digits-v2")
    served.router.set_weights(90, 10)
    answers = [served.service.infer(served.sample) for _ in range(300)]
    for block in range(3):
        chunk = answers[block * 100:(block + 1) * 100]
        assert sum(a.variant == "green" for a in chunk) == 10
    assert {(a.variant, a.version) for a in answers} == {("blue", "digits-v1"),
                                                         ("green", "digits-v2")}
    stats = served.router.request_stats
    assert stats.by_variant == {"blue": 270, "green": 30}
    # Green's answers are green's: its lane counted the model time of each of them.
    assert served.router.green is not None
    assert served.router.green.lane.stats.inferences >= 30


def _p99_us(served: Served, count: int = 300, gap_s: float = 0.001) -> float:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        answer = served.service.infer(served.sample)
        latencies.append(time.perf_counter() - started)
        assert answer.variant == "blue"
        time.sleep(gap_s)
    return float(np.percentile(latencies, 99) * 1e6)


@pytest.mark.parametrize("served", ["api"], indirect=True)
def test_a_slow_green_in_shadow_does_not_delay_blues_answers(served: Served) -> None:
    """With no continuous source (``api``). With one, the loop's own shadow runs green
    inline on its sampled inputs (so that green's latency is measured as blue's is), and
    a request queued for the loop's thread meanwhile waits for that run: the README says
    so."""
    before = _p99_us(served)
    served.router.load_green(served.backend("digits-v1-slow"), "digits-v1-slow")
    served.router.shadow(1.0)
    during = _p99_us(served)
    served.router.rollback()
    after = _p99_us(served)
    compared = served.router.shadow_stats.compared
    # Green sleeps 20 ms per run and ran on several of the 300 requests: had it run
    # before the answer, more than 1% of answers would have taken 20 ms.
    assert compared >= 5
    assert during < max(before, after) * 2 + 1000, (before, during, after)


def test_promote_and_rollback_under_steady_load_fail_no_request(served: Served) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []
    versions: set[str] = set()
    counts = [0]

    def client() -> None:
        while not stop.is_set():
            try:
                versions.add(served.service.infer(served.sample).version)
                counts[0] += 1
            except BaseException as err:
                failures.append(err)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    router = served.router
    try:
        for _ in range(3):
            router.load_green(served.backend("digits-v2"), "digits-v2")
            router.set_weights(50, 50)
            time.sleep(0.05)
            router.promote()
            time.sleep(0.05)
            assert router.rollback() == "digits-v2"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert versions == {"digits-v1", "digits-v2"}
    assert counts[0] > 100
    assert router.request_stats.failed == 0


def test_local_guardrails_judge_request_traffic(served: Served) -> None:
    """Green's model time on requests lands in its lane, so a slow green taking request
    traffic breaks the latency guardrail even while the loop is idle."""
    from agent.device.inference.guardrails import Guardrails, evaluate

    served.router.load_green(served.backend("digits-v1-slow"), "digits-v1-slow")
    served.router.set_weights(50, 50)
    limits = Guardrails(min_samples=20)
    for _ in range(60):
        served.service.infer(served.sample)
    breach = evaluate(served.router, limits)
    assert breach is not None and breach.rule == "p99_latency_ratio", breach
    assert served.router.request_stats.by_variant["green"] == 30
