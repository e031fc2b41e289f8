"""One capture: the inputs of one inference, the outputs of every variant that ran on
them, and why it was kept; and its file format.

A capture file is an uncompressed ``.npz`` (numpy's zip of ``.npy`` arrays, read with
``allow_pickle=False``): ``in_<i>`` is the model's i-th input, ``out_<variant>_<j>`` a
variant's j-th output, and ``meta`` a uint8 array holding the UTF-8 JSON of
:meth:`Capture.meta` (names, model, versions, rule, frame id, time, label; each
tensor's spec names its array, so the metadata's key order does not matter). Anything
that reads a dataset built from captures needs numpy only.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.lib.format as npy

from agent.device.capture.config import RULE_NAMES
from agent.device.capture.errors import CaptureFormatError

FORMAT_VERSION = 1
_VARIANT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_TEXT = 1024  # a label's or a note's characters
MAX_ARRAYS = 4096  # arrays in one capture file
_ZIP_MAGIC = b"PK\x03\x04"
_MEMBER = re.compile(r"^([A-Za-z0-9_]{1,96})\.npy$")


def new_capture_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, eq=False)
class Capture:
    """One kept inference. ``inputs`` by input name; ``outputs`` by variant, then output
    name; ``variants`` maps every variant that ran to its model version; ``served_by`` is
    the variant whose answer was used ("" when none was: a failed inference)."""

    thing: str
    model: str
    rule: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, Mapping[str, np.ndarray]]
    variants: Mapping[str, str]
    served_by: str
    frame_id: int
    time: float  # Unix seconds
    source: str = ""  # the loop's source ("testset", "shm", ...) or "api"
    score: float | None = None  # the served top-1 score, when the model has scores
    label: str | None = None  # the application's label
    note: str | None = None  # the application's note
    error: str | None = None  # a failed inference's error
    capture_id: str = field(default_factory=new_capture_id)

    def __post_init__(self) -> None:
        if self.rule not in RULE_NAMES:
            raise CaptureFormatError(f"unknown capture rule {self.rule!r}")
        if not _ID.match(self.capture_id):
            raise CaptureFormatError(f"capture id {self.capture_id!r} is not 32 hex digits")
        for variant in (*self.outputs, *self.variants):
            if not _VARIANT.match(variant):
                raise CaptureFormatError(f"variant name {variant!r} is not allowed")
        for text in (self.label, self.note, self.error):
            if text is not None and len(text) > MAX_TEXT:
                raise CaptureFormatError(f"a label, note or error over {MAX_TEXT} characters")

    @property
    def nbytes(self) -> int:
        """The tensors' bytes (what budgets and ``maxCaptureBytes`` count)."""
        return sum(a.nbytes for a in self.inputs.values()) + sum(
            a.nbytes for outs in self.outputs.values() for a in outs.values())

    def meta(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-ready: what a batch manifest line holds."""
        return {
            "v": FORMAT_VERSION, "capture_id": self.capture_id, "thing": self.thing,
            "model": self.model, "rule": self.rule, "variants": dict(self.variants),
            "served_by": self.served_by, "frame_id": self.frame_id, "time": self.time,
            "source": self.source, "score": self.score, "label": self.label,
            "note": self.note, "error": self.error,
            "inputs": {name: _spec(a, f"in_{i}")
                       for i, (name, a) in enumerate(self.inputs.items())},
            "outputs": {v: {name: _spec(a, f"out_{v}_{j}")
                            for j, (name, a) in enumerate(outs.items())}
                        for v, outs in self.outputs.items()},
        }


def _spec(array: np.ndarray, key: str) -> dict[str, Any]:
    # ``key`` names the array in the file, so the mapping survives any reordering of the
    # JSON object's keys (the metadata is written with sorted keys; names sort otherwise
    # than the model orders its tensors).
    return {"key": key, "dtype": array.dtype.str, "shape": list(array.shape)}


def encode(capture: Capture) -> bytes:
    """The capture's file bytes (see the module's documentation)."""
    arrays: dict[str, np.ndarray] = {}
    for i, array in enumerate(capture.inputs.values()):
        arrays[f"in_{i}"] = np.ascontiguousarray(array)
    for variant, outs in capture.outputs.items():
        for j, array in enumerate(outs.values()):
            arrays[f"out_{variant}_{j}"] = np.ascontiguousarray(array)
    meta = json.dumps(capture.meta(), sort_keys=True, allow_nan=False).encode()
    arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def decode(data: bytes) -> Capture:
    """A capture read back from :func:`encode`'s bytes; anything else is a
    :class:`CaptureFormatError` naming what is wrong.

    The archive is read member by member and checked before any array is allocated:
    stored (uncompressed) ``.npy`` members only, no object arrays, no header claiming
    more data than its member holds, every member's CRC checked. A hostile file costs
    at most its own size in memory."""
    arrays = _read_arrays(data)
    meta_array = arrays.pop("meta", None)
    if meta_array is None or meta_array.dtype != np.uint8 or meta_array.ndim != 1:
        raise CaptureFormatError("a capture file without readable metadata")
    try:
        meta = json.loads(meta_array.tobytes(), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CaptureFormatError("a capture file without readable metadata") from err
    if not isinstance(meta, dict):
        raise CaptureFormatError("a capture file whose metadata is not a JSON object")
    return from_meta(meta, arrays)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a capture holds")


def _read_arrays(data: bytes) -> dict[str, np.ndarray]:
    if not data.startswith(_ZIP_MAGIC):
        raise CaptureFormatError("not a capture file: not a zip archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ARRAYS:
                raise CaptureFormatError(f"{len(infos)} arrays, more than {MAX_ARRAYS}")
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                name = _member_name(info, len(data))
                if name in arrays:
                    raise CaptureFormatError(f"the array {name} appears twice")
                with archive.open(info) as member:
                    arrays[name] = _read_npy(member, info.file_size, name)
            return arrays
    except CaptureFormatError:
        raise
    except (OSError, EOFError, ValueError, KeyError, RuntimeError, zlib.error,
            zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, OverflowError) as err:
        raise CaptureFormatError(f"not a capture file: {err!r}") from err


def _member_name(info: zipfile.ZipInfo, archive_bytes: int) -> str:
    match = _MEMBER.match(info.filename)
    if match is None:
        raise CaptureFormatError(f"{info.filename!r} is not an array of a capture file")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise CaptureFormatError(f"{info.filename} is compressed or encrypted")
    if info.file_size > archive_bytes:
        raise CaptureFormatError(f"{info.filename} claims more bytes than the file has")
    return match.group(1)


def _read_npy(member: IO[bytes], size: int, name: str) -> np.ndarray:
    version = npy.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(member)
    else:
        raise CaptureFormatError(f"{name}: .npy version {version} is not read")
    if dtype.hasobject or dtype.itemsize == 0:
        raise CaptureFormatError(f"{name}: dtype {dtype} is not a tensor's")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > size:
        raise CaptureFormatError(f"{name}: its header claims {nbytes} bytes, its member "
                                 f"holds {size}")
    body = bytearray(member.read(nbytes))
    if len(body) != nbytes or member.read(1):  # reading to the end checks the CRC
        raise CaptureFormatError(f"{name}: {len(body)} bytes of data where the header "
                                 f"says {nbytes}")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def from_meta(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Capture:
    """A capture from its :meth:`Capture.meta` and its arrays keyed as in a file."""
    try:
        if meta.get("v") != FORMAT_VERSION:
            raise CaptureFormatError(f"capture format {meta.get('v')!r} is not "
                                     f"{FORMAT_VERSION}")
        used: set[str] = set()
        inputs = _tensors(arrays, meta["inputs"], "in_", used)
        outputs = {variant: _tensors(arrays, outs, f"out_{variant}_", used)
                   for variant, outs in meta["outputs"].items()}
        if len(arrays) != len(used):
            raise CaptureFormatError(f"{len(arrays)} arrays where the metadata names "
                                     f"{len(used)}")
        return Capture(
            capture_id=str(meta["capture_id"]), thing=str(meta["thing"]),
            model=str(meta["model"]), rule=str(meta["rule"]), inputs=inputs,
            outputs=outputs, variants={str(k): str(v) for k, v in meta["variants"].items()},
            served_by=str(meta["served_by"]), frame_id=int(meta["frame_id"]),
            time=float(meta["time"]), source=str(meta.get("source", "")),
            score=None if meta.get("score") is None else float(meta["score"]),
            label=_text(meta.get("label")), note=_text(meta.get("note")),
            error=_text(meta.get("error")))
    except CaptureFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise CaptureFormatError(f"capture metadata does not fit the format: {err!r}") \
            from err


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _tensors(arrays: Mapping[str, np.ndarray], specs: Mapping[str, Any], prefix: str,
             used: set[str]) -> dict[str, np.ndarray]:
    """Tensors by name, in the model's order (the index in each spec's ``key``)."""
    found: list[tuple[int, str, np.ndarray]] = []
    for name, spec in specs.items():
        key = spec["key"]
        index = key[len(prefix):] if isinstance(key, str) and key.startswith(prefix) else ""
        if not (index.isascii() and index.isdigit()) or len(index) > 6 or key in used:
            raise CaptureFormatError(f"tensor {name!r}: array key {key!r} is not a new "
                                     f"{prefix}<index>")
        used.add(key)
        found.append((int(index), str(name), _array(arrays, key, spec)))
    return {name: array for _, name, array in sorted(found, key=lambda t: t[0])}


def _array(arrays: Mapping[str, np.ndarray], key: str, spec: Mapping[str, Any]) -> np.ndarray:
    if key not in arrays:
        raise CaptureFormatError(f"capture file lacks the array {key}")
    array = arrays[key]
    if array.dtype.str != spec["dtype"] or list(array.shape) != list(spec["shape"]):
        raise CaptureFormatError(f"{key} is {array.dtype.str}{list(array.shape)}, the "
                                 f"metadata says {spec['dtype']}{spec['shape']}")
    return array
