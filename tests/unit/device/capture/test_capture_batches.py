"""Sealed batches: every kind of corruption is named by verify_batch, and the store
quarantines such a batch (bounded), never listing it for upload again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.device.capture.batches import (
    BATCH_FILE,
    BATCH_ID,
    MANIFEST_FILE,
    new_batch_id,
    read_batch,
    verify_batch,
)
from agent.device.capture.config import BatchConfig
from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import Capture, decode, encode
from agent.device.capture.store import CaptureStore

NOW = 1_760_000_000.0


def make_capture(frame: int) -> Capture:
    return Capture(thing="dev-1", model="digits", rule="low_confidence",
                   inputs={"x": np.full((4, 4), frame, dtype=np.float32)},
                   outputs={"blue": {"scores": np.ones(10, dtype=np.float32)}},
                   variants={"blue": "v1"}, served_by="blue", frame_id=frame,
                   time=NOW + frame, score=0.3)


def sealed_store(root: Path, count: int = 4) -> tuple[CaptureStore, Path]:
    store = CaptureStore(root, thing="dev-1", model="digits", budget_bytes=1 << 22,
                         max_per_hour=1000, max_capture_bytes=1 << 20,
                         batch=BatchConfig(max_captures=64), clock=lambda: NOW)
    for frame in range(count):
        assert store.put(make_capture(frame))
    batch_id = store.seal()
    assert batch_id is not None
    return store, store.batch_dir(batch_id)


def rewrite_manifest(directory: Path, edit: Callable[[list[dict[str, object]]], None]) -> None:
    """Edit the manifest and re-digest it in batch.json, so only the edit is wrong."""
    lines = [json.loads(raw) for raw in (directory / MANIFEST_FILE).read_bytes().splitlines()]
    edit(lines)
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    (directory / MANIFEST_FILE).write_bytes(data)
    info = json.loads((directory / BATCH_FILE).read_text())
    info["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (directory / BATCH_FILE).write_text(json.dumps(info))


def first_file(directory: Path) -> Path:
    return directory / json.loads((directory / MANIFEST_FILE).read_bytes().splitlines()[0])[
        "file"]


def test_a_sealed_batch_verifies_and_reads_back(tmp_path: Path) -> None:
    store, directory = sealed_store(tmp_path)
    info = verify_batch(directory)
    assert BATCH_ID.match(info.batch_id) and info.count == 4 and info.thing == "dev-1"
    _info, lines = read_batch(directory)
    assert [line["frame_id"] for line in lines] == [0, 1, 2, 3]
    assert info.bytes == sum(p.stat().st_size for p in directory.glob("*.npz"))
    for line in lines:
        data = (directory / str(line["file"])).read_bytes()
        assert hashlib.sha256(data).hexdigest() == line["sha256"]
        assert decode(data).score == pytest.approx(0.3)
    assert store.verify_batch(info.batch_id) == info
    assert new_batch_id(NOW).startswith("20251009T")


def _digest(d: Path) -> None:
    (d / MANIFEST_FILE).write_bytes((d / MANIFEST_FILE).read_bytes().replace(b'"frame_id": 0',
                                                                             b'"frame_id": 9'))


def _sha(d: Path) -> None:
    data = bytearray(first_file(d).read_bytes())
    data[200] ^= 0xFF
    first_file(d).write_bytes(bytes(data))


def _size(d: Path) -> None:
    with first_file(d).open("ab") as file:
        file.write(b"\0")


def _missing(d: Path) -> None:
    first_file(d).unlink()


def _extra(d: Path) -> None:
    (d / "notes.txt").write_text("hello")


def _undecodable(d: Path) -> None:
    path = first_file(d)
    junk = b"PK\x03\x04 this is no capture"
    path.write_bytes(junk)

    def fix(lines: list[dict[str, object]]) -> None:
        lines[0]["sha256"] = hashlib.sha256(junk).hexdigest()
        old = int(str(lines[0]["bytes"]))
        lines[0]["bytes"] = len(junk)
        info = json.loads((d / BATCH_FILE).read_text())
        info["bytes"] += len(junk) - old
        (d / BATCH_FILE).write_text(json.dumps(info))

    rewrite_manifest(d, fix)


def _count(d: Path) -> None:
    info = json.loads((d / BATCH_FILE).read_text())
    info["count"] = 3
    (d / BATCH_FILE).write_text(json.dumps(info))


def _renamed(d: Path) -> None:
    info = json.loads((d / BATCH_FILE).read_text())
    info["batch_id"] = "20200101T000000Z-0123456789ab"
    (d / BATCH_FILE).write_text(json.dumps(info))


def _thing(d: Path) -> None:
    info = json.loads((d / BATCH_FILE).read_text())
    info["thing"] = "someone-else"
    (d / BATCH_FILE).write_text(json.dumps(info))


def _bad_json(d: Path) -> None:
    (d / BATCH_FILE).write_text('{"v": 1, "batch_id": ')


def _bad_manifest_json(d: Path) -> None:
    data = (d / MANIFEST_FILE).read_bytes() + b"{oops\n"
    (d / MANIFEST_FILE).write_bytes(data)
    info = json.loads((d / BATCH_FILE).read_text())
    info["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (d / BATCH_FILE).write_text(json.dumps(info))


def _other_file_name(d: Path) -> None:
    rewrite_manifest(d, lambda lines: lines[0].update(file="../../etc/passwd"))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest digest": (_digest, "manifest digest mismatch"),
    "file sha256": (_sha, "does not have the manifest's sha256"),
    "file size": (_size, "size mismatch"),
    "missing file": (_missing, "is missing"),
    "extra file": (_extra, "extra file 'notes.txt'"),
    "undecodable file": (_undecodable, "does not decode"),
    "edited count": (_count, "says count 3"),
    "edited batch id": (_renamed, "not its directory's"),
    "edited thing": (_thing, "is not the batch's 'someone-else'"),
    "bad batch.json": (_bad_json, "batch.json is not JSON"),
    "bad manifest line": (_bad_manifest_json, "line 5 is not JSON"),
    "file outside the batch": (_other_file_name, "is not"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_verify_names_each_corruption_and_the_store_quarantines_it(tmp_path: Path,
                                                                    corruption: str) -> None:
    corrupt, message = CORRUPTIONS[corruption]
    store, directory = sealed_store(tmp_path)
    corrupt(directory)
    with pytest.raises(CaptureFormatError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        verify_batch(directory)
    batch_id = directory.name
    with pytest.raises(CaptureFormatError):
        store.verify_batch(batch_id)
    store.quarantine(batch_id, f"check failed: {corruption}")
    assert store.batches() == [] and not directory.exists()
    moved = tmp_path / "quarantine" / batch_id
    assert (moved / "reason.txt").read_text() == f"check failed: {corruption}\n"
    counts = store.counts()
    assert counts.quarantined == 1 and counts.sealed_batches == 0
    assert counts.bytes_on_disk == sum(p.stat().st_size for p in tmp_path.rglob("*")
                                       if p.is_file())


def test_quarantine_keeps_the_four_newest(tmp_path: Path) -> None:
    store = CaptureStore(tmp_path, thing="dev-1", model="digits", budget_bytes=1 << 22,
                         max_per_hour=1000, max_capture_bytes=1 << 20,
                         batch=BatchConfig(max_captures=1), clock=lambda: NOW)
    for frame in range(7):
        store.put(make_capture(frame))
    store.seal()
    ids = [info.batch_id for info in store.batches()]
    assert len(ids) == 7
    for batch_id in ids:
        store.quarantine(batch_id, "corrupt")
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == sorted(ids[-4:])
    assert store.counts().quarantined == 7
    with pytest.raises(KeyError):
        store.quarantine(ids[0], "again")


def test_a_file_that_does_not_decode_is_refused_by_decode_itself(tmp_path: Path) -> None:
    data = encode(make_capture(1))
    with pytest.raises(CaptureFormatError):
        decode(data[: len(data) // 2])
