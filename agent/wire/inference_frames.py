"""The native protocol of the local inference API: frames over a Unix stream socket.

Every message, either way, is one frame::

    prelude  24 bytes, little-endian: magic b"EIAF", version (u8), kind (u8), flags (u16),
             request id (u64), header length (u32), payload length (u32)
    header   header-length bytes: JSON for the control operations, struct-packed tensor
             descriptors for ``INFER`` and ``RESULT`` (cheap to parse on every request)
    payload  payload-length bytes: the inline tensors, each at an offset aligned to 64

A client sends one request frame and reads one reply frame (same request id): ``REPLY``
(JSON), ``RESULT`` (an answer to ``INFER``) or ``ERROR`` (JSON ``{"type", "types",
"message"}``: the error's class name, its ancestors' names, and the text, so the client
raises the same :mod:`agent.core.errors` class; ``"closed": true`` when the server closes
the connection after it). Lengths are bounded by the reader: a
header over :data:`MAX_HEADER`, a payload over the server's body limit, a wrong magic or
version is a malformed frame, answered with an ``ERROR`` and the connection closed.

A tensor descriptor names the tensor, its dtype and shape, and where its bytes are:
inline (``region`` empty; ``offset`` into the payload) or in a registered shared-memory
region (``region``, ``offset`` into it, ``byte_size``). Reading and writing frames on a
socket is :mod:`agent.wire.inference_frame_io`.

An ``INFER`` or ``RESULT`` header may carry extensions after its descriptors, which
old peers skip (:mod:`agent.wire.inference_frame_extensions`): the capture ask and the
capture id.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from typing_extensions import Buffer

from agent.core import errors as core_errors
from agent.core.errors import AgentError, RequestFormatError, RequestTooLargeError, ServingError
from agent.wire.inference_frame_extensions import (
    EXT_CAPTURE,
    decode_capture_ask,
    decode_capture_id,
    encode_capture_ask,
    encode_extension,
    read_extensions,
)

MAGIC = b"EIAF"
VERSION = 1
PRELUDE = struct.Struct("<4sBBHQII")
PRELUDE_SIZE = PRELUDE.size  # 24
MAX_HEADER = 256 * 1024
ALIGN = 64
MAX_DIMS = 16
MAX_TENSORS = 1024
MAX_CACHED = 256  # decoded descriptor sets a cache holds

# dtype codes of the tensor descriptors (0 is not a dtype)
DTYPES = ("", "float32", "float16", "int8", "uint8", "int32", "int64", "float64", "int16",
          "uint16", "uint32", "uint64", "bool")
_DTYPE_CODE = {name: code for code, name in enumerate(DTYPES) if name}

_TENSOR = struct.Struct("<BBHHxxQQ")  # dtype, ndim, name len, region len, offset, byte size
_INFER = struct.Struct("<QHHHH")  # timeout us, inputs, outputs, model len, version len
_RESULT = struct.Struct("<dddHHH")  # queue us, model us, total us, outputs, variant, version
_SHAPES = tuple(struct.Struct(f"<{n}q") for n in range(MAX_DIMS + 1))


class Kind(IntEnum):
    """What a frame is."""

    METADATA = 1  # -> REPLY: the served model (JSON)
    REGISTER = 2  # {name, key, offset, byte_size} -> REPLY
    UNREGISTER = 3  # {name | null} -> REPLY {unregistered: [...]}
    STATUS = 4  # {name | null} -> REPLY {regions: [...]}
    INFER = 5  # tensor descriptors (+ inline inputs) -> RESULT
    ECHO = 6  # answered unchanged (measures the transport alone)
    REPLY = 64
    RESULT = 65
    ERROR = 127


@dataclass(frozen=True)
class Frame:
    """One frame. A received frame's ``header`` and ``payload`` may be views on the
    reader's buffer, valid until the next frame is read from that connection; a frame to
    send may carry its payload as several buffers (sent back to back, never joined)."""

    kind: int
    request_id: int
    header: Buffer = b""
    payload: Sequence[Buffer] = ()

    @property
    def body(self) -> memoryview:
        """The payload as one byte view (a received frame has one payload buffer)."""
        if not self.payload:
            return memoryview(b"")
        if len(self.payload) != 1:
            raise ValueError("a frame with several payload buffers has no single body")
        return memoryview(self.payload[0]).cast("B")


def pack_prelude(kind: int, request_id: int, header_len: int, payload_len: int) -> bytes:
    return PRELUDE.pack(MAGIC, VERSION, kind, 0, request_id, header_len, payload_len)


def parse_prelude(data: Buffer, *, max_header: int = MAX_HEADER,
                  max_payload: int) -> tuple[int, int, int, int]:
    """(kind, request id, header length, payload length) of a prelude, or
    :class:`RequestFormatError` / :class:`RequestTooLargeError`."""
    magic, version, kind, _flags, request_id, header_len, payload_len = \
        PRELUDE.unpack_from(data)
    if magic != MAGIC:
        raise RequestFormatError(f"not a frame of the native protocol (magic {magic!r})")
    if version != VERSION:
        raise RequestFormatError(f"frame version {version} is not spoken here "
                                 f"(version {VERSION})")
    if header_len > max_header:
        raise RequestTooLargeError(f"frame header of {header_len} bytes is over the limit "
                                   f"of {max_header}")
    if payload_len > max_payload:
        raise RequestTooLargeError(f"payload of {payload_len} bytes is over the limit of "
                                   f"{max_payload}")
    return kind, request_id, header_len, payload_len


def aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


# ---- JSON headers (control operations, replies and errors) ------------------------------

def json_frame(kind: int, request_id: int, value: object) -> Frame:
    return Frame(kind, request_id, json.dumps(value, separators=(",", ":")).encode())


def json_header(frame: Frame) -> dict[str, Any]:
    """The JSON object of a control frame's header, or :class:`RequestFormatError`."""
    try:
        value = json.loads(bytes(frame.header))
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestFormatError(f"frame header is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise RequestFormatError("frame header must be a JSON object")
    return value


def error_frame(request_id: int, err: BaseException, *, closing: bool = False) -> Frame:
    """The ``ERROR`` frame of ``err``: its class name and those of its ancestors up to
    :class:`AgentError`, so the receiver raises the nearest class it knows; ``closing``
    says the sender closes the connection after it (``"closed": true``)."""
    types = [cls.__name__ for cls in type(err).__mro__
             if isinstance(err, AgentError) and issubclass(cls, AgentError)]
    body: dict[str, Any] = {"type": type(err).__name__, "types": types or ["ServingError"],
                            "message": str(err)}
    if closing:
        body["closed"] = True
    return json_frame(Kind.ERROR, request_id, body)


def closes_connection(frame: Frame) -> bool:
    """Whether an ``ERROR`` frame says its sender closed the connection after it."""
    try:
        return bool(json_header(frame).get("closed"))
    except RequestFormatError:
        return True


def raise_error_frame(frame: Frame) -> None:
    """Raise the :mod:`agent.core.errors` class an ``ERROR`` frame names (its nearest
    ancestor defined there), with the server's message."""
    body = json_header(frame)
    names = body.get("types") or [body.get("type")]
    message = str(body.get("message", ""))
    for name in names:
        cls = getattr(core_errors, str(name), None)
        if isinstance(cls, type) and issubclass(cls, AgentError):
            raise cls(message)
    raise ServingError(f"{body.get('type')}: {message}")


# ---- tensor descriptors (INFER and RESULT) ----------------------------------------------

@dataclass(frozen=True)
class TensorDesc:
    """One tensor of a request or an answer: name, dtype, shape and where its bytes are
    (``region`` empty: inline, ``offset`` into the payload; else in that region)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    byte_size: int
    region: str = ""


@dataclass(frozen=True)
class InferHeader:
    """An ``INFER`` frame's header: the model, an optional version, a deadline (0: the
    server's), the inputs and the outputs to write into regions (the others come back
    inline); ``capture``: keep the request's input, with the application's label and
    note."""

    model: str
    version: str
    timeout_us: int
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    capture: bool = False
    capture_label: str | None = None
    capture_note: str | None = None


@dataclass(frozen=True)
class ResultHeader:
    """A ``RESULT`` frame's header: who answered, how long it took, every output, and
    the capture that kept the input ("" when none did)."""

    variant: str
    version: str
    queue_us: float
    model_us: float
    total_us: float
    outputs: tuple[TensorDesc, ...]
    capture_id: str = ""


def _text(value: str, what: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise RequestFormatError(f"{what} is over 65535 bytes")
    return data


def _pack_tensors(parts: list[bytes], tensors: Sequence[TensorDesc]) -> None:
    for t in tensors:
        code = _DTYPE_CODE.get(t.dtype)
        if code is None:
            raise RequestFormatError(f"tensor {t.name!r}: dtype {t.dtype!r} has no code in the "
                                     f"native protocol ({', '.join(DTYPES[1:])})")
        if len(t.shape) > MAX_DIMS:
            raise RequestFormatError(f"tensor {t.name!r}: more than {MAX_DIMS} dimensions")
        name, region = _text(t.name, "a tensor name"), _text(t.region, "a region name")
        parts.append(_TENSOR.pack(code, len(t.shape), len(name), len(region), t.offset,
                                  t.byte_size))
        parts.append(name)
        parts.append(region)
        parts.append(_SHAPES[len(t.shape)].pack(*t.shape))


def _padded(parts: list[bytes]) -> bytes:
    """The header, zero-padded so that prelude + header end at a multiple of 64 (the
    payload's tensors are then aligned in a reader's buffer)."""
    size = sum(map(len, parts))
    parts.append(bytes(aligned(PRELUDE_SIZE + size) - PRELUDE_SIZE - size))
    return b"".join(parts)


class _Cursor:
    """Reads a binary header, with :class:`RequestFormatError` for every short read."""

    __slots__ = ("data", "pos")

    def __init__(self, data: Buffer) -> None:
        self.data = memoryview(data).cast("B")
        self.pos = 0

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        if self.pos + layout.size > len(self.data):
            raise RequestFormatError("frame header ends inside a field")
        values = layout.unpack_from(self.data, self.pos)
        self.pos += layout.size
        return values

    def text(self, size: int) -> str:
        end = self.pos + size
        if end > len(self.data):
            raise RequestFormatError("frame header ends inside a name")
        try:
            value = bytes(self.data[self.pos:end]).decode()
        except UnicodeDecodeError as err:
            raise RequestFormatError("a name in the frame header is not UTF-8") from err
        self.pos = end
        return value

    def tensors(self, count: int) -> tuple[TensorDesc, ...]:
        if count > MAX_TENSORS:
            raise RequestFormatError(f"{count} tensors in one frame (at most {MAX_TENSORS})")
        out = []
        for _ in range(count):
            code, ndim, name_len, region_len, offset, byte_size = self.unpack(_TENSOR)
            if not 0 < code < len(DTYPES):
                raise RequestFormatError(f"unknown dtype code {code} in a tensor descriptor")
            if ndim > MAX_DIMS:
                raise RequestFormatError(f"a tensor of {ndim} dimensions (at most {MAX_DIMS})")
            name = self.text(name_len)
            region = self.text(region_len)
            shape = self.unpack(_SHAPES[ndim]) if ndim else ()
            if any(d < 0 for d in shape):
                raise RequestFormatError(f"tensor {name!r}: negative dimension in {list(shape)}")
            out.append(TensorDesc(name=name, dtype=DTYPES[code], shape=tuple(shape),
                                  offset=offset, byte_size=byte_size, region=region))
        return tuple(out)


def encode_infer(header: InferHeader) -> bytes:
    model, version = _text(header.model, "the model name"), _text(header.version, "the version")
    parts = [_INFER.pack(header.timeout_us, len(header.inputs), len(header.outputs),
                         len(model), len(version)), model, version]
    _pack_tensors(parts, header.inputs)
    _pack_tensors(parts, header.outputs)
    if header.capture:
        parts.append(encode_capture_ask(header.capture_label, header.capture_note))
    return _padded(parts)


def decode_infer(data: Buffer) -> InferHeader:
    """The ``INFER`` header in ``data`` (trailing padding ignored), or
    :class:`RequestFormatError`."""
    cursor = _Cursor(data)
    timeout_us, n_in, n_out, model_len, version_len = cursor.unpack(_INFER)
    model, version = cursor.text(model_len), cursor.text(version_len)
    inputs, outputs = cursor.tensors(n_in), cursor.tensors(n_out)
    ask = read_extensions(cursor.data, cursor.pos).get(EXT_CAPTURE)
    label, note = (None, None) if ask is None else decode_capture_ask(ask)
    return InferHeader(model=model, version=version, timeout_us=timeout_us, inputs=inputs,
                       outputs=outputs, capture=ask is not None, capture_label=label,
                       capture_note=note)


def encode_tensors(tensors: Sequence[TensorDesc]) -> bytes:
    """The descriptors of ``tensors`` as a header carries them (to encode once and pass
    to :func:`encode_result` for every answer with the same outputs)."""
    parts: list[bytes] = []
    _pack_tensors(parts, tensors)
    return b"".join(parts)


def encode_result(header: ResultHeader, *, tensors: bytes | None = None) -> bytes:
    """A ``RESULT`` header; ``tensors``: ``header.outputs`` already encoded."""
    variant, version = _text(header.variant, "the variant"), _text(header.version, "version")
    parts = [_RESULT.pack(header.queue_us, header.model_us, header.total_us,
                          len(header.outputs), len(variant), len(version)), variant, version,
             encode_tensors(header.outputs) if tensors is None else tensors]
    if header.capture_id:
        parts.append(encode_extension(EXT_CAPTURE, header.capture_id.encode()))
    return _padded(parts)


def decode_result(data: Buffer, *,
                  cache: dict[bytes, tuple[TensorDesc, ...]] | None = None) -> ResultHeader:
    """A ``RESULT`` header; ``cache`` (the caller's, bounded here) keeps decoded output
    descriptors by their bytes, which repeat from one answer to the next (an answer that
    names a capture is decoded in full and not kept: its id is new every time)."""
    cursor = _Cursor(data)
    queue_us, model_us, total_us, n_out, variant_len, version_len = cursor.unpack(_RESULT)
    variant, version = cursor.text(variant_len), cursor.text(version_len)
    key = bytes(cursor.data[cursor.pos:]) if cache is not None else b""
    cached = cache.get(key) if cache is not None else None
    capture_id = ""
    if cached is not None:
        outputs = cached
    else:
        outputs = cursor.tensors(n_out)
        found = read_extensions(cursor.data, cursor.pos).get(EXT_CAPTURE)
        if found is not None:
            capture_id = decode_capture_id(found)
        elif cache is not None:
            if len(cache) >= MAX_CACHED:
                cache.clear()
            cache[key] = outputs
    return ResultHeader(variant=variant, version=version, queue_us=queue_us,
                        model_us=model_us, total_us=total_us, outputs=outputs,
                        capture_id=capture_id)


def inline_offsets(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Payload offsets (each aligned to 64) for inline tensors of ``sizes`` bytes, and the
    payload's length."""
    offsets, end = [], 0
    for size in sizes:
        start = aligned(end)
        offsets.append(start)
        end = start + size
    return offsets, end


def padding(size: int) -> bytes:
    """Zero bytes that bring a payload of ``size`` bytes to the next aligned offset."""
    return bytes(aligned(size) - size)
