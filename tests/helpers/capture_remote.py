"""Remote capture batches, as devices upload them, for the training-side tests.

``batch_files(captures, thing=, batch_id=)`` is one batch's files in the remote layout
(``<capture_id>.npz`` per capture, ``manifest.jsonl``, ``batch.json`` with the right
digests); ``put_folder`` and ``put_s3`` place them under a folder or an S3 prefix
(``batch.json`` last, as the uploader does). ``digit_capture`` is a capture of the digits
model: input ``input`` float32 [1, 64], blue's scores [1, 10].
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.device.capture.record import Capture, encode

THING = "cam-1"
MODEL = "digits"


def capture_id(n: int) -> str:
    return f"{n:032x}"


def batch_id(n: int) -> str:
    return f"20261207T{n // 3600 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}Z-{n:012x}"


def digit_capture(n: int, *, label: str | None = None, rule: str = "low_confidence",
                  thing: str = THING, version: str = "digits-v1",
                  x: np.ndarray | None = None) -> Capture:
    """Capture number ``n`` (its id is ``capture_id(n)``); its input is ``x`` or random."""
    rng = np.random.default_rng(n)
    row = rng.random(64, dtype=np.float32) if x is None else np.asarray(x, np.float32)
    return Capture(thing=thing, model=MODEL, rule=rule, inputs={"input": row.reshape(1, 64)},
                   outputs={"blue": {"scores": rng.random((1, 10), dtype=np.float32)}},
                   variants={"blue": version}, served_by="blue", frame_id=n,
                   time=1_800_000_000.0 + n, source="testset", score=0.4, label=label,
                   capture_id=capture_id(n))


def batch_files(captures: Sequence[Capture], *, thing: str = THING,
                batch_id: str) -> dict[str, bytes]:
    """One batch's files, ``batch.json`` last (dicts keep insertion order)."""
    files: dict[str, bytes] = {}
    lines = []
    for capture in sorted(captures, key=lambda c: c.time):
        data = encode(capture)
        name = f"{capture.capture_id}.npz"
        files[name] = data
        lines.append({"capture_id": capture.capture_id, "file": name,
                      "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                      **capture.meta()})
    files["manifest.jsonl"] = b"".join(json.dumps(line, sort_keys=True).encode() + b"\n"
                                       for line in lines)
    files["batch.json"] = info_bytes(files, thing=thing, batch_id=batch_id)
    return files


def info_bytes(files: dict[str, bytes], *, thing: str = THING, batch_id: str) -> bytes:
    """The ``batch.json`` that fits ``files``' manifest and capture files."""
    manifest = files["manifest.jsonl"]
    captures = [name for name in files if name.endswith(".npz")]
    info = {"v": 1, "batch_id": batch_id, "thing": thing, "model": MODEL,
            "created": 1_800_000_000, "count": len(manifest.splitlines()),
            "bytes": sum(len(files[name]) for name in captures),
            "manifest_sha256": hashlib.sha256(manifest).hexdigest()}
    return json.dumps(info, sort_keys=True).encode()


def put_folder(root: Path, files: dict[str, bytes], *, thing: str = THING,
               batch_id: str) -> Path:
    directory = root / thing / batch_id
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def put_s3(client: Any, bucket: str, prefix: str, files: dict[str, bytes], *,
           thing: str = THING, batch_id: str) -> None:
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{base}{thing}/{batch_id}/{name}", Body=data)


def index_lines(dataset: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (dataset / "index.jsonl").read_text().splitlines()]
