"""The native client: predictions from the agent over its Unix socket.

The fast path for Python applications on the device. One :class:`InferenceClient` holds
one connection; its calls are serialised by a lock, so one client may be shared by
threads, but requests then wait for each other: give each thread its own client for
parallel requests (the server answers each connection on its own thread, the model's
queue bounds how many wait). A connection the server closed is opened again on the
next call.

::

    from agent.client import InferenceClient, SharedRegion

    # the agent's stateDir in its Greengrass work folder (endpoints.json there names it)
    path = "/greengrass/v2/work/com.edgeinference.Agent/state/inference.sock"
    with InferenceClient(path) as client:
        model = client.metadata()           # name, versions, inputs, outputs, labels
        result = client.infer({"input": frame})           # inline bytes: simplest
        kept = client.infer({"input": frame}, capture=True, label="7")  # kept.capture_id
        layout = client.layout()            # or every tensor in one shared region
        with SharedRegion.create("/cam0", layout.nbytes) as region:
            client.register_region("cam0", region)
            layout.input(region, "input")[...] = frame    # written in place
            result = client.infer_layout(layout, region)  # outputs: views on the region
            client.unregister_region("cam0")

Errors are the server's, raised as the same :mod:`agent.core.errors` classes:
:class:`~agent.core.errors.ServerBusyError` (the queue is full: retry),
:class:`~agent.core.errors.DeadlineExceededError`, :class:`~agent.core.errors.InputSpecError`,
:class:`~agent.core.errors.RegionError`, :class:`~agent.core.errors.ModelNotFoundError`,
:class:`~agent.core.errors.RequestFormatError`, :class:`~agent.core.errors.InferenceError`;
:class:`~agent.core.errors.ServerUnavailableError` when the socket cannot be reached.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.client.regions import RegionRef, SharedRegion, TensorLayout
from agent.core.errors import InputSpecError, RequestFormatError, ServerUnavailableError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.wire.inference_frame_io import FrameReader, send_frame
from agent.wire.inference_frames import (
    Frame,
    InferHeader,
    Kind,
    TensorDesc,
    closes_connection,
    decode_result,
    encode_infer,
    inline_offsets,
    json_frame,
    json_header,
    padding,
    raise_error_frame,
)

MAX_REPLY = 1 << 31
_Ask = tuple[str | None, str | None]  # a capture ask: the application's label and note
REPLY_GRACE_S = 5.0  # beyond a request's deadline, before its connection is given up


@dataclass(frozen=True)
class ModelDescription:
    """What the server serves (``metadata()``)."""

    name: str
    platform: str
    versions: dict[str, str]  # variant -> model version loaded now
    ready: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] | None
    metadata: ModelMetadata | None
    max_payload: int


@dataclass(frozen=True)
class ClientResult:
    """One answer: every output by name (views on the output region for outputs placed
    there, arrays of their own for the others), who gave it, and its capture's id."""

    outputs: dict[str, np.ndarray]
    variant: str
    version: str
    model_us: float
    queue_us: float
    total_us: float
    capture_id: str = ""  # the capture that kept the input (asked with capture=True)


@dataclass(frozen=True)
class _Prepared:
    """An encoded ``INFER`` for one layout in one region, and its output views."""

    layout: TensorLayout
    region: SharedRegion
    header: bytes
    views: dict[str, np.ndarray]


class InferenceClient:
    """A connection to the agent's native socket."""

    def __init__(self, socket_path: Path | str, *, timeout_s: float | None = 30.0) -> None:
        """``timeout_s`` bounds connecting and waiting for any one reply (None: no bound),
        and is raised for a request whose own deadline (its ``timeout_s``) is longer. It
        should exceed the agent's default deadline (``server.timeoutSeconds``, 5 s)."""
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._next_id = 1
        self._model: ModelDescription | None = None
        self._prepared: dict[tuple[int, int, str, int, _Ask | None], _Prepared] = {}
        self._descs: dict[bytes, tuple[TensorDesc, ...]] = {}  # decoded answer descriptors
        self._inline: dict[Any, tuple[bytes, list[int]]] = {}  # encoded inline requests
        self._connect()

    # ---- connection -------------------------------------------------------------------

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except OSError as err:
            sock.close()
            raise ServerUnavailableError(f"cannot connect to {self.socket_path}: "
                                         f"{err.strerror or err}") from err
        self._sock = sock
        self._reader = FrameReader(sock, max_payload=MAX_REPLY)

    def close(self) -> None:
        """Close the connection (the next call opens a new one) and forget prepared
        requests."""
        with self._lock:
            self._drop()
            self._prepared.clear()

    def _drop(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def roundtrip(self, kind: int, header: Any = b"", payload: tuple[Any, ...] = (), *,
                  wait_s: float | None = None) -> Frame:
        """Send one request frame and return the reply frame, raising the server's error
        for an ``ERROR`` reply (the raw protocol: what the other methods use). ``wait_s``
        waits longer than the client's ``timeout_s`` for this reply."""
        with self._lock:
            if self._sock is None:
                self._connect()
            sock, reader = self._sock, self._reader
            assert sock is not None and reader is not None
            request_id = self._next_id
            self._next_id += 1
            try:
                send_frame(sock, Frame(kind, request_id, header, payload))
            except OSError as err:
                reply = self._pending_error(reader)  # refused before it read the request?
                self._drop()
                if reply is not None:
                    raise_error_frame(reply)
                raise ServerUnavailableError(f"{self.socket_path}: {err}") from err
            longer = wait_s is not None and self.timeout_s is not None \
                and wait_s > self.timeout_s
            try:
                if longer:
                    sock.settimeout(wait_s)
                reply = reader.read(own_payload=True)
                if longer:
                    sock.settimeout(self.timeout_s)
            except OSError as err:  # includes the reply timeout
                self._drop()
                raise ServerUnavailableError(f"{self.socket_path}: no reply: {err}") from err
            if reply is None:
                self._drop()
                raise ServerUnavailableError(f"{self.socket_path}: the server closed the "
                                             "connection")
            if reply.kind == Kind.ERROR and closes_connection(reply):
                self._drop()  # the next call connects again
        if reply.kind == Kind.ERROR:
            raise_error_frame(reply)
        if reply.request_id != request_id:
            self.close()
            raise RequestFormatError(f"reply to request {reply.request_id}, expected "
                                     f"{request_id}")
        return reply

    @staticmethod
    def _pending_error(reader: FrameReader) -> Frame | None:
        with contextlib.suppress(OSError, RequestFormatError):
            frame = reader.read(own_payload=True)
            if frame is not None and frame.kind == Kind.ERROR:
                return frame
        return None

    def _json(self, kind: Kind, body: object) -> dict[str, Any]:
        request = json_frame(kind, 0, body)
        return json_header(self.roundtrip(kind, request.header))

    # ---- model and regions ------------------------------------------------------------

    def metadata(self) -> ModelDescription:
        """The served model now (versions change with promotes and rollbacks)."""
        body = json_header(self.roundtrip(Kind.METADATA, b"{}"))
        meta = body.get("metadata")
        labels = body.get("labels")
        model = ModelDescription(
            name=str(body["name"]), platform=str(body["platform"]),
            versions=dict(body.get("versions") or {}), ready=bool(body.get("ready")),
            inputs=tuple(TensorSpec.model_validate(s) for s in body["inputs"]),
            outputs=tuple(TensorSpec.model_validate(s) for s in body["outputs"]),
            labels=tuple(labels) if labels else None,
            metadata=ModelMetadata.model_validate(meta) if meta else None,
            max_payload=int(body.get("max_payload", 0)))
        self._model = model
        return model

    def _described(self) -> ModelDescription:
        return self._model if self._model is not None else self.metadata()

    def layout(self) -> TensorLayout:
        """Every input and output of the served model placed in one region."""
        model = self._described()
        return TensorLayout(model.inputs, model.outputs)

    def register_region(self, name: str, region: SharedRegion, *, offset: int = 0,
                        byte_size: int | None = None) -> None:
        """Register ``region`` (from ``offset``, ``byte_size`` bytes: all of it by default)
        under ``name``; the server maps it once. The region's refs then name it."""
        size = region.byte_size - offset if byte_size is None else byte_size
        self._json(Kind.REGISTER, {"name": name, "key": region.key, "offset": offset,
                                   "byte_size": size})
        region.name = name

    def unregister_region(self, name: str | None = None) -> list[str]:
        """Unregister ``name`` (every region when None); the names that were registered.
        A request using it finishes first, on its own mapping."""
        body = self._json(Kind.UNREGISTER, {"name": name})
        return [str(n) for n in body.get("unregistered", [])]

    def region_status(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(self._json(Kind.STATUS, {"name": name}).get("regions", []))

    def echo(self, payload: Any) -> memoryview:
        """The server's ``ECHO``: ``payload`` sent and received back (transport cost)."""
        return self.roundtrip(Kind.ECHO, b"", (payload,)).body

    # ---- inference --------------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray | RegionRef],
              outputs: Mapping[str, RegionRef] | None = None, *,
              timeout_s: float | None = None, model: str = "",
              version: str = "", capture: bool = False, label: str | None = None,
              note: str | None = None) -> ClientResult:
        """Run the served model on ``inputs`` (every input by name: an array sent inline,
        or a :class:`RegionRef` the runtime reads in place). Outputs named in ``outputs``
        are written into their region and returned as views on it; the others come back
        inline. ``timeout_s`` is the request's deadline (the server's default when None);
        ``model``/``version``, when given, must be what is served. ``capture`` asks the
        agent to keep this input for retraining, with the application's ``label`` and
        ``note`` (1024 characters at most); the result's ``capture_id`` names the capture
        when the agent's capture rules kept it ("": capture is off, or the rules refused)."""
        timeout_us = _timeout_us(timeout_s)
        arrays = [(name, np.ascontiguousarray(value)) for name, value in inputs.items()
                  if not isinstance(value, RegionRef)]
        ask = (label, note) if capture else None
        inline_only = not outputs and len(arrays) == len(inputs)
        key = (model, version, timeout_us, ask,
               tuple((name, a.dtype, a.shape) for name, a in arrays)) if inline_only else None
        cached = self._inline.get(key) if key is not None else None
        if cached is None:
            cached = self._encode(inputs, arrays, outputs or {}, model, version,
                                  timeout_us, ask)
            if key is not None:
                if len(self._inline) >= 64:
                    self._inline.clear()
                self._inline[key] = cached
        header, offsets = cached
        payload: list[Any] = []
        end = 0
        for (_, array), offset in zip(arrays, offsets, strict=True):
            if offset > end:
                payload.append(padding(end))
            payload.append(array)
            end = offset + array.nbytes
        reply = self.roundtrip(Kind.INFER, header, tuple(payload), wait_s=_wait_s(timeout_s))
        views = {}
        for name, ref in (outputs or {}).items():
            spec = _spec(self._described().outputs, name, "output")
            views[name] = ref.region.array(ref.offset, spec.dtype, spec.shape)
        return self._result(reply, views)

    def _encode(self, inputs: Mapping[str, np.ndarray | RegionRef],
                arrays: list[tuple[str, np.ndarray]], outputs: Mapping[str, RegionRef],
                model: str, version: str, timeout_us: int,
                ask: _Ask | None) -> tuple[bytes, list[int]]:
        """An ``INFER`` header, and the payload offsets of the inline ``arrays``."""
        offsets, _ = inline_offsets([a.nbytes for _, a in arrays])
        descs = [TensorDesc(name, str(array.dtype), tuple(array.shape), offset, array.nbytes)
                 for (name, array), offset in zip(arrays, offsets, strict=True)]
        for name, value in inputs.items():
            if isinstance(value, RegionRef):
                spec = _spec(self._described().inputs, name, "input")
                descs.append(TensorDesc(name, spec.dtype, spec.shape, value.offset,
                                        value.byte_size, value.region.name))
        out_descs = []
        for name, ref in outputs.items():
            spec = _spec(self._described().outputs, name, "output")
            out_descs.append(TensorDesc(name, spec.dtype, spec.shape, ref.offset,
                                        ref.byte_size, ref.region.name))
        return _infer_header(model, version, timeout_us, descs, out_descs, ask), offsets

    def infer_layout(self, layout: TensorLayout, region: SharedRegion, *,
                     timeout_s: float | None = None, capture: bool = False,
                     label: str | None = None, note: str | None = None) -> ClientResult:
        """Run on the inputs in ``region`` where ``layout`` places them; every output is
        written into ``region`` and returned as a view on it (zero copy both ways). The
        request for a layout, region, deadline and capture ask (``capture``, ``label``,
        ``note``: as for :meth:`infer`) is encoded once and reused."""
        ask = (label, note) if capture else None
        key = (id(layout), id(region), region.name, _timeout_us(timeout_s), ask)
        prepared = self._prepared.get(key)
        if prepared is None:
            descs = tuple(TensorDesc(p.spec.name, p.spec.dtype, p.spec.shape, p.offset,
                                     p.nbytes, region.name) for p in layout.inputs.values())
            outs = tuple(TensorDesc(p.spec.name, p.spec.dtype, p.spec.shape, p.offset,
                                    p.nbytes, region.name) for p in layout.outputs.values())
            header = _infer_header("", "", key[3], descs, outs, ask)
            views = {name: layout.output(region, name) for name in layout.outputs}
            if len(self._prepared) >= 64:
                self._prepared.clear()
            # layout and region are held so that their ids stay theirs while cached
            prepared = self._prepared[key] = _Prepared(layout, region, header, views)
        return self._result(self.roundtrip(Kind.INFER, prepared.header,
                                           wait_s=_wait_s(timeout_s)), prepared.views)

    def _result(self, reply: Frame, views: dict[str, np.ndarray]) -> ClientResult:
        result = decode_result(reply.header, cache=self._descs)
        body = reply.body
        outputs: dict[str, np.ndarray] = {}
        for desc in result.outputs:
            if desc.region:
                view = views.get(desc.name)
                if view is None:
                    raise RequestFormatError(f"the answer puts output {desc.name!r} in a "
                                             "region the request did not give it")
                outputs[desc.name] = view
                continue
            dtype = np.dtype(desc.dtype)
            count = desc.byte_size // dtype.itemsize if dtype.itemsize else 0
            outputs[desc.name] = np.frombuffer(body, dtype=dtype, count=count,
                                               offset=desc.offset).reshape(desc.shape)
        return ClientResult(outputs=outputs, variant=result.variant, version=result.version,
                            model_us=result.model_us, queue_us=result.queue_us,
                            total_us=result.total_us, capture_id=result.capture_id)


def _spec(specs: tuple[TensorSpec, ...], name: str, role: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise InputSpecError(f"the served model has no {role} {name!r} "
                         f"({role}s: {[s.name for s in specs]})")


def _infer_header(model: str, version: str, timeout_us: int, inputs: Sequence[TensorDesc],
                  outputs: Sequence[TensorDesc], ask: _Ask | None) -> bytes:
    label, note = ask or (None, None)
    return encode_infer(InferHeader(model, version, timeout_us, tuple(inputs),
                                    tuple(outputs), ask is not None, label, note))


def _wait_s(timeout_s: float | None) -> float | None:
    """How long to wait for the answer to a request with deadline ``timeout_s``."""
    return None if timeout_s is None else timeout_s + REPLY_GRACE_S


def _timeout_us(timeout_s: float | None) -> int:
    return 0 if timeout_s is None else max(1, int(timeout_s * 1e6))

