"""The client side of ``edge-agent bench api``: one object per measured path.

Every path sends the same fixed input again and again, one request at a time (a closed
loop, as an application waiting for each answer does), and checks every 16th answer's
top class against the class the model gives in process, so a path that answered wrongly
(or not at all) fails the benchmark instead of timing nonsense. Shared-memory paths fill
their input region once: producing a frame is the application's work, not the request
path's. :meth:`ApiPath.one` returns the model time the server reported (0 where there
is none), so the benchmark can take it out of the client-observed latency.

Paths: ``http_shm`` (the unchanged ``tritonclient.http`` client with Triton's system
shared memory, inputs and outputs in regions), ``http_json`` (the same client, JSON
tensors), ``native`` (``agent.client`` with regions) and the two echoes, which send
exactly as many bytes as the path they stand for: ``http_echo`` (the same HTTP client's
POST) and ``native_echo`` (``agent.client``'s own request call).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.client import ClientResult, InferenceClient, SharedRegion
from agent.client.regions import Placement
from agent.core.errors import AgentError
from agent.core.model_layout import TensorSpec
from agent.tools.bench.loop import VerificationError
from agent.wire.inference_frames import (
    PRELUDE_SIZE,
    InferHeader,
    Kind,
    ResultHeader,
    TensorDesc,
    encode_infer,
    encode_result,
)

CHECK_EVERY = 16
_TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "uint8": "UINT8",
                  "int32": "INT32", "int64": "INT64"}


class ApiPath(Protocol):
    """One way of asking for a prediction."""

    name: str
    request_bytes: int  # bytes the client sends per request (the body / the frame)
    response_bytes: int

    def one(self) -> float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Case:
    """The fixed request of a path: the model, its tensors, the input and the class the
    model gives it in process."""

    model: str
    input: TensorSpec
    output: TensorSpec
    x: np.ndarray
    expected: int

    @property
    def input_bytes(self) -> int:
        return int(self.x.nbytes)

    @property
    def output_bytes(self) -> int:
        return int(np.prod(self.output.shape)) * np.dtype(self.output.dtype).itemsize


class _Checked:
    """Counts requests and checks every 16th answer against the expected class."""

    def __init__(self, name: str, case: Case) -> None:
        self.name = name
        self.case = case
        self.done = 0
        self.verified = 0

    def _check(self, scores: Callable[[], Any]) -> None:
        if not self.done % CHECK_EVERY:
            got = int(np.asarray(scores()).argmax())
            if got != self.case.expected:
                raise VerificationError(f"{self.name}: class {got}, expected "
                                        f"{self.case.expected}")
            self.verified += 1
        self.done += 1


def _model_us(response: dict[str, Any]) -> float:
    """The model time an Open Inference Protocol response reports (its parameters)."""
    parameters = response.get("parameters") or {}
    for key in ("model_us", "model_time_us"):
        if key in parameters:
            return float(parameters[key])
    return 0.0


def _sized_client_class() -> type:
    """``tritonclient.http.InferenceServerClient`` noting the size of what it POSTs."""
    import tritonclient.http as httpclient  # type: ignore[import-untyped]

    class SizedClient(httpclient.InferenceServerClient):  # type: ignore[misc]
        last_request_bytes = 0
        last_response_bytes = 0

        def _post(self, request_uri: str, request_body: bytes, headers: Any,
                  query_params: Any) -> Any:
            self.last_request_bytes = len(request_body)
            response = super()._post(request_uri, request_body, headers, query_params)
            self.last_response_bytes = int(response.get("content-length") or 0)
            return response

    return SizedClient


class HttpShmPath(_Checked):
    """``tritonclient.http`` with the input and the output in system shared memory."""

    def __init__(self, name: str, url: str, case: Case) -> None:
        super().__init__(name, case)
        import tritonclient.http as httpclient
        import tritonclient.utils.shared_memory as shm  # type: ignore[import-untyped]

        self._shm = shm
        self.client = _sized_client_class()(url)
        tag = f"bench_{os.getpid()}_{name}"
        self._regions = []
        size_in, size_out = case.input_bytes, case.output_bytes
        self.in_handle = shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", size_in)
        self._regions.append(self.in_handle)
        self.out_handle = shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out",
                                                          size_out)
        self._regions.append(self.out_handle)
        shm.set_shared_memory_region(self.in_handle, [case.x])
        self.client.unregister_system_shared_memory(f"{tag}_in")
        self.client.unregister_system_shared_memory(f"{tag}_out")
        self.client.register_system_shared_memory(f"{tag}_in", f"/{tag}_in", size_in)
        self.client.register_system_shared_memory(f"{tag}_out", f"/{tag}_out", size_out)
        self._tag = tag
        inp = httpclient.InferInput(case.input.name, list(case.input.shape),
                                    _TRITON_DTYPES[case.input.dtype])
        inp.set_shared_memory(f"{tag}_in", size_in)
        out = httpclient.InferRequestedOutput(case.output.name)
        out.set_shared_memory(f"{tag}_out", size_out)
        self.inputs, self.outputs = [inp], [out]
        self.scores: np.ndarray | None = shm.get_contents_as_numpy(
            self.out_handle, np.dtype(case.output.dtype), list(case.output.shape))
        self.one()
        self.done = self.verified = 0
        self.request_bytes = self.client.last_request_bytes
        self.response_bytes = self.client.last_response_bytes

    def one(self) -> float:
        result = self.client.infer(self.case.model, self.inputs, outputs=self.outputs)
        self._check(lambda: self.scores)
        return _model_us(result.get_response())

    def close(self) -> None:
        self.scores = None
        for suffix in ("in", "out"):
            self.client.unregister_system_shared_memory(f"{self._tag}_{suffix}")
        for handle in self._regions:
            self._shm.destroy_shared_memory_region(handle)
        self.client.close()


class HttpJsonPath(_Checked):
    """``tritonclient.http`` with the tensors as JSON numbers, both ways."""

    def __init__(self, name: str, url: str, case: Case) -> None:
        super().__init__(name, case)
        import tritonclient.http as httpclient

        self.client = _sized_client_class()(url)
        inp = httpclient.InferInput(case.input.name, list(case.input.shape),
                                    _TRITON_DTYPES[case.input.dtype])
        inp.set_data_from_numpy(case.x, binary_data=False)
        self.inputs = [inp]
        self.outputs = [httpclient.InferRequestedOutput(case.output.name, binary_data=False)]
        self.one()
        self.done = self.verified = 0
        self.request_bytes = self.client.last_request_bytes
        self.response_bytes = self.client.last_response_bytes

    def one(self) -> float:
        result = self.client.infer(self.case.model, self.inputs, outputs=self.outputs)
        self._check(lambda: result.as_numpy(self.case.output.name))
        return _model_us(result.get_response())

    def close(self) -> None:
        self.client.close()


class HttpEchoPath:
    """The same HTTP client POSTing ``size`` bytes to the echo server and reading them
    back: the transport's own cost for a message of that size."""

    def __init__(self, name: str, url: str, size: int) -> None:
        self.name = name
        self.client = _sized_client_class()(url)
        self.body = bytes(size)
        self.request_bytes = self.response_bytes = size
        self.done = 0

    def one(self) -> float:
        response = self.client._post("echo", self.body, {}, None)
        if len(response.read()) != len(self.body):
            raise AgentError(f"{self.name}: the echo server answered a different body")
        self.done += 1
        return 0.0

    def close(self) -> None:
        self.client.close()


class NativePath(_Checked):
    """``agent.client`` with every input and output in one registered region (the
    client's documented fast path: ``infer_layout``)."""

    def __init__(self, name: str, socket_path: str, case: Case) -> None:
        super().__init__(name, case)
        self.client = InferenceClient(socket_path)
        self.layout = self.client.layout()
        key = f"/bench_{os.getpid()}_{name}"
        self.region = SharedRegion.create(key, self.layout.nbytes)
        self.client.register_region(key.lstrip("/"), self.region)
        self.layout.input(self.region, case.input.name)[...] = case.x
        result = self.client.infer_layout(self.layout, self.region)
        self.scores: np.ndarray | None = result.outputs[case.output.name]
        self.request_bytes, self.response_bytes = self._frame_sizes(result)

    def _frame_sizes(self, result: ClientResult) -> tuple[int, int]:
        """Bytes of the ``INFER`` frame the client sends and of the ``RESULT`` it gets."""
        region = self.region.name

        def descs(places: Mapping[str, Placement]) -> tuple[TensorDesc, ...]:
            return tuple(TensorDesc(p.spec.name, p.spec.dtype, p.spec.shape, p.offset,
                                    p.nbytes, region) for p in places.values())

        request = encode_infer(InferHeader(model="", version="", timeout_us=0,
                                           inputs=descs(self.layout.inputs),
                                           outputs=descs(self.layout.outputs)))
        reply = encode_result(ResultHeader(variant=result.variant, version=result.version,
                                           queue_us=0, model_us=0, total_us=0,
                                           outputs=descs(self.layout.outputs)))
        return PRELUDE_SIZE + len(request), PRELUDE_SIZE + len(reply)

    def one(self) -> float:
        result = self.client.infer_layout(self.layout, self.region)
        self._check(lambda: self.scores)
        return result.model_us

    def close(self) -> None:
        self.scores = None
        self.client.unregister_region(self.region.name)
        self.client.close()
        self.region.close()
        self.region.unlink()


class NativeEchoPath:
    """``ECHO`` frames as large as the request they stand for, sent by ``agent.client``'s
    own request call to the native echo server."""

    def __init__(self, name: str, socket_path: str, frame_bytes: int) -> None:
        self.name = name
        self.client = InferenceClient(socket_path)
        self.header = bytes(frame_bytes - PRELUDE_SIZE)
        self.request_bytes = self.response_bytes = frame_bytes
        self.done = 0

    def one(self) -> float:
        reply = self.client.roundtrip(Kind.ECHO, self.header)
        if memoryview(reply.header).nbytes != len(self.header):
            raise AgentError(f"{self.name}: the echo server did not echo")
        self.done += 1
        return 0.0

    def close(self) -> None:
        self.client.close()
