"""Unpack a package archive without trusting it.

Two streaming passes over the file, and nothing is written before the first one ends:

1. the scan: the gzip stream is decompressed to its end (CRC and length checked) through
   :class:`~agent.device.packages.gunzip.BoundedGunzip`, which refuses a decompression
   bomb as it is read (total size, and compression ratio past a floor), while every tar
   header is checked as it is read (:mod:`agent.device.packages.members`): a safe,
   printable relative path within the name-length and depth limits, a regular file or
   directory only (no symlink, hardlink, device, fifo, sparse file, global or oversized
   pax header), per-member, total and count caps, no duplicate or conflicting names (also
   by case or Unicode normalisation), no directory member that holds no file; where the
   standard library has it (Python >= 3.12, 3.11.4+, 3.10.12+) ``tarfile.data_filter``
   must accept the member too. Members are counted while streaming: the first past the
   cap is refused without reading further;
2. the write: the same members, read again in order, are written by this module
   (``O_EXCL | O_NOFOLLOW``, mode 0644, never tarfile's extract) into a fresh temp dir
   beside the destination, digested while written, fsynced, and the temp dir is renamed
   into place only when complete. Any failure removes the temp dir.

``tarfile`` only ever reads forwards here (stream mode), so no header can send it back
to an earlier offset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent.core.crash import crash_point
from agent.core.durable import fsync_dir, write_chunk
from agent.device.packages.errors import (
    PackageError,
    PackageFormatError,
    StagingIOError,
    TruncatedArchiveError,
    UnsafeArchiveError,
    staging_io_error,
)
from agent.device.packages.gunzip import CHUNK, BoundedGunzip
from agent.device.packages.limits import PackageLimits
from agent.device.packages.members import MemberChecks, guarded_tarinfo, member_name, shown

_TAR_OVERHEAD_PER_MEMBER = 4096  # header, a pax header, padding: generous
_TAR_BUFFER = 64 * 1024
_DataFilter = Callable[[tarfile.TarInfo, str], tarfile.TarInfo]


@dataclass(frozen=True, kw_only=True)
class ExtractedFile:
    sha256: str
    size: int


def data_filter() -> _DataFilter | None:
    """The standard library's ``data`` extraction filter, where this Python has it."""
    found: _DataFilter | None = getattr(tarfile, "data_filter", None)
    return found


def unpacked_cap(limits: PackageLimits) -> int:
    """The most a package's tar stream may decompress to: its files plus tar's headers."""
    return limits.max_total_bytes + (limits.max_members + 2) * _TAR_OVERHEAD_PER_MEMBER


def extract_archive(archive: Path, dest: Path, *,
                    limits: PackageLimits) -> dict[str, ExtractedFile]:
    """Unpack ``archive`` (a tar.gz) into the new directory ``dest``; its files' digests."""
    if dest.exists():
        raise StagingIOError(f"{dest} already exists")
    scanned = _scan(archive, limits, dest)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    except OSError as err:
        raise staging_io_error(err, f"creating a temp dir in {dest.parent}") from err
    try:
        files = _write_members(archive, limits, scanned, tmp)
        try:
            os.rename(tmp, dest)
            fsync_dir(dest.parent)
        except OSError as err:
            raise staging_io_error(err, f"moving the unpacked files to {dest}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def check_gzip_stream(archive: Path, *, max_bytes: int, max_ratio: int | None = None,
                      ratio_floor_bytes: int = 0) -> int:
    """Decompress ``archive`` to its end without writing; its uncompressed size.

    Refused (:class:`ArchiveLimitError`) as soon as more than ``max_bytes`` came out or,
    past ``ratio_floor_bytes``, more than ``max_ratio`` bytes per compressed byte."""
    with BoundedGunzip(archive, max_bytes=max_bytes, max_ratio=max_ratio,
                       ratio_floor_bytes=ratio_floor_bytes) as stream:
        return stream.drain()


@contextmanager
def tar_stream(archive: Path, limits: PackageLimits) -> Iterator[tarfile.TarFile]:
    """``archive`` opened as a forward-only tar stream within ``limits``; a bad header or
    stream is one of the packages' typed errors, never another exception."""
    with BoundedGunzip(archive, max_bytes=unpacked_cap(limits),
                       size_limit_value=limits.max_total_bytes, max_ratio=limits.max_ratio,
                       ratio_floor_bytes=limits.ratio_floor_bytes) as stream, \
            _typed_errors(archive.name), \
            tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFFER,
                         tarinfo=guarded_tarinfo(limits)) as tar:
        yield tar


@contextmanager
def _typed_errors(label: str) -> Iterator[None]:
    """Translate what ``tarfile`` raises on hostile bytes into the packages' errors."""
    try:
        yield
    except PackageError:
        raise
    except EOFError as err:
        raise TruncatedArchiveError(f"{label} is truncated: {err}") from err
    except tarfile.ReadError as err:
        if "unexpected end" in str(err):
            raise TruncatedArchiveError(f"{label} is truncated: {err}") from err
        raise PackageFormatError(f"{label} is not a tar.gz archive: {err}") from err
    except tarfile.TarError as err:
        raise PackageFormatError(f"{label}: unreadable tar header: {err}") from err
    except OSError as err:
        raise staging_io_error(err, f"reading {label}") from err
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeError) as err:
        # tarfile's header parsers are not hardened against every malformed field.
        raise PackageFormatError(f"{label}: malformed tar header "
                                 f"({type(err).__name__}: {shown(str(err))})") from err


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members as they are read (tarfile keeps them: at most ``max_members`` + 1, as
    the checks refuse the next one)."""
    while (member := tar.next()) is not None:
        yield member


def _scan(archive: Path, limits: PackageLimits, dest: Path) -> list[tuple[str, int]]:
    """Pass 1: (name, size) of every member once all are checked and the stream is whole."""
    checker = data_filter()
    checks = MemberChecks(limits)
    scanned: list[tuple[str, int]] = []
    with tar_stream(archive, limits) as tar:
        for member in _members(tar):
            name = checks.admit(member)
            if checker is not None:
                try:
                    checker(member, str(dest))
                except tarfile.TarError as err:  # FilterError and its subclasses
                    raise UnsafeArchiveError(f"member {shown(name)}: refused by tarfile's data "
                                             f"filter: {err}") from err
            scanned.append((name if member.isreg() else f"{name}/", member.size))
        checks.finish()
        _drain(tar)
    return scanned


def _drain(tar: tarfile.TarFile) -> None:
    """Read what follows the last member to the end of the gzip stream (its CRCs)."""
    stream = tar.fileobj
    if stream is not None:
        while stream.read(CHUNK):
            pass


def _write_members(archive: Path, limits: PackageLimits, scanned: list[tuple[str, int]],
                   root: Path) -> dict[str, ExtractedFile]:
    """Pass 2: write the scanned members; the archive must read the same again."""
    written: dict[str, ExtractedFile] = {}
    with tar_stream(archive, limits) as tar:
        for index, member in enumerate(_members(tar)):
            name = member_name(member)
            seen = (name if member.isreg() else f"{name}/", member.size)
            if index >= len(scanned) or scanned[index] != seen:
                raise PackageFormatError(f"{archive.name} changed while it was unpacked")
            _write_member(tar, member, name, root, written)
            if index == 0:
                crash_point("mid-extract")
    try:
        for directory in sorted({p for p in root.rglob("*") if p.is_dir()} | {root}):
            fsync_dir(directory)
    except OSError as err:
        raise staging_io_error(err, "syncing the unpacked files") from err
    return written


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, root: Path,
                  written: dict[str, ExtractedFile]) -> None:
    target = root.joinpath(*name.split("/"))
    try:
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:  # cannot happen for a regular file; be explicit
            raise UnsafeArchiveError(f"member {shown(name)}: no data")
        written[name] = _write_file(source, target, member.size)
    except OSError as err:
        raise staging_io_error(err, f"writing {name}") from err


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
