"""The emulated nucleus's event-stream RPC: framing, handshake, errors, robustness.

Byte-level cases use a raw socket; the handshake is also checked with the real SDK."""

from __future__ import annotations

import json
import socket
import struct
import uuid
import zlib
from collections.abc import Iterator

import pytest
from paths import REPO_ROOT

from agent.tools.nucleus import EmulatedNucleus, FramingError, Recipe
from agent.tools.nucleus.eventstream import (
    FrameDecoder,
    Header,
    HeaderType,
    Message,
    encode,
)
from agent.tools.nucleus.rpc import (
    CONNECTION_ACCEPTED,
    TERMINATE_STREAM,
    MessageType,
    int_header,
    rpc_message,
    str_header,
)

RECIPE = REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml"


class RawClient:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.decoder = FrameDecoder()
        self.queue: list[Message] = []

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def recv(self) -> Message | None:
        """The next message, or None once the nucleus closed the connection."""
        while not self.queue:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.queue.extend(self.decoder.feed(data))
        return self.queue.pop(0)

    def connect(self, token: str) -> Message | None:
        self.send(rpc_message(MessageType.CONNECT, headers=(Header.string(":version", "0.1.0"),),
                              payload=json.dumps({"authToken": token}).encode()))
        return self.recv()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def nucleus() -> Iterator[EmulatedNucleus]:
    with EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name="demo-1") as running:
        yield running


def test_codec_round_trips_every_header_type() -> None:
    message = Message((
        Header("t", HeaderType.BOOL_TRUE, True), Header("f", HeaderType.BOOL_FALSE, False),
        Header("b", HeaderType.BYTE, -5), Header("s", HeaderType.INT16, -300),
        Header("i", HeaderType.INT32, 70000), Header("l", HeaderType.INT64, -(2**40)),
        Header("buf", HeaderType.BYTE_BUF, b"\x00\xff"), Header("str", HeaderType.STRING, "é"),
        Header("ts", HeaderType.TIMESTAMP, 1700000000000),
        Header("id", HeaderType.UUID, uuid.UUID(int=7))), b"payload")
    wire = encode(message)
    total, _headers_len, prelude_crc = struct.unpack(">III", wire[:12])
    assert total == len(wire) and prelude_crc == zlib.crc32(wire[:8])
    assert struct.unpack(">I", wire[-4:])[0] == zlib.crc32(wire[:-4])
    decoder = FrameDecoder()
    assert decoder.feed(wire[:5]) == []  # split across reads
    assert decoder.feed(wire[5:] + wire) == [message, message]


@pytest.mark.parametrize("offset", [9, -1])  # prelude CRC, message CRC
def test_codec_rejects_a_bad_crc(offset: int) -> None:
    wire = bytearray(encode(Message((Header.string("a", "b"),), b"x")))
    wire[offset] ^= 0xFF
    with pytest.raises(FramingError, match="CRC"):
        FrameDecoder().feed(bytes(wire))


def test_handshake_accepts_the_svcuid_and_refuses_others(nucleus: EmulatedNucleus) -> None:
    good = RawClient(nucleus.socket_path)
    ack = good.connect(nucleus.svcuid)
    assert ack is not None and int_header(ack, ":message-type") == MessageType.CONNECT_ACK
    assert int_header(ack, ":message-flags") == CONNECTION_ACCEPTED
    assert int_header(ack, ":stream-id") == 0
    good.send(rpc_message(MessageType.PING, headers=(Header.string("x", "y"),), payload=b"hi"))
    pong = good.recv()
    assert pong is not None and int_header(pong, ":message-type") == MessageType.PING_RESPONSE
    assert str_header(pong, "x") == "y" and pong.payload == b"hi"
    good.close()

    bad = RawClient(nucleus.socket_path)
    ack = bad.connect("not-the-token")
    assert ack is not None and int_header(ack, ":message-type") == MessageType.CONNECT_ACK
    assert int_header(ack, ":message-flags") == 0
    bad.close()


def test_bad_crc_closes_the_connection_but_not_the_server(nucleus: EmulatedNucleus) -> None:
    client = RawClient(nucleus.socket_path)
    client.connect(nucleus.svcuid)
    wire = bytearray(encode(rpc_message(MessageType.PING)))
    wire[-1] ^= 0x01
    client.sock.sendall(bytes(wire))
    error = client.recv()
    assert error is not None and int_header(error, ":message-type") == MessageType.PROTOCOL_ERROR
    assert "CRC" in json.loads(error.payload)["message"]
    assert client.recv() is None  # closed
    client.close()

    again = RawClient(nucleus.socket_path)
    ack = again.connect(nucleus.svcuid)
    assert ack is not None and int_header(ack, ":message-flags") == CONNECTION_ACCEPTED
    again.close()


def test_garbage_and_messages_before_connect_are_protocol_errors(
        nucleus: EmulatedNucleus) -> None:
    early = RawClient(nucleus.socket_path)
    early.send(rpc_message(MessageType.PING))
    error = early.recv()
    assert error is not None and int_header(error, ":message-type") == MessageType.PROTOCOL_ERROR
    assert early.recv() is None
    early.close()

    garbage = RawClient(nucleus.socket_path)
    garbage.sock.sendall(b"\x00\x00\x00\x05" + b"\x00" * 20)
    error = garbage.recv()
    assert error is not None and int_header(error, ":message-type") == MessageType.PROTOCOL_ERROR
    garbage.close()


def test_operation_outside_the_model_gets_the_unsupported_operation_error(
        nucleus: EmulatedNucleus) -> None:
    client = RawClient(nucleus.socket_path)
    client.connect(nucleus.svcuid)
    client.send(rpc_message(MessageType.APPLICATION_MESSAGE, stream_id=1, headers=(
        Header.string("operation", "aws.greengrass#NoSuchThing"),
        Header.string(":content-type", "application/json")), payload=b"{}"))
    reply = client.recv()
    assert reply is not None
    assert int_header(reply, ":message-type") == MessageType.APPLICATION_ERROR
    assert int_header(reply, ":message-flags") == TERMINATE_STREAM
    assert int_header(reply, ":stream-id") == 1
    assert str_header(reply, "service-model-type") is None  # as the real RPC server answers
    assert json.loads(reply.payload)["error"] == "Unsupported Operation"
    client.close()


def test_sdk_client_connects_with_the_svcuid_only(nucleus: EmulatedNucleus) -> None:
    import awsiot.greengrasscoreipc as ggipc
    from awsiot.eventstreamrpc import AccessDeniedError

    client = ggipc.connect(ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid, timeout=5)
    client.close().result(5)
    with pytest.raises(AccessDeniedError):
        ggipc.connect(ipc_socket=nucleus.socket_path, authtoken="wrong-svcuid", timeout=5)


def test_socket_path_must_fit_a_unix_socket() -> None:
    from agent.tools.nucleus import NucleusError

    with pytest.raises(NucleusError, match="107 bytes"):
        EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name="t",
                        socket_path="/tmp/" + "x" * 120)
