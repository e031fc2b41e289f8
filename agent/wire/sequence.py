"""A device's message sequence: increasing across restarts, power cuts and SIGKILL.

Numbers are reserved in blocks: before handing out ``n .. n+block-1`` from
memory, the counter durably records ``n+block`` (write a temp file, fsync,
rename over, fsync the directory). After a crash the next process starts at the
recorded value, so numbers may be skipped but are never repeated, and a block
costs one small write (flash wear stays negligible).

The controller judges staleness by this sequence and by its own receive time
(:mod:`agent.wire.senders`), never by ``sent_at``: a Raspberry Pi has no RTC.

``boot_id`` is a fresh uuid per counter, i.e. per agent start: cumulative
counters (latency buckets) restart with it. One process owns a sequence file.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

from agent.core.durable import atomic_write
from agent.wire.errors import StateFileError
from agent.wire.fields import MAX_SEQ

DEFAULT_BLOCK = 1000


def new_boot_id() -> str:
    return uuid.uuid4().hex


class SequenceCounter:
    """Hands out ``next()`` numbers that no earlier or later process on ``path`` repeats."""

    def __init__(self, *, path: Path, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = path
        self.block = block
        self.boot_id = new_boot_id()
        self._lock = threading.Lock()
        self._next = read_reserved(path)
        self._limit = self._next
        self._reserve()  # fail at start, not at the first message, if the file is unwritable

    def next(self) -> int:
        with self._lock:
            if self._next >= self._limit:
                self._reserve()
            value = self._next
            self._next += 1
            return value

    def _reserve(self) -> None:
        limit = min(self._next + self.block, MAX_SEQ)
        if limit <= self._next:
            raise StateFileError(f"{self.path}: sequence exhausted")
        write_reserved(self.path, limit)
        self._limit = limit


def read_reserved(path: Path) -> int:
    """The first number no process has handed out (0 for a new file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise StateFileError(f"{path}: {err.strerror or err}") from err
    try:
        value = json.loads(text)["next"]
    except (ValueError, KeyError, TypeError) as err:
        raise StateFileError(
            f"{path}: not a sequence file; refusing to restart numbering "
            f"(the controller would drop reports as stale)") from err
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise StateFileError(f"{path}: 'next' must be an integer in [0, 2**63)")
    return value


def write_reserved(path: Path, value: int) -> None:
    """Record ``value`` so that it survives a crash at any instant."""
    try:
        atomic_write(path, json.dumps({"next": value}).encode("ascii"))
    except OSError as err:
        raise StateFileError(f"{path}: cannot record the sequence: "
                             f"{err.strerror or err}") from err
