"""What keeps one download from running forever: its overall deadline, its minimum rate
and its cancellation, watched from a thread of its own.

The downloading thread checks :meth:`FetchWatch.check` between chunks; a stalled read
cannot, so the watch thread wakes a few times a second and, once the fetch must stop,
shuts down the connection's socket, which makes the blocked read return at once. The
download then raises the reason the watch recorded (a :class:`FetchLimitError` naming
the limit, or :class:`FetchCancelledError`), not the broken connection it caused.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from types import TracebackType

from agent.device.packages.errors import FetchCancelledError, FetchError, FetchLimitError

TICK_S = 0.25  # how often the watch looks: a cancel or a stall is noticed within this


class FetchWatch:
    """The limits of one download, judged while it runs; use it as a context manager."""

    def __init__(self, source: str, *, deadline_s: float | None = None,
                 min_bytes_per_s: float = 0, window_s: float = 30.0,
                 cancel: threading.Event | None = None) -> None:
        self.source = source
        self.deadline_s, self.min_bytes_per_s, self.window_s = deadline_s, min_bytes_per_s, window_s
        self.cancel = cancel
        self.received = 0  # bytes over every attempt (a restart does not take them back)
        self._started = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque(
            [(self._started, 0)])
        self._error: FetchError | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether any limit or a cancel event is watched (else nothing runs)."""
        return (self.deadline_s is not None or self.min_bytes_per_s > 0
                or self.cancel is not None)

    def __enter__(self) -> FetchWatch:
        if self.active:
            self._thread = threading.Thread(target=self._run, name="fetch-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    # ---- the downloading thread ---------------------------------------------------------

    def track(self, sock: socket.socket | None) -> None:
        """The socket of the connection now reading: shut down if the fetch must stop."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            stopped = self._error is not None
        if stopped:
            _shut(sock)

    def add(self, size: int) -> None:
        self.received += size

    def check(self) -> None:
        """Raise why the fetch must stop, if it must."""
        error = self._error or self._judge(time.monotonic())  # the rate: the watch's
        if error is not None:
            self._stop(error)
            raise error

    @property
    def stopped(self) -> FetchError | None:
        """Why the fetch was stopped, or None: a read failing after this is its effect."""
        return self._error

    def raise_stopped(self, cause: BaseException | None = None) -> None:
        """Raise why the fetch was stopped, if it was (a read cut short by the watch ends
        with an error or early; either is the watch's doing, not the server's)."""
        if self._error is not None:
            raise self._error from cause

    def wait(self, seconds: float) -> None:
        """Sleep between attempts, ending early (and raising) when the fetch must stop."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.cancel is not None:
                self.cancel.wait(min(left, TICK_S))
            else:
                time.sleep(min(left, TICK_S))
            self.check()

    # ---- the watch thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._done.wait(TICK_S):
            now = time.monotonic()
            self._samples.append((now, self.received))
            error = self._judge(now) or self._rate(now)
            if error is not None:
                self._stop(error)
                return

    def _judge(self, now: float) -> FetchError | None:
        if self.cancel is not None and self.cancel.is_set():
            return FetchCancelledError(
                f"{self.source}: cancelled by a newer command after {self.received} bytes")
        elapsed = now - self._started
        if self.deadline_s is not None and elapsed > self.deadline_s:
            return FetchLimitError(
                f"{self.source}: not downloaded within {self.deadline_s:g} s "
                f"({self.received} bytes came)", limit="fetch_deadline_s",
                value=self.deadline_s)
        return None

    def _rate(self, now: float) -> FetchError | None:
        """The minimum rate, judged on the watch thread alone (it owns the samples)."""
        if self.min_bytes_per_s <= 0 or now - self._started < self.window_s:
            return None
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self.window_s:
            samples.popleft()  # keep the newest sample at least a window old
        since, then = samples[0]
        span = now - since
        if span < self.window_s:
            return None
        rate = (self.received - then) / span
        if rate < self.min_bytes_per_s:
            return FetchLimitError(
                f"{self.source}: {rate:.0f} bytes/s over the last {span:.0f} s, "
                f"{self.received} bytes in all", limit="fetch_min_bytes_per_s",
                value=self.min_bytes_per_s)
        return None

    def _stop(self, error: FetchError) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
