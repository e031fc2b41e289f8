"""Unpack a package archive without trusting it.

Three passes, and nothing is written before the second one ends:

1. the gzip stream is decompressed to its end (CRC and length checked) and
   counted, so a truncated download or a decompression bomb is refused first;
2. every member header is checked as it is read: a safe relative path (no
   absolute path, no ``..``), a regular file or directory only (no symlink,
   hardlink, device, fifo, sparse file), per-member, total and count caps, no
   duplicate or conflicting names; where the standard library has it
   (Python >= 3.12, 3.11.4+, 3.10.12+) ``tarfile.data_filter`` must accept the
   member too;
3. the files are written by this module (``O_EXCL | O_NOFOLLOW``, mode 0644,
   never tarfile's extract) into a fresh temp dir beside the destination,
   digested while written, fsynced, and the temp dir is renamed into place
   only when complete. Any failure removes the temp dir.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent.core.crash import crash_point
from agent.core.durable import fsync_dir, write_chunk
from agent.device.packages.errors import (
    PackageFormatError,
    StagingIOError,
    TruncatedArchiveError,
    UnsafeArchiveError,
    staging_io_error,
)
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import path_problem

CHUNK = 256 * 1024
_TAR_OVERHEAD_PER_MEMBER = 4096  # header, a pax header, padding: generous
_DataFilter = Callable[[tarfile.TarInfo, str], tarfile.TarInfo]


@dataclass(frozen=True, kw_only=True)
class ExtractedFile:
    sha256: str
    size: int


def data_filter() -> _DataFilter | None:
    """The standard library's ``data`` extraction filter, where this Python has it."""
    found: _DataFilter | None = getattr(tarfile, "data_filter", None)
    return found


def extract_archive(archive: Path, dest: Path, *,
                    limits: PackageLimits) -> dict[str, ExtractedFile]:
    """Unpack ``archive`` (a tar.gz) into the new directory ``dest``; its files' digests."""
    if dest.exists():
        raise StagingIOError(f"{dest} already exists")
    check_gzip_stream(archive, max_bytes=limits.max_total_bytes
                      + (limits.max_members + 2) * _TAR_OVERHEAD_PER_MEMBER)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    except OSError as err:
        raise staging_io_error(err, f"creating a temp dir in {dest.parent}") from err
    try:
        with _open_tar(archive) as tar:
            members = _checked_members(tar, limits, tmp)
            files = _write_members(tar, members, tmp)
        try:
            os.rename(tmp, dest)
            fsync_dir(dest.parent)
        except OSError as err:
            raise staging_io_error(err, f"moving the unpacked files to {dest}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def check_gzip_stream(archive: Path, *, max_bytes: int) -> int:
    """Decompress ``archive`` to its end without writing; its uncompressed size."""
    total = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise UnsafeArchiveError(
                        f"{archive.name} unpacks to more than {max_bytes} bytes")
    except EOFError as err:
        raise TruncatedArchiveError(f"{archive.name} is truncated: {err}") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise PackageFormatError(f"{archive.name} is not a valid gzip file: {err}") from err
    except OSError as err:
        raise staging_io_error(err, f"reading {archive.name}") from err
    return total


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:gz")
    except (tarfile.ReadError, tarfile.CompressionError) as err:
        raise PackageFormatError(f"{archive.name} is not a tar.gz archive: {err}") from err


def _checked_members(tar: tarfile.TarFile, limits: PackageLimits,
                     dest: Path) -> list[tarfile.TarInfo]:
    """Every member, each refused as soon as its header is read if it is unsafe."""
    checker = data_filter()
    members: list[tarfile.TarInfo] = []
    files: set[str] = set()
    dirs: set[str] = set()
    total = 0
    while True:
        try:
            member = tar.next()
        except EOFError as err:
            raise TruncatedArchiveError(f"archive is truncated: {err}") from err
        except tarfile.TarError as err:
            raise PackageFormatError(f"unreadable tar header: {err}") from err
        if member is None:
            return members
        if len(members) >= limits.max_members:
            raise UnsafeArchiveError(f"more than {limits.max_members} members")
        name = member.name.rstrip("/") if member.isdir() else member.name
        _check_member(member, name, limits)
        total += member.size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(f"members total more than {limits.max_total_bytes} bytes")
        _check_names(name, member.isdir(), files, dirs)
        if checker is not None:
            try:
                checker(member, str(dest))
            except tarfile.TarError as err:  # FilterError and its subclasses
                raise UnsafeArchiveError(f"member {name!r}: refused by tarfile's data "
                                         f"filter: {err}") from err
        members.append(member)


def _check_member(member: tarfile.TarInfo, name: str, limits: PackageLimits) -> None:
    problem = path_problem(name)
    if problem is not None:
        raise UnsafeArchiveError(f"member {name!r}: {problem}")
    if member.issym():
        raise UnsafeArchiveError(f"member {name!r}: symlink (to {member.linkname!r})")
    if member.islnk():
        raise UnsafeArchiveError(f"member {name!r}: hardlink (to {member.linkname!r})")
    if member.isdev():
        raise UnsafeArchiveError(f"member {name!r}: device or fifo")
    if member.issparse():
        raise UnsafeArchiveError(f"member {name!r}: sparse file")
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"member {name!r}: unsupported member type {member.type!r}")
    if member.size > limits.max_member_bytes:
        raise UnsafeArchiveError(f"member {name!r}: oversized ({member.size} bytes; the cap "
                                 f"is {limits.max_member_bytes})")


def _check_names(name: str, is_dir: bool, files: set[str], dirs: set[str]) -> None:
    """Refuse a name seen before, or a file where another member needs a directory."""
    if name in files or (not is_dir and name in dirs):
        raise UnsafeArchiveError(f"member {name!r}: duplicate name")
    parents = name.split("/")[:-1]
    for depth in range(1, len(parents) + 1):
        parent = "/".join(parents[:depth])
        if parent in files:
            raise UnsafeArchiveError(f"member {name!r}: {parent!r} is a file in the archive")
        dirs.add(parent)
    if is_dir:
        dirs.add(name)
    else:
        files.add(name)


def _write_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo],
                   root: Path) -> dict[str, ExtractedFile]:
    written: dict[str, ExtractedFile] = {}
    for index, member in enumerate(members):
        name = member.name.rstrip("/")
        target = root.joinpath(*name.split("/"))
        try:
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # cannot happen for a regular file; be explicit
                    raise UnsafeArchiveError(f"member {name!r}: no data")
                written[name] = _write_file(source, target, member.size)
        except OSError as err:
            raise staging_io_error(err, f"writing {name}") from err
        except EOFError as err:
            raise TruncatedArchiveError(f"archive is truncated in {name!r}: {err}") from err
        except tarfile.TarError as err:
            raise TruncatedArchiveError(f"cannot read {name!r}: {err}") from err
        if index == 0:
            crash_point("mid-extract")
    try:
        for directory in sorted({p for p in root.rglob("*") if p.is_dir()} | {root}):
            fsync_dir(directory)
    except OSError as err:
        raise staging_io_error(err, "syncing the unpacked files") from err
    return written


def _write_file(source: IO[bytes], target: Path, size: int) -> ExtractedFile:
    digest = hashlib.sha256()
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        while chunk := source.read(CHUNK):
            write_chunk(fd, chunk)  # the one place extraction writes data; tests fail it
            digest.update(chunk)
            written += len(chunk)
        if written != size:
            raise TruncatedArchiveError(f"{target.name}: {written} of {size} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    return ExtractedFile(sha256=digest.hexdigest(), size=written)
