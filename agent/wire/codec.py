"""Bytes <-> messages. Both directions enforce AWS IoT Core's 128 KB payload limit.

:func:`decode` checks in this order, so each bad input gets one clear error:
size, UTF-8, nesting depth (at most ``MAX_JSON_DEPTH`` levels of arrays and
objects, counted before the parser recurses, so 100,000 ``[`` cost a scan, not a
stack), JSON (duplicate keys and NaN/Infinity are refused: a signed document must
mean one thing to every parser; an integer of more than 4300 digits is refused by
Python's own limit, ``sys.get_int_max_str_digits``), a JSON object, ``v``, ``type``
(and a command's ``action``), then the schema. Nothing is coerced: ``"5"`` is not a
number. Every error is a :class:`~agent.wire.errors.DecodeError` with a short text
naming the field, fit to echo in a ``rejected_message`` event.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from agent.wire.canonical import canonical_json
from agent.wire.commands import COMMAND_CLASSES, Command
from agent.wire.errors import (
    MalformedMessageError,
    OversizedMessageError,
    SchemaError,
    UnsupportedVersionError,
)
from agent.wire.fields import MAX_PAYLOAD_BYTES, SCHEMA_VERSION, Schema
from agent.wire.messages import UP_MESSAGES, Message, UpMessage

M = TypeVar("M", bound=Schema)
_MAX_ERROR_TEXT = 200
MAX_JSON_DEPTH = 32  # every message nests under 8 levels
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_DEEP_RUN = re.compile(rb"[\[{]{%d}" % (MAX_JSON_DEPTH + 1))  # the common case, found fast
_STEPS = bytes.maketrans(_BRACKETS, b"\x01\xff\x01\xff")  # +1 opens, -1 (signed) closes


def encode(message: UpMessage | Command) -> bytes:
    """Compact canonical JSON (see :mod:`agent.wire.canonical`), at most 128 KB."""
    raw = canonical_json(message.model_dump(mode="json"))
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise OversizedMessageError(
            f"{message.type} message is {len(raw)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            related_id=message.id,
        )
    return raw


@overload
def decode(raw: bytes, *, expect: None = None) -> Message: ...


@overload
def decode(raw: bytes, *, expect: type[M]) -> M: ...


def decode(raw: bytes, *, expect: type[Schema] | None = None) -> Schema:
    """The message in ``raw``; with ``expect``, it must be of that class (or a subclass)."""
    obj = _parse(raw)
    related = _related_id(obj)
    cls = _message_class(obj, related)
    if expect is not None and not issubclass(cls, expect):
        raise SchemaError(f"type: expected {_type_name(expect)}, got {_type_name(cls)}",
                          related_id=related)
    try:
        return cls.model_validate(obj)
    except ValidationError as err:
        raise SchemaError(_describe(err), related_id=related) from err


def _parse(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise OversizedMessageError(
            f"payload is {len(raw)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedMessageError(f"payload is not UTF-8 (bad byte at {err.start})") from err
    _check_depth(bytes(raw))  # a copy only when raw is not bytes already
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise MalformedMessageError(f"payload is not JSON: {err.msg} at char {err.pos}") from err
    except (ValueError, RecursionError) as err:
        raise MalformedMessageError(f"payload is not usable JSON: {_clip(str(err))}") from err
    if not isinstance(obj, dict):
        raise MalformedMessageError(f"payload is a JSON {type(obj).__name__}, not an object")
    if not _encodable(obj):
        raise MalformedMessageError("payload has a lone surrogate escape in a string")
    return obj


def _check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH; linear time, no recursion."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if _DEEP_RUN.search(brackets) or max(accumulate(
            memoryview(brackets.translate(_STEPS)).cast("b")), default=0) > MAX_JSON_DEPTH:
        raise MalformedMessageError(
            f"payload nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_clip(key)!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _encodable(obj: Any) -> bool:
    """Whether every string is valid Unicode (JSON escapes can encode lone surrogates)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _related_id(obj: dict[str, Any]) -> str | None:
    for key in ("command_id", "id"):
        value = obj.get(key)
        if isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return None


def _message_class(obj: dict[str, Any], related: str | None) -> type[Schema]:
    if "v" not in obj:
        raise SchemaError("v: field required", related_id=related)
    version = obj["v"]
    if type(version) is not int:
        raise SchemaError("v: must be an integer", related_id=related)
    if version != SCHEMA_VERSION:
        raise UnsupportedVersionError(
            f"schema version {version} is not supported (this agent speaks {SCHEMA_VERSION})",
            related_id=related)
    kind = obj.get("type")
    if kind == "command":
        action = obj.get("action")
        command_cls = COMMAND_CLASSES.get(action) if isinstance(action, str) else None
        if command_cls is None:
            raise SchemaError(f"action: must be one of {', '.join(COMMAND_CLASSES)}",
                              related_id=related)
        return command_cls
    up_cls = UP_MESSAGES.get(kind) if isinstance(kind, str) else None
    if up_cls is None:
        raise SchemaError(f"type: must be one of {', '.join([*UP_MESSAGES, 'command'])}",
                          related_id=related)
    return up_cls


def _describe(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    text = first["msg"].removeprefix("Value error, ")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return _clip(f"{where}: {text}") + more


def _type_name(cls: type[Schema]) -> str:
    return cls.__name__


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."
