"""The package file: a reproducible tar.gz whose first member is ``manifest.json``.

Reproducible: the same inputs give the same bytes (members sorted, mtime 0,
uid/gid 0, no user names, mode 0644, no gzip file name or time), so a package
can be rebuilt and its digest compared. The manifest comes first so a device
reads and verifies it before unpacking anything else.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

from agent.device.packages.errors import (
    PackageFormatError,
    TruncatedArchiveError,
    UnsafeArchiveError,
)
from agent.device.packages.extract import tar_stream
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import MANIFEST_NAME
from agent.device.packages.members import shown


def write_archive(dest: Path, *, manifest: bytes, files: Sequence[tuple[str, Path]]) -> None:
    """Write ``dest``: the manifest, then ``files`` (archive name, source path) sorted by name."""
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with tmp.open("wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed, \
                    tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_member(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
                for name, source in sorted(files):
                    with source.open("rb") as handle:
                        tar.addfile(_member(name, source.stat().st_size), handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def read_manifest_member(archive: Path, *, max_bytes: int,
                         limits: PackageLimits | None = None) -> bytes:
    """The bytes of the archive's first member, which must be a regular ``manifest.json``.

    Reads only as far as the manifest (streaming, within ``limits``' header and ratio
    limits), so nothing else is decompressed before the signature is checked.
    """
    with tar_stream(archive, limits or PackageLimits()) as tar:
        first = tar.next()
        if first is None:
            raise PackageFormatError(f"{archive.name} is an empty archive")
        if first.name != MANIFEST_NAME:
            raise PackageFormatError(
                f"{archive.name}: first member is {shown(first.name)}, not {MANIFEST_NAME}")
        if not first.isreg():
            raise UnsafeArchiveError(f"{archive.name}: {MANIFEST_NAME} is not a regular file")
        if first.size > max_bytes:
            raise UnsafeArchiveError(f"{archive.name}: {MANIFEST_NAME} is {first.size} "
                                     f"bytes; the cap is {max_bytes}")
        handle = tar.extractfile(first)
        data = handle.read() if handle is not None else b""
    if len(data) != first.size:
        raise TruncatedArchiveError(f"{archive.name}: {MANIFEST_NAME} is cut short")
    return data
