"""A fuzz pass over the archive reader: whatever the bytes, ``read_manifest_member`` and
``extract_archive`` return or raise a :class:`PackageError` (the packages' typed errors),
never another exception, never hang, and leave nothing behind when they refuse.

Three sources of input: tar streams assembled from raw headers (valid checksums, hostile
fields: base-256 and negative sizes, every member type, pax records of every keyword
tarfile acts on, GNU long names, sparse maps); a real package's tar stream with bytes
changed, cut or inserted (gzipped again); and its gzip bytes changed directly. ``BRIEF``
runs in the default suite, ``LONG`` under ``-m slow``. Crashes a pass found are the
explicit regression tests at the end.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from package_support import leftovers

from agent.device.packages.archive import read_manifest_member, write_archive
from agent.device.packages.errors import PackageError, PackageFormatError
from agent.device.packages.extract import extract_archive
from agent.device.packages.limits import PackageLimits

LIMITS = PackageLimits(max_member_bytes=64 * 1024, max_total_bytes=256 * 1024, max_members=16,
                       ratio_floor_bytes=64 * 1024, max_header_bytes=4096, max_name_bytes=120,
                       max_depth=8)
EXAMPLE_DEADLINE_S = 5.0
SLOW_TIMEOUT_S = 1800  # LONG's 20,000 examples take up to about 400 s on 2 cores
PAX_KEYS = ["path", "linkpath", "size", "mtime", "uid", "gid", "uname", "hdrcharset",
            "comment", "GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.map",
            "GNU.sparse.name", "GNU.sparse.realsize", "GNU.sparse.size",
            "GNU.sparse.offset", "GNU.sparse.numbytes"]
EXTENDED = [tarfile.XHDTYPE, tarfile.XHDTYPE, tarfile.XHDTYPE, tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK]
TYPES = [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
         tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE,
         tarfile.GNUTYPE_SPARSE, b"Z", b"\xff", *EXTENDED]
NAMES = st.one_of(
    st.sampled_from(["manifest.json", "./manifest.json", "manifest.json/", "MANIFEST.JSON",
                     "model.json", "Model.json", "dlr/a.so", "dlr/", "a/../b", "/abs", "", ".",
                     "dlr//x", "caf\u00e9", "cafe\u0301", "x\ny", "\x1b[1m", "GNUSparseFile.0/s"]),
    st.text(max_size=30),
    st.lists(st.sampled_from(["a", "B", ".", "..", ""]), max_size=12).map("/".join))
NUMBERS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(
    ["", "-1", "0", "1", "1.5", "nan", "1e999", "0,4", "1,2,3", "-5,10", "BINARY", "x"]))

PAX_VALUES = st.one_of(NAMES.map(lambda name: name.encode("utf-8", "surrogatepass")),
                       NUMBERS.map(str.encode), st.binary(max_size=8))


def _size_field(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.ljust(12, b"\0")[:12]
    if 0 <= value < 8**11:
        return b"%011o\0" % value
    return (b"\x80" if value >= 0 else b"\xff") + (value % 256**11).to_bytes(11, "big")


def _header(name: str, kind: bytes, size: int | bytes, linkname: str = "") -> bytes:
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:100] = name.encode("utf-8", "surrogatepass")[:100].ljust(100, b"\0")
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = _size_field(size)
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[157:257] = linkname.encode("utf-8", "surrogatepass")[:100].ljust(100, b"\0")
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pax(records: list[tuple[str, bytes]], lie: int) -> bytes:
    out = b""
    for key, value in records:
        body = f" {key}=".encode() + value + b"\n"
        length = len(body) + len(str(len(body)))
        length += len(str(length)) - len(str(len(body)))
        out += str(length + lie).encode() + body
    return out


def _sized(draw: st.DrawFn, data: bytes) -> int | bytes:
    """Mostly the data's real size; else any number (base-256, negative) or raw bytes."""
    return draw(st.one_of(st.just(len(data)), st.just(len(data)), st.just(len(data)),
                          st.integers(-(2**66), 2**66), st.binary(min_size=12, max_size=12)))


def _block(header: bytes, data: bytes) -> bytes:
    return header + data + bytes(-len(data) % tarfile.BLOCKSIZE)


@st.composite
def extended_headers(draw: st.DrawFn) -> bytes:
    """A pax header (per member or global) or a GNU long name: what describes the next."""
    kind = draw(st.sampled_from(EXTENDED))
    if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
        data = draw(NAMES).encode("utf-8", "surrogatepass") + b"\0"
    else:
        records = draw(st.lists(st.tuples(st.sampled_from(PAX_KEYS), PAX_VALUES),
                                min_size=1, max_size=5))
        data = _pax(records, draw(st.sampled_from([0, 0, 0, -1, 1, -10**6])))
    return _block(_header("ext", kind, _sized(draw, data)), data)


@st.composite
def members(draw: st.DrawFn) -> bytes:
    """One member, often with an extended header before it."""
    prelude = draw(st.one_of(st.just(b""), extended_headers()))
    kind = draw(st.sampled_from(TYPES))
    data = draw(st.one_of(st.binary(max_size=1500), st.sampled_from(
        [b"1\n0\n4\n", b"99999999999\n", b"2\n0\n1\n", b"\n\n\n"]).map(
            lambda m: m.ljust(512, b"\0") + b"data")))
    header = _header(draw(NAMES), kind, _sized(draw, data), draw(NAMES))
    return prelude + _block(header, data)


MANIFEST_HEADER = _header("manifest.json", tarfile.REGTYPE, 2) + b"{}".ljust(512, b"\0")


@st.composite
def tar_streams(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(members(), max_size=6)))
    first = MANIFEST_HEADER if draw(st.booleans()) else b""
    end = draw(st.sampled_from([bytes(1024), b"", bytes(512), b"garbage"]))
    return first + body + end


@st.composite
def pax_described_members(draw: st.DrawFn) -> bytes:
    """The signed manifest, then one pax header and the member it describes: the part of
    tarfile's parser that acts on the most fields."""
    records = draw(st.lists(st.tuples(st.sampled_from(PAX_KEYS), PAX_VALUES), min_size=1,
                            max_size=4))
    pax = _pax(records, 0)
    data = draw(st.binary(max_size=600))
    member = _header(draw(NAMES), draw(st.sampled_from(TYPES)), len(data))
    return (MANIFEST_HEADER + _block(_header("pax", tarfile.XHDTYPE, len(pax)), pax)
            + _block(member, data) + bytes(1024))


def _good_tar(tmp: Path) -> bytes:
    files = []
    for name, data in [("model.json", b'{"name": "m"}'), ("dlr/a-b/compiled.so", b"\x7fELF" * 40),
                       ("dlr/a-b/compiled.params", bytes(range(256)) * 4)]:
        path = tmp / name.replace("/", "_")
        path.write_bytes(data)
        files.append((name, path))
    write_archive(tmp / "good.tar.gz", manifest=b'{"files": {}}', files=files)
    return gzip.decompress((tmp / "good.tar.gz").read_bytes())


GOOD_TAR = _good_tar(Path(tempfile.mkdtemp(prefix="fuzz-good-")))
EDITS = st.lists(st.tuples(st.integers(0, len(GOOD_TAR) - 1), st.binary(min_size=1, max_size=4),
                           st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=6)


def _edited(data: bytes, edits: list[tuple[int, bytes, str]]) -> bytes:
    out = bytearray(data)
    for position, value, how in edits:
        at = position % max(len(out), 1)
        if how == "set":
            out[at:at + len(value)] = value
        elif how == "insert":
            out[at:at] = value
        else:
            del out[at:at + len(value)]
    return bytes(out)


def _only_typed_errors(archive_bytes: bytes) -> None:
    """The property: each reader returns or raises a PackageError, in bounded time, and a
    refused extraction leaves nothing."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        root = Path(scratch)
        archive = root / "p.tar.gz"
        archive.write_bytes(archive_bytes)
        work = root / "work"
        work.mkdir()
        start = time.monotonic()
        with contextlib.suppress(PackageError):
            read_manifest_member(archive, max_bytes=4096, limits=LIMITS)
        try:
            files = extract_archive(archive, work / "out", limits=LIMITS)
        except PackageError:
            assert leftovers(work) == []
        else:
            assert set(files) <= {p for p in leftovers(work / "out")}
        assert time.monotonic() - start < EXAMPLE_DEADLINE_S


@BRIEF
@given(tar_streams(), st.sampled_from([6, 1]))
def test_crafted_tar_streams_raise_only_typed_errors(stream: bytes, level: int) -> None:
    _only_typed_errors(gzip.compress(stream, compresslevel=level, mtime=0))


@BRIEF
@given(pax_described_members())
def test_pax_described_members_raise_only_typed_errors(stream: bytes) -> None:
    _only_typed_errors(gzip.compress(stream, mtime=0))


@BRIEF
@given(EDITS)
def test_an_edited_real_package_raises_only_typed_errors(
        edits: list[tuple[int, bytes, str]]) -> None:
    _only_typed_errors(gzip.compress(_edited(GOOD_TAR, edits), mtime=0))


@BRIEF
@given(EDITS)
def test_edited_gzip_bytes_raise_only_typed_errors(edits: list[tuple[int, bytes, str]]) -> None:
    _only_typed_errors(_edited(gzip.compress(GOOD_TAR, mtime=0), edits))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@LONG
@given(tar_streams(), st.sampled_from([6, 1]))
def test_crafted_tar_streams_raise_only_typed_errors_long(stream: bytes, level: int) -> None:
    _only_typed_errors(gzip.compress(stream, compresslevel=level, mtime=0))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@LONG
@given(pax_described_members())
def test_pax_described_members_raise_only_typed_errors_long(stream: bytes) -> None:
    _only_typed_errors(gzip.compress(stream, mtime=0))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@LONG
@given(EDITS)
def test_an_edited_real_package_raises_only_typed_errors_long(
        edits: list[tuple[int, bytes, str]]) -> None:
    _only_typed_errors(gzip.compress(_edited(GOOD_TAR, edits), mtime=0))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@LONG
@given(EDITS)
def test_edited_gzip_bytes_raise_only_typed_errors_long(
        edits: list[tuple[int, bytes, str]]) -> None:
    _only_typed_errors(_edited(gzip.compress(GOOD_TAR, mtime=0), edits))


# ---- what the passes found: tarfile raised something else than its own errors ----------

def _one_pax_member(records: bytes) -> bytes:
    return gzip.compress(MANIFEST_HEADER + _block(_header("pax", tarfile.XHDTYPE, len(records)),
                                                  records)
                         + _block(_header("model.json", tarfile.REGTYPE, 2), b"{}")
                         + bytes(1024), mtime=0)


@pytest.mark.parametrize(("records", "raised"), [
    (_pax([("hdrcharset", b"\xbb")], 0), "UnicodeDecodeError"),  # decoded strictly
    (_pax([("GNU.sparse.realsize", b"")], 0), "ValueError"),  # int() of any value
    (_pax([("GNU.sparse.realsize", "ÁØç".encode())], 0), "ValueError"),
])
def test_tarfile_errors_on_malformed_pax_records_are_typed(tmp_path: Path, records: bytes,
                                                           raised: str) -> None:
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(_one_pax_member(records))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(PackageFormatError, match=f"malformed tar header \\({raised}"):
        extract_archive(archive, work / "out", limits=LIMITS)
    assert leftovers(work) == []
    _only_typed_errors(archive.read_bytes())
