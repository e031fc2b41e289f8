"""A capture dataset: the captures pulled from the devices' uploads, with provenance. ::

    DATASET/
      captures/<capture_id>.npz    each capture file as uploaded (numpy-only readable)
      index.jsonl                  one line per capture: its manifest line (the capture's
                                   metadata, "file", "sha256", "bytes") + "batch_id",
                                   "pulled_at" (Unix s), "label", "label_source"
                                   ("application" | "operator" | null)
      batches.jsonl                one line per pulled batch: "key" (<thing>/<batch_id>),
                                   "thing", "batch_id", "source", "pulled_at", "count",
                                   "new", "duplicate"

A capture appears once, whatever number of batches carried it (de-duplicated by capture
id). Pulls append to the two JSONL files, each append fsynced, the index first: a kill
leaves at most a torn last line, which the next writer cuts off (its batch is then pulled
again, its captures found as duplicates), so every index line has its capture file and
every batch listed is wholly in the index. Labels rewrite the index atomically (temp
file, rename). Writers hold ``.lock`` (one writer at a time).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.durable import atomic_write, fsync_dir, write_chunk
from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import Capture, decode
from agent.tools.capture.errors import CaptureDatasetError

INDEX_FILE = "index.jsonl"
BATCHES_FILE = "batches.jsonl"
CAPTURES_DIR = "captures"
INCOMING_DIR = ".incoming"
LOCK_FILE = ".lock"
LABEL_SOURCES = ("application", "operator")
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class DatasetCounts:
    """What a dataset holds: captures by rule and by model version, labelled or not."""

    captures: int
    labelled: int
    unlabelled: int
    batches: int
    by_rule: dict[str, int]
    by_model: dict[str, int]  # "<model> v<version of the variant that served>"
    by_label_source: dict[str, int]
    by_label: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"captures": self.captures, "labelled": self.labelled,
                "unlabelled": self.unlabelled, "batches": self.batches,
                "by_rule": self.by_rule, "by_model": self.by_model,
                "by_label_source": self.by_label_source, "by_label": self.by_label}


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The objects of ``path`` and the length of its whole lines (a torn last line, cut
    by a kill mid-append, is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as err:
        raise CaptureDatasetError(f"cannot read {path}: {err}") from err
    whole = data.rfind(b"\n") + 1
    objects = []
    for number, raw in enumerate(data[:whole].splitlines(), start=1):
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise CaptureDatasetError(f"{path} line {number} is not JSON: {err}") from err
        if not isinstance(value, dict):
            raise CaptureDatasetError(f"{path} line {number} is not a JSON object")
        objects.append(value)
    return objects, whole


def _check_entry(path: Path, number: int, entry: dict[str, Any]) -> str:
    capture_id = entry.get("capture_id")
    if not isinstance(capture_id, str) or not _ID.match(capture_id):
        raise CaptureDatasetError(f"{path} line {number}: capture_id {capture_id!r}")
    label, source = entry.get("label"), entry.get("label_source")
    if label is not None and not isinstance(label, str):
        raise CaptureDatasetError(f"{path} line {number}: label {label!r} is not text")
    if source not in (*LABEL_SOURCES, None) or (source is None) != (label is None):
        raise CaptureDatasetError(f"{path} line {number}: label_source {source!r} does not "
                                  f"fit label {label!r}")
    return capture_id


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, allow_nan=False).encode() + b"\n"


class CaptureDataset:
    """A dataset folder, read into memory (see the module's documentation)."""

    def __init__(self, root: Path, entries: dict[str, dict[str, Any]],
                 batches: list[dict[str, Any]]) -> None:
        self.root = root
        self.entries = entries  # by capture id, in index order
        self.batches = batches

    @classmethod
    def open(cls, root: Path) -> CaptureDataset:
        """Read the dataset at ``root``; a folder without ``index.jsonl`` is none."""
        index = root / INDEX_FILE
        if not index.is_file():
            raise CaptureDatasetError(f"{root} is not a capture dataset (no {INDEX_FILE}); "
                                      f"`edge-agent capture pull --out {root}` makes one")
        lines, _ = _read_jsonl(index)
        entries: dict[str, dict[str, Any]] = {}
        for number, entry in enumerate(lines, start=1):
            capture_id = _check_entry(index, number, entry)
            if capture_id in entries:
                raise CaptureDatasetError(f"{index} line {number}: capture {capture_id} "
                                          f"is listed twice")
            entries[capture_id] = entry
        batches, _ = _read_jsonl(root / BATCHES_FILE)
        return cls(root, entries, batches)

    @staticmethod
    def check_target(root: Path) -> None:
        """Refuse ``root`` as a place for a dataset unless it is one, is empty or is not
        there yet (nothing is written to a folder of something else)."""
        if (root / INDEX_FILE).is_file() or not root.exists():
            return
        if not root.is_dir() or any(p.name != LOCK_FILE for p in root.iterdir()):
            raise CaptureDatasetError(f"{root} exists and is not a capture dataset")

    @classmethod
    def create(cls, root: Path) -> CaptureDataset:
        """Open the dataset at ``root``, making an empty one where there is none (``root``
        missing or empty); cuts torn last lines off (call it holding :meth:`lock`)."""
        if not (root / INDEX_FILE).is_file():
            cls.check_target(root)
            (root / CAPTURES_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write(root / INDEX_FILE, b"")
        for name in (INDEX_FILE, BATCHES_FILE):
            _, whole = _read_jsonl(root / name)
            path = root / name
            if path.is_file() and path.stat().st_size != whole:
                os.truncate(path, whole)
        shutil.rmtree(root / INCOMING_DIR, ignore_errors=True)
        (root / CAPTURES_DIR).mkdir(exist_ok=True)
        return cls.open(root)

    @staticmethod
    @contextlib.contextmanager
    def lock(root: Path) -> Iterator[None]:
        """Hold the dataset's writer lock (waits for another writer to finish)."""
        if not root.is_dir():
            raise CaptureDatasetError(f"{root} is not a capture dataset (no such folder)")
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def pulled(self) -> set[str]:
        """The ``<thing>/<batch_id>`` of every batch merged already."""
        return {str(b.get("key")) for b in self.batches}

    def capture_path(self, capture_id: str) -> Path:
        return self.root / CAPTURES_DIR / f"{capture_id}.npz"

    def incoming(self, name: str) -> Path:
        """A staging folder for a download (inside the dataset: renames stay on one disk)."""
        return self.root / INCOMING_DIR / name

    def load(self, capture_id: str) -> Capture:
        """The capture, read and checked against the index's digest."""
        path = self.capture_path(capture_id)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CaptureDatasetError(f"capture {capture_id}: cannot read {path}: {err}") \
                from err
        if hashlib.sha256(data).hexdigest() != self.entries[capture_id].get("sha256"):
            raise CaptureDatasetError(f"capture {capture_id}: {path} does not have the "
                                      f"digest the index names")
        try:
            return decode(data)
        except CaptureFormatError as err:
            raise CaptureDatasetError(f"capture {capture_id}: {err}") from err

    def merge(self, files: Iterable[Path], entries: list[dict[str, Any]],
              batch: dict[str, Any]) -> None:
        """Add a batch: move its new capture files in, then append their index lines and the
        batch's line (each append fsynced)."""
        moved = False
        for path in files:
            os.replace(path, self.capture_path(path.stem))
            moved = True
        if moved:
            fsync_dir(self.root / CAPTURES_DIR)
        _append(self.root / INDEX_FILE, b"".join(_line(e) for e in entries))
        _append(self.root / BATCHES_FILE, _line(batch))
        for entry in entries:
            self.entries[entry["capture_id"]] = entry
        self.batches.append(batch)

    def rewrite_index(self) -> None:
        """Replace ``index.jsonl`` with :attr:`entries`, atomically."""
        atomic_write(self.root / INDEX_FILE,
                     b"".join(_line(e) for e in self.entries.values()))

    def counts(self) -> DatasetCounts:
        rules: Counter[str] = Counter()
        models: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        for entry in self.entries.values():
            rules[str(entry.get("rule"))] += 1
            variants = entry.get("variants") or {}
            served = entry.get("served_by") or ""
            version = variants.get(served, "?") if isinstance(variants, dict) else "?"
            model = str(entry.get("model"))
            models[version if version.startswith(model) else f"{model} {version}"] += 1
            sources[str(entry.get("label_source") or "unlabelled")] += 1
            if entry.get("label") is not None:
                labels[str(entry["label"])] += 1
        labelled = sum(labels.values())
        return DatasetCounts(
            captures=len(self.entries), labelled=labelled,
            unlabelled=len(self.entries) - labelled, batches=len(self.batches),
            by_rule=dict(sorted(rules.items())), by_model=dict(sorted(models.items())),
            by_label_source=dict(sorted(sources.items())), by_label=dict(sorted(labels.items())))


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_chunk(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
