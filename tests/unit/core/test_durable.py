"""agent.core.durable: whole writes despite short os.write calls, and replace-by-rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.core.durable import (
    TMP_SUFFIX,
    atomic_write,
    atomic_write_text,
    remove_file,
    temp_path,
    write_chunk,
)


def one_byte_at_a_time(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make os.write write at most one byte per call; returns the list of call sizes."""
    real_write = os.write
    calls: list[int] = []

    def short_write(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", short_write)
    return calls


def test_write_chunk_loops_over_short_writes(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 3
    calls = one_byte_at_a_time(monkeypatch)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_chunk(fd, data)
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == data
    assert len(calls) == len(data)
    assert calls[0] == len(data) and calls[-1] == 1  # each call is offered what is left


def test_atomic_write_is_whole_despite_short_writes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    data = b'{"next": 12345}' * 50
    calls = one_byte_at_a_time(monkeypatch)
    atomic_write(target, data)
    assert target.read_bytes() == data
    assert len(calls) == len(data)


def test_atomic_write_replaces_by_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "pointer"
    target.write_bytes(b"old")
    old_inode = target.stat().st_ino
    seen: list[tuple[bytes, bool]] = []
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)

    def before() -> None:  # the new bytes are complete in the temp file, the old still named
        seen.append((target.read_bytes(), temp_path(target).read_bytes() == b"new"))

    def after() -> None:
        seen.append((target.read_bytes(), temp_path(target).exists()))

    atomic_write(target, b"new", before_rename=before, after_rename=after)

    tmp = temp_path(target)
    assert seen == [(b"old", True), (b"new", False)]
    assert renames == [(os.fspath(tmp), os.fspath(target))]
    assert tmp.parent == target.parent
    assert tmp.name.startswith(".") and tmp.name.endswith(TMP_SUFFIX)
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != old_inode  # a new file, not the old one rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer"]


def test_failed_write_leaves_the_old_content(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "manifest"
    target.write_bytes(b"old")

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"


def test_atomic_write_fsyncs_file_and_directory(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "file"
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write(target, b"data")  # creates the missing parent
    assert synced == ["file", "dir"]
    assert target.read_bytes() == b"data"


def test_atomic_write_text_and_remove_file(tmp_path: Path) -> None:
    target = tmp_path / "stamp"
    atomic_write_text(target, "digest\n")
    assert target.read_text() == "digest\n"
    assert remove_file(target) is True
    assert remove_file(target) is False
