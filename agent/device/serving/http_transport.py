"""A small HTTP/1.1 server for the local inference API: threaded, keep-alive, no copies of
large bodies.

Each connection gets its own thread (at most ``max_connections``; one more is answered
``503`` and closed). A request's head is read line by line from a buffered reader, with
bounds on the request line and on the header block (``431`` past them); its body, sized
by ``Content-Length``, is read straight into one buffer allocated for it, and a body over
``max_body_bytes`` is refused with ``413`` before a byte of it is read. Chunked request
bodies are refused (``411``). A response is written with one ``sendmsg`` of the head and
the body's buffers as they are (numpy arrays, views on shared memory), never joined.

Listeners: TCP (the loopback address unless told otherwise; port 0 picks a free port,
:attr:`HttpServer.port` says which) and/or a Unix socket (created with ``socket_mode``,
before it accepts connections; a stale socket file left by a dead process is replaced,
the file removed on :meth:`HttpServer.stop`). A client that goes away mid-request, or
stays silent past the idle timeout, only ends its own connection's thread.

Errors of the transport itself are answered as ``{"error": "..."}`` JSON, the form of
the Open Inference Protocol that the server carries.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import cast
from urllib.parse import parse_qsl, unquote

from agent.core.errors import ConfigError

log = logging.getLogger("edge_agent.http")

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
READ_BUFFER = 64 * 1024
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_BODY = 64 * 1024 * 1024

Body = bytes | Sequence[bytes | memoryview]


@dataclass
class HttpRequest:
    """One request: the method, the decoded path, the query, the headers (lower-case
    names) and the body (a buffer of exactly ``Content-Length`` bytes)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | bytearray | memoryview


@dataclass
class HttpResponse:
    """One answer. ``body`` is bytes or a sequence of buffers written one after the other
    (anything with the buffer protocol, e.g. numpy arrays); ``headers`` are added to
    ``Content-Type`` (application/json unless given) and ``Content-Length``."""

    status: int
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[HttpRequest], HttpResponse]


class _ClientGone(Exception):
    """The client closed the connection or stalled past the idle timeout."""


class _Refused(Exception):
    """A request the transport answers itself (status, message) and then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _status_line(status: int) -> str:
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


class HttpServer:
    """The HTTP/1.1 server that hands every request to ``app`` on its connection's thread."""

    def __init__(self, app: App, *, host: str | None = "127.0.0.1", port: int | None = 0,
                 socket_path: Path | None = None, socket_mode: int = 0o660,
                 max_body_bytes: int = DEFAULT_MAX_BODY, max_connections: int = 32,
                 name: str = "oip", idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        if host is None and socket_path is None:
            raise ConfigError("an HTTP server needs a TCP host or a Unix socket path")
        if max_connections < 1 or max_body_bytes < 0:
            raise ConfigError("max_connections must be >= 1 and max_body_bytes >= 0")
        self.app = app
        self.host = host
        self.port: int | None = port if host is not None else None
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.name = name
        self.idle_timeout_s = idle_timeout_s
        self.refused = 0  # connections answered 503: too many at once
        self._listeners: list[socket.socket] = []
        self._acceptors: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen; :class:`ConfigError` when an address cannot be used."""
        try:
            if self.host is not None:
                self._listeners.append(self._listen_tcp(self.host, self.port or 0))
            if self.socket_path is not None:
                self._listeners.append(self._listen_unix(self.socket_path))
        except BaseException:
            self._close_listeners()
            raise
        for listener in self._listeners:
            thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                      name=f"{self.name}-accept", daemon=True)
            thread.start()
            self._acceptors.append(thread)

    def stop(self) -> None:
        """Stop listening, end every connection, remove the Unix socket file."""
        self._stopping.set()
        self._close_listeners()
        for thread in self._acceptors:
            thread.join(timeout=5)
        self._acceptors.clear()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _thread in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _sock, thread in connections:
            thread.join(timeout=5)

    @property
    def connections(self) -> int:
        """Connections open now (each has its thread)."""
        with self._lock:
            return len(self._connections)

    def _listen_tcp(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as err:
            sock.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from err
        self.port = sock.getsockname()[1]
        return sock

    def _listen_unix(self, path: Path) -> socket.socket:
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            sock.bind(str(path))
            bound = True
            # Before listen(): no client can connect while the mode is still the umask's.
            os.chmod(path, self.socket_mode)
            sock.listen(128)
        except OSError as err:
            sock.close()
            if bound:
                path.unlink(missing_ok=True)
            raise ConfigError(f"cannot listen on {path}: {err.strerror or err}") from err
        return sock

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            sock.close()
        if self._listeners and self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._listeners.clear()

    # ---- connections ---------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, _address = listener.accept()
            except OSError as err:
                if self._stopping.is_set() or err.errno in (errno.EBADF, errno.EINVAL):
                    return
                log.warning("%s: accept failed: %s", self.name, err)
                continue
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                full = len(self._connections) >= self.max_connections
                if not full:
                    thread = threading.Thread(target=self._serve, args=(sock,),
                                              name=f"{self.name}-conn", daemon=True)
                    self._connections[sock] = thread
            if full:
                self.refused += 1
                self._refuse(sock)
                continue
            thread.start()

    def _refuse(self, sock: socket.socket) -> None:
        message = f"too many connections (at most {self.max_connections}): retry later"
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            self._write(sock, HttpResponse(503, error_body(message), {"Retry-After": "1"}),
                        close=True)
        sock.close()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(self.idle_timeout_s)
        reader = cast(io.BufferedReader, sock.makefile("rb", buffering=READ_BUFFER))
        try:
            while not self._stopping.is_set():
                try:
                    request, keep_alive = self._read_request(reader, sock)
                except _Refused as refused:
                    self._write(sock, HttpResponse(refused.status, error_body(refused.message)),
                                close=True)
                    return
                if request is None:
                    return
                response = self._call(request)
                self._write(sock, response, close=not keep_alive)
                if not keep_alive:
                    return
        except (_ClientGone, OSError):
            return  # the client went away (or stalled): nothing to answer
        finally:
            with self._lock:
                self._connections.pop(sock, None)
            with contextlib.suppress(OSError):
                reader.close()
            with contextlib.suppress(OSError):
                sock.close()

    def _call(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.app(request)
        except Exception as err:  # one request's failure, answered as such
            log.exception("%s: %s %s failed", self.name, request.method, request.path)
            return HttpResponse(500, error_body(f"internal error: {type(err).__name__}: {err}"))

    def _read_request(self, reader: io.BufferedReader, sock: socket.socket
                      ) -> tuple[HttpRequest | None, bool]:
        """The next request and whether the connection stays open after it; (None, False)
        when the client closed the connection between two requests."""
        line = reader.readline(MAX_REQUEST_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 2.2)
            line = reader.readline(MAX_REQUEST_LINE + 1)
        if not line:
            return None, False
        if len(line) > MAX_REQUEST_LINE:
            raise _Refused(414, "request line too long")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, f"malformed request line {line[:80]!r}")
        method, target, version = parts
        headers = _read_headers(reader)
        keep_alive = _keep_alive(version, headers.get("connection", ""))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _Refused(411, "chunked request bodies are not accepted: send Content-Length")
        body = self._read_body(reader, sock, headers)
        raw_path, _, raw_query = target.partition("?")
        return HttpRequest(method=method.upper(), path=unquote(raw_path),
                           query=dict(parse_qsl(raw_query)), headers=headers,
                           body=body), keep_alive

    def _read_body(self, reader: io.BufferedReader, sock: socket.socket,
                   headers: dict[str, str]) -> bytes | bytearray:
        text = headers.get("content-length")
        if text is None:
            return b""
        if not text.strip().isdigit():
            raise _Refused(400, f"Content-Length {text!r} is not a byte count")
        length = int(text)
        if length > self.max_body_bytes:
            raise _Refused(413, f"request body of {length} bytes is over the server's limit "
                                f"of {self.max_body_bytes} bytes")
        if headers.get("expect", "").lower() == "100-continue":
            send_all(sock, [memoryview(b"HTTP/1.1 100 Continue\r\n\r\n")])
        if not length:
            return b""
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        while got < length:
            count = reader.readinto(view[got:])
            if not count:
                raise _ClientGone()
            got += count
        return body

    def _write(self, sock: socket.socket, response: HttpResponse, *, close: bool) -> None:
        buffers = _buffers(response.body)
        length = sum(view.nbytes for view in buffers)
        head = [_status_line(response.status)]
        headers = response.headers
        if "Content-Type" not in headers:
            head.append("Content-Type: application/json\r\n")
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append(f"Content-Length: {length}\r\n")
        if close:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        send_all(sock, [memoryview("".join(head).encode("latin-1")), *buffers])


def _read_headers(reader: io.BufferedReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = reader.readline(MAX_HEADER_BYTES + 1)
        if not line:
            raise _ClientGone()
        total += len(line)
        if total > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            raise _Refused(431, f"request header block over {MAX_HEADER_BYTES} bytes or "
                                f"{MAX_HEADERS} fields")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise _Refused(400, f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value


def _keep_alive(version: str, connection: str) -> bool:
    tokens = {token.strip().lower() for token in connection.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file no process listens on; refuse to touch anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket: not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: a dead server's leftover
        return
    finally:
        probe.close()
    raise ConfigError(f"{path}: another server listens on this socket")
