"""The Open Inference Protocol over HTTP, driven by the unchanged ``tritonclient.http``
client (and ``tritonclient.utils.shared_memory``) against the real runtimes: DLR
(``libdlr.so``) and ONNX Runtime on digits-v1, DLR on the two-input fusion model, each
served in-process; then the real agent (``edge-agent serve``, its loop running) on DLR
and on ONNX Runtime, found through its ``endpoints.json``.

Every answer is compared exactly with what a second backend on the same artifact
computes in-process; the Unix socket is checked to speak the same protocol.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_process import AgentProcess
from model_dirs import HOST_ARTIFACT, fusion_inputs, fusion_model_dir
from serving import Served, serve_model
from waits import wait_for

from agent.device.runtime import DlrBackend
from agent.device.runtime.base import Backend
from agent.device.runtime.onnx import OnnxBackend

httpclient = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")


def _digits_backend(models: Path, kind: str) -> Backend:
    if kind == "dlr":
        return DlrBackend(artifact_dir=models / "digits-v1" / "dlr" / HOST_ARTIFACT)
    return OnnxBackend(artifact_dir=models / "digits-v1" / "onnx")


@pytest.fixture(scope="module", params=["dlr", "onnx"])
def digits(request: pytest.FixtureRequest, built_models: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Backend]]:
    """digits-v1 served on one backend, and a second backend on the same artifact."""
    served = serve_model(_digits_backend(built_models, request.param),
                         tmp_path_factory.mktemp(f"oip-{request.param}"))
    yield served, _digits_backend(built_models, request.param)
    served.close()


@pytest.fixture(scope="module")
def fusion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Backend]]:
    model = fusion_model_dir(tmp_path_factory.mktemp("fusion-model") / "fusion-v1")
    artifact = model / "dlr" / HOST_ARTIFACT
    served = serve_model(DlrBackend(artifact_dir=artifact), tmp_path_factory.mktemp("oip-f"),
                         name="fusion", version="1")
    yield served, DlrBackend(artifact_dir=artifact)
    served.close()


@pytest.fixture
def client(digits: tuple[Served, Backend]) -> Iterator[Any]:
    with httpclient.InferenceServerClient(digits[0].url) as triton:
        yield triton


def _expected(backend: Backend, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = [np.empty(spec.shape, spec.dtype) for spec in backend.outputs]
    backend.run_with(inputs, outputs)
    return outputs


def _digit(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64), dtype=np.float32)


def _infer_input(name: str, array: np.ndarray, *, binary: bool) -> Any:
    datatype = {"float32": "FP32", "int32": "INT32"}[array.dtype.name]
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


class Regions:
    """System shared memory regions made with tritonclient's helpers, registered by name."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.handles: dict[str, Any] = {}

    def create(self, name: str, size: int) -> Any:
        key = f"/oip-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, key, size)
        self.handles[name] = handle
        self.client.register_system_shared_memory(name, key, size)
        return handle

    def close(self) -> None:
        self.client.unregister_system_shared_memory()
        for handle in self.handles.values():
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(client: Any) -> Iterator[Regions]:
    made = Regions(client)
    yield made
    made.close()


def test_health_server_and_model_metadata(digits: tuple[Served, Backend], client: Any) -> None:
    served, _ = digits
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "digits-v1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "edge-inference-agent"
    assert {"binary_tensor_data", "system_shared_memory"} <= set(server["extensions"])
    model = client.get_model_metadata("digits")
    assert model["name"] == "digits" and model["versions"] == ["digits-v1"]
    assert model["platform"] == {"dlr": "dlr", "onnx": "onnxruntime_onnx"}[served.backend.name]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 64]}]
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [1, 10]}]
    assert model["parameters"]["variants"] == {"blue": "digits-v1"}
    assert client.get_model_metadata("digits", "digits-v1") == model
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 64]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_answers_exactly_what_the_backend_computes(
        digits: tuple[Served, Backend], client: Any, binary: bool) -> None:
    _, reference = digits
    for seed in range(3):
        x = _digit(seed)
        result = client.infer("digits", [_infer_input("input", x, binary=binary)],
                              outputs=[httpclient.InferRequestedOutput("probabilities",
                                                                       binary_data=binary)],
                              request_id=f"req-{seed}")
        (expected,) = _expected(reference, [x])
        assert np.array_equal(result.as_numpy("probabilities"), expected)
        response = result.get_response()
        assert response["id"] == f"req-{seed}" and response["model_version"] == "digits-v1"
        assert response["parameters"]["variant"] == "blue"
        assert response["parameters"]["model_us"] > 0
        assert ("data" in response["outputs"][0]) is not binary


def test_shared_memory_infer_reads_and_writes_the_clients_regions(
        digits: tuple[Served, Backend], client: Any, regions: Regions) -> None:
    served, reference = digits
    x = _digit(7)
    region_in = regions.create("digits-in", x.nbytes)
    region_out = regions.create("digits-out", 64 + 40)  # the output at offset 64
    shm.set_shared_memory_region(region_in, [x])
    tensor = httpclient.InferInput("input", [1, 64], "FP32")
    tensor.set_shared_memory("digits-in", x.nbytes)
    wanted = httpclient.InferRequestedOutput("probabilities")
    wanted.set_shared_memory("digits-out", 40, offset=64)
    copied = served.app.copied_bytes
    result = client.infer("digits", [tensor], outputs=[wanted])
    got = shm.get_contents_as_numpy(region_out, np.float32, [1, 10], offset=64)
    assert np.array_equal(got, _expected(reference, [x])[0])
    assert served.app.copied_bytes == copied  # not one tensor byte copied by the server
    (output,) = result.get_response()["outputs"]
    assert "data" not in output
    assert output["parameters"] == {"shared_memory_region": "digits-out",
                                    "shared_memory_offset": 64, "shared_memory_byte_size": 40}
    status = {r["name"]: r for r in client.get_system_shared_memory_status()}
    assert status["digits-in"]["byte_size"] == x.nbytes
    assert client.get_system_shared_memory_status("digits-out")[0]["byte_size"] == 104


def test_two_input_model_over_json_binary_and_shared_memory(
        fusion: tuple[Served, Backend]) -> None:
    served, reference = fusion
    cases = fusion_inputs(2, seed=5)
    frame, counts = cases["sensor_frame"][0], cases["event_counts"][0]
    expected = _expected(reference, [frame, counts])
    names = [spec.name for spec in reference.outputs]
    with httpclient.InferenceServerClient(served.url) as client:
        for binary in (False, True):
            result = client.infer("fusion", [_infer_input("sensor_frame", frame, binary=binary),
                                             _infer_input("event_counts", counts,
                                                          binary=not binary)])
            for name, want in zip(names, expected, strict=True):
                assert np.array_equal(result.as_numpy(name), want)
        # Only the second output, as JSON; the first is not sent at all.
        only = client.infer("fusion", [_infer_input("sensor_frame", frame, binary=True),
                                       _infer_input("event_counts", counts, binary=True)],
                            outputs=[httpclient.InferRequestedOutput(names[1],
                                                                     binary_data=False)])
        assert [o["name"] for o in only.get_response()["outputs"]] == [names[1]]
        assert np.array_equal(only.as_numpy(names[1]), expected[1])
        made = Regions(client)
        try:
            region = made.create("fusion-io", 256)
            shm.set_shared_memory_region(region, [frame])
            shm.set_shared_memory_region(region, [counts], offset=32)
            inputs = [httpclient.InferInput("sensor_frame", [1, 6], "FP32"),
                      httpclient.InferInput("event_counts", [1, 3], "INT32")]
            inputs[0].set_shared_memory("fusion-io", frame.nbytes)
            inputs[1].set_shared_memory("fusion-io", counts.nbytes, offset=32)
            outputs, offset = [], 64
            for spec in reference.outputs:
                wanted = httpclient.InferRequestedOutput(spec.name)
                size = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
                wanted.set_shared_memory("fusion-io", size, offset=offset)
                outputs.append((wanted, spec, offset))
                offset += size
            copied = served.app.copied_bytes
            client.infer("fusion", inputs, outputs=[w for w, _, _ in outputs])
            assert served.app.copied_bytes == copied
            for (_, spec, at), want in zip(outputs, expected, strict=True):
                got = shm.get_contents_as_numpy(region, np.dtype(spec.dtype), spec.shape,
                                                offset=at)
                assert np.array_equal(got, want)
        finally:
            made.close()


def test_the_answer_names_the_variant_and_version_that_gave_it(
        built_models: Path, tmp_path: Path) -> None:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1" / "dlr" /
                                    HOST_ARTIFACT), tmp_path)
    try:
        served.router.load_green(DlrBackend(artifact_dir=built_models / "digits-v2" / "dlr" /
                                            HOST_ARTIFACT), "digits-v2")
        served.router.set_weights(90, 10)
        answered: dict[tuple[str, str], int] = {}
        with httpclient.InferenceServerClient(served.url) as client:
            assert client.get_model_metadata("digits")["versions"] == ["digits-v1", "digits-v2"]
            tensor = _infer_input("input", _digit(), binary=True)
            for _ in range(100):
                params = client.infer("digits", [tensor]).get_response()
                key = (params["parameters"]["variant"], params["model_version"])
                answered[key] = answered.get(key, 0) + 1
        assert answered == {("blue", "digits-v1"): 90, ("green", "digits-v2"): 10}
    finally:
        served.close()


def _unix_request(path: Path, method: str, url: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("localhost")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    connection.sock = sock
    try:
        connection.request(method, url, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_unix_socket_speaks_the_same_protocol(digits: tuple[Served, Backend]) -> None:
    served, reference = digits
    path = served.unix.socket_path
    assert path is not None and stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert _unix_request(path, "GET", "/v2/health/ready")[0] == 200
    status, _, body = _unix_request(path, "GET", "/v2/models/digits")
    assert status == 200 and json.loads(body)["inputs"][0]["shape"] == [1, 64]
    x = _digit(3)
    request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                           "data": x.ravel().tolist()}]}
    status, _, body = _unix_request(path, "POST", "/v2/models/digits/infer",
                                    json.dumps(request).encode())
    assert status == 200
    (output,) = json.loads(body)["outputs"]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    assert np.array_equal(got, _expected(reference, [x])[0])
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": 256}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = _unix_request(
        path, "POST", "/v2/models/digits/infer", header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))})
    length = int(headers["Inference-Header-Content-Length"])
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert np.array_equal(np.frombuffer(body[length:], np.float32).reshape(1, 10),
                          _expected(reference, [x])[0])


def _check_every_form(client: Any, model: str, reference: Backend,
                      inputs: dict[str, np.ndarray], regions: Regions) -> None:
    """JSON, binary and shared-memory infer (every input and output in one region) of
    ``inputs``, each answer exactly ``reference``'s."""
    expected = _expected(reference, [inputs[spec.name] for spec in reference.inputs])
    for binary in (False, True):
        result = client.infer(model, [_infer_input(n, a, binary=binary)
                                      for n, a in inputs.items()],
                              outputs=[httpclient.InferRequestedOutput(s.name, binary_data=binary)
                                       for s in reference.outputs])
        for spec, want in zip(reference.outputs, expected, strict=True):
            assert np.array_equal(result.as_numpy(spec.name), want), (spec.name, binary)
    region = regions.create(f"{model}-io", 4096)
    tensors, offset = [], 0
    for name, array in inputs.items():
        shm.set_shared_memory_region(region, [array], offset=offset)
        tensor = httpclient.InferInput(name, list(array.shape),
                                       {"float32": "FP32", "int32": "INT32"}[array.dtype.name])
        tensor.set_shared_memory(f"{model}-io", array.nbytes, offset=offset)
        tensors.append(tensor)
        offset += 256
    wanted = []
    for spec in reference.outputs:
        output = httpclient.InferRequestedOutput(spec.name)
        output.set_shared_memory(f"{model}-io", int(np.prod(spec.shape)) *
                                 np.dtype(spec.dtype).itemsize, offset=offset)
        wanted.append((output, spec, offset))
        offset += 256
    client.infer(model, tensors, outputs=[output for output, _, _ in wanted])
    for (_, spec, at), want in zip(wanted, expected, strict=True):
        got = shm.get_contents_as_numpy(region, np.dtype(spec.dtype), spec.shape, offset=at)
        assert np.array_equal(got, want), spec.name


def _endpoints(state: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads((state / "endpoints.json").read_text()))
    except (FileNotFoundError, ValueError):
        return None


@pytest.mark.parametrize("model", ["digits-dlr", "fusion-onnx"])
def test_the_real_agent_answers_tritonclient(model: str, built_models: Path,
                                             tmp_path: Path) -> None:
    if model == "digits-dlr":
        model_dir, backend, name = built_models / "digits-v1", "dlr", "digits"
        reference: Backend = _digits_backend(built_models, "dlr")
        inputs = {"input": _digit(11)}
    else:
        model_dir = fusion_model_dir(tmp_path / "fusion-v1", neo=False, onnx=True)
        backend, name = "onnx", "fusion"
        reference = OnnxBackend(artifact_dir=model_dir / "onnx")
        cases = fusion_inputs(1, seed=9)
        inputs = {key: value[0] for key, value in cases.items()}
    state = tmp_path / "state"
    agent = AgentProcess(thing=f"oip-{model}", model=model_dir, state_dir=state,
                         broker_port=None, log_path=tmp_path / "agent.log", rate=100,
                         extra=["--backend", backend, "--source", "random"]).start()
    try:
        endpoints = wait_for(lambda: _endpoints(state), timeout_s=60)
        url = endpoints["http"].removeprefix("http://")
        assert url.startswith("127.0.0.1:")
        with httpclient.InferenceServerClient(url) as client:
            assert client.is_server_ready() and client.is_model_ready(name)
            metadata = client.get_model_metadata(name)
            assert [i["name"] for i in metadata["inputs"]] == list(inputs)
            assert metadata["platform"] == {"dlr": "dlr", "onnx": "onnxruntime_onnx"}[backend]
            made = Regions(client)
            try:
                _check_every_form(client, name, reference, inputs, made)
            finally:
                made.close()
    finally:
        assert agent.stop() == 0, agent.log()
