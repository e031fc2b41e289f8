"""The uploader thread: sealed capture batches leave the device, oldest first.

For each batch the store holds: verify it (a corrupt batch is quarantined, counted and
logged, never sent); if the destination already has it (its ``batch.json``: an upload
that was cut between the last file and the local delete), delete it locally; else send
every capture file, then ``manifest.jsonl``, then ``batch.json`` last, and only then
delete it locally. Each file is read from disk in chunks paced by the bandwidth
:class:`~agent.device.capture.throttle.Throttle`, and its SHA-256 checked against the
manifest before it is sent. A failure leaves the batch where it is and waits (backoff
doubling from ``retry_initial_s`` to ``retry_max_s``, with jitter); a success resets the
wait. While ``online()`` is False the uploader is paused and sends nothing. A kill at any
moment loses nothing: the batch is sent again, to the same names, on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.device.capture.batches import BATCH_FILE, MANIFEST_FILE, read_batch
from agent.device.capture.errors import CaptureError, CaptureFormatError, CaptureUploadError
from agent.device.capture.throttle import Throttle

if TYPE_CHECKING:
    from agent.device.capture.destinations import Destination

log = logging.getLogger("edge_agent.capture.upload")

CHUNK = 64 * 1024
POLL_S = 1.0  # how often an idle uploader looks for new batches
LOG_EVERY_S = 60.0  # the same failure is logged at most this often
JITTER = 0.2  # a wait is between (1 - JITTER) and 1 times the backoff


class BatchStore(Protocol):
    """What the uploader needs of the capture store."""

    def batches(self) -> list[Any]: ...
    def batch_dir(self, batch_id: str) -> Path: ...
    def verify_batch(self, batch_id: str) -> Any: ...
    def quarantine(self, batch_id: str, reason: str) -> Any: ...
    def mark_uploaded(self, batch_id: str) -> Any: ...


class _Stopped(Exception):
    """The uploader was stopped in the middle of a batch (the batch stays)."""


class _Gone(Exception):
    """The batch left the store while it was being sent (evicted to make room)."""


class BatchUploader:
    """``BatchUploader(store, destination, thing=..., bandwidth_bytes_per_second=...,
    retry_initial_s=..., retry_max_s=...)``; :meth:`start` / :meth:`stop` run it on a
    thread, :meth:`run_once` makes one pass (tests). ``clock`` is monotonic seconds;
    ``sleep`` (default: a wait that :meth:`stop` cuts short) paces the bandwidth and the
    idle and backoff waits."""

    def __init__(self, store: BatchStore, destination: Destination, *, thing: str,
                 bandwidth_bytes_per_second: int, retry_initial_s: float,
                 retry_max_s: float, online: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None,
                 rng: random.Random | None = None, poll_s: float = POLL_S) -> None:
        if retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("retry waits must be positive, the initial one at most the "
                             "longest")
        self.store = store
        self.destination = destination
        self.thing = thing
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s
        self._online = online
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._rng = rng or random.Random()
        self.throttle = Throttle(bandwidth_bytes_per_second, clock=clock, sleep=self._sleep)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0  # the current backoff step; 0 while uploads succeed
        self._wait_s = 0.0  # this failure's wait (the step with jitter)
        self._retry_at = 0.0
        self._paused = False
        self._failures_in_row = 0
        self._last_logged: tuple[str, float] | None = None
        self._counts: dict[str, Any] = {
            "batches_uploaded": 0, "captures_uploaded": 0, "bytes_uploaded": 0,
            "upload_failures": 0, "quarantined": 0, "last_upload_error": None}

    # -- the thread -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capture-upload",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current chunk (the batch being sent stays, sent again later)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self.destination.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # never let the thread die: log, wait, go on
                log.exception("capture uploader: unexpected error; trying again")
                self._sleep(self.poll_s)

    def _step(self) -> None:
        if not self._check_online():
            self._sleep(self.poll_s)
            return
        now = self._clock()
        if now < self._retry_at:
            self._sleep(min(self._retry_at - now, self.poll_s))
            return
        uploaded = self.run_once()
        with self._lock:
            failed = self._retry_at > self._clock()
        if uploaded == 0 and not failed:
            self._sleep(self.poll_s)

    def _check_online(self) -> bool:
        online = bool(self._online())
        with self._lock:
            if online and self._paused:
                log.info("capture uploader: online again, resuming uploads")
                self._retry_at = 0.0  # try at once
            elif not online and not self._paused:
                log.info("capture uploader: offline, uploads paused")
            self._paused = not online
        return online

    # -- one pass ---------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass over the store's batches, oldest first; stops at the first failure
        (the destination is likely down for the rest too) or when offline. Returns how
        many batches arrived."""
        uploaded = 0
        for info in self.store.batches():
            if self._stop.is_set() or not self._check_online():
                break
            batch_id = str(getattr(info, "batch_id", info))
            try:
                if self._upload_batch(batch_id):
                    uploaded += 1
            except _Stopped:
                break
            except _Gone:
                log.info("capture batch %s left the store before it was sent", batch_id)
            except CaptureUploadError as err:
                self._failed(batch_id, err)
                break
        return uploaded

    def _upload_batch(self, batch_id: str) -> bool:
        directory = self.store.batch_dir(batch_id)
        if not directory.is_dir():
            raise _Gone()
        try:
            self.store.verify_batch(batch_id)
        except CaptureFormatError as err:
            self._quarantine(batch_id, str(err))
            return False
        except (FileNotFoundError, KeyError) as err:
            raise _Gone() from err
        except CaptureError as err:
            log.warning("capture batch %s cannot be checked now: %s", batch_id, err)
            return False
        if self.destination.has_batch(batch_id):
            log.info("capture batch %s is already at %s; removing it here", batch_id,
                     self.destination.description)
            self._arrived(batch_id, captures=self._manifest_count(directory), nbytes=0)
            return True
        try:
            info, entries = read_batch(directory)
        except CaptureFormatError as err:
            if not directory.is_dir():
                raise _Gone() from err
            self._quarantine(batch_id, str(err))
            return False
        self.destination.begin_batch(batch_id)
        sent = 0
        try:
            for entry in entries:
                sent += self._send(batch_id, directory / entry["file"], entry["sha256"])
            sent += self._send(batch_id, directory / MANIFEST_FILE, info.manifest_sha256)
            sent += self._send(batch_id, directory / BATCH_FILE, None)
        except CaptureFormatError as err:
            self._quarantine(batch_id, str(err))
            return False
        self._arrived(batch_id, captures=len(entries), nbytes=sent)
        return True

    def _send(self, batch_id: str, path: Path, sha256: str | None) -> int:
        data = self._read_paced(path)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CaptureFormatError(f"{path.name} changed after the batch was checked")
        self.destination.put(batch_id, path.name, data)
        with self._lock:
            self._counts["bytes_uploaded"] += len(data)
        return len(data)

    def _read_paced(self, path: Path) -> bytes:
        chunks: list[bytes] = []
        try:
            with path.open("rb") as file:
                while chunk := file.read(CHUNK):
                    self.throttle.take(len(chunk))
                    if self._stop.is_set():
                        raise _Stopped()
                    chunks.append(chunk)
        except FileNotFoundError as err:
            raise _Gone() from err
        except OSError as err:
            raise CaptureUploadError(f"cannot read {path}: {err}", code="local_read") \
                from err
        return b"".join(chunks)

    @staticmethod
    def _manifest_count(directory: Path) -> int:
        try:
            return len(read_batch(directory)[1])
        except CaptureError:
            return 0

    # -- outcomes ---------------------------------------------------------------------

    def _arrived(self, batch_id: str, *, captures: int, nbytes: int) -> None:
        with contextlib.suppress(FileNotFoundError, KeyError):
            self.store.mark_uploaded(batch_id)  # evicted meanwhile: it arrived all the same
        with self._lock:
            self._counts["batches_uploaded"] += 1
            self._counts["captures_uploaded"] += captures
            recovered = self._failures_in_row
            self._backoff = self._wait_s = self._retry_at = 0.0
            self._failures_in_row = 0
            self._last_logged = None
        if recovered:
            log.info("capture uploads to %s work again after %d failed tries",
                     self.destination.description, recovered)
        log.debug("capture batch %s sent (%d captures, %d bytes)", batch_id, captures,
                  nbytes)

    def _quarantine(self, batch_id: str, reason: str) -> None:
        log.warning("capture batch %s is corrupt and is quarantined, not uploaded: %s",
                    batch_id, reason)
        try:
            self.store.quarantine(batch_id, reason)
        except (FileNotFoundError, KeyError):
            return
        with self._lock:
            self._counts["quarantined"] += 1

    def _failed(self, batch_id: str, err: CaptureUploadError) -> None:
        now = self._clock()
        with self._lock:
            if not err.retry:
                self._backoff = self.retry_max_s
            elif self._backoff <= 0:
                self._backoff = self.retry_initial_s
            else:
                self._backoff = min(self.retry_max_s, self._backoff * 2)
            self._wait_s = self._backoff * (1.0 - JITTER * self._rng.random())
            self._retry_at = now + self._wait_s
            self._failures_in_row += 1
            self._counts["upload_failures"] += 1
            self._counts["last_upload_error"] = f"{err.code}: {err}" if err.code else str(err)
            due = (self._last_logged is None or self._last_logged[0] != err.code
                   or now - self._last_logged[1] >= LOG_EVERY_S)
            if due:
                self._last_logged = (err.code, now)
            failures, wait = self._failures_in_row, self._wait_s
        if due:
            log.warning("capture batch %s not uploaded to %s (%d failed tries in a row; "
                        "next in %.1f s): %s", batch_id, self.destination.description,
                        failures, wait, err)

    def counts(self) -> dict[str, Any]:
        """The uploader's counts (for the metrics message). ``last_upload_error`` is the
        latest failure (``code: message``), kept after a success; ``backoff_s`` is the
        wait before the next try (0 while uploads succeed); ``paused``: offline."""
        with self._lock:
            return {**self._counts, "paused": self._paused,
                    "backoff_s": round(self._wait_s, 3)}

    def set_bandwidth(self, bytes_per_second: int) -> None:
        """Change the bandwidth while running (0: unlimited)."""
        self.throttle.set_rate(bytes_per_second)
