"""The event-stream RPC layer on top of the framing: message types, flags, headers.

Every message carries ``:message-type``, ``:message-flags`` and ``:stream-id`` (int32).
Stream 0 carries the connection's own messages (connect, connect-ack, ping, errors);
each operation the client starts gets the next stream id and the header
``operation``; replies on it are JSON with ``:content-type`` and ``service-model-type``.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from agent.tools.nucleus.eventstream import Header, HeaderType, Message

VERSION = "0.1.0"
MESSAGE_TYPE = ":message-type"
MESSAGE_FLAGS = ":message-flags"
STREAM_ID = ":stream-id"
VERSION_HEADER = ":version"
CONTENT_TYPE = ":content-type"
OPERATION = "operation"
SERVICE_MODEL_TYPE = "service-model-type"
JSON = "application/json"

CONNECTION_ACCEPTED = 0x1
TERMINATE_STREAM = 0x2


class MessageType(IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


def rpc_message(kind: MessageType, *, stream_id: int = 0, flags: int = 0,
                headers: tuple[Header, ...] = (), payload: bytes = b"") -> Message:
    return Message((*headers, Header.int32(MESSAGE_TYPE, kind),
                    Header.int32(MESSAGE_FLAGS, flags), Header.int32(STREAM_ID, stream_id)),
                   payload)


def json_message(kind: MessageType, *, stream_id: int, model_type: str | None,
                 body: dict[str, Any], flags: int = 0) -> Message:
    headers: tuple[Header, ...] = (Header.string(CONTENT_TYPE, JSON),)
    if model_type is not None:
        headers += (Header.string(SERVICE_MODEL_TYPE, model_type),)
    return rpc_message(kind, stream_id=stream_id, flags=flags, headers=headers,
                       payload=json.dumps(body).encode())


def int_header(message: Message, name: str) -> int | None:
    header = message.header(name)
    if header is None or header.type != HeaderType.INT32:
        return None
    assert isinstance(header.value, int)
    return header.value


def str_header(message: Message, name: str) -> str | None:
    header = message.header(name)
    if header is None or header.type != HeaderType.STRING:
        return None
    assert isinstance(header.value, str)
    return header.value
