"""File-system steps of the model store that carry its crash points.

Everything else the store writes goes through :mod:`agent.core.durable` (small whole
files with :func:`~agent.core.durable.atomic_write`, trees with ``fsync_tree`` and
``move_tree``). The two steps here are that module's sequences with named crash points
*inside* them, so tests can stop the store at each instant:

- :func:`switch_pointer`: between the fsync of the temp file and the rename, and between
  the rename and the directory fsync;
- :func:`discard_tree`: after a version's directory is renamed away, before it is deleted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.core.crash import crash_point
from agent.core.durable import atomic_write, fsync_dir


def switch_pointer(path: Path, data: bytes) -> None:
    """Replace the pointer file ``path`` atomically: temp, fsync, rename, fsync the directory."""
    atomic_write(path, data, before_rename=lambda: crash_point("before-pointer-rename"),
                 after_rename=lambda: crash_point("after-rename-before-dir-fsync"))


def discard_tree(path: Path, trash: Path) -> None:
    """Delete directory ``path`` so that a crash never leaves it half there under its name:
    rename to ``trash`` (a name recovery sweeps), fsync, crash point, then delete."""
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(path, trash)
    fsync_dir(path.parent)
    crash_point("mid-prune")
    shutil.rmtree(trash)
