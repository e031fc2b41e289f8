"""A capture asked for over the native socket: the ``INFER`` and ``RESULT`` header
extensions (round trip, old peers unaffected, malformed ones refused, fuzzed), and
``InferenceClient.infer(..., capture=True, label=..., note=...)`` through the real native
server, variants router and DLR runtime to the capture hook and back with the capture's
id. The hook is a stand-in that records what it is given (the real capture tap is tested
with the running agent)."""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from native_serving import NativeStack, native_stack

from agent.client import InferenceClient, SharedRegion
from agent.core.errors import AgentError, RequestFormatError
from agent.device.capture.record import MAX_TEXT
from agent.device.inference.capture_hooks import CaptureAsk, CaptureHooks
from agent.device.inference.requests import InferenceRequest
from agent.wire import inference_frames as frames
from agent.wire.inference_frame_extensions import (
    EXT_CAPTURE,
    encode_capture_ask,
    encode_extension,
    read_extensions,
)
from agent.wire.inference_frames import (
    InferHeader,
    ResultHeader,
    TensorDesc,
    decode_infer,
    decode_result,
    encode_infer,
    encode_result,
)

INPUTS = (TensorDesc("input", "float32", (1, 64), 0, 256),)
OUTPUTS = (TensorDesc("probabilities", "float32", (1, 10), 0, 40, region="out"),)
PLAIN = InferHeader(model="digits", version="", timeout_us=0, inputs=INPUTS, outputs=OUTPUTS)
ASKING = InferHeader(model="digits", version="", timeout_us=0, inputs=INPUTS, outputs=OUTPUTS,
                     capture=True, capture_label="7", capture_note="glare, camera 2")


def _old_infer_reader(data: bytes) -> tuple[str, tuple[TensorDesc, ...],
                                             tuple[TensorDesc, ...], int]:
    """What a reader without extensions reads: everything up to the last descriptor (and
    where that ends)."""
    cursor = frames._Cursor(data)
    _timeout, n_in, n_out, model_len, version_len = cursor.unpack(frames._INFER)
    model = cursor.text(model_len)
    cursor.text(version_len)
    inputs, outputs = cursor.tensors(n_in), cursor.tensors(n_out)
    return model, inputs, outputs, cursor.pos


PLAIN_BYTES = encode_infer(PLAIN)
PLAIN_END = _old_infer_reader(PLAIN_BYTES)[3]  # the header without its padding


# ---- the headers ---------------------------------------------------------------------------

def test_a_capture_ask_round_trips_and_an_old_reader_reads_the_rest() -> None:
    data = encode_infer(ASKING)
    assert (frames.PRELUDE_SIZE + len(data)) % frames.ALIGN == 0
    assert decode_infer(data) == ASKING
    assert _old_infer_reader(data)[:3] == ("digits", INPUTS, OUTPUTS)
    assert data[:PLAIN_END] == PLAIN_BYTES[:PLAIN_END]
    assert decode_infer(PLAIN_BYTES) == PLAIN
    bare = InferHeader(model="", version="", timeout_us=0, inputs=INPUTS, outputs=(),
                       capture=True)
    assert decode_infer(encode_infer(bare)) == bare  # no label, no note
    # A header that asks for nothing carries no extension: the bytes an old client sent.
    assert PLAIN_BYTES[PLAIN_END:] == bytes(len(PLAIN_BYTES) - PLAIN_END)
    assert read_extensions(memoryview(data), PLAIN_END) == {
        EXT_CAPTURE: b'{"label":"7","note":"glare, camera 2"}'}


def test_a_result_names_its_capture_and_an_old_reader_ignores_it() -> None:
    result = ResultHeader(variant="blue", version="digits-v1", queue_us=1.0, model_us=2.0,
                          total_us=3.0, outputs=OUTPUTS, capture_id=uuid.uuid4().hex)
    data = encode_result(result)
    assert decode_result(data) == result
    cache: dict[bytes, tuple[TensorDesc, ...]] = {}
    assert decode_result(data, cache=cache) == result
    assert cache == {}  # an answer with a capture id is not kept: its id is new every time
    plain = ResultHeader(variant="blue", version="digits-v1", queue_us=1.0, model_us=2.0,
                         total_us=3.0, outputs=OUTPUTS)
    assert decode_result(encode_result(plain), cache=cache) == plain and len(cache) == 1
    assert decode_result(encode_result(plain), cache=cache) == plain  # from the cache
    assert decode_result(data, cache=cache).capture_id == result.capture_id  # not a stale hit


def test_unknown_extensions_are_skipped_and_cut_ones_refused() -> None:
    tensors = frames.encode_tensors(INPUTS)
    fixed = frames._INFER.pack(0, 1, 0, 0, 0)
    ask = encode_capture_ask("3", None)
    with_unknown = fixed + tensors + encode_extension(9, b"future") + ask + bytes(8)
    assert decode_infer(with_unknown).capture_label == "3"
    assert read_extensions(memoryview(with_unknown), len(fixed + tensors)) == {
        9: b"future", EXT_CAPTURE: json.dumps({"label": "3", "note": None},
                                              separators=(",", ":")).encode()}
    for cut in range(1, len(ask)):
        with pytest.raises(RequestFormatError, match="ends inside"):
            decode_infer(fixed + tensors + ask[:cut])
    for value, message in [(b"{", "not JSON"), (b"[1]", "JSON object"),
                           (b'{"label": 3}', "label must be a string"),
                           (b'{"note": [1]}', "note must be a string")]:
        with pytest.raises(RequestFormatError, match=message):
            decode_infer(fixed + tensors + encode_extension(EXT_CAPTURE, value))
    bad_id = frames._RESULT.pack(0, 0, 0, 0, 0, 0) + encode_extension(EXT_CAPTURE, b"\xff")
    with pytest.raises(RequestFormatError, match="not ASCII"):
        decode_result(bad_id)


def _check_decode(data: bytes) -> None:
    try:
        header = decode_infer(data)
    except RequestFormatError:
        return
    assert isinstance(header, InferHeader)
    assert header.capture or (header.capture_label, header.capture_note) == (None, None)
    assert all(t is None or isinstance(t, str) for t in (header.capture_label,
                                                        header.capture_note))


_TAIL = st.binary(max_size=64) | st.builds(
    lambda tag, value, cut: (struct.pack("<BI", tag, len(value)) + value)[:cut],
    st.integers(0, 255), st.binary(max_size=40) | st.sampled_from(
        [b'{"label":"a","note":null}', b'{"label":1}', b"[]", b'{"note":"\\u00e9"}']),
    st.integers(0, 64))


@BRIEF
@given(_TAIL)
def test_fuzz_an_infer_header_with_any_tail_decodes_or_is_a_format_error(tail: bytes) -> None:
    _check_decode(PLAIN_BYTES[:PLAIN_END] + tail)


@pytest.mark.slow
@LONG
@given(_TAIL)
def test_fuzz_an_infer_header_with_any_tail_long(tail: bytes) -> None:
    _check_decode(PLAIN_BYTES[:PLAIN_END] + tail)


# ---- through the real server ---------------------------------------------------------------

class Hook:
    """Records every answered request's ask and input; keeps (gives an id to) those that
    asked, as the capture tap does."""

    def __init__(self) -> None:
        self.seen: list[tuple[CaptureAsk | None, np.ndarray]] = []
        self.kept: list[str] = []

    def __call__(self, request: InferenceRequest, variant: str, version: str,
                 error: AgentError | None) -> None:
        self.seen.append((request.capture, request.inputs[0].copy()))
        if request.capture is not None:
            request.capture_id = uuid.uuid4().hex
            self.kept.append(request.capture_id)


@pytest.fixture(scope="module")
def stack(built_models: Path) -> Iterator[NativeStack]:
    with native_stack(built_models / "digits-v1", version="digits-v1") as made:
        yield made


@pytest.fixture
def hook(stack: NativeStack) -> Iterator[Hook]:
    made = Hook()
    stack.router.set_capture(CaptureHooks(request=made))
    yield made
    stack.router.set_capture(None)


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64), dtype=np.float32)


def test_infer_with_capture_carries_label_and_note_and_returns_the_id(
        stack: NativeStack, hook: Hook) -> None:
    with stack.client() as client:
        plain = client.infer({"input": digit(0)})
        asked = client.infer({"input": digit(1)}, capture=True, label="7", note="camera 2")
        again = client.infer({"input": digit(2)}, capture=True, label="8")
        after = client.infer({"input": digit(3)})
        ignored = client.infer({"input": digit(4)}, label="9")  # no capture=True: no ask
    assert [ask for ask, _x in hook.seen] == [None, CaptureAsk("7", "camera 2"),
                                              CaptureAsk("8"), None, None]
    assert np.array_equal(hook.seen[1][1], digit(1))
    assert [asked.capture_id, again.capture_id] == hook.kept
    assert plain.capture_id == after.capture_id == ignored.capture_id == ""
    assert asked.variant == "blue" and asked.version == "digits-v1"


def test_infer_layout_with_capture_in_a_shared_region(stack: NativeStack, hook: Hook) -> None:
    with stack.client() as client:
        layout = client.layout()
        key = f"/nat-capture-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with SharedRegion.create(key, layout.nbytes) as region:
            client.register_region("cap", region)
            layout.input(region, "input")[...] = digit(5)
            first = client.infer_layout(layout, region, capture=True, label="5")
            plain = client.infer_layout(layout, region)
            second = client.infer_layout(layout, region, capture=True, label="5")
            client.unregister_region("cap")
    assert [first.capture_id, second.capture_id] == hook.kept and len(set(hook.kept)) == 2
    assert plain.capture_id == ""
    assert [ask for ask, _x in hook.seen] == [CaptureAsk("5"), None, CaptureAsk("5")]
    assert all(np.array_equal(x, digit(5)) for _ask, x in hook.seen)


def test_a_label_over_the_limit_is_refused_and_never_reaches_the_model(
        stack: NativeStack, hook: Hook) -> None:
    with stack.client() as client:
        with pytest.raises(RequestFormatError,
                           match=f"capture_label is {MAX_TEXT + 1} characters long"):
            client.infer({"input": digit(6)}, capture=True, label="x" * (MAX_TEXT + 1))
        with pytest.raises(RequestFormatError, match="capture_note is"):
            client.infer({"input": digit(6)}, capture=True, note="é" * (MAX_TEXT + 1))
        assert hook.seen == []
        ok = client.infer({"input": digit(6)}, capture=True, label="é" * MAX_TEXT)
    assert ok.capture_id == hook.kept[0]
    assert hook.seen[0][0] == CaptureAsk("é" * MAX_TEXT)


def test_an_old_client_header_is_answered_as_before(stack: NativeStack, hook: Hook) -> None:
    """A request without the extension (what an older client sends) is answered with a
    RESULT header without one."""
    with InferenceClient(stack.socket_path) as client:
        header = encode_infer(InferHeader(model="", version="", timeout_us=0, inputs=INPUTS,
                                          outputs=()))
        reply = client.roundtrip(frames.Kind.INFER, header, (digit(7),))
    result = decode_result(reply.header)
    assert result.capture_id == "" and hook.seen[-1][0] is None
    rest = memoryview(reply.header)[frames._RESULT.size + len(b"blue") + len(b"digits-v1"):]
    assert read_extensions(rest, len(frames.encode_tensors(result.outputs))) == {}
