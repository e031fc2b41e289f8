"""Extensions of the native protocol's ``INFER`` and ``RESULT`` headers
(:mod:`agent.wire.inference_frames`).

After its tensor descriptors and before its zero padding, a header may carry
extensions, each a tag (u8, never 0), a length (u32) and that many bytes. A reader skips
tags it does not know, and a reader that knows none (an older one) stops at the last
descriptor: a header with extensions stays readable by old peers, which then simply do
not act on them.

- :data:`EXT_CAPTURE` in an ``INFER`` header asks for the request's input to be
  captured: JSON ``{"label": str | null, "note": str | null}`` (the application's);
- :data:`EXT_CAPTURE` in a ``RESULT`` header names the capture that kept the input (its
  id, ASCII).
"""

from __future__ import annotations

import json
import struct

from agent.core.errors import RequestFormatError

EXT_CAPTURE = 1
_EXT = struct.Struct("<BI")  # tag, length


def encode_extension(tag: int, value: bytes) -> bytes:
    """One extension's bytes, as a header carries it."""
    if not 0 < tag < 256:
        raise ValueError(f"an extension tag is 1..255, not {tag}")
    return _EXT.pack(tag, len(value)) + value


def read_extensions(data: memoryview, pos: int) -> dict[int, bytes]:
    """The extensions in ``data`` from ``pos`` to the padding (a tag given twice: the last
    one), or :class:`RequestFormatError` when one is cut short."""
    found: dict[int, bytes] = {}
    while pos < len(data) and data[pos] != 0:
        if pos + _EXT.size > len(data):
            raise RequestFormatError("frame header ends inside an extension's tag")
        tag, size = _EXT.unpack_from(data, pos)
        pos += _EXT.size
        if pos + size > len(data):
            raise RequestFormatError(f"frame header ends inside extension {tag}")
        found[tag] = bytes(data[pos:pos + size])
        pos += size
    return found


def encode_capture_ask(label: str | None, note: str | None) -> bytes:
    return encode_extension(EXT_CAPTURE, json.dumps(
        {"label": label, "note": note}, separators=(",", ":")).encode())


def decode_capture_ask(value: bytes) -> tuple[str | None, str | None]:
    """The label and the note of a capture ask (:class:`RequestFormatError` unless each is
    a string or null)."""
    try:
        ask = json.loads(value)
    except (UnicodeDecodeError, ValueError) as err:
        raise RequestFormatError(f"the capture extension is not JSON: {err}") from err
    if not isinstance(ask, dict):
        raise RequestFormatError("the capture extension must be a JSON object")
    label, note = ask.get("label"), ask.get("note")
    for what, text in (("label", label), ("note", note)):
        if text is not None and not isinstance(text, str):
            raise RequestFormatError(f"the capture {what} must be a string or null")
    return label, note


def decode_capture_id(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError as err:
        raise RequestFormatError("the capture id in the answer is not ASCII") from err
