"""File-system steps that survive a crash at any instant.

:func:`atomic_write` is the one way the agent, its tools and the reference-model builder
replace a whole file: the bytes go to a hidden temp file next to the target
(``.<name>.<pid>.tmp``), which is written to the end (:func:`write_chunk` loops over short
writes), fsynced, renamed over the target, and then the directory is fsynced so the
rename itself is on disk. A reader sees the old content or the new, never a torn mix;
after a power cut at most a temp file is left over (names end in :data:`TMP_SUFFIX`, for
a recovery sweep).

The other steps (:func:`fsync_dir`, :func:`remove_file`, :func:`fsync_tree`,
:func:`move_tree`) are the pieces the model store and package staging build on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"  # of atomic_write's hidden temp files: ``.<name>.<pid>.tmp``


def _nothing() -> None:
    return None


def temp_path(path: Path) -> Path:
    """The hidden temp file :func:`atomic_write` writes before renaming it to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_chunk(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``: makes the creations, renames and unlinks in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, before_rename: Callable[[], None] = _nothing,
                 after_rename: Callable[[], None] = _nothing, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename over, fsync the directory
    (unless ``sync_dir`` is False: a caller that fsyncs it once after several files).

    The parent directory is created if missing. A reader sees the old content or the
    new, never a torn mix. Raises OSError, and a write that fails leaves no temp file
    behind. The hooks run right before and right after the rename (crash points for
    tests).
    """
    tmp = temp_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the parent is missing: the only case worth a mkdir
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            write_chunk(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        before_rename()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    after_rename()
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    atomic_write(path, text.encode())


def remove_file(path: Path) -> bool:
    """Unlink ``path`` and fsync its directory; False if it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (bottom-up), so a marker written after
    it never survives a power cut that the content did not."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            file_path = os.path.join(dirpath, name)
            if os.path.islink(file_path):
                continue
            fd = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def move_tree(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``: a rename, or a copy then delete across devices."""
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)
