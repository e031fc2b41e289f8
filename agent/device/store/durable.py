"""File-system steps of the model store, each safe against a crash at any instant.

Small whole files (manifest, marker, trial, rollback record) go through
:func:`agent.core.durable.atomic_write`; the two pointers too, with crash points
*inside* that sequence: between the fsync of the temp file and the rename, and between
the rename and the directory fsync.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from agent.core.crash import crash_point
from agent.core.durable import atomic_write

TMP_SUFFIX = ".tmp"  # of atomic_write's hidden temp files: ``.<name>.<pid>.tmp``


def write_chunk(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_pointer(path: Path, data: bytes) -> None:
    """Replace the pointer file ``path`` atomically: temp, fsync, rename, fsync the directory."""
    atomic_write(path, data, before_rename=lambda: crash_point("before-pointer-rename"),
                 after_rename=lambda: crash_point("after-rename-before-dir-fsync"))


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


def discard_tree(path: Path, trash: Path) -> None:
    """Delete directory ``path`` so that a crash never leaves it half there under its name:
    rename to ``trash`` (a name recovery sweeps), fsync, crash point, then delete."""
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(path, trash)
    fsync_dir(path.parent)
    crash_point("mid-prune")
    shutil.rmtree(trash)
