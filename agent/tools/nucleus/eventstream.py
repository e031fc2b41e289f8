"""AWS event-stream framing: the binary messages Greengrass IPC travels in.

One message on the wire (all integers big-endian)::

    u32 total_len | u32 headers_len | u32 prelude_crc     prelude_crc = CRC32(first 8 bytes)
    headers (headers_len bytes) | payload | u32 message_crc   message_crc = CRC32(all before it)

A header is ``u8 name_len, name, u8 type, value``; the value's layout depends on the
type (see :class:`HeaderType`). awscrt has only the client side of this protocol, so
the emulated nucleus carries its own codec.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from enum import IntEnum

from agent.tools.nucleus.errors import FramingError

PRELUDE_LEN = 12
MIN_MESSAGE_LEN = PRELUDE_LEN + 4
MAX_MESSAGE_LEN = 16 * 1024 * 1024  # the CRT's own limit on one message
_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_CRC = struct.Struct(">I")

HeaderValue = bool | int | bytes | str | uuid.UUID


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8  # i64 milliseconds since the epoch
    UUID = 9


_INTS = {
    HeaderType.BYTE: struct.Struct(">b"),
    HeaderType.INT16: struct.Struct(">h"),
    HeaderType.INT32: struct.Struct(">i"),
    HeaderType.INT64: struct.Struct(">q"),
    HeaderType.TIMESTAMP: struct.Struct(">q"),
}
_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class Header:
    name: str
    type: HeaderType
    value: HeaderValue

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)


@dataclass(frozen=True)
class Message:
    headers: tuple[Header, ...]
    payload: bytes = b""

    def header(self, name: str) -> Header | None:
        for header in self.headers:
            if header.name == name:
                return header
        return None


def _encode_header(header: Header) -> bytes:
    name = header.name.encode()
    if not 0 < len(name) < 256:
        raise FramingError(f"header name {header.name!r} must be 1-255 bytes")
    out = bytes([len(name)]) + name + bytes([header.type])
    value = header.value
    if header.type in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return out
    if header.type in _INTS:
        assert isinstance(value, int)
        return out + _INTS[header.type].pack(value)
    if header.type in (HeaderType.BYTE_BUF, HeaderType.STRING):
        raw = value.encode() if isinstance(value, str) else value
        assert isinstance(raw, bytes)
        if len(raw) > 0xFFFF:
            raise FramingError(f"header {header.name!r} value is over 65535 bytes")
        return out + _U16.pack(len(raw)) + raw
    assert isinstance(value, uuid.UUID)
    return out + value.bytes


def encode(message: Message) -> bytes:
    headers = b"".join(_encode_header(h) for h in message.headers)
    total = PRELUDE_LEN + len(headers) + len(message.payload) + 4
    if total > MAX_MESSAGE_LEN:
        raise FramingError(f"message of {total} bytes is over the {MAX_MESSAGE_LEN} limit")
    lengths = _LENGTHS.pack(total, len(headers))
    head = lengths + _CRC.pack(zlib.crc32(lengths)) + headers + message.payload
    return head + _CRC.pack(zlib.crc32(head))


def _decode_headers(raw: bytes) -> tuple[Header, ...]:
    headers: list[Header] = []
    pos = 0
    try:
        while pos < len(raw):
            name_len = raw[pos]
            name = raw[pos + 1:pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind = HeaderType(raw[pos])
            pos += 1
            value: HeaderValue
            if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
                value = kind == HeaderType.BOOL_TRUE
            elif kind in _INTS:
                fmt = _INTS[kind]
                (value,) = fmt.unpack_from(raw, pos)
                pos += fmt.size
            elif kind in (HeaderType.BYTE_BUF, HeaderType.STRING):
                (size,) = _U16.unpack_from(raw, pos)
                data = raw[pos + 2:pos + 2 + size]
                if len(data) != size:
                    raise FramingError("header value runs past the headers")
                value = data.decode() if kind == HeaderType.STRING else data
                pos += 2 + size
            else:
                value = uuid.UUID(bytes=raw[pos:pos + 16])
                pos += 16
            if pos > len(raw):
                raise FramingError("header value runs past the headers")
            headers.append(Header(name, kind, value))
    except (IndexError, ValueError, struct.error) as err:
        raise FramingError(f"malformed headers: {err}") from err
    return tuple(headers)


class FrameDecoder:
    """Cuts a byte stream into messages, checking both CRCs."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= PRELUDE_LEN:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise FramingError("prelude CRC mismatch")
            if not MIN_MESSAGE_LEN <= total <= MAX_MESSAGE_LEN \
                    or headers_len > total - MIN_MESSAGE_LEN:
                raise FramingError(f"bad lengths: total {total}, headers {headers_len}")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = _CRC.unpack_from(frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise FramingError("message CRC mismatch")
            headers = _decode_headers(frame[PRELUDE_LEN:PRELUDE_LEN + headers_len])
            messages.append(Message(headers, frame[PRELUDE_LEN + headers_len:-4]))
        return messages
