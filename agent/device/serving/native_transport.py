"""A frame server on a Unix stream socket: the transport of the native protocol.

:class:`FrameServer` accepts connections on ``socket_path`` (created with
``socket_mode``, 0660 by default) and gives each its own thread, which reads one frame
(:mod:`agent.wire.inference_frames`), calls the handler and writes the frame it returns,
until the client closes. The handler is any ``Callable[[Frame], Frame]``:

- it gets the request frame (header and payload are views on the connection's receive
  buffer, valid until it returns) and returns the reply frame; the reply's payload may be
  several buffers, which are sent as they are (``sendmsg``), e.g. numpy arrays. Each
  connection is served by one thread, which writes the reply before it reads the next
  frame: a handler may reuse per-thread buffers for its replies;
- an :class:`~agent.core.errors.AgentError` it raises is answered with an ``ERROR`` frame
  carrying the error's type and message, and the connection goes on; a
  :class:`~agent.core.errors.RequestFormatError` (a frame that cannot be understood)
  closes the connection after its ``ERROR`` frame, and so does any other exception
  (logged, answered as a :class:`~agent.core.errors.ServingError`).

An echo server, the transport's own cost, is one line::

    FrameServer(lambda f: Frame(f.kind, f.request_id, f.header, f.payload), path).start()

A malformed prelude (magic, version, a length over ``max_header``/``max_payload``) is
answered with an ``ERROR`` frame and the connection closed; a client beyond
``max_connections`` gets a :class:`~agent.core.errors.ServerBusyError` frame and is
closed. A client that disconnects (also mid-request) only ends its own thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.core.errors import (
    AgentError,
    ConfigError,
    RequestFormatError,
    ServerBusyError,
    ServingError,
)
from agent.wire.inference_frame_io import FrameReader, send_frame
from agent.wire.inference_frames import MAX_HEADER, Frame, error_frame

log = logging.getLogger("edge_agent.native")

Handler = Callable[[Frame], Frame]
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, the last a NUL
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
STOP_JOIN_S = 10.0


class FrameServer:
    """Serves ``handler`` on a Unix socket, one thread per connection."""

    def __init__(self, handler: Handler, socket_path: Path | str, *, socket_mode: int = 0o660,
                 max_connections: int = 32, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_header: int = MAX_HEADER, name: str = "native") -> None:
        self.handler = handler
        self.socket_path = Path(socket_path)
        self.socket_mode = socket_mode
        self.max_connections = max_connections
        self.max_payload = max_payload
        self.max_header = max_header
        self.name = name
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self.accepted = 0
        self.refused = 0  # over max_connections

    # ---- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one nobody listens on) and start accepting.
        :class:`ConfigError` when the path is too long, is not a socket, or another server
        listens on it."""
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigError(f"socket path {path} is over {MAX_SOCKET_PATH} bytes (a Unix "
                              "socket's limit): choose a shorter working folder or name")
        _remove_stale(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, self.socket_mode)  # before listen(): nobody connects earlier
            listener.listen(max(16, self.max_connections))
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._stopping.clear()
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"{self.name}-accept")
        self._accepter.start()

    def stop(self) -> None:
        """Stop accepting, close every connection (a running request finishes first) and
        remove the socket file."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accepter is not None:
            self._accepter.join(STOP_JOIN_S)
            self._accepter = None
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_JOIN_S
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(FileNotFoundError):
            if self.socket_path.is_socket():
                self.socket_path.unlink()

    def __enter__(self) -> FrameServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connections(self) -> int:
        """Connections open now (each has its thread)."""
        with self._lock:
            return len(self._connections)

    # ---- connections ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                full = len(self._connections) >= self.max_connections
                if not full:
                    thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                              name=f"{self.name}-conn-{self.accepted}")
                    self._connections[conn] = thread
                    self.accepted += 1
            if full:
                self.refused += 1
                self._refuse(conn)
            else:
                thread.start()

    def _refuse(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            send_frame(conn, error_frame(0, ServerBusyError(
                f"the server has {self.max_connections} connections open: retry later"),
                closing=True))
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(conn, max_payload=self.max_payload, max_header=self.max_header)
        try:
            while not self._stopping.is_set():
                try:
                    frame = reader.read()
                except RequestFormatError as err:  # out of step: answer, then close
                    send_frame(conn, error_frame(0, err, closing=True))
                    return
                if frame is None:
                    return
                reply, keep = self._handle(frame)
                send_frame(conn, reply)
                if not keep:
                    return
        except OSError:
            return  # the client went away (also mid-request): only this connection ends
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _handle(self, frame: Frame) -> tuple[Frame, bool]:
        """The reply to ``frame``, and whether the connection goes on."""
        try:
            return self.handler(frame), True
        except RequestFormatError as err:
            return error_frame(frame.request_id, err, closing=True), False
        except AgentError as err:
            return error_frame(frame.request_id, err), True
        except Exception as err:  # the client gets an answer, the log the rest
            log.exception("native request of kind %d failed", frame.kind)
            return error_frame(frame.request_id, ServingError(
                f"internal error: {type(err).__name__}: {err}"), closing=True), False


def _remove_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse another file or a live server."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket: not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as err:
        if err.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ConfigError(f"{path}: cannot check the existing socket: {err}") from err
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    finally:
        probe.close()
    raise ConfigError(f"another server listens on {path}")
