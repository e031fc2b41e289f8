"""The capture store: kept captures on disk inside a byte budget and a per-hour cap,
sealed into batches for the uploader. Thread-safe (one lock; file reads for
verification happen outside it).

Layout under its root (``<stateDir>/capture/``): ``open/`` (one crash-safe file per
stored capture, see :mod:`~agent.device.capture.store_files`), ``batches/<batch_id>/``
(sealed, see :mod:`~agent.device.capture.batches`) and ``quarantine/`` (corrupt batches
and files moved aside, never uploaded; the 4 newest are kept).

- :meth:`CaptureStore.put` refuses a capture whose tensors are over
  ``max_capture_bytes`` (or whose file is over the whole budget): ``too_large``; and one
  over the per-hour cap, a token bucket of ``max_per_hour`` refilled ``max_per_hour``
  per hour of the store's clock: ``dropped_rate``. Otherwise it seals the open captures
  first if this one would take them over the batch's ``max_captures`` or ``max_bytes``,
  makes room in the budget, writes the file crash-safe and only then returns True.
- The budget (``budget_bytes``) counts the real sizes of every file under ``open/``,
  ``batches/`` and ``quarantine/``, kept as a running sum (no directory walk per put).
  Room is made oldest first: quarantined entries, then the oldest sealed batch as a
  whole, then the oldest open captures; each evicted capture counts in
  ``dropped_budget``. The one exception is the batch the uploader is sending (the
  last one :meth:`CaptureStore.verify_batch` was called for, until
  :meth:`~CaptureStore.mark_uploaded`, :meth:`~CaptureStore.quarantine` or the next
  verify): deleting it under the uploader would waste the upload, so it is passed
  over, and that is why disk use may reach the budget plus one batch (a batch's
  captures are at most ``batch.max_bytes``, plus its manifest) but never more.
- Counters restart at 0 when the store opens, except what is derived from the disk
  (``bytes_on_disk``, ``open_captures``, ``sealed_batches``); the per-hour bucket starts
  full.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.core.durable import atomic_write, remove_file
from agent.device.capture.batches import BatchInfo, disk_bytes, new_batch_id, seal
from agent.device.capture.batches import verify_batch as _verify_dir
from agent.device.capture.config import BatchConfig
from agent.device.capture.rate_cap import HourlyCap
from agent.device.capture.record import Capture, encode
from agent.device.capture.store_files import (
    BATCHES_DIR,
    OPEN_DIR,
    QUARANTINE_DIR,
    OpenCapture,
    SealedBatch,
    drop_tree,
    open_name,
    quarantine_into,
)
from agent.device.capture.store_recovery import recover

__all__ = ["BatchInfo", "CaptureCounts", "CaptureStore"]

QUARANTINE_KEEP = 4
WriterCounts = Callable[[], "tuple[int, int, str | None]"]  # dropped_queue, errors, last


@dataclass(frozen=True)
class CaptureCounts:
    """The store's (and its writer's) counters, for the agent's metrics."""

    stored: int = 0  # puts that returned True
    dropped_rate: int = 0  # refused by the per-hour cap
    dropped_budget: int = 0  # stored, then evicted (oldest first) to make room
    dropped_queue: int = 0  # refused by the writer's full queue
    too_large: int = 0  # tensors over max_capture_bytes (or a file over the budget)
    quarantined: int = 0  # batches (or groups of stray files) moved to quarantine
    uploaded_batches: int = 0
    uploaded_captures: int = 0
    bytes_on_disk: int = 0
    open_captures: int = 0
    sealed_batches: int = 0
    write_errors: int = 0  # the writer's failed puts and seals (disk full, EIO, ...)
    last_write_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COUNTERS = ("stored", "dropped_rate", "dropped_budget", "too_large", "quarantined",
             "uploaded_batches", "uploaded_captures")


class CaptureStore:
    """``CaptureStore(root, thing=, model=, budget_bytes=, max_per_hour=,
    max_capture_bytes=, batch=)`` opens (and repairs, see
    :mod:`~agent.device.capture.store_recovery`) the store at ``root``. Raises OSError
    when ``root`` cannot be created or read."""

    def __init__(self, root: Path, *, thing: str, model: str, budget_bytes: int,
                 max_per_hour: int, max_capture_bytes: int, batch: BatchConfig,
                 clock: Callable[[], float] = time.time) -> None:
        if budget_bytes < 0 or max_per_hour < 0 or max_capture_bytes < 0:
            raise ValueError("capture limits must not be negative")
        self.root = root
        self.thing = thing
        self.model = model
        self.batch = batch
        self.max_capture_bytes = max_capture_bytes
        self._budget = budget_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._writer: WriterCounts | None = None
        self._pinned: str | None = None
        self._cap = HourlyCap(max_per_hour, clock())
        self._open: list[OpenCapture] = []
        self._sealed: dict[str, SealedBatch] = {}
        self._quarantine: list[tuple[str, int]] = []
        self._open_bytes = self._bytes = self._seq = 0
        self._stale = False  # a failed step left memory unlike the disk: re-read first
        with self._lock:
            self._counts["quarantined"] += self._reload()
            self._bound_quarantine()
            self._make_room(0)

    # -- state ------------------------------------------------------------------------

    def _reload(self) -> int:
        """Re-read the state from disk (at open, and after a failed seal or move);
        returns how many entries the recovery moved to quarantine."""
        found = recover(self.root, thing=self.thing, model=self.model, now=self._clock())
        self._open = found.open
        self._open_bytes = sum(c.size for c in self._open)
        self._sealed = {b.info.batch_id: b for b in found.sealed}
        self._quarantine = found.quarantined
        self._bytes = self._open_bytes + sum(b.disk for b in self._sealed.values()) + sum(
            size for _name, size in self._quarantine)
        self._seq = max((c.seq for c in self._open), default=-1) + 1
        if self._pinned not in self._sealed:
            self._pinned = None
        return found.moved

    def _dir(self, name: str) -> Path:
        return self.root / name

    def batch_dir(self, batch_id: str) -> Path:
        return self._dir(BATCHES_DIR) / batch_id

    def attach_writer(self, counts: WriterCounts) -> None:
        """Let :meth:`counts` carry the writer's ``dropped_queue`` and ``write_errors``."""
        self._writer = counts

    @property
    def budget_bytes(self) -> int:
        return self._budget

    @property
    def max_per_hour(self) -> int:
        return self._cap.per_hour

    def set_limits(self, *, budget_bytes: int | None = None,
                   max_per_hour: int | None = None) -> None:
        """Change the budget (evicting at once to fit) or the per-hour cap."""
        with self._lock:
            if budget_bytes is not None:
                if budget_bytes < 0:
                    raise ValueError("budget_bytes must not be negative")
                self._budget = budget_bytes
            if max_per_hour is not None:
                if max_per_hour < 0:
                    raise ValueError("max_per_hour must not be negative")
                self._cap.set_rate(max_per_hour, self._clock())
            self._make_room(0)

    def counts(self) -> CaptureCounts:
        queue, errors, last = self._writer() if self._writer is not None else (0, 0, None)
        with self._lock:
            return CaptureCounts(**self._counts, dropped_queue=queue, write_errors=errors,
                                 last_write_error=last, bytes_on_disk=self._bytes,
                                 open_captures=len(self._open),
                                 sealed_batches=len(self._sealed))

    # -- put --------------------------------------------------------------------------

    def _has_token(self) -> bool:
        if self._cap.available(self._clock()):
            return True
        self._counts["dropped_rate"] += 1
        return False

    def put(self, capture: Capture) -> bool:
        """Store ``capture`` (see the module's documentation): True once it is durable on
        disk, False when it was refused (counted). Raises OSError when the disk fails
        (nothing half-written is left; the capture is not stored)."""
        if capture.nbytes > self.max_capture_bytes:
            with self._lock:
                self._counts["too_large"] += 1
            return False
        with self._lock:
            if not self._has_token():
                return False
        data = encode(capture)  # outside the lock: the uploader and metrics go on
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._fresh()
            if not self._has_token():
                return False
            if len(data) > self._budget:
                self._counts["too_large"] += 1
                return False
            if self._open and (len(self._open) >= self.batch.max_captures
                               or self._open_bytes + len(data) > self.batch.max_bytes):
                self._seal_all()
            self._make_room(len(data))
            path = self._dir(OPEN_DIR) / open_name(self._seq, capture.capture_id)
            atomic_write(path, data)
            self._open.append(OpenCapture(
                seq=self._seq, path=path, meta=capture.meta(), size=len(data),
                sha256=digest, added=self._clock()))
            self._seq += 1
            self._open_bytes += len(data)
            self._bytes += len(data)
            self._cap.take(self._clock())
            self._counts["stored"] += 1
        return True

    # -- the budget -------------------------------------------------------------------

    def _make_room(self, need: int) -> None:
        try:
            self._evict(need)
        except OSError:
            self._reload_after_failure()
            raise

    def _evict(self, need: int) -> None:
        pinned = self._sealed[self._pinned].disk if self._pinned in self._sealed else 0
        while self._bytes - pinned + need > self._budget:
            if self._quarantine:
                name, size = self._quarantine.pop(0)
                drop_tree(self._dir(QUARANTINE_DIR) / name)
                self._bytes -= size
            elif oldest := next((i for i in self._sealed if i != self._pinned), None):
                batch = self._sealed.pop(oldest)
                drop_tree(self.batch_dir(oldest))
                self._bytes -= batch.disk
                self._counts["dropped_budget"] += batch.info.count
            elif self._open:
                capture = self._open.pop(0)
                remove_file(capture.path)
                self._open_bytes -= capture.size
                self._bytes -= capture.size
                self._counts["dropped_budget"] += 1
            else:
                return

    def _bound_quarantine(self) -> None:
        while len(self._quarantine) > QUARANTINE_KEEP:
            name, size = self._quarantine.pop(0)
            drop_tree(self._dir(QUARANTINE_DIR) / name)
            self._bytes -= size

    # -- sealing ----------------------------------------------------------------------

    def _due(self, now: float) -> bool:
        return bool(self._open) and (
            len(self._open) >= self.batch.max_captures
            or self._open_bytes >= self.batch.max_bytes
            or now - self._open[0].added >= self.batch.max_age_seconds)

    def _seal_next(self) -> str:
        """Seal the oldest open captures, up to one batch's limits (at least one)."""
        take, size = 0, 0
        for capture in self._open:
            if take and (take >= self.batch.max_captures
                         or size + capture.size > self.batch.max_bytes):
                break
            take, size = take + 1, size + capture.size
        now = self._clock()
        batch_id = new_batch_id(now)
        while batch_id in self._sealed:
            batch_id = new_batch_id(now)
        chunk = self._open[:take]
        try:
            info = seal(self.batch_dir(batch_id), [c.entry() for c in chunk],
                        thing=self.thing, model=self.model, created=now)
        except OSError:
            self._reload_after_failure()
            raise
        del self._open[:take]
        self._open_bytes -= size
        disk = disk_bytes(self.batch_dir(batch_id))
        self._bytes += disk - size
        self._sealed[batch_id] = SealedBatch(info=info, disk=disk)
        return batch_id

    def _reload_after_failure(self) -> None:
        self._stale = True
        self._fresh()

    def _fresh(self) -> None:
        """Re-read the disk if a failed step may have left memory unlike it."""
        if self._stale:
            try:
                self._counts["quarantined"] += self._reload()
            except OSError:
                return  # the disk still fails: the next call tries again
            self._stale = False

    def _seal_all(self) -> list[str]:
        sealed = []
        while self._open:
            sealed.append(self._seal_next())
        return sealed

    def seal_due(self) -> list[str]:
        """Seal the open captures if a batch limit is reached (count, bytes, or the
        oldest's age); returns the ids of the batches sealed."""
        with self._lock:
            self._fresh()
            now = self._clock()
            sealed = []
            while self._due(now):
                sealed.append(self._seal_next())
            if sealed:
                self._make_room(0)  # the manifests take a little room too
            return sealed

    def seal(self) -> str | None:
        """Seal everything open now (in batches of at most the limits); returns the last
        batch's id, None when nothing was open."""
        with self._lock:
            self._fresh()
            sealed = self._seal_all()
            if sealed:
                self._make_room(0)
            return sealed[-1] if sealed else None

    # -- batches, for the uploader ----------------------------------------------------

    def batches(self) -> list[BatchInfo]:
        """The sealed batches, oldest first."""
        with self._lock:
            self._fresh()
            return [batch.info for batch in self._sealed.values()]

    def verify_batch(self, batch_id: str) -> BatchInfo:
        """Verify the batch's files (see :func:`~agent.device.capture.batches.
        verify_batch`; raises :class:`~agent.device.capture.errors.CaptureFormatError`)
        and hold it against eviction while it is being sent. KeyError: no such batch."""
        with self._lock:
            if batch_id not in self._sealed:
                raise KeyError(batch_id)
            self._pinned = batch_id
        return _verify_dir(self.batch_dir(batch_id))

    def quarantine(self, batch_id: str, reason: str) -> None:
        """Move the batch to ``quarantine/`` with ``reason``; it is never uploaded."""
        with self._lock:
            batch = self._take(batch_id)
            try:
                target = quarantine_into(self._dir(QUARANTINE_DIR), batch_id, reason,
                                         directory=self.batch_dir(batch_id))
            except OSError:
                self._reload_after_failure()
                raise
            size = disk_bytes(target)
            self._quarantine.append((batch_id, size))
            self._bytes += size - batch.disk
            self._counts["quarantined"] += 1
            self._bound_quarantine()

    def mark_uploaded(self, batch_id: str) -> None:
        """The batch arrived: delete it here and count it. KeyError: no such batch."""
        with self._lock:
            batch = self._take(batch_id)
            try:
                drop_tree(self.batch_dir(batch_id))
            except OSError:
                self._reload_after_failure()
                raise
            self._bytes -= batch.disk
            self._counts["uploaded_batches"] += 1
            self._counts["uploaded_captures"] += batch.info.count

    def _take(self, batch_id: str) -> SealedBatch:
        if batch_id not in self._sealed:
            raise KeyError(batch_id)
        if self._pinned == batch_id:
            self._pinned = None
        return self._sealed.pop(batch_id)
