"""A shared-memory infer request sent again is answered from its plan, and the plan never
outlives what it was checked against: regions re-registered elsewhere, a region too small
now, a version no longer loaded, a region unregistered while a planned request runs.

Driven by the unchanged ``tritonclient.http`` client (which sends the same body for the
same regions) and by raw ``http.client`` requests, against digits-v1 on the real DLR
runtime; every answer is compared exactly with a second backend's in-process outputs.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_dirs import HOST_ARTIFACT
from serving import Served, serve_model
from waits import wait_for

from agent.device.runtime import DlrBackend
from agent.device.serving import oip_codec
from agent.device.serving.oip_plans import PlanCache

httpclient = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")

INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def reference(built_models: Path) -> DlrBackend:
    return DlrBackend(artifact_dir=built_models / "digits-v1" / "dlr" / HOST_ARTIFACT)


@pytest.fixture(scope="module")
def digits(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1" / "dlr" /
                                    HOST_ARTIFACT), tmp_path_factory.mktemp("oip-plans"))
    yield served
    served.close()


@pytest.fixture(scope="module")
def slow(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1-slow" / "dlr" /
                                    HOST_ARTIFACT), tmp_path_factory.mktemp("oip-plans-slow"),
                         version="digits-v1-slow")
    yield served
    served.close()


class Segments:
    """POSIX shared memory objects (tritonclient's helper), registered and unregistered
    over HTTP; everything is unregistered and destroyed at the end."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.handles: dict[str, Any] = {}

    def create(self, size: int) -> tuple[str, Any]:
        key = f"/oip-plan-{uuid.uuid4().hex[:12]}"
        self.handles[key] = shm.create_shared_memory_region(key, key, size)
        return key, self.handles[key]

    def register(self, name: str, key: str, size: int) -> None:
        answer = post(self.served, f"/v2/systemsharedmemory/region/{name}/register",
                      {"key": key, "offset": 0, "byte_size": size})
        assert answer[0] == 200, answer

    def unregister(self, name: str) -> None:
        assert post(self.served, f"/v2/systemsharedmemory/region/{name}/unregister")[0] == 200

    def close(self) -> None:
        post(self.served, "/v2/systemsharedmemory/unregister")
        for handle in self.handles.values():
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def segments(digits: Served) -> Iterator[Segments]:
    made = Segments(digits)
    yield made
    made.close()
    assert digits.registry.mapped == 0


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the infer requests parsed in full (a planned one is not)."""
    calls: list[int] = []
    real = oip_codec.parse_infer_request

    def counted(*args: Any) -> oip_codec.InferRequest:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(oip_codec, "parse_infer_request", counted)
    return calls


def post(served: Served, path: str, body: bytes | dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", served.tcp.port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request("POST", path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def shm_body(region_in: str = "in", region_out: str = "out", size: int = 256) -> bytes:
    return json.dumps({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "parameters": {
            "shared_memory_region": region_in, "shared_memory_byte_size": size}}],
        "outputs": [{"name": "probabilities", "parameters": {
            "shared_memory_region": region_out, "shared_memory_byte_size": 40,
            "shared_memory_offset": 8}}]}).encode()


def expected(reference: DlrBackend, x: np.ndarray) -> np.ndarray:
    out = np.empty((1, 10), np.float32)
    reference.run_with([x], [out])
    return out


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64), dtype=np.float32)


def test_a_repeated_request_is_answered_from_its_plan(
        digits: Served, segments: Segments, reference: DlrBackend, parses: list[int]) -> None:
    key_in, region_in = segments.create(256)
    key_out, region_out = segments.create(48)
    segments.register("tc-in", key_in, 256)
    segments.register("tc-out", key_out, 48)
    tensor = httpclient.InferInput("input", [1, 64], "FP32")
    tensor.set_shared_memory("tc-in", 256)
    wanted = httpclient.InferRequestedOutput("probabilities")
    wanted.set_shared_memory("tc-out", 40, offset=8)
    copied, requests = digits.app.copied_bytes, digits.app.requests
    with httpclient.InferenceServerClient(digits.url) as client:
        responses = []
        for seed in range(5):  # new data in the region each time, the same request
            x = digit(seed)
            shm.set_shared_memory_region(region_in, [x])
            responses.append(client.infer("digits", [tensor], outputs=[wanted]).get_response())
            got = shm.get_contents_as_numpy(region_out, np.float32, [1, 10], offset=8)
            assert np.array_equal(got, expected(reference, x)), seed
    assert len(parses) == 1  # the first one parsed and checked; the others planned
    assert digits.app.copied_bytes == copied and digits.app.requests == requests + 5
    first, *others = responses
    for response in others:  # the planned answers are the full path's, timings aside
        assert list(response) == list(first) and response["outputs"] == first["outputs"]
        assert list(response["parameters"]) == ["variant", "queue_us", "model_us", "total_us"]
        assert response["model_version"] == "digits-v1"
        assert response["parameters"]["variant"] == "blue"
    assert first["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [1, 10],
                                 "parameters": {"shared_memory_region": "tc-out",
                                                "shared_memory_offset": 8,
                                                "shared_memory_byte_size": 40}}]


def test_a_plan_follows_its_regions_when_they_are_registered_again(
        digits: Served, segments: Segments, reference: DlrBackend, parses: list[int]) -> None:
    first_key, first_in = segments.create(256)
    second_key, second_in = segments.create(256)
    out_key, out = segments.create(48)
    shm.set_shared_memory_region(first_in, [digit(1)])
    shm.set_shared_memory_region(second_in, [digit(2)])
    segments.register("in", first_key, 256)
    segments.register("out", out_key, 48)
    for _ in range(2):
        assert post(digits, INFER, shm_body())[0] == 200
    assert np.array_equal(shm.get_contents_as_numpy(out, np.float32, [1, 10], offset=8),
                          expected(reference, digit(1)))
    assert len(parses) == 1
    segments.unregister("in")
    segments.register("in", second_key, 256)  # the same name, another object
    assert post(digits, INFER, shm_body())[0] == 200
    assert np.array_equal(shm.get_contents_as_numpy(out, np.float32, [1, 10], offset=8),
                          expected(reference, digit(2)))
    assert len(parses) == 2  # checked again against the new registration
    segments.unregister("in")
    segments.register("in", second_key, 128)  # now too small for the same request
    for _ in range(2):
        assert post(digits, INFER, shm_body()) == (400, {
            "error": "input 'input': region 'in' is too small (128 bytes; 256 at offset 0 "
                     "are needed)"})
    segments.unregister("in")
    assert post(digits, INFER, shm_body()) == (400, {"error": "region 'in' is not registered"})


def test_a_planned_request_checks_its_version_every_time(
        digits: Served, segments: Segments, monkeypatch: pytest.MonkeyPatch) -> None:
    in_key, _ = segments.create(256)
    out_key, _ = segments.create(48)
    segments.register("in", in_key, 256)
    segments.register("out", out_key, 48)
    path = "/v2/models/digits/versions/digits-v1/infer"
    for _ in range(2):
        assert post(digits, path, shm_body())[1]["model_version"] == "digits-v1"
    monkeypatch.setattr(digits.service, "versions", lambda: {"blue": "digits-v2"})
    assert post(digits, path, shm_body()) == (400, {
        "error": "model 'digits' has no version 'digits-v1' loaded (loaded: ['digits-v2'])"})
    monkeypatch.undo()
    assert post(digits, path, shm_body())[0] == 200


def test_refused_json_and_binary_requests_make_no_plan(
        digits: Served, segments: Segments) -> None:
    in_key, _ = segments.create(256)
    segments.register("in", in_key, 256)
    digits.app.plans = PlanCache()
    wrong_shape = shm_body().replace(b"[1, 64]", b"[1, 63]")
    for _ in range(2):
        assert post(digits, INFER, wrong_shape) == (400, {
            "error": "input 'input' has shape [1, 63], but the model expects [1, 64]"})
        assert post(digits, INFER, shm_body(region_out="ghost")) == (
            400, {"error": "region 'ghost' is not registered"})
    x = digit(3)
    as_json = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                           "data": x.ravel().tolist()}]}
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": 256}}],
                         "outputs": [{"name": "probabilities", "parameters": {
                             "shared_memory_region": "in", "shared_memory_byte_size": 40}}]
                         }).encode()
    for _ in range(2):
        assert post(digits, INFER, as_json)[0] == 200
        answer = post(digits, INFER, header + x.tobytes(),
                      {"Inference-Header-Content-Length": str(len(header))})
        assert answer[0] == 200, answer
    assert len(digits.app.plans) == 0


def test_a_region_unregistered_while_a_planned_request_uses_it(
        slow: Served, built_models: Path, parses: list[int]) -> None:
    segments = Segments(slow)
    try:
        in_key, region_in = segments.create(256)
        out_key, region_out = segments.create(48)
        shm.set_shared_memory_region(region_in, [digit(4)])
        segments.register("in", in_key, 256)
        segments.register("out", out_key, 48)
        assert post(slow, INFER, shm_body())[0] == 200  # the plan is made
        answers: list[tuple[int, Any]] = []
        runner = threading.Thread(target=lambda: answers.append(post(slow, INFER, shm_body())))
        with slow.router.loop.runtime_lock:  # the planned request holds its regions
            runner.start()
            wait_for(lambda: slow.service.queue.direct == 1, timeout_s=5)
            segments.unregister("in")
            segments.unregister("out")
            assert slow.registry.mapped == 2  # unregistered, still mapped for their user
        runner.join(timeout=10)
        (answer,) = answers
        assert answer[0] == 200, answer
        assert len(parses) == 1  # the second request was the planned one
        want = np.empty((1, 10), np.float32)
        DlrBackend(artifact_dir=built_models / "digits-v1-slow" / "dlr" / HOST_ARTIFACT
                   ).run_with([digit(4)], [want])
        got = shm.get_contents_as_numpy(region_out, np.float32, [1, 10], offset=8)
        assert np.array_equal(got, want)
        wait_for(lambda: slow.registry.mapped == 0, timeout_s=5)
        assert post(slow, INFER, shm_body()) == (400, {"error": "region 'in' is not "
                                                                "registered"})
    finally:
        segments.close()
