"""The Open Inference Protocol (KServe v2) over HTTP, as Triton serves it, so the unchanged
``tritonclient.http`` client (and ``tritonclient.utils.shared_memory``) works against the
agent.

Endpoints: ``GET /v2/health/live|ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{m}[/versions/{v}]`` (model metadata; the labels and which variant
serves which version under ``parameters``), ``.../ready``, ``.../config`` (a minimal
model configuration), ``POST .../infer``, and the system shared memory extension:
``POST /v2/systemsharedmemory/region/{name}/register`` (``{key, offset, byte_size}``),
``GET /v2/systemsharedmemory[/region/{name}]/status``,
``POST /v2/systemsharedmemory[/region/{name}]/unregister``.

An input in a region is a view on the region's mapping handed to the runtime; an output
in a region is a view the runtime writes into: on that path no tensor byte is copied by
the server (:attr:`OipApp.copied_bytes` counts those the JSON and binary paths copy). A
request holds the regions it names until it is answered, so an unregister meanwhile only
takes effect afterwards. A shared-memory request sent again with the same body is not
parsed and checked again while no region was registered or unregistered since
(:mod:`agent.device.serving.oip_plans`). The version in an infer path must be loaded; the variants
router decides which loaded version answers, and the response says which did
(``model_version``, ``parameters.variant``). A request may ask for its input to be
captured (``parameters.capture``, ``capture_label``, ``capture_note``); its answer's
``parameters.capture_id`` then names the capture when the capture rules kept it.

Every failure answers ``{"error": "..."}`` with the status Triton gives it: 400 for a
malformed request, a tensor that does not fit, a region problem and an unknown model;
503 when the model's queue is full (with ``Retry-After``) and when the request's
deadline passed (Triton's "Request timeout expired"); 413 for a body over the limit;
500 for a failed run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent import __version__
from agent.core.errors import (
    AgentError,
    BackendError,
    DeadlineExceededError,
    InputSpecError,
    ModelNotFoundError,
    RegionError,
    RequestFormatError,
    RequestTooLargeError,
    ServerBusyError,
)
from agent.core.model_layout import TensorSpec
from agent.device.serving import oip_codec as codec
from agent.device.serving import oip_plans as plans
from agent.device.serving.config import ServerConfig
from agent.device.serving.http_transport import HttpRequest, HttpResponse, HttpServer, error_body
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceService

log = logging.getLogger("edge_agent.oip")

SERVER_NAME = "edge-inference-agent"
EXTENSIONS = ("binary_tensor_data", "system_shared_memory", "model_configuration",
              "parameters")
PLATFORMS = {"onnx": "onnxruntime_onnx"}  # Triton's names where it has one
BACKENDS = {"onnx": "onnxruntime"}

STATUS_OF: dict[type[Exception], int] = {
    RequestTooLargeError: 413,
    RequestFormatError: 400,
    InputSpecError: 400,
    RegionError: 400,
    ModelNotFoundError: 400,  # Triton: "Request for unknown model" is an invalid argument
    ServerBusyError: 503,
    DeadlineExceededError: 503,  # Triton: "Request timeout expired" (unavailable)
    BackendError: 500,
    AgentError: 500,
}
"""Error type -> HTTP status; the nearest listed ancestor of an error decides."""

_JSON = {"Content-Type": "application/json"}
Handler = Callable[[HttpRequest, list[str]], HttpResponse]


def status_of(err: Exception) -> int:
    for cls in type(err).__mro__:
        status = STATUS_OF.get(cls)
        if status is not None:
            return status
    return 500


def _json(status: int, document: Any) -> HttpResponse:
    return HttpResponse(status, codec.compact_json(document))


def _error(status: int, message: str) -> HttpResponse:
    headers = {"Retry-After": "1"} if status == 503 else {}
    return HttpResponse(status, error_body(message), headers)


class OipApp:
    """The HTTP application: routes a request to its handler and answers every error."""

    def __init__(self, service: InferenceService, registry: RegionRegistry) -> None:
        self.service = service
        self.registry = registry
        self.copied_bytes = 0  # tensor bytes copied by the JSON and binary paths
        self.requests = 0
        self._count_lock = threading.Lock()
        self._output_index = {spec.name: i for i, spec in enumerate(service.model.outputs)}
        self.plans = plans.PlanCache()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            if request.method == "POST" and len(request.body) <= plans.MAX_PLAN_BODY \
                    and "inference-header-content-length" not in request.headers:
                key = (request.path, bytes(request.body))
                plan = self.plans.get(key)
                if plan is not None:
                    answer = self._infer_planned(key, plan)
                    if answer is not None:
                        return answer
            return self._route(request, [p for p in request.path.split("/") if p])
        except AgentError as err:
            return _error(status_of(err), str(err))

    # ---- routing ------------------------------------------------------------------------

    def _route(self, request: HttpRequest, parts: list[str]) -> HttpResponse:
        if not parts or parts[0] != "v2":
            return _error(404, f"no such endpoint: {request.path}")
        rest = parts[1:]
        if not rest:
            return self._need("GET", request) or self._server_metadata()
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            return self._need("GET", request) or self._health(rest[1])
        if rest[0] == "models" and len(rest) >= 2:
            return self._model_route(request, rest[1], rest[2:])
        if rest[0] == "systemsharedmemory":
            return self._shm_route(request, rest[1:])
        return _error(404, f"no such endpoint: {request.path}")

    def _model_route(self, request: HttpRequest, model: str, rest: list[str]) -> HttpResponse:
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else "" if not rest else None
        if action == "infer":
            return self._need("POST", request) or self._infer(request, model, version)
        if action in ("", "ready", "config"):
            refused = self._need("GET", request)
            if refused is not None:
                return refused
            self.service.check_model(model, version)
            if action == "ready":
                return HttpResponse(200) if self.service.ready() else \
                    _error(400, "Model version not ready")
            return self._model_config() if action == "config" else self._model_metadata()
        return _error(404, f"no such endpoint: {request.path}")

    def _shm_route(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        name = None
        if len(rest) >= 2 and rest[0] == "region":
            name, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else None
        if action == "status":
            return self._need("GET", request) or _json(200, self.registry.status(name))
        if action == "unregister":
            refused = self._need("POST", request)
            if refused is not None:
                return refused
            self.registry.unregister(name)
            return HttpResponse(200)
        if action == "register" and name is not None:
            return self._need("POST", request) or self._register(request, name)
        return _error(404, f"no such endpoint: {request.path}")

    @staticmethod
    def _need(method: str, request: HttpRequest) -> HttpResponse | None:
        return None if request.method == method else _error(405, "Method Not Allowed")

    # ---- description --------------------------------------------------------------------

    def _health(self, kind: str) -> HttpResponse:
        return HttpResponse(200 if kind == "live" or self.service.ready() else 400)

    def _server_metadata(self) -> HttpResponse:
        return _json(200, {"name": SERVER_NAME, "version": __version__,
                           "extensions": list(EXTENSIONS)})

    def _model_metadata(self) -> HttpResponse:
        model = self.service.model
        variants = self.service.versions()
        parameters: dict[str, Any] = {"variants": variants}
        if model.labels:
            parameters["labels"] = list(model.labels)
        if model.metadata is not None and model.metadata.description:
            parameters["description"] = model.metadata.description
        return _json(200, {
            "name": model.name, "versions": list(dict.fromkeys(variants.values())),
            "platform": PLATFORMS.get(model.platform, model.platform),
            "inputs": [_tensor_metadata(s) for s in model.inputs],
            "outputs": [_tensor_metadata(s) for s in model.outputs],
            "parameters": parameters})

    def _model_config(self) -> HttpResponse:
        model = self.service.model
        return _json(200, {
            "name": model.name, "platform": PLATFORMS.get(model.platform, model.platform),
            "backend": BACKENDS.get(model.platform, model.platform), "max_batch_size": 0,
            "input": [_tensor_config(s) for s in model.inputs],
            "output": [_tensor_config(s) for s in model.outputs]})

    # ---- shared memory ------------------------------------------------------------------

    def _register(self, request: HttpRequest, name: str) -> HttpResponse:
        body, _rest = codec.split_body(request.body, None)
        key, offset, size = body.get("key"), body.get("offset", 0), body.get("byte_size")
        if not isinstance(key, str) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in (offset, size)):
            raise RequestFormatError("register needs {\"key\": str, \"offset\": int, "
                                     "\"byte_size\": int}")
        self.registry.register(name, key, offset, size)
        return HttpResponse(200)

    # ---- inference ----------------------------------------------------------------------

    def _infer_planned(self, key: tuple[str, bytes], plan: plans.ShmPlan
                       ) -> HttpResponse | None:
        """Answer with a plan; None when a region was registered or unregistered since it
        was made (the request then takes the full path)."""
        if plan.version is not None:
            self.service.check_model(self.service.model.name, plan.version)
        if not self.registry.hold(plan.regions, plan.generation):
            self.plans.drop(key, plan)
            return None
        try:
            header = self._run_planned(plan)
        finally:
            self.registry.release(plan.regions)
        with self._count_lock:
            self.requests += 1
        return HttpResponse(200, header, _JSON)

    def _run_planned(self, plan: plans.ShmPlan) -> bytes:
        """Run a plan (the views it takes die with this call, before the regions are
        released)."""
        result = self.service.infer({p.name: p.view() for p in plan.inputs},
                                    {p.name: p.view() for p in plan.outputs},
                                    timeout_s=plan.timeout_s, shared=True)
        return plan.header(result)

    def _infer(self, request: HttpRequest, model: str, version: str | None) -> HttpResponse:
        self.service.check_model(model, version)
        header_length = request.headers.get("inference-header-content-length")
        parsed = codec.parse_infer_request(request.body, header_length)
        generation = self.registry.generation  # read before any region is looked up
        with contextlib.ExitStack() as regions:
            held = plans.RequestRegions(self.registry, regions)
            header, buffers, copied, encoded = self._run(parsed, held)
            if header_length is None and len(request.body) <= plans.MAX_PLAN_BODY:
                plan = held.plan(generation, version, parsed, encoded,
                                 self.service.model.name)
                if plan is not None:
                    self.plans.put((request.path, bytes(request.body)), plan)
        with self._count_lock:
            self.copied_bytes += copied
            self.requests += 1
        if not buffers:
            return HttpResponse(200, header, _JSON)
        return HttpResponse(200, [header, *buffers],
                            {"Content-Type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(len(header))})

    def _run(self, parsed: codec.InferRequest, regions: plans.RequestRegions
             ) -> tuple[bytes, list[memoryview], int, list[codec.EncodedOutput]]:
        """Decode, run and encode one request (the region views it makes die with it)."""
        service = self.service
        inputs: dict[str, np.ndarray] = {}
        shared, copied = False, 0
        for tensor in parsed.inputs:
            spec = service.input_spec(tensor.name)
            if tensor.shm is None:
                inputs[tensor.name], count = codec.decode_input(tensor, spec)
                copied += count
                continue
            dtype = codec.check_tensor(tensor.name, tensor.datatype, tensor.shape, spec)
            inputs[tensor.name] = regions.view(tensor.name, tensor.shm, dtype, spec,
                                               what=f"input {tensor.name!r}")
            shared = True
        wanted = self._wanted_outputs(parsed)
        dests = {out.name: regions.view(out.name, out.shm,
                                        np.dtype(service.output_spec(out.name).dtype),
                                        service.output_spec(out.name),
                                        what=f"output {out.name!r}", output=True)
                 for out in wanted if out.shm is not None}
        result = service.infer(inputs, dests, timeout_s=parsed.timeout_s, shared=shared,
                               capture=parsed.capture)
        index = self._output_index
        encoded = [codec.EncodedOutput(
            spec=service.output_spec(out.name), array=result.outputs[index[out.name]],
            binary=parsed.binary_output if out.binary is None else out.binary, shm=out.shm)
            for out in wanted]
        head = plans.response_head(
            service.model.name, parsed.id, version=result.version, variant=result.variant,
            queue_us=round(result.queue_us, 1), model_us=round(result.model_us, 1),
            total_us=round(result.total_us, 1), capture_id=result.capture_id)
        header, buffers, encoded_copies = codec.encode_infer_response(head, encoded)
        return header, buffers, copied + encoded_copies, encoded

    def _wanted_outputs(self, parsed: codec.InferRequest) -> list[codec.OutputRequest]:
        if parsed.outputs is None:
            return [codec.OutputRequest(spec.name) for spec in self.service.model.outputs]
        names = [out.name for out in parsed.outputs]
        if len(set(names)) != len(names):
            raise RequestFormatError(f"an output is requested twice: {names}")
        for name in names:
            self.service.output_spec(name)
        return list(parsed.outputs)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": codec.datatype_of(spec.dtype),
            "shape": list(spec.shape)}


def _tensor_config(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": f"TYPE_{codec.datatype_of(spec.dtype)}",
            "dims": list(spec.shape)}


def start_http_servers(service: InferenceService, registry: RegionRegistry,
                       config: ServerConfig, work_dir: Path) -> list[HttpServer]:
    """Start the TCP listener (``config.host``:``config.port``) and the Unix socket
    (``config.http_socket``, relative to ``work_dir``) that are configured, one server
    each over one :class:`OipApp`; when one cannot start, none is left running."""
    if not config.enabled:
        return []
    app = OipApp(service, registry)
    common: dict[str, Any] = {"max_body_bytes": config.max_body_bytes,
                              "max_connections": config.max_connections}
    servers = []
    if config.host is not None:
        servers.append(HttpServer(app, host=config.host, port=config.port, name="oip-tcp",
                                  **common))
    if config.http_socket is not None:
        path = config.http_socket if config.http_socket.is_absolute() \
            else work_dir / config.http_socket
        servers.append(HttpServer(app, host=None, port=None, socket_path=path,
                                  socket_mode=config.socket_mode, name="oip-unix", **common))
    started: list[HttpServer] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
    except BaseException:
        for server in started:
            server.stop()
        raise
    for server in started:
        where = f"http://{server.host}:{server.port}" if server.host is not None \
            else f"unix:{server.socket_path}"
        log.debug("Open Inference Protocol on %s (model %r)", where, service.model.name)
    return started
