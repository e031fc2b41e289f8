"""The native protocol's frames: headers that round-trip, every malformed prelude or header
refused with its typed error, errors that cross as their own class, and the socket reader
and writer on real socket pairs (frames split anywhere, several in one read, large ones,
partial sends)."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

from agent.core.errors import (
    DeadlineExceededError,
    InputSpecError,
    RegionError,
    RequestFormatError,
    RequestTooLargeError,
    ServerBusyError,
    ServingError,
)
from agent.wire.inference_frame_io import FrameReader, send_frame
from agent.wire.inference_frames import (
    MAGIC,
    PRELUDE,
    PRELUDE_SIZE,
    Frame,
    InferHeader,
    Kind,
    ResultHeader,
    TensorDesc,
    decode_infer,
    decode_result,
    encode_infer,
    encode_result,
    encode_tensors,
    error_frame,
    inline_offsets,
    pack_prelude,
    parse_prelude,
    raise_error_frame,
)

INPUTS = (TensorDesc("input", "float32", (1, 64), 0, 256),
          TensorDesc("counts", "int32", (1, 3), 0, 12, region="cam0"))
OUTPUTS = (TensorDesc("probabilities", "float32", (1, 10), 320, 40, region="cam0"),)
REQUEST = InferHeader(model="digits", version="digits-v1", timeout_us=2500, inputs=INPUTS,
                      outputs=OUTPUTS)


def test_infer_and_result_headers_round_trip_and_align_the_payload() -> None:
    data = encode_infer(REQUEST)
    assert (PRELUDE_SIZE + len(data)) % 64 == 0
    assert decode_infer(data) == REQUEST
    result = ResultHeader(variant="green", version="digits-v2", queue_us=1.5, model_us=20.25,
                          total_us=30.0,
                          outputs=(*OUTPUTS, TensorDesc("Identity:0", "int64", (), 64, 8)))
    encoded = encode_result(result)
    assert decode_result(encoded) == result
    assert encode_result(result, tensors=encode_tensors(result.outputs)) == encoded
    cache: dict[bytes, tuple[TensorDesc, ...]] = {}
    assert decode_result(encoded, cache=cache) == result
    assert decode_result(encoded, cache=cache).outputs is next(iter(cache.values()))


def test_prelude_limits_and_identity() -> None:
    prelude = pack_prelude(Kind.INFER, 7, 100, 4096)
    assert parse_prelude(prelude, max_payload=4096) == (Kind.INFER, 7, 100, 4096)
    with pytest.raises(RequestTooLargeError, match="payload of 4097 bytes"):
        parse_prelude(pack_prelude(Kind.INFER, 7, 100, 4097), max_payload=4096)
    with pytest.raises(RequestTooLargeError, match="header of 9 bytes"):
        parse_prelude(pack_prelude(Kind.INFER, 7, 9, 0), max_header=8, max_payload=0)
    with pytest.raises(RequestFormatError, match="magic"):
        parse_prelude(b"GET / HTTP/1.1\r\nHost: xx\r\n", max_payload=10)
    bad_version = PRELUDE.pack(MAGIC, 9, Kind.INFER, 0, 1, 0, 0)
    with pytest.raises(RequestFormatError, match="version 9"):
        parse_prelude(bad_version, max_payload=10)


def test_every_truncation_of_an_infer_header_is_a_format_error() -> None:
    data = encode_infer(REQUEST)
    end = len(data.rstrip(b"\0"))
    for cut in range(end):
        with pytest.raises(RequestFormatError):
            decode_infer(data[:cut])


@pytest.mark.parametrize(("patch", "message"), [
    (lambda d: d[:16] + bytes([0]) + d[17:], "unknown dtype code 0"),
    (lambda d: d[:16] + bytes([200]) + d[17:], "unknown dtype code 200"),
    (lambda d: d[:17] + bytes([17]) + d[18:], "17 dimensions"),
    (lambda d: struct.pack("<QHHHH", 0, 5000, 0, 0, 0), "5000 tensors"),
    (lambda d: d[:16 + 24] + b"\xff" + d[16 + 24 + 1:], "not UTF-8"),
])
def test_malformed_infer_headers(patch: object, message: str) -> None:
    # A header of one inline input: the fixed part (16 bytes), the model and version names
    # (empty), then the tensor descriptor (24 bytes) and its name.
    header = InferHeader(model="", version="", timeout_us=0,
                         inputs=(TensorDesc("x", "float32", (1, 2), 0, 8),), outputs=())
    data = encode_infer(header)
    with pytest.raises(RequestFormatError, match=message):
        decode_infer(patch(data))  # type: ignore[operator]


def test_negative_dimension_and_unknown_dtype_are_refused() -> None:
    bad = InferHeader(model="", version="", timeout_us=0,
                      inputs=(TensorDesc("x", "float32", (1, -2), 0, 8),), outputs=())
    with pytest.raises(RequestFormatError, match="negative dimension"):
        decode_infer(encode_infer(bad))
    with pytest.raises(RequestFormatError, match="complex64"):
        encode_infer(InferHeader(model="", version="", timeout_us=0, outputs=(),
                                 inputs=(TensorDesc("x", "complex64", (1,), 0, 8),)))


@pytest.mark.parametrize("error", [ServerBusyError("queue full"), DeadlineExceededError("late"),
                                   InputSpecError("bad dtype"), RegionError("too small"),
                                   RequestTooLargeError("big")])
def test_errors_cross_as_their_own_class(error: Exception) -> None:
    frame = error_frame(3, error)
    assert frame.kind == Kind.ERROR and frame.request_id == 3
    with pytest.raises(type(error), match=str(error)) as raised:
        raise_error_frame(frame)
    assert type(raised.value) is type(error)


def test_an_error_class_the_client_does_not_know_is_raised_as_its_nearest_ancestor() -> None:
    class LocalBusy(ServerBusyError):
        pass

    with pytest.raises(ServerBusyError) as raised:
        raise_error_frame(error_frame(1, LocalBusy("later")))
    assert type(raised.value) is ServerBusyError
    with pytest.raises(ServingError, match="internal"):
        raise_error_frame(error_frame(1, ValueError("internal")))


def test_inline_offsets_are_aligned() -> None:
    assert inline_offsets([256, 12, 1, 64]) == ([0, 256, 320, 384], 448)
    assert inline_offsets([]) == ([], 0)


# ---- the reader and writer on sockets -----------------------------------------------------

@pytest.fixture()
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def _raw(kind: int, request_id: int, header: bytes, payload: bytes) -> bytes:
    return pack_prelude(kind, request_id, len(header), len(payload)) + header + payload


def test_frames_split_anywhere_or_sent_together_are_read_whole(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frames = [_raw(Kind.ECHO, i, b"h" * i, bytes(range(i * 7 % 256)) * 3) for i in range(1, 6)]
    stream = b"".join(frames)
    reader = FrameReader(b, max_payload=1 << 20, buffer_size=64)
    sender = threading.Thread(target=lambda: [a.sendall(stream[i:i + 5])
                                              for i in range(0, len(stream), 5)])
    sender.start()
    for i in range(1, 6):
        frame = reader.read()
        assert frame is not None
        assert (frame.kind, frame.request_id, bytes(frame.header)) == (Kind.ECHO, i, b"h" * i)
        assert bytes(frame.body) == bytes(range(i * 7 % 256)) * 3
    sender.join()
    a.shutdown(socket.SHUT_WR)
    assert reader.read() is None


def test_a_large_frame_gets_its_own_payload(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    big = np.arange(300_000, dtype=np.int32)
    reader = FrameReader(b, max_payload=1 << 22, retain=256 * 1024)
    sender = threading.Thread(target=send_frame, args=(a, Frame(Kind.ECHO, 1, b"{}", (big,))))
    sender.start()
    frame = reader.read()
    sender.join()
    assert frame is not None and isinstance(frame.payload[0], bytearray)
    assert np.array_equal(np.frombuffer(frame.body, np.int32), big)
    send_frame(a, Frame(Kind.ECHO, 2, b"", (b"tail",)))
    owned = reader.read(own_payload=True)
    assert owned is not None and owned.payload[0] == bytearray(b"tail")


def test_a_stream_that_ends_inside_a_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(_raw(Kind.ECHO, 1, b"abc", b"0123456789")[:-4])
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionResetError):
        FrameReader(b, max_payload=100).read()


def test_an_oversized_or_foreign_prelude_is_refused_before_its_body_is_read(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(pack_prelude(Kind.INFER, 1, 0, 10_000))
    with pytest.raises(RequestTooLargeError):
        FrameReader(b, max_payload=1000).read()
    a.sendall(b"x" * PRELUDE_SIZE)
    with pytest.raises(RequestFormatError, match="magic"):
        FrameReader(b, max_payload=1000).read()


def test_send_frame_finishes_a_partial_send() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.settimeout(5)  # a socket with a timeout may send less than asked
    parts = (np.full(100_000, 3, np.uint8), b"\x01" * 70_000, np.arange(5000, dtype=np.float64))
    received: list[Frame | None] = []
    reader = threading.Thread(target=lambda: received.append(
        FrameReader(b, max_payload=1 << 20).read()))
    reader.start()
    send_frame(a, Frame(Kind.ECHO, 9, b"header", parts))
    reader.join(10)
    frame = received[0]
    assert frame is not None and bytes(frame.header) == b"header"
    assert bytes(frame.body) == b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    a.close()
    b.close()
