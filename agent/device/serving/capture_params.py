"""An application's ask to keep a request's input, as the front ends take it.

Over HTTP the ask is in the infer request's ``parameters``::

    {"inputs": [...], "parameters": {"capture": true, "capture_label": "7",
                                     "capture_note": "camera 2, glare"}}

and over the native socket in the ``INFER`` header (:class:`~agent.wire.inference_frames.
InferHeader`'s ``capture``, ``capture_label``, ``capture_note``). ``capture`` must be a
boolean, the label and the note strings of at most :data:`MAX_TEXT` characters (or
null); anything else is a :class:`~agent.core.errors.RequestFormatError` and the request
is not run. A label or a note without ``capture: true`` is checked the same way and
otherwise ignored. Whether the input is then kept is the capture rules' decision (the
``requests`` rule, the budget and the hourly cap): the answer names the capture
(``capture_id``) only when it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.core.errors import RequestFormatError
from agent.device.capture.record import MAX_TEXT
from agent.device.inference.capture_hooks import CaptureAsk

CAPTURE = "capture"
LABEL = "capture_label"
NOTE = "capture_note"


def capture_ask(capture: Any, label: Any = None, note: Any = None, *,
                where: str = "") -> CaptureAsk | None:
    """The :class:`CaptureAsk` of a request (None when it does not ask for a capture), or
    :class:`RequestFormatError` naming the parameter that is wrong (``where`` + its
    name)."""
    if capture is not None and not isinstance(capture, bool):
        raise RequestFormatError(f"{where}{CAPTURE} must be true or false, not "
                                 f"{_kind(capture)}")
    label_text, note_text = _text(label, where + LABEL), _text(note, where + NOTE)
    if not capture:
        return None
    return CaptureAsk(label=label_text, note=note_text)


def from_parameters(params: Mapping[str, Any]) -> CaptureAsk | None:
    """The ask in an infer request's ``parameters`` object."""
    if CAPTURE not in params and LABEL not in params and NOTE not in params:
        return None
    return capture_ask(params.get(CAPTURE), params.get(LABEL), params.get(NOTE),
                       where="parameters.")


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestFormatError(f"{what} must be a string, not {_kind(value)}")
    if len(value) > MAX_TEXT:
        raise RequestFormatError(f"{what} is {len(value)} characters long, over the limit "
                                 f"of {MAX_TEXT}")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
