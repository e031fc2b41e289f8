"""Safe extraction of hostile archives, crafted here with tarfile.

Each bad archive is refused with UnsafeArchiveError (or the truncation/format
error), before anything is written: the destination, the temp dir and the file
the archive aimed at are all absent afterwards. Every case runs twice: with the
standard library's ``data`` filter and with it missing (as on Python 3.10.11),
so the agent's own checks are proven to stand alone.
"""

from __future__ import annotations

import errno
import gzip
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from package_support import file_member, leftovers, pack, special_member

from agent.device.packages import extract as extract_module
from agent.device.packages.errors import (
    ArchiveLimitError,
    DiskFullError,
    PackageFormatError,
    TruncatedArchiveError,
    UnsafeArchiveError,
)
from agent.device.packages.extract import extract_archive
from agent.device.packages.limits import PackageLimits

LIMITS = PackageLimits(max_member_bytes=4096, max_total_bytes=10_000, max_members=8)
OK = [file_member("model.json", b"{}"), file_member("dlr/a-b/compiled.so", b"\x7fELF")]


@pytest.fixture(params=["stdlib-filter", "own-checks-only"])
def filter_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "own-checks-only":
        monkeypatch.setattr(extract_module, "data_filter", lambda: None)
    elif extract_module.data_filter() is None:
        pytest.skip("this Python has no tarfile.data_filter")
    yield request.param


def test_good_archive(tmp_path: Path, filter_mode: str) -> None:
    archive = pack(tmp_path / "good.tar.gz", [*OK, special_member("dlr/", tarfile.DIRTYPE)])
    files = extract_archive(archive, tmp_path / "out", limits=LIMITS)
    assert sorted(files) == ["dlr/a-b/compiled.so", "model.json"]
    assert files["model.json"].size == 2
    assert (tmp_path / "out" / "dlr" / "a-b" / "compiled.so").read_bytes() == b"\x7fELF"
    assert leftovers(tmp_path) == ["good.tar.gz", "out", "out/dlr", "out/dlr/a-b",
                                   "out/dlr/a-b/compiled.so", "out/model.json"]


BAD = {
    "traversal": ([file_member("../escaped", b"x")], "path traversal"),
    "nested-traversal": ([file_member("dlr/../../escaped", b"x")], "path traversal"),
    "absolute": ([file_member("/tmp/escaped-abs", b"x")], "absolute"),
    "symlink": ([special_member("dlr/link", tarfile.SYMTYPE, "/etc/passwd")], "symlink"),
    "hardlink": ([special_member("dlr/hard", tarfile.LNKTYPE, "model.json")], "hardlink"),
    "char-device": ([special_member("dlr/null", tarfile.CHRTYPE)], "device"),
    "block-device": ([special_member("dlr/sda", tarfile.BLKTYPE)], "device"),
    "fifo": ([special_member("dlr/pipe", tarfile.FIFOTYPE)], "fifo"),
    "oversized": ([file_member("dlr/big", b"x" * 5000)], "oversized"),
    "total": ([file_member(f"f{i}", b"x" * 4000) for i in range(3)], "total"),
    "too-many": ([file_member(f"f{i}", b"") for i in range(9)], "more than 8 members"),
    "duplicate": ([file_member("model.json", b"{}")], "duplicate"),
    "file-then-dir": ([file_member("model.json/x", b"")], "is a file"),
    "dot": ([file_member("./model2.json", b"")], "'.' component"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_hostile_archive_is_refused_before_writing(tmp_path: Path, filter_mode: str,
                                                   case: str) -> None:
    extra, message = BAD[case]
    archive = pack(tmp_path / "bad.tar.gz", [*OK, *extra])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        extract_archive(archive, work / "out", limits=LIMITS)
    assert leftovers(work) == []
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs").exists()


def test_truncated_and_garbage_archives(tmp_path: Path) -> None:
    data = os.urandom(3000)  # incompressible, so a cut lands in the middle of member data
    archive = pack(tmp_path / "a.tar.gz", [*OK, file_member("blob", data)])
    whole = archive.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 4):
        archive.write_bytes(whole[:cut])
        with pytest.raises(TruncatedArchiveError):
            extract_archive(archive, tmp_path / "out", limits=LIMITS)
    archive.write_bytes(b"not a gzip stream at all")
    with pytest.raises(PackageFormatError):
        extract_archive(archive, tmp_path / "out", limits=LIMITS)
    assert leftovers(tmp_path) == ["a.tar.gz"]


def test_decompression_bomb_is_refused_without_writing(tmp_path: Path) -> None:
    """Zeros after the end of the tar (headers within every cap): the stream's size limit."""
    limits = PackageLimits(max_member_bytes=10**9, max_total_bytes=100_000, max_members=8)
    tar = gzip.decompress(pack(tmp_path / "ok.tar.gz", OK).read_bytes())
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(tar + bytes(5_000_000), mtime=0))
    assert archive.stat().st_size < 20_000
    with pytest.raises(ArchiveLimitError, match="unpacks to more than") as refused:
        extract_archive(archive, tmp_path / "out", limits=limits)
    assert (refused.value.limit, refused.value.value) == ("max_total_bytes", 100_000)
    assert leftovers(tmp_path) == ["bomb.tar.gz", "ok.tar.gz"]


def test_a_member_bigger_than_the_total_is_refused_by_its_header(tmp_path: Path) -> None:
    limits = PackageLimits(max_member_bytes=10**9, max_total_bytes=100_000, max_members=8)
    archive = pack(tmp_path / "bomb.tar.gz", [file_member("zeros", bytes(5_000_000))])
    with pytest.raises(ArchiveLimitError, match="members total more than 100000 bytes"):
        extract_archive(archive, tmp_path / "out", limits=limits)
    assert leftovers(tmp_path) == ["bomb.tar.gz"]


def test_enospc_while_extracting_removes_the_temp_dir(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    archive = pack(tmp_path / "a.tar.gz", OK)
    real_write = extract_module.write_chunk
    calls = []

    def disk_fills(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(extract_module, "write_chunk", disk_fills)
    with pytest.raises(DiskFullError, match="No space left"):
        extract_archive(archive, tmp_path / "out", limits=LIMITS)
    assert leftovers(tmp_path) == ["a.tar.gz"]
