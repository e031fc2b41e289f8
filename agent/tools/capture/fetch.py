"""Download one remote batch and check it is what its ``batch.json`` claims.

``batch.json`` (``{"v": 1, "batch_id", "thing", "model", "created", "count", "bytes",
"manifest_sha256"}``) names the manifest's digest; each manifest line
(``{"capture_id", "file", "sha256", "bytes", ...the capture's metadata}``) names one file's
digest and size. A batch passes when the manifest has that digest and ``count`` lines,
every file has its size and digest and decodes as the capture the line names. Anything
else is a :class:`~agent.device.capture.errors.CaptureFormatError` naming the batch and
what is wrong; the files of a batch that passes are left in a staging folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.capture.batches import check_capture_file
from agent.device.capture.errors import CaptureFormatError
from agent.tools.capture.remote import BATCH_JSON, MANIFEST, BatchSource, RemoteBatch

MAX_BATCH_JSON = 64 * 1024
MAX_MANIFEST = 64 * 1024 * 1024
MAX_CAPTURE_FILE = 256 * 1024 * 1024
_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FetchedBatch:
    """A verified batch: its ``batch.json``, its manifest lines (in manifest order) and the
    folder holding its ``<capture_id>.npz`` files."""

    batch: RemoteBatch
    info: dict[str, Any]
    lines: list[dict[str, Any]]
    folder: Path


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise CaptureFormatError(f"{what} is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise CaptureFormatError(f"{what} is not a JSON object")
    return value


def _int(info: dict[str, Any], key: str, what: str) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CaptureFormatError(f"{what}: {key} is {value!r}, not a count")
    return value


def _check_info(batch: RemoteBatch, info: dict[str, Any]) -> None:
    where = f"{batch.key}/{BATCH_JSON}"
    if info.get("v") != 1:
        raise CaptureFormatError(f"{where}: version {info.get('v')!r} is not 1")
    if info.get("batch_id") != batch.batch_id or info.get("thing") != batch.thing:
        raise CaptureFormatError(f"{where} names batch {info.get('thing')!r}/"
                                 f"{info.get('batch_id')!r}, not its folder's")
    _int(info, "count", where)
    _int(info, "bytes", where)
    if not isinstance(info.get("manifest_sha256"), str) or not _SHA.match(
            info["manifest_sha256"]):
        raise CaptureFormatError(f"{where}: manifest_sha256 is not a sha256 digest")


def _check_line(batch: RemoteBatch, number: int, line: dict[str, Any]) -> None:
    where = f"{batch.key}/{MANIFEST} line {number}"
    capture_id = line.get("capture_id")
    if not isinstance(capture_id, str) or not _ID.match(capture_id):
        raise CaptureFormatError(f"{where}: capture_id {capture_id!r} is not 32 hex digits")
    if line.get("file") != f"{capture_id}.npz":
        raise CaptureFormatError(f"{where}: file {line.get('file')!r} is not "
                                 f"{capture_id}.npz")
    if not isinstance(line.get("sha256"), str) or not _SHA.match(line["sha256"]):
        raise CaptureFormatError(f"{where}: sha256 is not a sha256 digest")
    _int(line, "bytes", where)
    label = line.get("label")
    if label is not None and not isinstance(label, str):
        raise CaptureFormatError(f"{where}: label {label!r} is not text")


def manifest_lines(batch: RemoteBatch, info: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """The manifest's lines, checked against ``batch.json``."""
    if hashlib.sha256(data).hexdigest() != info["manifest_sha256"]:
        raise CaptureFormatError(f"{batch.key}/{MANIFEST} does not have the digest "
                                 f"{BATCH_JSON} names")
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            line = _json_object(raw, f"{batch.key}/{MANIFEST} line {number}")
            _check_line(batch, number, line)
            lines.append(line)
    if len(lines) != info["count"]:
        raise CaptureFormatError(f"{batch.key}: {len(lines)} manifest lines, "
                                 f"{BATCH_JSON} says {info['count']}")
    ids = [line["capture_id"] for line in lines]
    if len(set(ids)) != len(ids):
        raise CaptureFormatError(f"{batch.key}: a capture id appears twice in the manifest")
    if sum(line["bytes"] for line in lines) != info["bytes"]:
        raise CaptureFormatError(f"{batch.key}: the files' sizes do not add up to "
                                 f"{BATCH_JSON}'s bytes {info['bytes']}")
    return lines


def _check_file(batch: RemoteBatch, line: dict[str, Any], data: bytes) -> None:
    check_capture_file(f"{batch.key}/{line['file']}", line, data)


def fetch_batch(source: BatchSource, batch: RemoteBatch, folder: Path) -> FetchedBatch:
    """Download ``batch`` into ``folder`` (created; its files are ``<capture_id>.npz``) and
    verify it; raises :class:`CaptureFormatError` (``folder`` may then hold some files)."""
    info = _json_object(source.read(batch, BATCH_JSON, MAX_BATCH_JSON),
                        f"{batch.key}/{BATCH_JSON}")
    _check_info(batch, info)
    lines = manifest_lines(batch, info, source.read(batch, MANIFEST, MAX_MANIFEST))
    folder.mkdir(parents=True, exist_ok=True)
    for line in lines:
        data = source.read(batch, line["file"], min(line["bytes"], MAX_CAPTURE_FILE))
        _check_file(batch, line, data)
        (folder / line["file"]).write_bytes(data)
    return FetchedBatch(batch=batch, info=info, lines=lines, folder=folder)
