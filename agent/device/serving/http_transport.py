"""A small HTTP/1.1 server for the local inference API: threaded, keep-alive, no copies of
large bodies.

Each connection gets its own thread (at most ``max_connections``; one more is answered
``503`` and closed). A request's head is read line by line from a buffered reader, with
bounds on the request line and on the header block (``431`` past them); its body, sized
by ``Content-Length``, is read in one piece (a small one as bytes from the reader's
buffer, a large one straight into one buffer allocated for it), and a body over
``max_body_bytes`` is refused with ``413`` before a byte of it is read. Chunked request
bodies are refused (``411``). A response is written with one ``sendmsg`` of the head and
the body's buffers as they are (numpy arrays, views on shared memory), never joined.

Listeners: TCP (the loopback address unless told otherwise; port 0 picks a free port,
:attr:`HttpServer.port` says which) and/or a Unix socket (created with ``socket_mode``,
before it accepts connections; a stale socket file left by a dead process is replaced,
the file removed on :meth:`HttpServer.stop`). A client that goes away mid-request, or
stalls in the middle of one for ``request_timeout_s``, only ends its own connection's
thread. Idle keep-alive connections stay open (as Triton keeps them, so a client that
sends one frame a minute is not cut off) unless ``idle_timeout_s`` says otherwise; the
connection limit bounds what they hold.

Errors of the transport itself are answered as ``{"error": "..."}`` JSON, the form of
the Open Inference Protocol that the server carries. The messages themselves are read
and written by :mod:`agent.device.serving.http_messages` (whose request and response
types this module also exports).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import cast

from agent.core.errors import ConfigError
from agent.device.serving.http_messages import (
    App,
    HttpRequest,
    HttpResponse,
    close_lingering,
    error_body,
    read_request,
    write_response,
)

log = logging.getLogger("edge_agent.http")

READ_BUFFER = 64 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 30.0
LINGER_S = 2.0
REFUSED_LINGER_S = 0.05
DEFAULT_MAX_BODY = 64 * 1024 * 1024

__all__ = ["HttpRequest", "HttpResponse", "HttpServer", "error_body"]


class HttpServer:
    """The HTTP/1.1 server that hands every request to ``app`` on its connection's thread."""

    def __init__(self, app: App, *, host: str | None = "127.0.0.1", port: int | None = 0,
                 socket_path: Path | None = None, socket_mode: int = 0o660,
                 max_body_bytes: int = DEFAULT_MAX_BODY, max_connections: int = 32,
                 name: str = "oip", idle_timeout_s: float | None = None,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> None:
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
        self.request_timeout_s = request_timeout_s
        self.refused = 0  # connections answered 503: too many at once
        self._listeners: list[socket.socket] = []
        self._acceptors: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._owns_socket_file = False  # ours to remove: we bound it

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
            self._owns_socket_file = True
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
        if self._owns_socket_file and self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
            self._owns_socket_file = False
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
                self._stopping.wait(0.1)  # e.g. out of file descriptors: do not spin
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
            write_response(sock, HttpResponse(503, error_body(message), {"Retry-After": "1"}),
                           close=True)
        close_lingering(sock, REFUSED_LINGER_S)  # short: this thread accepts the others

    def _serve(self, sock: socket.socket) -> None:
        reader = cast(io.BufferedReader, sock.makefile("rb", buffering=READ_BUFFER))
        try:
            while not self._stopping.is_set():
                request, keep_alive = read_request(
                    reader, sock, self.max_body_bytes, idle_timeout_s=self.idle_timeout_s,
                    request_timeout_s=self.request_timeout_s)
                if request is None:
                    return
                if isinstance(request, HttpResponse):  # refused by the transport
                    write_response(sock, request, close=True)
                    close_lingering(sock, LINGER_S)
                    return
                write_response(sock, self._call(request), close=not keep_alive)
                if not keep_alive:
                    return
        except OSError:
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
