"""What ``models import`` is given, opened without trusting it.

A source is a path, optionally ``TARGET=PATH`` to state the Neo target of what it holds:

- a directory, a ``.tar.gz``/``.tgz`` or a ``.zip``, laid out as SageMaker Neo delivers
  (``model-<target>.tar.gz``: the files at the top level) or with everything inside one
  top-level folder (what ``zip -r out.zip out/`` makes);
- a ``.onnx`` file, for the ONNX backend.

Archives are unpacked with the rules of package extraction
(:mod:`agent.device.packages.extract`), applied to tar and zip alike: the gzip stream is
read to its end first (truncation, bombs); every member must have a safe relative name
(:func:`~agent.device.packages.manifest.path_problem`: no absolute path, no ``..``) and be
a regular file or a directory (no symlink, hardlink, device, fifo, sparse or encrypted
member); member, total and count caps are :class:`~agent.device.packages.limits.PackageLimits`'
(what a device accepts in a package, which holds the same files); no duplicate names. Only
this module writes the files (``O_EXCL | O_NOFOLLOW``), into a fresh directory of the
importer's work area. Tar's leading ``./`` (``tar -C out -czf x.tgz .``) is accepted.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from agent.core.durable import write_chunk
from agent.device.packages.errors import PackageError
from agent.device.packages.extract import check_gzip_stream, data_filter
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import path_problem
from agent.tools.importing.errors import ImportSourceError

CHUNK = 256 * 1024
_TAR_OVERHEAD_PER_MEMBER = 4096
_TARGET_PREFIX = re.compile(r"^(?P<target>[A-Za-z][A-Za-z0-9_\-]*)=(?P<path>.+)$")
# What archivers add beside the content: not part of a Neo output.
_NOISE = ("__MACOSX", ".DS_Store")

SourceKind = Literal["neo", "onnx"]


@dataclass(frozen=True)
class SourceSpec:
    """One positional SOURCE: its path and the target stated with it, if any."""

    path: Path
    target: str | None = None

    @property
    def display(self) -> str:
        """How messages name the source: its file name, as the user knows it."""
        return self.path.name or str(self.path)


@dataclass(frozen=True)
class OpenedSource:
    """A source ready to read: ``root`` is the directory holding a Neo output's files, or
    the ``.onnx`` file itself."""

    spec: SourceSpec
    kind: SourceKind
    root: Path


def parse_source(text: str) -> SourceSpec:
    """``PATH`` or ``TARGET=PATH``; an existing path that contains ``=`` stays a path."""
    match = _TARGET_PREFIX.match(text)
    if match is None or Path(text).exists():
        return SourceSpec(path=Path(text))
    return SourceSpec(path=Path(match["path"]), target=match["target"])


def open_source(spec: SourceSpec, work_dir: Path, *,
                limits: PackageLimits | None = None) -> OpenedSource:
    """Open ``spec``; an archive is unpacked into a new directory under ``work_dir``."""
    path, caps = spec.path, limits or PackageLimits()
    name = path.name.lower()
    if not path.exists():
        raise ImportSourceError(f"{path}: no such file or directory")
    if path.is_dir():
        return OpenedSource(spec, "neo", content_root(path))
    if name.endswith(".onnx"):
        return OpenedSource(spec, "onnx", path)
    if name.endswith((".tar.gz", ".tgz")):
        dest = _fresh_dir(work_dir, spec)
        _unpack_tar(path, dest, caps)
        return OpenedSource(spec, "neo", content_root(dest))
    if name.endswith(".zip"):
        dest = _fresh_dir(work_dir, spec)
        _unpack_zip(path, dest, caps)
        return OpenedSource(spec, "neo", content_root(dest))
    raise ImportSourceError(f"{path}: not a directory, .tar.gz/.tgz, .zip or .onnx file")


def content_root(directory: Path) -> Path:
    """``directory``, or its one top-level folder when everything lies inside one."""
    entries = [e for e in directory.iterdir()
               if e.name not in _NOISE and not e.name.startswith("._")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return directory


def _fresh_dir(work_dir: Path, spec: SourceSpec) -> Path:
    for index in range(1000):
        candidate = work_dir / f"source-{index}"
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as err:
            raise ImportSourceError(f"{spec.display}: cannot unpack into {work_dir}: "
                                    f"{err.strerror or err}") from err
        return candidate
    raise ImportSourceError(f"{work_dir}: no free directory to unpack {spec.display}")


@dataclass
class _Seen:
    """Names and sizes met so far in one archive."""

    archive: str
    limits: PackageLimits
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    count: int = 0
    total: int = 0

    def refuse(self, name: str, why: str) -> ImportSourceError:
        return ImportSourceError(f"{self.archive}: member {name!r}: {why}")

    def admit(self, name: str, *, is_dir: bool, size: int) -> None:
        """Refuse ``name`` unless it is a safe, new, in-cap member."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise ImportSourceError(f"{self.archive}: more than {self.limits.max_members} "
                                    "members")
        problem = path_problem(name)
        if problem is not None:
            raise self.refuse(name, problem)
        if size > self.limits.max_member_bytes:
            raise self.refuse(name, f"oversized ({size} bytes; the cap is "
                                    f"{self.limits.max_member_bytes})")
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ImportSourceError(f"{self.archive}: members total more than "
                                    f"{self.limits.max_total_bytes} bytes")
        if name in self.files or (not is_dir and name in self.dirs):
            raise self.refuse(name, "duplicate name")
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self.files:
                raise self.refuse(name, f"{parent!r} is a file in the archive")
            self.dirs.add(parent)
        (self.dirs if is_dir else self.files).add(name)


def _member_name(raw: str, *, is_dir: bool) -> str | None:
    """The member's name without tar's leading ``./`` (None for the archive root itself)."""
    name = raw.rstrip("/") if is_dir else raw
    while name.startswith("./"):
        name = name[2:]
    return None if name in ("", ".") and is_dir else name


def _unpack_tar(archive: Path, dest: Path, limits: PackageLimits) -> None:
    try:
        check_gzip_stream(archive, max_bytes=limits.max_total_bytes
                          + (limits.max_members + 2) * _TAR_OVERHEAD_PER_MEMBER,
                          max_ratio=limits.max_ratio, ratio_floor_bytes=limits.ratio_floor_bytes)
    except PackageError as err:
        raise ImportSourceError(f"{archive.name}: {err}") from err
    seen = _Seen(archive.name, limits)
    checker = data_filter()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in _tar_members(tar, seen):
                name = _member_name(member.name, is_dir=member.isdir())
                if name is None:
                    continue
                _check_tar_type(member, name, seen)
                seen.admit(name, is_dir=member.isdir(), size=member.size)
                if checker is not None:
                    try:
                        checker(member, str(dest))
                    except tarfile.TarError as err:
                        raise seen.refuse(name, f"refused by tarfile's data filter: {err}") \
                            from err
                if member.isdir():
                    _make_dir(dest, name, seen)
                    continue
                stream = tar.extractfile(member)
                if stream is None:
                    raise seen.refuse(name, "no data")
                _write(stream, dest, name, member.size, seen)
    except (tarfile.TarError, EOFError) as err:
        raise ImportSourceError(f"{archive.name}: not a readable tar.gz archive: {err}") \
            from err


def _tar_members(tar: tarfile.TarFile, seen: _Seen) -> Iterator[tarfile.TarInfo]:
    """Members one header at a time, so an unsafe one is refused before later ones are read."""
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as err:
            raise ImportSourceError(f"{seen.archive}: unreadable tar header: {err}") from err
        if member is None:
            return
        yield member


def _check_tar_type(member: tarfile.TarInfo, name: str, seen: _Seen) -> None:
    if member.issym():
        raise seen.refuse(name, f"symlink (to {member.linkname!r})")
    if member.islnk():
        raise seen.refuse(name, f"hardlink (to {member.linkname!r})")
    if member.isdev():
        raise seen.refuse(name, "device or fifo")
    if member.issparse():
        raise seen.refuse(name, "sparse file")
    if not (member.isreg() or member.isdir()):
        raise seen.refuse(name, f"unsupported member type {member.type!r}")


def _unpack_zip(archive: Path, dest: Path, limits: PackageLimits) -> None:
    seen = _Seen(archive.name, limits)
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                name = _member_name(info.filename, is_dir=info.is_dir())
                if name is None:
                    continue
                _check_zip_type(info, name, seen)
                seen.admit(name, is_dir=info.is_dir(), size=info.file_size)
                if info.is_dir():
                    _make_dir(dest, name, seen)
                    continue
                with zipped.open(info) as stream:
                    _write(stream, dest, name, info.file_size, seen)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise ImportSourceError(f"{archive.name}: not a readable zip archive: {err}") from err


def _check_zip_type(info: zipfile.ZipInfo, name: str, seen: _Seen) -> None:
    if info.flag_bits & 0x1:
        raise seen.refuse(name, "encrypted")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise seen.refuse(name, "symlink")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise seen.refuse(name, "device, fifo or socket")
    if kind == stat.S_IFDIR and not info.is_dir():
        raise seen.refuse(name, "a directory entry without a trailing '/'")


def _make_dir(dest: Path, name: str, seen: _Seen) -> None:
    try:
        dest.joinpath(*name.split("/")).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise seen.refuse(name, f"cannot create it: {err.strerror or err}") from err


def _write(stream: IO[bytes], dest: Path, name: str, size: int, seen: _Seen) -> None:
    target = dest.joinpath(*name.split("/"))
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > size:
                    raise seen.refuse(name, f"holds more than the {size} bytes it declares")
                write_chunk(fd, chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise seen.refuse(name, f"cannot write it: {err.strerror or err}") from err
    if written != size:
        raise seen.refuse(name, f"truncated ({written} of {size} bytes)")
