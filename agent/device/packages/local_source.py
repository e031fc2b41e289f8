"""Open a package named by a ``file://`` URL or a path, only where packages may be.

A local source is read only when it is a regular file inside one of the allowed package
folders once every symbolic link and ``..`` of its path is resolved (the folders are
resolved the same way), never from ``/proc``, ``/sys`` or ``/dev``. The resolved path is
opened with ``O_NOFOLLOW`` and ``O_NONBLOCK`` (a FIFO cannot block the open), what was
opened must be a regular file, and the path the open file really has is checked against
the folders once more, so a link swapped in meanwhile gains nothing. ``allowed_dirs``
None reads any regular file outside those three trees: for the operator's own tools,
which name their own files; the agent always gives its folders (``packageDirs``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from agent.device.packages.errors import FetchError, PackageSourceNotAllowedError

PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
_OPEN_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
               | getattr(os, "O_CLOEXEC", 0))


def shown(path: str | Path) -> str:
    """A path as a log line or an ack may show it: control characters escaped."""
    return repr(str(path))[1:-1]


def open_local_package(path: str, allowed_dirs: Sequence[Path] | None) -> BinaryIO:
    """The regular file ``path`` names, open for reading; raise
    :class:`PackageSourceNotAllowedError` where it may not be read from, or
    :class:`FetchError` where it cannot be opened."""
    if "\x00" in path:
        raise PackageSourceNotAllowedError(f"{shown(path)}: a path with a NUL byte")
    real = Path(os.path.realpath(path))
    roots = None if allowed_dirs is None else [Path(os.path.realpath(d)) for d in allowed_dirs]
    _check_place(path, real, roots)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PackageSourceNotAllowedError(
                f"{shown(path)}: {shown(real)} became a symbolic link") from err
        raise FetchError(f"{shown(path)}: {err.strerror or err}") from err
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PackageSourceNotAllowedError(
                f"{shown(path)}: {shown(real)} is {_kind(mode)}, not a regular file")
        opened = _opened_path(fd)
        if opened is not None and opened != real:
            _check_place(path, opened, roots)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_place(path: str, real: Path, roots: list[Path] | None) -> None:
    for pseudo in PSEUDO_ROOTS:
        if real.is_relative_to(pseudo):
            raise PackageSourceNotAllowedError(
                f"{shown(path)}: {shown(real)} is in {pseudo}, never a package's place")
    if roots is None:
        return
    if not any(real != root and real.is_relative_to(root) for root in roots):
        folders = ", ".join(shown(root) for root in roots) or "none"
        raise PackageSourceNotAllowedError(
            f"{shown(path)}: resolves to {shown(real)}, outside the package folders "
            f"({folders}); packageDirs lists the folders a package may be read from")


def _opened_path(fd: int) -> Path | None:
    """The path an open file has now (Linux), or None where it cannot be told."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")
