"""Small state files that survive a crash at any instant."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _nothing() -> None:
    return None


def atomic_write(path: Path, data: bytes, *, before_rename: Callable[[], None] = _nothing,
                 after_rename: Callable[[], None] = _nothing) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename over, fsync the directory.

    A reader sees the old content or the new, never a torn mix. Raises OSError. The
    hooks run right before and right after the rename (crash points for tests).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    before_rename()
    os.replace(tmp, path)
    after_rename()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
