"""A package server made to hurt its client: a real ``http.server`` on 127.0.0.1 that
promises a huge body and then trickles it, or stalls after the headers, forever.

Every answer says ``Content-Length: 1 GiB``. ``/trickle`` sends ``trickle_bytes`` every
``trickle_every_s`` (a few hundred bytes a second); ``/stall`` sends nothing after the
headers; ``/steady`` sends ``steady_bytes_per_s`` (enough to pass a minimum rate, never
enough to finish). ``connections`` counts the requests, ``open`` the answers still being
sent; stopping the server ends every answer.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

GIB = 1024**3


class HostileServer:
    def __init__(self, *, trickle_bytes: int = 100, trickle_every_s: float = 0.25,
                 steady_bytes_per_s: int = 64 * 1024) -> None:
        self.trickle_bytes, self.trickle_every_s = trickle_bytes, trickle_every_s
        self.steady_bytes_per_s = steady_bytes_per_s
        self.connections = 0
        self.open = 0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._answer(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/{path.lstrip('/')}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.connections += 1
            self.open += 1
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/gzip")
            handler.send_header("Content-Length", str(GIB))
            handler.end_headers()
            handler.wfile.flush()
            if handler.path.startswith("/trickle"):
                self._send(handler, self.trickle_bytes, self.trickle_every_s)
            elif handler.path.startswith("/steady"):
                self._send(handler, self.steady_bytes_per_s // 10, 0.1)
            else:
                while not self._stop.wait(0.05) and not _hung_up(handler):
                    pass
        except OSError:
            pass  # the client gave up: what these tests want
        finally:
            with self._lock:
                self.open -= 1

    def _send(self, handler: BaseHTTPRequestHandler, size: int, every_s: float) -> None:
        chunk = b"\x1f" * size
        while not self._stop.wait(every_s):
            handler.wfile.write(chunk)
            handler.wfile.flush()
            with self._lock:
                self.sent += size


def _hung_up(handler: BaseHTTPRequestHandler) -> bool:
    """Whether the client closed its end (readable with nothing to read)."""
    sock = handler.connection
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def wait_closed(server: HostileServer, timeout_s: float = 10) -> bool:
    """Whether every answer of ``server`` ended (its client hung up) within the time."""
    deadline = time.monotonic() + timeout_s
    while server.open and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.open == 0
