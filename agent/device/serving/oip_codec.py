"""The Open Inference Protocol (KServe v2) on the wire, as Triton speaks it over HTTP: an
infer request's JSON header and binary tensors in, an infer response out.

A request body is a JSON header, optionally followed by raw tensor bytes (the binary
tensor extension: the header's length is in ``Inference-Header-Content-Length`` and each
binary input carries ``parameters.binary_data_size``, in the order of ``inputs``). An
input or output may instead name a registered shared-memory region
(``shared_memory_region``, ``shared_memory_offset``, ``shared_memory_byte_size``).
The request's ``parameters`` may ask for its input to be captured (``capture``,
``capture_label``, ``capture_note``: :mod:`agent.device.serving.capture_params`).

:func:`parse_infer_request` checks the structure and raises
:class:`~agent.core.errors.RequestFormatError` for anything malformed;
:func:`decode_input` turns a JSON or binary input into an array of the model's dtype and
shape (:class:`~agent.core.errors.InputSpecError` when the datatype, shape or byte size
does not fit); :func:`encode_infer_response` writes the answer, binary outputs as the
output arrays' own memory after the JSON header. Both report how many tensor bytes they
copied, so the shared-memory path can show that it copies none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.errors import InputSpecError, RequestFormatError
from agent.core.model_layout import TensorSpec
from agent.device.inference.capture_hooks import CaptureAsk
from agent.device.serving.capture_params import from_parameters

DATATYPES: dict[str, str] = {"float32": "FP32", "float16": "FP16", "int8": "INT8",
                             "uint8": "UINT8", "int32": "INT32", "int64": "INT64"}
"""numpy dtype name -> Open Inference Protocol datatype, for the dtypes models use here."""
KNOWN_DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                             "INT32", "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES"})
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one a call
_INT_KINDS = "iu"
_FLOAT_KINDS = "iuf"


@dataclass(frozen=True)
class ShmRef:
    """A tensor in a registered region: where, and how many bytes."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class InputTensor:
    """One input of a request, with its data in exactly one place."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None  # the JSON "data" (flat or nested lists)
    binary: memoryview | None = None  # its bytes in the body after the JSON header
    shm: ShmRef | None = None


@dataclass(frozen=True)
class OutputRequest:
    """One requested output: binary or JSON (``binary`` None: the request's default), or
    written into a region."""

    name: str
    binary: bool | None = None
    shm: ShmRef | None = None


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request. ``outputs`` None: every output, in the default form."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[OutputRequest, ...] | None
    binary_output: bool
    timeout_s: float | None
    capture: CaptureAsk | None = None  # ``parameters.capture`` (and its label, note)


def compact_json(document: Any) -> bytes:
    """``document`` as JSON without blanks."""
    return _COMPACT.encode(document).encode()


def datatype_of(dtype: str) -> str:
    """The protocol's datatype of a numpy dtype name (a model tensor's ``dtype``)."""
    datatype = DATATYPES.get(dtype)
    return datatype if datatype is not None else DATATYPES[np.dtype(dtype).name]


# ---- requests ---------------------------------------------------------------------------


def split_body(body: bytes | bytearray | memoryview,
               header_length: str | None) -> tuple[Any, memoryview]:
    """The body's JSON header, parsed, and the bytes after it."""
    view = memoryview(body)
    if header_length is None:
        size = view.nbytes
    else:
        text = header_length.strip()
        if not text.isdigit():
            raise RequestFormatError(
                f"Inference-Header-Content-Length {header_length!r} is not a byte count")
        size = int(text)
        if size > view.nbytes:
            raise RequestFormatError(
                f"Inference-Header-Content-Length {size} is larger than the body "
                f"({view.nbytes} bytes)")
        if size == 0:
            raise RequestFormatError("Inference-Header-Content-Length 0: a request needs "
                                     "its JSON header (raw binary requests are not served)")
    try:
        header = json.loads(bytes(view[:size]))
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestFormatError(f"the request header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise RequestFormatError("the request header must be a JSON object")
    return header, view[size:]


def parse_infer_request(body: bytes | bytearray | memoryview,
                        header_length: str | None) -> InferRequest:
    """Check the structure of an infer request and locate every input's data."""
    header, rest = split_body(body, header_length)
    params = _object(header.get("parameters", {}), "parameters")
    binary_output = _bool(params.get("binary_data_output", False), "binary_data_output")
    timeout_s = _timeout(params.get("timeout"))
    capture = from_parameters(params)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestFormatError("'id' must be a string")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestFormatError("the request needs a non-empty 'inputs' list")
    inputs, offset = [], 0
    for index, raw in enumerate(raw_inputs):
        tensor, used = _input(_object(raw, f"inputs[{index}]"), rest, offset)
        inputs.append(tensor)
        offset += used
    if offset != rest.nbytes:
        raise RequestFormatError(
            f"the body holds {rest.nbytes} bytes after the JSON header, the inputs' "
            f"binary_data_size add up to {offset}")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise RequestFormatError(f"an input is given twice: {names}")
    outputs = None
    if "outputs" in header:
        raw_outputs = header["outputs"]
        if not isinstance(raw_outputs, list):
            raise RequestFormatError("'outputs' must be a list")
        outputs = tuple(_output(_object(raw, f"outputs[{i}]"))
                        for i, raw in enumerate(raw_outputs))
    return InferRequest(id=request_id, inputs=tuple(inputs), outputs=outputs,
                        binary_output=binary_output, timeout_s=timeout_s, capture=capture)


def _input(raw: Mapping[str, Any], rest: memoryview, offset: int) -> tuple[InputTensor, int]:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RequestFormatError("every input needs a 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise RequestFormatError(f"input {name!r} needs a 'datatype' string")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise RequestFormatError(f"input {name!r} needs a 'shape' of non-negative integers")
    params = _object(raw.get("parameters", {}), f"input {name!r} parameters")
    shm = _shm(params, f"input {name!r}")
    binary_size = params.get("binary_data_size")
    has_data = "data" in raw
    if sum((shm is not None, binary_size is not None, has_data)) != 1:
        raise RequestFormatError(f"input {name!r} needs exactly one of 'data', "
                                 "binary_data_size or a shared_memory_region")
    if binary_size is None:
        return InputTensor(name, datatype, tuple(shape), data=raw.get("data"), shm=shm), 0
    if not _is_count(binary_size):
        raise RequestFormatError(f"input {name!r}: binary_data_size must be a byte count")
    if offset + binary_size > rest.nbytes:
        raise RequestFormatError(
            f"input {name!r}: binary_data_size {binary_size} passes the end of the body "
            f"({rest.nbytes - offset} bytes left after the JSON header)")
    return InputTensor(name, datatype, tuple(shape),
                       binary=rest[offset:offset + binary_size]), binary_size


def _output(raw: Mapping[str, Any]) -> OutputRequest:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RequestFormatError("every requested output needs a 'name'")
    params = _object(raw.get("parameters", {}), f"output {name!r} parameters")
    if params.get("classification"):
        raise RequestFormatError(f"output {name!r}: the classification extension is not "
                                 "served; read the scores and the model's labels")
    shm = _shm(params, f"output {name!r}")
    binary = params.get("binary_data")
    if binary is not None:
        binary = _bool(binary, f"output {name!r} binary_data")
    if shm is not None and binary:
        raise RequestFormatError(f"output {name!r}: binary_data and shared memory exclude "
                                 "each other")
    return OutputRequest(name=name, binary=binary, shm=shm)


def _shm(params: Mapping[str, Any], what: str) -> ShmRef | None:
    region = params.get("shared_memory_region")
    if region is None:
        if "shared_memory_byte_size" in params or "shared_memory_offset" in params:
            raise RequestFormatError(f"{what}: shared_memory_byte_size without a "
                                     "shared_memory_region")
        return None
    if not isinstance(region, str) or not region:
        raise RequestFormatError(f"{what}: shared_memory_region must be a name")
    size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    if not isinstance(size, int) or not _is_count(size) or not _is_count(offset):
        raise RequestFormatError(f"{what}: shared_memory_byte_size (required) and "
                                 "shared_memory_offset must be non-negative integers")
    return ShmRef(region=region, offset=offset, byte_size=size)


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_count(value):
        raise RequestFormatError("parameters.timeout must be a whole number of microseconds")
    return value / 1e6 if value else None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestFormatError(f"{what} must be a JSON object")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise RequestFormatError(f"{what} must be true or false")
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---- tensors ----------------------------------------------------------------------------


def check_tensor(name: str, datatype: str, shape: Sequence[int], spec: TensorSpec,
                 *, what: str = "input") -> np.dtype[Any]:
    """The model's dtype for tensor ``name``; :class:`InputSpecError` unless the request's
    datatype and shape are the model's."""
    expected = datatype_of(spec.dtype)
    if datatype != expected:
        known = "" if datatype in KNOWN_DATATYPES else " (not a datatype of the protocol)"
        raise InputSpecError(f"{what} {name!r} data-type is {datatype!r}{known}, but the "
                             f"model expects {expected!r}")
    if tuple(shape) != tuple(spec.shape):
        raise InputSpecError(f"{what} {name!r} has shape {list(shape)}, but the model "
                             f"expects {list(spec.shape)}")
    return np.dtype(spec.dtype)


def decode_input(tensor: InputTensor, spec: TensorSpec) -> tuple[np.ndarray, int]:
    """The array of a JSON or binary input and the bytes copied to make it (a binary input
    aligned for its dtype is a view on the body: none)."""
    dtype = check_tensor(tensor.name, tensor.datatype, tensor.shape, spec)
    need = math.prod(spec.shape) * dtype.itemsize
    if tensor.binary is not None:
        if tensor.binary.nbytes != need:
            raise InputSpecError(
                f"input {tensor.name!r}: binary_data_size is {tensor.binary.nbytes} bytes, "
                f"{tensor.datatype} {list(spec.shape)} takes {need}")
        array = np.frombuffer(tensor.binary, dtype=dtype).reshape(spec.shape)
        if array.flags.aligned:
            return array, 0
        return array.copy(), need
    return _from_json(tensor, dtype, spec.shape), need


def _from_json(tensor: InputTensor, dtype: np.dtype[Any], shape: tuple[int, ...]
               ) -> np.ndarray:
    try:
        raw = np.asarray(tensor.data)
    except ValueError as err:  # ragged nesting
        raise RequestFormatError(f"input {tensor.name!r}: 'data' is not a regular array: "
                                 f"{err}") from err
    count = math.prod(shape)
    if raw.size != count:
        raise InputSpecError(f"input {tensor.name!r}: 'data' holds {raw.size} values, shape "
                             f"{list(shape)} takes {count}")
    kinds = _FLOAT_KINDS if dtype.kind == "f" else _INT_KINDS
    if count and raw.dtype.kind not in kinds:
        raise InputSpecError(f"input {tensor.name!r}: 'data' holds {raw.dtype.kind!r}-kind "
                             f"values, not {tensor.datatype} numbers")
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InputSpecError(f"input {tensor.name!r}: a value is out of the range of "
                                 f"{tensor.datatype}")
    return np.ascontiguousarray(raw.astype(dtype, copy=False).reshape(shape))


# ---- responses --------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedOutput:
    """How one output is answered: JSON data, binary after the header, or in a region."""

    spec: TensorSpec
    array: np.ndarray
    binary: bool = False
    shm: ShmRef | None = None


def encode_infer_response(header: dict[str, Any], outputs: Sequence[EncodedOutput]
                          ) -> tuple[bytes, list[memoryview], int]:
    """The response's JSON header (``header`` plus ``outputs``), the binary outputs'
    buffers in order, and the tensor bytes copied into the JSON."""
    described, buffers, copied = [], [], 0
    for out in outputs:
        entry: dict[str, Any] = {"name": out.spec.name,
                                 "datatype": datatype_of(out.spec.dtype),
                                 "shape": list(out.spec.shape)}
        if out.shm is not None:
            entry["parameters"] = {"shared_memory_region": out.shm.region,
                                   "shared_memory_offset": out.shm.offset,
                                   "shared_memory_byte_size": out.shm.byte_size}
        elif out.binary:
            view = out.array.data.cast("B")
            entry["parameters"] = {"binary_data_size": view.nbytes}
            buffers.append(view)
        else:
            entry["data"] = out.array.ravel().tolist()
            copied += out.array.nbytes
        described.append(entry)
    text = _COMPACT.encode({**header, "outputs": described})
    return text.encode(), buffers, copied
