"""The capture store's files: what it keeps in memory of each, and the crash-safe steps
that create, move and delete them.

- A stored capture is ``open/<seq:012d>-<capture_id>.npz``, written by
  :func:`agent.core.durable.atomic_write` (a hidden ``.<name>.<pid>.tmp`` in the same
  directory, written, fsynced, renamed, the directory fsynced; on an error the temp file
  is removed) and deleted by :func:`agent.core.durable.remove_file`.
- A directory leaves by :func:`drop_tree`: renamed to a hidden ``.<name>.trash`` first
  (one atomic step), then deleted; a kill in between leaves a ``.trash`` that the next
  open deletes, never a half-deleted batch that looks like an interrupted seal.
- :func:`quarantine_into` moves files or a directory aside, with ``reason.txt``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.durable import TMP_SUFFIX, atomic_write, fsync_dir
from agent.device.capture.batches import BatchInfo, SealEntry

OPEN_DIR, BATCHES_DIR, QUARANTINE_DIR = "open", "batches", "quarantine"
REASON_FILE = "reason.txt"
TRASH_SUFFIX = ".trash"
OPEN_NAME = re.compile(r"^(\d{12})-([0-9a-f]{32})\.npz$")


@dataclass(frozen=True)
class OpenCapture:
    """A stored capture not sealed yet; ``added`` is the store clock's time it was put
    (for one found at open: its capture time, at most the clock's now)."""

    seq: int
    path: Path
    meta: dict[str, Any]
    sha256: str
    size: int
    added: float

    def entry(self) -> SealEntry:
        return SealEntry(path=self.path, meta=self.meta, sha256=self.sha256, size=self.size)


@dataclass(frozen=True)
class SealedBatch:
    """A sealed batch and the bytes its directory takes (captures, manifest, batch.json)."""

    info: BatchInfo
    disk: int


def open_name(seq: int, capture_id: str) -> str:
    return f"{seq:012d}-{capture_id}.npz"


def drop_tree(path: Path) -> None:
    """Delete the directory ``path``: rename to a ``.trash`` name, fsync, delete."""
    trash = path.with_name(f".{path.name}{TRASH_SUFFIX}")
    os.rename(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def quarantine_into(quarantine: Path, name: str, reason: str, *, directory: Path | None = None,
                    files: tuple[Path, ...] = ()) -> Path:
    """Move ``directory`` (renamed as a whole) or ``files`` into ``quarantine/<name>/``
    and write ``reason.txt`` there. Returns the quarantined directory. Raises OSError."""
    target = quarantine / name
    if directory is not None:
        os.rename(directory, target)
        fsync_dir(directory.parent)
    else:
        target.mkdir(exist_ok=True)
        for number, path in enumerate(files):
            os.rename(path, target / f"{number:04d}-{path.name.lstrip('.')}")
        for parent in {path.parent for path in files}:
            fsync_dir(parent)
    fsync_dir(quarantine)
    atomic_write(target / REASON_FILE, (reason.strip() + "\n").encode(errors="replace"))
    return target


def drop_leftovers(directory: Path) -> int:
    """Delete the temp files and ``.trash`` trees a kill left in ``directory``; returns
    how many."""
    removed = 0
    for path in directory.iterdir():
        if path.name.endswith(TRASH_SUFFIX) and path.name.startswith("."):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        elif path.name.endswith(TMP_SUFFIX) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_dir(directory)
    return removed
