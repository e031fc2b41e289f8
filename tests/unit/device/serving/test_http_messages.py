"""HTTP/1.1 requests read from a real socket pair: the path percent-decoded, the query
parsed, bodies of every size read whole, a body cut short refused; responses written
with their status line and headers."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from typing import cast

import pytest

from agent.device.serving.http_messages import (
    SMALL_BODY,
    HttpRequest,
    HttpResponse,
    read_request,
    write_response,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, io.BufferedReader]]:
    client, server = socket.socketpair()
    reader = cast(io.BufferedReader, server.makefile("rb", buffering=64 * 1024))
    yield client, server, reader
    reader.close()
    client.close()
    server.close()


def _post(target: str, body: bytes) -> bytes:
    return (f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def _send_in_thread(sock: socket.socket, data: bytes) -> None:
    threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()


@pytest.mark.parametrize("size", [0, 1, 300, SMALL_BODY, SMALL_BODY + 1, 3 * SMALL_BODY])
def test_bodies_of_every_size_are_read_whole(
        pair: tuple[socket.socket, socket.socket, io.BufferedReader], size: int) -> None:
    client, server, reader = pair
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    _send_in_thread(client, _post("/v2/models/m/infer", body) * 2)
    for _ in range(2):  # two on one connection: each ends where the next begins
        request, keep_alive = read_request(reader, server, 1 << 20)
        assert isinstance(request, HttpRequest) and keep_alive
        assert bytes(request.body) == body and request.headers["host"] == "x"


def test_the_path_is_decoded_and_the_query_parsed_only_when_there(
        pair: tuple[socket.socket, socket.socket, io.BufferedReader]) -> None:
    client, server, reader = pair
    client.sendall(_post("/v2/systemsharedmemory/region/a%20b%2Fc/status?x=1&y=%3D", b"")
                   + _post("/v2/health/ready", b""))
    first, _ = read_request(reader, server, 1024)
    second, _ = read_request(reader, server, 1024)
    assert isinstance(first, HttpRequest) and isinstance(second, HttpRequest)
    assert first.path == "/v2/systemsharedmemory/region/a b/c/status"
    assert first.query == {"x": "1", "y": "="}
    assert second.path == "/v2/health/ready" and second.query == {}


@pytest.mark.parametrize("size", [100, SMALL_BODY + 100])
def test_a_body_cut_short_is_a_reset(
        pair: tuple[socket.socket, socket.socket, io.BufferedReader], size: int) -> None:
    client, server, reader = pair
    client.sendall(_post("/v2/models/m/infer", bytes(size))[:-10])
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionResetError, match="mid-body"):
        read_request(reader, server, 1 << 20)


@pytest.mark.parametrize(("status", "line"), [
    (200, b"HTTP/1.1 200 OK\r\n"), (503, b"HTTP/1.1 503 Service Unavailable\r\n"),
    (599, b"HTTP/1.1 599 Unknown\r\n")])
def test_responses_carry_their_status_line_and_headers(
        pair: tuple[socket.socket, socket.socket, io.BufferedReader], status: int,
        line: bytes) -> None:
    client, server, _reader = pair
    write_response(server, HttpResponse(status, [b"ab", memoryview(b"cde")],
                                        {"Retry-After": "1"}), close=True)
    server.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    assert data == line + (b"Content-Type: application/json\r\nRetry-After: 1\r\n"
                           b"Content-Length: 5\r\nConnection: close\r\n\r\nabcde")
