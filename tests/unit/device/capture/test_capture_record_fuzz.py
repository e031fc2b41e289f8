"""Fuzzing the capture file reader: ``decode`` returns a Capture or raises
CaptureFormatError, never anything else, for any bytes: random ones, mangled capture
files, and hand-built archives with hostile members and metadata. The crashes the
fuzzing found are the explicit regression tests at the end."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import numpy as np
import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st

from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import Capture, decode, encode

VALID = encode(Capture(
    thing="dev-1", model="digits", rule="disagreement",
    inputs={"image": np.arange(64, dtype=np.float32).reshape(1, 8, 8)},
    outputs={"blue": {"scores": np.ones(10, dtype=np.float32)},
             "green": {"scores": np.zeros(10, dtype=np.float32)}},
    variants={"blue": "v1", "green": "v2"}, served_by="blue", frame_id=7, time=1.5e9,
    score=0.4, label="seven", capture_id="0" * 32))
META: dict[str, Any] = decode(VALID).meta()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def archive(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as file:
        for name, data in members.items():
            file.writestr(name, data)
    return buffer.getvalue()


def with_meta(meta: Any, **arrays: np.ndarray) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return archive({"meta.npy": npy(np.frombuffer(raw, dtype=np.uint8)),
                    **{f"{k}.npy": npy(v) for k, v in arrays.items()}})


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def check(data: bytes) -> None:
    started = time.monotonic()
    try:
        capture = decode(data)
    except CaptureFormatError:
        pass
    else:
        assert isinstance(capture, Capture)
    assert time.monotonic() - started < 5.0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del data[where:where + draw(st.integers(1, 64))]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


@st.composite
def hostile_archives(draw: st.DrawFn) -> bytes:
    members: dict[str, bytes] = {}
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["meta.npy", "in_0.npy", "out_blue_0.npy", "meta",
                                     "in_1.npy", "../x.npy", "in_0"]))
        kind = draw(st.sampled_from(["array", "header", "bytes"]))
        if kind == "array":
            dtype = draw(st.sampled_from(["<f4", "|u1", "<i8", "|b1", "<c16", "|S3"]))
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
            members[name] = npy(np.zeros(shape, dtype=dtype))
        elif kind == "header":
            shape = tuple(draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=3)))
            members[name] = npy_header(shape, draw(st.sampled_from(["<f4", "|O", "<U0"])))
        else:
            members[name] = draw(st.binary(max_size=64))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    return archive(members, method)


@st.composite
def hostile_meta(draw: st.DrawFn) -> bytes:
    meta = dict(META)
    for key in draw(st.lists(st.sampled_from(sorted(META)), max_size=4)):
        if draw(st.booleans()):
            meta[key] = draw(json_values)
        else:
            meta.pop(key, None)
    arrays = {"in_0": np.arange(64, dtype=np.float32).reshape(1, 8, 8),
              "out_blue_0": np.ones(10, dtype=np.float32),
              "out_green_0": np.zeros(10, dtype=np.float32)}
    return with_meta(meta, **arrays)


def test_the_valid_file_decodes() -> None:
    capture = decode(VALID)
    assert capture.label == "seven" and capture.variants == {"blue": "v1", "green": "v2"}
    assert capture.inputs["image"].shape == (1, 8, 8)


@BRIEF
@given(st.one_of(st.binary(max_size=512), mangled(), hostile_archives(), hostile_meta()))
def test_decode_returns_a_capture_or_its_typed_error(data: bytes) -> None:
    check(data)


@pytest.mark.slow
@LONG
@given(st.one_of(st.binary(max_size=4096), mangled(), hostile_archives(), hostile_meta()))
def test_decode_returns_a_capture_or_its_typed_error_long(data: bytes) -> None:
    check(data)


# -- regressions: each of these crashed the first reader -------------------------------

REGRESSIONS = {
    # np.load returned a bare array for .npy bytes: TypeError on ``with``
    "an npy file, not an archive": npy(np.ones(3)),
    # a member without the .npy suffix came back as bytes: AttributeError
    "metadata that is no array": archive({"meta": b"{}"}),
    # the header's shape was allocated before the data was read: MemoryError
    "a header claiming 8 TB": archive({"in_0.npy": npy_header((10**12,), "<f8")}),
    # float() of a huge JSON integer: OverflowError
    "a time too large for a float": with_meta({**META, "time": 10**400}),
    # json.loads of deeply nested arrays: RecursionError
    "deeply nested metadata": with_meta(b"[" * 100_000 + b"]" * 100_000),
    # Infinity is JSON to Python, and int(inf) raised OverflowError
    "an infinite frame id": with_meta(json.dumps({**META, "frame_id": 1}).replace(
        '"frame_id": 1', '"frame_id": Infinity').encode()),
    # a deflated member could be a zip bomb: refused before it is inflated
    "a compressed member": archive({"meta.npy": npy(np.zeros(10**6, np.uint8))},
                                   zipfile.ZIP_DEFLATED),
    "an object array": archive({"meta.npy": npy_header((1,), "|O") + b"\x80"}),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_regressions_are_typed_errors(case: str) -> None:
    with pytest.raises(CaptureFormatError):
        decode(REGRESSIONS[case])
