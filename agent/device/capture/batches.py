"""A sealed batch of captures on disk: how it is written, read and verified.

A batch is a directory named by its ``batch_id`` (``<UTC YYYYmmddTHHMMSSZ>-<12 hex>``:
unique, sortable by time) holding the capture files ``<capture_id>.npz``,
``manifest.jsonl`` (one JSON object per capture, sorted by capture time:
``{"capture_id", "file", "sha256", "bytes", **Capture.meta()}``) and ``batch.json``
(``{"v": 1, "batch_id", "thing", "model", "created", "count", "bytes",
"manifest_sha256"}``, ``bytes`` the sum of the capture files' sizes).

:func:`seal` writes a batch in place, in the directory that is its final name: the
directory is created (and its parent fsynced), the capture files are renamed in, the
manifest is written atomically, and ``batch.json`` is written atomically LAST. So a
directory with ``batch.json`` is complete, and one without it is a seal that was cut
short: every file in it is a whole capture (renamed in after it was fsynced), and
sealing it again (:func:`seal` over the same directory) completes it. Nothing is ever
half a capture.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.durable import atomic_write, fsync_dir
from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import decode

BATCH_FILE = "batch.json"
MANIFEST_FILE = "manifest.jsonl"
FORMAT_VERSION = 1
BATCH_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}$")
_CAPTURE_FILE = re.compile(r"^([0-9a-f]{32})\.npz$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_INFO_KEYS = frozenset(("v", "batch_id", "thing", "model", "created", "count", "bytes",
                        "manifest_sha256"))
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_BATCH_FILE_BYTES = 64 * 1024


def new_batch_id(now: float) -> str:
    """A fresh batch id for a batch sealed at Unix time ``now``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(max(0.0, now)))
    return f"{stamp}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class BatchInfo:
    """A sealed batch, as its ``batch.json`` says; ``bytes`` counts its capture files."""

    batch_id: str
    thing: str
    model: str
    created: float
    count: int
    bytes: int
    manifest_sha256: str


@dataclass(frozen=True)
class SealEntry:
    """One capture going into a batch: its file now, its metadata, digest and size."""

    path: Path
    meta: Mapping[str, Any]
    sha256: str
    size: int

    @property
    def capture_id(self) -> str:
        return str(self.meta["capture_id"])


def manifest_line(entry: SealEntry) -> dict[str, Any]:
    return {**entry.meta, "capture_id": entry.capture_id, "file": f"{entry.capture_id}.npz",
            "sha256": entry.sha256, "bytes": entry.size}


def seal(directory: Path, entries: Sequence[SealEntry], *, thing: str, model: str,
         created: float) -> BatchInfo:
    """Seal ``entries`` into the batch ``directory`` (its name is the batch id); entries
    already inside it stay. Raises OSError (the batch is then repaired by sealing it
    again) or ValueError for an empty batch or a directory name that is no batch id."""
    if not entries:
        raise ValueError("a batch holds at least one capture")
    if not BATCH_ID.match(directory.name):
        raise ValueError(f"{directory.name!r} is not a batch id")
    if not directory.is_dir():
        directory.mkdir()
        fsync_dir(directory.parent)
    sources = set()
    for entry in entries:
        target = directory / f"{entry.capture_id}.npz"
        if entry.path != target:
            os.rename(entry.path, target)
            sources.add(entry.path.parent)
    for source in sources:
        fsync_dir(source)
    fsync_dir(directory)
    ordered = sorted(entries, key=lambda e: (float(e.meta.get("time", 0.0)), e.capture_id))
    manifest = b"".join(json.dumps(manifest_line(e), sort_keys=True, allow_nan=False)
                        .encode() + b"\n" for e in ordered)
    atomic_write(directory / MANIFEST_FILE, manifest)
    info = BatchInfo(batch_id=directory.name, thing=thing, model=model,
                     created=round(created, 3), count=len(entries),
                     bytes=sum(e.size for e in entries),
                     manifest_sha256=hashlib.sha256(manifest).hexdigest())
    atomic_write(directory / BATCH_FILE, json.dumps(_info_json(info), sort_keys=True)
                 .encode())
    return info


def _info_json(info: BatchInfo) -> dict[str, Any]:
    return {"v": FORMAT_VERSION, "batch_id": info.batch_id, "thing": info.thing,
            "model": info.model, "created": info.created, "count": info.count,
            "bytes": info.bytes, "manifest_sha256": info.manifest_sha256}


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError as err:
        raise CaptureFormatError(f"{what} is missing") from err
    except OSError as err:
        raise CaptureFormatError(f"{what} cannot be read: {err}") from err
    if len(data) > limit:
        raise CaptureFormatError(f"{what} is over {limit} bytes")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise CaptureFormatError(f"{what} is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise CaptureFormatError(f"{what} is not a JSON object")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CaptureFormatError(f"{what} is {value!r}, not a count")
    return value


def _info(directory: Path) -> BatchInfo:
    where = f"batch {directory.name}: {BATCH_FILE}"
    raw = _json_object(_read_limited(directory / BATCH_FILE, MAX_BATCH_FILE_BYTES, where),
                       where)
    if set(raw) != _INFO_KEYS:
        raise CaptureFormatError(f"{where} has the keys {sorted(raw)}, not "
                                 f"{sorted(_INFO_KEYS)}")
    if raw["v"] != FORMAT_VERSION:
        raise CaptureFormatError(f"{where}: version {raw['v']!r} is not {FORMAT_VERSION}")
    if raw["batch_id"] != directory.name:
        raise CaptureFormatError(f"{where} names batch {raw['batch_id']!r}, not its "
                                 "directory's")
    for key in ("thing", "model"):
        if not isinstance(raw[key], str):
            raise CaptureFormatError(f"{where}: {key} is not text")
    created = raw["created"]
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise CaptureFormatError(f"{where}: created is {created!r}, not a time")
    digest = raw["manifest_sha256"]
    if not isinstance(digest, str) or not _SHA.match(digest):
        raise CaptureFormatError(f"{where}: manifest_sha256 is not a sha256 digest")
    return BatchInfo(batch_id=directory.name, thing=raw["thing"], model=raw["model"],
                     created=float(created), count=_count(raw["count"], f"{where}: count"),
                     bytes=_count(raw["bytes"], f"{where}: bytes"), manifest_sha256=digest)


def _check_line(line: dict[str, Any], info: BatchInfo, where: str) -> None:
    capture_id = line.get("capture_id")
    if not isinstance(capture_id, str) or not re.fullmatch(r"[0-9a-f]{32}", capture_id):
        raise CaptureFormatError(f"{where}: capture_id {capture_id!r} is not 32 hex digits")
    if line.get("file") != f"{capture_id}.npz":
        raise CaptureFormatError(f"{where}: file {line.get('file')!r} is not "
                                 f"{capture_id}.npz")
    sha = line.get("sha256")
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise CaptureFormatError(f"{where}: sha256 is not a sha256 digest")
    _count(line.get("bytes"), f"{where}: bytes")
    if line.get("thing") != info.thing:
        raise CaptureFormatError(f"{where}: thing {line.get('thing')!r} is not the batch's "
                                 f"{info.thing!r}")


def read_batch(directory: Path) -> tuple[BatchInfo, list[dict[str, Any]]]:
    """``batch.json`` and the manifest's lines of the sealed batch ``directory``, checked
    against each other (digest, count, sizes, ids, thing) but not against the files
    (:func:`verify_batch` does that). Raises :class:`CaptureFormatError`."""
    info = _info(directory)
    where = f"batch {directory.name}: {MANIFEST_FILE}"
    data = _read_limited(directory / MANIFEST_FILE, MAX_MANIFEST_BYTES, where)
    if hashlib.sha256(data).hexdigest() != info.manifest_sha256:
        raise CaptureFormatError(f"{where} does not have the digest {BATCH_FILE} names "
                                 "(manifest digest mismatch)")
    lines = [_json_object(raw, f"{where} line {n}")
             for n, raw in enumerate(data.splitlines(), start=1)]
    for n, line in enumerate(lines, start=1):
        _check_line(line, info, f"{where} line {n}")
    if len(lines) != info.count:
        raise CaptureFormatError(f"batch {directory.name}: {len(lines)} manifest lines, "
                                 f"{BATCH_FILE} says count {info.count}")
    if len({line["capture_id"] for line in lines}) != len(lines):
        raise CaptureFormatError(f"{where}: a capture id appears twice")
    if sum(line["bytes"] for line in lines) != info.bytes:
        raise CaptureFormatError(f"batch {directory.name}: the files' sizes do not add up "
                                 f"to {BATCH_FILE}'s bytes {info.bytes}")
    return info, lines


def verify_batch(directory: Path) -> BatchInfo:
    """Check the sealed batch ``directory`` entirely: :func:`read_batch`, then every file
    the manifest names is there with its size and sha256 and decodes as that capture,
    and no other file is there. Raises :class:`CaptureFormatError` naming the problem."""
    info, lines = read_batch(directory)
    expected = {line["file"]: line for line in lines}
    try:
        present = {p.name for p in directory.iterdir()}
    except OSError as err:
        raise CaptureFormatError(f"batch {directory.name} cannot be listed: {err}") from err
    extra = sorted(present - set(expected) - {BATCH_FILE, MANIFEST_FILE})
    if extra:
        raise CaptureFormatError(f"batch {directory.name}: extra file {extra[0]!r} the "
                                 "manifest does not name")
    for name, line in expected.items():
        where = f"batch {directory.name}: {name}"
        if name not in present:
            raise CaptureFormatError(f"{where} is missing")
        check_capture_file(where, line, _read_limited(directory / name, line["bytes"] + 1,
                                                      where))
    return info


def check_capture_file(where: str, line: Mapping[str, Any], data: bytes) -> None:
    """``data`` is the capture file manifest ``line`` names: its size, its sha256, it
    decodes, and it holds that capture id; else :class:`CaptureFormatError` (``where``
    names the file in the message)."""
    if len(data) != line["bytes"]:
        raise CaptureFormatError(f"{where} is {len(data)} bytes, the manifest says "
                                 f"{line['bytes']} (size mismatch)")
    if hashlib.sha256(data).hexdigest() != line["sha256"]:
        raise CaptureFormatError(f"{where} does not have the manifest's sha256")
    try:
        capture = decode(data)
    except CaptureFormatError as err:
        raise CaptureFormatError(f"{where} does not decode: {err}") from err
    if capture.capture_id != line["capture_id"]:
        raise CaptureFormatError(f"{where} holds capture {capture.capture_id}")


def capture_files(directory: Path) -> Iterable[Path]:
    """The ``<capture_id>.npz`` files in ``directory``."""
    return sorted(p for p in directory.iterdir() if _CAPTURE_FILE.match(p.name))


def disk_bytes(directory: Path) -> int:
    """The sizes of the plain files under ``directory`` (0 when it is gone)."""
    total = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total
