"""The capture writer thread: takes captures from the inference threads without making
them wait, and stores them.

:meth:`CaptureWriter.offer` never blocks: it puts the capture on a bounded queue, or
counts it as ``dropped_queue`` and returns False when the queue is full (or the writer
is stopped). The thread calls :meth:`~agent.device.capture.store.CaptureStore.put` for
each capture and :meth:`~agent.device.capture.store.CaptureStore.seal_due` at least every
``seal_interval_s``. A failing store (disk full, EIO, a read-only directory) is counted
in ``write_errors`` with the last error's text, logged at most once a minute, and the
thread goes on: the agent never stops for capture.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.device.capture.record import Capture
from agent.device.capture.store import CaptureStore

log = logging.getLogger("edge_agent.capture.writer")

LOG_EVERY_S = 60.0


class CaptureWriter:
    """``CaptureWriter(store, queue_size)``; :meth:`start`, :meth:`offer`, :meth:`stop`.
    Attaches its counts to ``store`` (:meth:`CaptureStore.counts` carries them)."""

    def __init__(self, store: CaptureStore, queue_size: int, seal_interval_s: float = 1.0,
                 *, log_every_s: float = LOG_EVERY_S) -> None:
        if queue_size < 1 or seal_interval_s <= 0:
            raise ValueError("the queue holds at least one capture; the seal interval is "
                             "positive")
        self.store = store
        self.seal_interval_s = seal_interval_s
        self.log_every_s = log_every_s
        self._queue: queue.Queue[Capture | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # the counters only: never held while writing
        self._dropped_queue = 0
        self._errors = 0
        self._last_error: str | None = None
        self._logged_at: float | None = None
        self._unlogged = 0
        self._accepting = False
        self._thread: threading.Thread | None = None
        store.attach_writer(self.counts)

    def counts(self) -> tuple[int, int, str | None]:
        """(dropped_queue, write_errors, last_write_error)."""
        with self._lock:
            return self._dropped_queue, self._errors, self._last_error

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def offer(self, capture: Capture) -> bool:
        """Queue ``capture`` for the writer (never blocks); False when it was dropped."""
        if self._accepting:
            try:
                self._queue.put_nowait(capture)
                return True
            except queue.Full:
                pass
        with self._lock:
            self._dropped_queue += 1
        return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every capture queued so far is written (or failed); True if so."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Refuse new captures, write those queued, then stop the thread; True when it
        stopped within ``timeout_s``."""
        self._accepting = False
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        deadline = time.monotonic() + timeout_s
        while thread.is_alive():
            try:
                self._queue.put(None, timeout=0.05)  # after whatever is queued
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_seal = time.monotonic() + self.seal_interval_s
        while True:
            try:
                capture = self._queue.get(timeout=max(0.0, next_seal - time.monotonic()))
            except queue.Empty:
                capture = None
                stopping = False
            else:
                stopping = capture is None
                if capture is not None:
                    self._guard("store a capture", self.store.put, capture)
                self._queue.task_done()
            if stopping or time.monotonic() >= next_seal:
                self._guard("seal a batch", self.store.seal_due)
                next_seal = time.monotonic() + self.seal_interval_s
            if stopping:
                return

    def _guard(self, what: str, call: Callable[..., object], *args: object) -> None:
        try:
            call(*args)
        except Exception as err:  # any store failure: counted, the thread goes on
            self._failed(what, err)

    def _failed(self, what: str, err: Exception) -> None:
        text = f"cannot {what}: {type(err).__name__}: {err}"
        now = time.monotonic()
        with self._lock:
            self._errors += 1
            self._last_error = text
            due = self._logged_at is None or now - self._logged_at >= self.log_every_s
            if due:
                self._logged_at, unlogged, self._unlogged = now, self._unlogged, 0
            else:
                self._unlogged += 1
        if due:
            more = f" ({unlogged} more since the last report)" if unlogged else ""
            log.warning("capture store: %s%s", text, more)
