"""The checks of a package archive's tar members, as each header is read.

:func:`guarded_tarinfo` is the ``tarinfo`` class ``tarfile`` reads headers with: it refuses,
before ``tarfile`` reads the data they announce, a pax extended header or GNU long name
longer than ``max_header_bytes`` (``tarfile`` would read it into memory whole), a global
pax header (it renames or resizes every later member), a negative size, and sparse files
(the old GNU ``S`` type and GNU sparse maps in pax headers, whose parsing reads an
unbounded map).

:class:`MemberChecks` admits each member: the count, the total size, the member's own
limits (:func:`check_member`: name length, depth, component length, printable UTF-8,
a safe relative path, a regular file or directory within the size cap), and its name
against every other: a duplicate is refused also where names differ only by case or by
Unicode normalisation (a device's file system may fold them into one), and a directory
member must hold a file (packages list files only). A name in an error message is
escaped (``repr``) and cut short, so a hostile name cannot forge log lines or report
fields.
"""

from __future__ import annotations

import tarfile
import unicodedata
from typing import ClassVar

from agent.device.packages.errors import ArchiveLimitError, UnsafeArchiveError
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import path_problem

_SHOWN_CHARS = 120
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                     tarfile.GNUTYPE_LONGLINK)


def shown(text: str) -> str:
    """``text`` fit for a message: escaped (no control character) and cut short."""
    cut = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS]
    return repr(cut) + ("..." if cut is not text else "")


def _sparse(name: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"member {shown(name)}: sparse file")


class GuardedTarInfo(tarfile.TarInfo):
    """A tar header that refuses, as it is parsed, what ``tarfile`` must not go on to read."""

    max_header_bytes: ClassVar[int] = PackageLimits().max_header_bytes

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> GuardedTarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.size < 0:
            raise UnsafeArchiveError(f"member {shown(info.name)}: negative size {info.size}")
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse(info.name)
        if info.type == tarfile.XGLTYPE:
            raise UnsafeArchiveError("a global pax header (it would rename or resize every "
                                     "later member)")
        if info.type in _EXTENDED_HEADERS and info.size > cls.max_header_bytes:
            raise ArchiveLimitError(f"an extended header (pax or GNU long name) of {info.size} "
                                    "bytes", limit="max_header_bytes",
                                    value=cls.max_header_bytes)
        return info

    # tarfile's parsers of GNU sparse maps in pax headers (formats 0.0, 0.1, 1.0): refused
    # before any map is read. Should a Python name them otherwise, check_member still
    # refuses the member for its GNU.sparse pax keys.
    def _proc_gnusparse_00(self, *_args: object) -> None:
        raise _sparse(self.name)

    def _proc_gnusparse_01(self, *_args: object) -> None:
        raise _sparse(self.name)

    def _proc_gnusparse_10(self, *_args: object) -> None:
        raise _sparse(self.name)


def guarded_tarinfo(limits: PackageLimits) -> type[GuardedTarInfo]:
    """The :class:`GuardedTarInfo` of ``limits``, for ``tarfile.open(tarinfo=...)``."""
    return type("GuardedTarInfo", (GuardedTarInfo,),
                {"max_header_bytes": limits.max_header_bytes})


def member_name(member: tarfile.TarInfo) -> str:
    """The member's path as the package names it (a directory without its trailing ``/``)."""
    return member.name.rstrip("/") if member.isdir() else member.name


def check_name(name: str, limits: PackageLimits) -> None:
    """Raise unless ``name`` is a short, printable, safe relative path within the limits."""
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if size > limits.max_name_bytes:
        raise ArchiveLimitError(f"member {shown(name)}: a {size}-byte name",
                                limit="max_name_bytes", value=limits.max_name_bytes)
    if not name.isprintable():
        raise UnsafeArchiveError(f"member {shown(name)}: a control, invisible or non-UTF-8 "
                                 "character in the name")
    parts = name.split("/")
    if len(parts) > limits.max_depth:
        raise ArchiveLimitError(f"member {shown(name)}: {len(parts)} levels deep",
                                limit="max_depth", value=limits.max_depth)
    longest = max(len(part.encode("utf-8")) for part in parts)
    if longest > limits.max_component_bytes:
        raise ArchiveLimitError(f"member {shown(name)}: a {longest}-byte path component",
                                limit="max_component_bytes", value=limits.max_component_bytes)
    problem = path_problem(name)
    if problem is not None:
        raise UnsafeArchiveError(f"member {shown(name)}: {problem}")


def check_member(member: tarfile.TarInfo, limits: PackageLimits) -> str:
    """The member's name, once its name, type and size are safe; else raise."""
    name = member_name(member)
    check_name(name, limits)
    if member.issym():
        raise UnsafeArchiveError(f"member {shown(name)}: symlink (to {shown(member.linkname)})")
    if member.islnk():
        raise UnsafeArchiveError(f"member {shown(name)}: hardlink (to {shown(member.linkname)})")
    if member.isdev():
        raise UnsafeArchiveError(f"member {shown(name)}: device or fifo")
    if member.issparse() or any(key.startswith("GNU.sparse.") for key in member.pax_headers):
        raise _sparse(name)
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"member {shown(name)}: unsupported member type "
                                 f"{member.type!r}")
    if member.size < 0:
        raise UnsafeArchiveError(f"member {shown(name)}: negative size {member.size}")
    if member.isreg() and member.size > limits.max_member_bytes:
        raise ArchiveLimitError(f"member {shown(name)}: oversized ({member.size} bytes)",
                                limit="max_member_bytes", value=limits.max_member_bytes)
    return name


def _folded(name: str) -> str:
    """The key two names share when a case-insensitive or normalising file system would
    take them for one: NFC of the case-folded NFC form."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


class MemberChecks:
    """Admit an archive's members one by one, refusing the first that breaks a rule."""

    def __init__(self, limits: PackageLimits) -> None:
        self.limits = limits
        self.count = 0
        self.total = 0
        self._paths: dict[str, tuple[str, bool]] = {}  # folded -> (name, is a directory)
        self._holding: set[str] = set()  # folded directories that hold a file
        self._dir_members: dict[str, str] = {}  # folded -> name, of directory members

    def admit(self, member: tarfile.TarInfo) -> str:
        """The member's name, if it may be unpacked; else raise."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise ArchiveLimitError(f"more than {self.limits.max_members} members",
                                    limit="max_members", value=self.limits.max_members)
        name = check_member(member, self.limits)
        if member.isreg():
            self.total += member.size
            if self.total > self.limits.max_total_bytes:
                raise ArchiveLimitError(
                    f"members total more than {self.limits.max_total_bytes} bytes",
                    limit="max_total_bytes", value=self.limits.max_total_bytes)
        self._admit_name(name, is_dir=member.isdir())
        return name

    def finish(self) -> None:
        """Raise if a directory member holds no file (no package lists an empty one)."""
        for key, name in self._dir_members.items():
            if key not in self._holding:
                raise UnsafeArchiveError(f"directory member {shown(name)} holds no file: a "
                                         "package lists files only")

    def _admit_name(self, name: str, *, is_dir: bool) -> None:
        parts = name.split("/")
        parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
        for parent in parents:
            seen = self._seen(name, parent)
            if seen is not None and not seen[1]:
                raise UnsafeArchiveError(f"member {shown(name)}: {shown(parent)} is a file "
                                         "in the archive")
            self._paths[_folded(parent)] = (parent, True)
        seen = self._seen(name, name)
        if seen is not None and not (is_dir and seen[1]):
            raise UnsafeArchiveError(f"member {shown(name)}: duplicate name")
        key = _folded(name)
        self._paths[key] = (name, is_dir)
        if is_dir:
            self._dir_members[key] = name
        else:
            self._holding.update(_folded(parent) for parent in parents)

    def _seen(self, member: str, path: str) -> tuple[str, bool] | None:
        """What ``path`` was when an earlier member named it (or a parent of it)."""
        seen = self._paths.get(_folded(path))
        if seen is not None and seen[0] != path:
            raise UnsafeArchiveError(
                f"member {shown(member)}: {shown(path)} and {shown(seen[0])} differ only by "
                "case or Unicode normalisation (one file on some file systems)")
        return seen
