"""Sealed capture batches written straight into a store's on-disk layout, for tests that
need a deliberately odd batch (or a store-free unit test of the uploader), and a bucket
or folder reader that checks what arrived.

``write_batch(root, captures)`` seals ``root/batches/<batch_id>/`` as the capture store
does (capture files, ``manifest.jsonl``, ``batch.json`` last);
``DirBatchStore(root)`` is the part of the store the uploader uses, over that layout.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.device.capture.batches import SealEntry, new_batch_id, read_batch, seal, verify_batch
from agent.device.capture.record import Capture, encode

THING = "cam-1"
MODEL = "digits"


def make_capture(index: int, *, size: int = 256, thing: str = THING,
                 label: str | None = None) -> Capture:
    """A small capture whose input is ``size`` float32s (4 * size bytes)."""
    rng = np.random.default_rng(index)
    return Capture(thing=thing, model=MODEL, rule="sample",
                   inputs={"x": rng.random(size, dtype=np.float32)},
                   outputs={"blue": {"scores": rng.random(10, dtype=np.float32)}},
                   variants={"blue": "1"}, served_by="blue", frame_id=index,
                   time=1_700_000_000.0 + index, source="testset", label=label)


def write_batch(root: Path, captures: list[Capture], *, thing: str = THING,
                created: float | None = None) -> str:
    """Seal ``captures`` into ``root/batches/<batch_id>/`` (as the store does: the
    store's own :func:`~agent.device.capture.batches.seal`); returns the batch id."""
    created = time.time() if created is None else created
    directory = root / "batches" / new_batch_id(created)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = root / "open"
    staging.mkdir(parents=True, exist_ok=True)
    entries = []
    for capture in captures:
        data = encode(capture)
        path = staging / f"{capture.capture_id}.npz"
        path.write_bytes(data)
        entries.append(SealEntry(path=path, meta=capture.meta(),
                                 sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    return seal(directory, entries, thing=thing, model=MODEL, created=created).batch_id


def check_batch_dir(directory: Path) -> list[str]:
    """Verify a batch folder (local or downloaded) as the store does; its capture ids."""
    verify_batch(directory)
    return [line["capture_id"] for line in read_batch(directory)[1]]


class DirBatchStore:
    """The store's batch API (what the uploader calls) over ``root/batches``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "batches").mkdir(parents=True, exist_ok=True)
        self.quarantined: dict[str, str] = {}
        self.uploaded: list[str] = []

    def batches(self) -> list[Any]:
        return [type("BatchInfo", (), {"batch_id": p.name})()
                for p in sorted((self.root / "batches").iterdir())
                if (p / "batch.json").is_file()]

    def batch_dir(self, batch_id: str) -> Path:
        return self.root / "batches" / batch_id

    def verify_batch(self, batch_id: str) -> None:
        verify_batch(self.batch_dir(batch_id))

    def quarantine(self, batch_id: str, reason: str) -> None:
        target = self.root / "quarantine" / batch_id
        target.parent.mkdir(parents=True, exist_ok=True)
        self.batch_dir(batch_id).rename(target)
        (target / "reason.txt").write_text(reason)
        self.quarantined[batch_id] = reason

    def mark_uploaded(self, batch_id: str) -> None:
        shutil.rmtree(self.batch_dir(batch_id))
        self.uploaded.append(batch_id)


def bucket_batches(client: Any, bucket: str, prefix: str = "") -> dict[str, dict[str, bytes]]:
    """Every object of the bucket under ``prefix``, as {batch key prefix: {file: bytes}}."""
    out: dict[str, dict[str, bytes]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            head, _, name = key.rpartition("/")
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            out.setdefault(head, {})[name] = body
    return out


def arrived_ids(batches: dict[str, dict[str, bytes]], tmp: Path) -> list[str]:
    """The capture ids of every complete remote batch, each batch verified in full."""
    ids: list[str] = []
    for head, files in sorted(batches.items()):
        assert "batch.json" in files, f"{head} has no batch.json: {sorted(files)}"
        directory = tmp / head  # named by its batch id, as the store names it
        directory.mkdir(parents=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        ids.extend(check_batch_dir(directory))
        shutil.rmtree(directory)
    return ids
