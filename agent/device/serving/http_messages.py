"""HTTP/1.1 messages on a socket, for :mod:`agent.device.serving.http_transport`: a request
read from a buffered reader with bounds on its head and its body read in one buffer, a
response written with one ``sendmsg`` of its head and its body's own buffers.

A request the server must refuse without calling its application (a malformed or
over-long head, a chunked body, a body over the limit) is returned as the
:class:`HttpResponse` to send before the connection is closed; errors are
``{"error": "..."}`` JSON, the form of the Open Inference Protocol.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
SMALL_BODY = 64 * 1024  # a body up to this size is read as bytes, in one call

Body = bytes | Sequence[bytes | memoryview]


@dataclass
class HttpRequest:
    """One request: the method, the decoded path, the query, the headers (lower-case
    names) and the body (one buffer of exactly ``Content-Length`` bytes)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | bytearray | memoryview


@dataclass
class HttpResponse:
    """One answer. ``body`` is bytes or a sequence of buffers sent one after the other
    (anything with the buffer protocol: numpy arrays' ``.data``, views on shared memory);
    ``headers`` come with ``Content-Type`` (application/json unless given) and
    ``Content-Length``."""

    status: int
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[HttpRequest], HttpResponse]
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def refusal(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, error_body(message))


def read_request(reader: io.BufferedReader, sock: socket.socket, max_body_bytes: int, *,
                 idle_timeout_s: float | None = None, request_timeout_s: float | None = None
                 ) -> tuple[HttpRequest | HttpResponse | None, bool]:
    """The next request and whether the connection stays open after its answer; a
    refusal (an :class:`HttpResponse`, then close) for a request that must not reach the
    application; None when the client closed the connection between two requests.
    :class:`ConnectionResetError` when it closes mid-request, :class:`TimeoutError` when
    no request starts within ``idle_timeout_s`` (None: wait) or one that started does not
    arrive in full within ``request_timeout_s``."""
    _set_timeout(sock, idle_timeout_s)
    line = reader.readline(MAX_REQUEST_LINE + 1)
    while line in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 2.2)
        line = reader.readline(MAX_REQUEST_LINE + 1)
    if not line:
        return None, False
    _set_timeout(sock, request_timeout_s)
    if len(line) > MAX_REQUEST_LINE:
        return refusal(414, f"request line over {MAX_REQUEST_LINE} bytes"), False
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return refusal(400, f"malformed request line {line[:80]!r}"), False
    method, target, version = parts
    headers = _read_headers(reader)
    if isinstance(headers, HttpResponse):
        return headers, False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return refusal(411, "chunked request bodies are not accepted: send "
                            "Content-Length"), False
    body = _read_body(reader, sock, headers, max_body_bytes)
    if isinstance(body, HttpResponse):
        return body, False
    raw_path, _, raw_query = target.partition("?")
    request = HttpRequest(method=method.upper(),
                          path=unquote(raw_path) if "%" in raw_path else raw_path,
                          query=dict(parse_qsl(raw_query)) if raw_query else {},
                          headers=headers, body=body)
    return request, _keep_alive(version, headers.get("connection", ""))


def _read_headers(reader: io.BufferedReader) -> dict[str, str] | HttpResponse:
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = reader.readline(MAX_HEADER_BYTES + 1)
        if not line:
            raise ConnectionResetError("the client closed the connection mid-request")
        total += len(line)
        if total > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            return refusal(431, f"request header block over {MAX_HEADER_BYTES} bytes or "
                                f"{MAX_HEADERS} fields")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            return refusal(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value


def _read_body(reader: io.BufferedReader, sock: socket.socket, headers: dict[str, str],
               max_body_bytes: int) -> bytes | bytearray | HttpResponse:
    """Exactly Content-Length bytes into one buffer, refused before reading when too many."""
    text = headers.get("content-length")
    if text is None:
        return b""
    if not text.strip().isdigit():
        return refusal(400, f"Content-Length {text!r} is not a byte count")
    length = int(text)
    if length > max_body_bytes:
        return refusal(413, f"request body of {length} bytes is over the server's limit of "
                            f"{max_body_bytes} bytes")
    if headers.get("expect", "").lower() == "100-continue":
        send_all(sock, [memoryview(_CONTINUE)])
    if not length:
        return b""
    if length <= SMALL_BODY:  # from the reader's buffer, usually without a system call
        data = reader.read(length)
        if len(data) != length:
            raise ConnectionResetError("the client closed the connection mid-body")
        return data
    body = bytearray(length)
    view = memoryview(body)
    got = 0
    while got < length:
        count = reader.readinto(view[got:])
        if not count:
            raise ConnectionResetError("the client closed the connection mid-body")
        got += count
    return body


def _set_timeout(sock: socket.socket, timeout_s: float | None) -> None:
    if sock.gettimeout() != timeout_s:
        sock.settimeout(timeout_s)


def _keep_alive(version: str, connection: str) -> bool:
    tokens = {token.strip().lower() for token in connection.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def write_response(sock: socket.socket, response: HttpResponse, *, close: bool) -> None:
    """Send ``response``: its head and its body's buffers in one ``sendmsg`` (more only
    when the kernel takes part of it)."""
    buffers = _buffers(response.body)
    length = sum(view.nbytes for view in buffers)
    head = [_STATUS_LINES.get(response.status) or _status_line(response.status)]
    headers = response.headers
    if "Content-Type" not in headers:
        head.append("Content-Type: application/json\r\n")
    head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    head.append(f"Content-Length: {length}\r\n")
    if close:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    send_all(sock, [memoryview("".join(head).encode("latin-1")), *buffers])


def close_lingering(sock: socket.socket, timeout_s: float) -> None:
    """Close after a refusal sent before the request was read: stop writing, then discard
    what the client still sends for up to ``timeout_s``, so that the close does not reset
    the connection before the client has read the answer."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        scratch = bytearray(64 * 1024)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv_into(scratch):
                break
    sock.close()


def send_all(sock: socket.socket, buffers: list[memoryview]) -> None:
    """Write ``buffers`` with ``sendmsg``, resuming after partial writes."""
    while buffers:
        sent = sock.sendmsg(buffers)
        while sent:
            first = buffers[0]
            if sent >= first.nbytes:
                sent -= first.nbytes
                buffers.pop(0)
            else:
                buffers[0] = first[sent:]
                sent = 0


def _status_line(status: int) -> str:
    """``HTTP/1.1 <status> <phrase>``, the line ending included."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n"


def _buffers(body: Body) -> list[memoryview]:
    if isinstance(body, bytes | bytearray | memoryview):
        return [memoryview(body).cast("B")] if len(body) else []
    views = [memoryview(part) for part in body]
    return [view if view.format == "B" and view.ndim == 1 else view.cast("B")
            for view in views if view.nbytes]


_STATUS_LINES = {status.value: _status_line(status.value) for status in HTTPStatus}
