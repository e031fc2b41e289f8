"""The native protocol's server: the served model over a :class:`FrameServer`.

The fast path of the local inference API for applications on the device
(:mod:`agent.client` is its client). It answers:

- ``METADATA``: the model's name, runtime, versions per variant, readiness, inputs and
  outputs (name, dtype, shape), labels and metadata (pre/post-processing);
- ``REGISTER`` / ``UNREGISTER`` / ``STATUS``: the system shared-memory regions, in the
  same :class:`~agent.device.serving.regions.RegionRegistry` the HTTP server uses (a
  region registered over one is usable over the other);
- ``INFER``: each input inline (bytes in the payload) or in a region, each output
  either written in place into a region or sent back inline. A request whose tensors
  are all in regions moves no tensor byte through the socket and none through this
  code: the runtime reads and writes the mapped memory. A request may ask for its input
  to be captured, with a label and a note
  (:mod:`~agent.device.serving.capture_params`); the answer then names the capture when
  the capture rules kept it;
- ``ECHO``: the frame unchanged.

:attr:`NativeServer.copied_bytes` counts the tensor bytes that went through this code
(inline inputs and outputs, counted where they are decoded and encoded); the region path
adds nothing to it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ConfigError, InputSpecError, RequestFormatError
from agent.core.model_layout import TensorSpec
from agent.device.inference.capture_hooks import CaptureAsk
from agent.device.serving.capture_params import capture_ask
from agent.device.serving.config import ServerConfig
from agent.device.serving.native_transport import FrameServer
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceService, ServedModel
from agent.wire.inference_frames import (
    Frame,
    InferHeader,
    Kind,
    ResultHeader,
    TensorDesc,
    aligned,
    decode_infer,
    encode_result,
    encode_tensors,
    json_frame,
    json_header,
    padding,
)

HEADER_CACHE = 256  # decoded INFER headers kept (a client repeats the same one)


class NativeServer:
    """The native protocol on ``config.native_socket`` (relative to ``work_dir``)."""

    def __init__(self, service: InferenceService, registry: RegionRegistry,
                 config: ServerConfig, work_dir: Path = Path(".")) -> None:
        if config.native_socket is None:
            raise ConfigError("server.nativeSocket is null: no native socket to serve")
        self.service = service
        self.registry = registry
        self.config = config
        self.socket_path = work_dir / config.native_socket
        self.transport = FrameServer(self.handle, self.socket_path,
                                     socket_mode=config.socket_mode,
                                     max_connections=config.max_connections,
                                     max_payload=config.max_body_bytes)
        self._copied = 0
        self._copied_lock = threading.Lock()
        self._plans: dict[bytes, _Plan] = {}
        self._local = threading.local()  # per connection thread: inline output buffers

    def start(self) -> None:
        self.transport.start()

    def stop(self) -> None:
        self.transport.stop()

    @property
    def copied_bytes(self) -> int:
        """Tensor bytes copied by this server's code since it started (inline only)."""
        return self._copied

    def _count(self, nbytes: int) -> None:
        with self._copied_lock:
            self._copied += nbytes

    # ---- dispatch ---------------------------------------------------------------------

    def handle(self, frame: Frame) -> Frame:
        """The reply to one request frame (the :class:`FrameServer`'s handler)."""
        kind = frame.kind
        if kind == Kind.INFER:
            return self._infer(frame)
        if kind == Kind.METADATA:
            return json_frame(Kind.REPLY, frame.request_id, self.metadata())
        if kind == Kind.REGISTER:
            return json_frame(Kind.REPLY, frame.request_id, self._register(json_header(frame)))
        if kind == Kind.UNREGISTER:
            name = _optional_text(json_header(frame), "name")
            return json_frame(Kind.REPLY, frame.request_id,
                              {"unregistered": self.registry.unregister(name)})
        if kind == Kind.STATUS:
            name = _optional_text(json_header(frame), "name")
            return json_frame(Kind.REPLY, frame.request_id,
                              {"regions": self.registry.status(name)})
        if kind == Kind.ECHO:
            return frame
        raise RequestFormatError(f"frame kind {kind} is not a request of the native protocol")

    def metadata(self) -> dict[str, Any]:
        """What ``METADATA`` answers (JSON)."""
        service = self.service
        model = service.model
        labels = model.labels
        return {
            "name": model.name, "platform": model.platform, "versions": service.versions(),
            "ready": service.ready(),
            "inputs": [spec.model_dump(mode="json") for spec in model.inputs],
            "outputs": [spec.model_dump(mode="json") for spec in model.outputs],
            "labels": list(labels) if labels else None,
            "metadata": model.metadata.model_dump(mode="json", exclude_none=True)
            if model.metadata is not None else None,
            "max_payload": self.config.max_body_bytes,
        }

    def _register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name, key = body.get("name"), body.get("key")
        offset, byte_size = body.get("offset", 0), body.get("byte_size")
        if not isinstance(name, str) or not isinstance(key, str):
            raise RequestFormatError("REGISTER needs a string name and key")
        if not isinstance(offset, int) or not isinstance(byte_size, int) \
                or isinstance(offset, bool) or isinstance(byte_size, bool):
            raise RequestFormatError("REGISTER needs integer offset and byte_size")
        region = self.registry.register(name, key, offset, byte_size)
        return region.status()

    # ---- inference --------------------------------------------------------------------

    def _plan(self, header: Any) -> _Plan:
        """The checked plan of an ``INFER`` header (cached by its bytes: a client sends the
        same header again and again; not one that asks for a capture, whose label and note
        may change every time)."""
        key = bytes(header)
        plan = self._plans.get(key)
        if plan is None or plan.model is not self.service.model:
            plan = _plan(decode_infer(key), self.service)
            if plan.capture is not None:
                return plan
            if len(self._plans) >= HEADER_CACHE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _infer(self, frame: Frame) -> Frame:
        plan = self._plan(frame.header)
        request = plan.request
        if request.model or request.version:
            self.service.check_model(request.model or self.service.model.name,
                                     request.version or None)
        timeout_s = request.timeout_us / 1e6 if request.timeout_us else None
        if plan.all_in_regions and len(plan.regions) == 1:
            # Every tensor in one region: the whole request is views on its mapping.
            with self.registry.using(plan.regions[0]) as region:
                inputs = {p.desc.name: region.view(p.desc.offset, p.desc.byte_size, p.dtype,
                                                   p.shape, what=p.what) for p in plan.inputs}
                outputs = {p.desc.name: region.view(p.desc.offset, p.desc.byte_size, p.dtype,
                                                    p.shape, what=p.what) for p in plan.outputs}
                result = self.service.infer(inputs, outputs, timeout_s=timeout_s, shared=True,
                                            capture=plan.capture)
                header = ResultHeader(variant=result.variant, version=result.version,
                                      queue_us=result.queue_us, model_us=result.model_us,
                                      total_us=result.total_us, outputs=plan.placed,
                                      capture_id=result.capture_id)
                del inputs, outputs, result  # drop the views before the region is released
            return Frame(Kind.RESULT, frame.request_id,
                         encode_result(header, tensors=plan.placed_bytes))
        payload = frame.body
        sent = self._inline_outputs(plan)
        with contextlib.ExitStack() as stack:
            regions = {name: stack.enter_context(self.registry.using(name))
                       for name in plan.regions}
            inputs = {p.desc.name: regions[p.desc.region].view(
                p.desc.offset, p.desc.byte_size, p.dtype, p.shape, what=p.what)
                if p.desc.region else self.decode_inline(payload, p)
                for p in plan.inputs}
            outputs = {p.desc.name: regions[p.desc.region].view(
                p.desc.offset, p.desc.byte_size, p.dtype, p.shape, what=p.what)
                for p in plan.outputs}
            outputs.update(sent)
            result = self.service.infer(inputs, outputs, timeout_s=timeout_s, shared=True,
                                        capture=plan.capture)
            header = ResultHeader(variant=result.variant, version=result.version,
                                  queue_us=result.queue_us, model_us=result.model_us,
                                  total_us=result.total_us, outputs=plan.placed,
                                  capture_id=result.capture_id)
            del inputs, outputs, result  # drop the views before the regions are released
        return Frame(Kind.RESULT, frame.request_id,
                     encode_result(header, tensors=plan.placed_bytes),
                     self.encode_outputs(plan, sent))

    def _buffer(self, role: str, place: _Place) -> tuple[np.ndarray, memoryview]:
        """This connection thread's array for an inline tensor (and its bytes), allocated
        once and reused by the thread's next requests: the answer is written before the
        next request is read, and the runtime sees the same array every time."""
        buffers: dict[tuple[str, str, str, tuple[int, ...]], tuple[np.ndarray, memoryview]] \
            | None = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (role, place.spec.name, place.spec.dtype, place.shape)
        found = buffers.get(key)
        if found is None:
            array = np.empty(place.shape, place.dtype)
            found = buffers[key] = (array, array.reshape(-1).view(np.uint8).data)
        return found

    def _inline_outputs(self, plan: _Plan) -> dict[str, np.ndarray]:
        return {p.spec.name: self._buffer("out", p)[0] for p in plan.inline_outputs}

    def decode_inline(self, payload: memoryview, place: _Place) -> np.ndarray:
        """An inline input, copied from the request payload into this thread's array for
        it (counted as copied)."""
        desc = place.desc
        need = math.prod(place.shape) * place.dtype.itemsize
        if desc.byte_size != need:
            raise InputSpecError(f"input {desc.name!r}: {place.spec.dtype} "
                                 f"{list(place.shape)} takes {need} bytes, the request gives "
                                 f"{desc.byte_size}")
        if desc.offset + need > len(payload):
            raise RequestFormatError(
                f"input {desc.name!r}: {need} bytes at offset {desc.offset} pass the end of "
                f"the payload ({len(payload)} bytes)")
        array, data = self._buffer("in", place)
        data[:] = payload[desc.offset:desc.offset + need]
        self._count(need)
        return array

    def encode_outputs(self, plan: _Plan, arrays: Mapping[str, np.ndarray]) -> list[Any]:
        """The answer's payload: the outputs sent inline, at the offsets their descriptors
        name (counted as copied: they go through the socket); outputs written into
        regions add nothing."""
        parts: list[Any] = []
        end = 0
        for place in plan.inline_outputs:
            start = place.desc.offset
            if start > end:
                parts.append(padding(end))
            parts.append(arrays[place.spec.name])
            end = start + place.desc.byte_size
        if end:
            self._count(plan.inline_output_bytes)
        return parts


@dataclass(frozen=True)
class _Place:
    """One tensor of a request, checked against the model's spec."""

    desc: TensorDesc
    spec: TensorSpec
    dtype: np.dtype
    shape: tuple[int, ...]
    what: str


@dataclass(frozen=True)
class _Plan:
    """An ``INFER`` header checked against the served model: what each request with that
    header does (the regions it uses, each tensor's place)."""

    model: ServedModel
    request: InferHeader
    inputs: tuple[_Place, ...]
    outputs: tuple[_Place, ...]  # the outputs the request places in regions
    regions: tuple[str, ...]
    inline_outputs: tuple[_Place, ...]  # the others, sent inline (desc: in the answer)
    placed: tuple[TensorDesc, ...]  # every output of the answer, in model order
    placed_bytes: bytes  # ... encoded
    all_in_regions: bool  # every input and output in a region
    capture: CaptureAsk | None = None  # the application's ask to keep the input

    @property
    def inline_output_bytes(self) -> int:
        return sum(p.desc.byte_size for p in self.inline_outputs)


def _plan(request: InferHeader, service: InferenceService) -> _Plan:
    """:class:`InputSpecError` for an unknown tensor or one of the wrong dtype or shape,
    :class:`RequestFormatError` for one given twice or an output placed inline."""
    places: dict[str, list[_Place]] = {"input": [], "output": []}
    regions: dict[str, None] = {}
    for role, descs in (("input", request.inputs), ("output", request.outputs)):
        seen: set[str] = set()
        for desc in descs:
            spec = service.input_spec(desc.name) if role == "input" \
                else service.output_spec(desc.name)
            _check_desc(desc, spec, role)
            if desc.name in seen:
                raise RequestFormatError(f"{role} {desc.name!r} is given twice")
            seen.add(desc.name)
            if desc.region:
                regions[desc.region] = None
            elif role == "output":
                raise RequestFormatError(
                    f"output {desc.name!r}: only outputs in regions are named in a request "
                    "(the others come back inline)")
            places[role].append(_Place(desc, spec, np.dtype(spec.dtype), tuple(spec.shape),
                                       f"{role} {desc.name!r}"))
    inputs, outputs = tuple(places["input"]), tuple(places["output"])
    in_regions = {p.desc.name: p.desc for p in outputs}
    placed: list[TensorDesc] = []
    inline: list[_Place] = []
    end = 0
    for spec in service.model.outputs:
        given = in_regions.get(spec.name)
        if given is not None:
            placed.append(given)
            continue
        dtype, shape = np.dtype(spec.dtype), tuple(spec.shape)  # inline, after the last one
        nbytes = math.prod(shape) * dtype.itemsize
        desc = TensorDesc(spec.name, spec.dtype, shape, aligned(end), nbytes)
        end = desc.offset + nbytes
        inline.append(_Place(desc, spec, dtype, shape, f"output {spec.name!r}"))
        placed.append(desc)
    return _Plan(model=service.model, request=request, inputs=inputs, outputs=outputs,
                 regions=tuple(regions), inline_outputs=tuple(inline), placed=tuple(placed),
                 placed_bytes=encode_tensors(placed),
                 all_in_regions=not inline and all(p.desc.region for p in inputs),
                 capture=capture_ask(True, request.capture_label, request.capture_note)
                 if request.capture else None)


def _check_desc(desc: TensorDesc, spec: TensorSpec, role: str) -> None:
    if desc.dtype != spec.dtype:
        raise InputSpecError(f"{role} {desc.name!r}: dtype {desc.dtype} does not match the "
                             f"model's {spec.dtype}")
    if tuple(desc.shape) != tuple(spec.shape):
        raise InputSpecError(f"{role} {desc.name!r}: shape {list(desc.shape)} does not match "
                             f"the model's {list(spec.shape)}")


def _optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestFormatError(f"{key!r} must be a string or null")
    return value
