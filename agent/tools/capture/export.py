"""``capture export``: a dataset's labelled captures as a training channel, ``train.npz``.

``train.npz`` holds ``x`` (float32: one row per capture, the model's first input or the
one named, stacked; flattened to ``[N, features]`` unless the shape is kept), ``y``
(int64: the labels, which must be integers) and ``capture_id`` (the rows' captures).
Rows are sorted by capture id and the file is written with fixed zip timestamps, so the
same dataset always exports the same bytes. ``models/digits/train.py`` reads it as its
``SM_CHANNEL_CAPTURES`` channel.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.durable import atomic_write
from agent.tools.capture.dataset import CaptureDataset
from agent.tools.capture.errors import CaptureExportError
from agent.tools.importing.arrays import npz_bytes

TRAIN_FILE = "train.npz"
_INTEGER = re.compile(r"^-?[0-9]+$")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    unlabelled: int  # captures left out for want of a label
    input_name: str  # the input exported ("" when captures name their first input otherwise)
    row_shape: tuple[int, ...]
    by_label: dict[int, int]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "unlabelled": self.unlabelled,
                "input": self.input_name, "row_shape": list(self.row_shape),
                "by_label": {str(k): v for k, v in self.by_label.items()},
                "sha256": self.sha256}

    def text(self) -> str:
        return (f"exported {self.rows} labelled captures ({self.unlabelled} unlabelled left "
                f"out) to {self.path}: x float32 {[self.rows, *self.row_shape]}, labels "
                + ", ".join(f"{k}: {v}" for k, v in self.by_label.items()))


def _label(capture_id: str, label: str) -> int:
    text = label.strip()
    if not _INTEGER.match(text) or len(text) > 18:
        raise CaptureExportError(f"capture {capture_id}: label {label!r} is not an integer "
                                 f"(the trainer's classes are integers)")
    return int(text)


def export_dataset(dataset: Path, out: Path, *, input_name: str | None = None,
                   flatten: bool = True) -> ExportResult:
    """Write ``out/train.npz`` from the labelled captures of ``dataset``.

    ``input_name`` picks the input (default: each capture's first); ``flatten`` makes
    every row 1-D (``[N, features]``, what the digits trainer takes), else a leading
    batch dimension of 1 is dropped and the rest kept."""
    data = CaptureDataset.open(dataset)
    labelled = sorted(capture_id for capture_id, entry in data.entries.items()
                      if entry.get("label") is not None)
    if not labelled:
        raise CaptureExportError(f"{dataset} has no labelled capture to export "
                                 f"(`edge-agent capture label` sets labels)")
    rows: list[np.ndarray] = []
    labels: list[int] = []
    names: set[str] = set()
    for capture_id in labelled:
        labels.append(_label(capture_id, str(data.entries[capture_id]["label"])))
        capture = data.load(capture_id)
        if not capture.inputs:
            raise CaptureExportError(f"capture {capture_id} has no input")
        name = input_name if input_name is not None else next(iter(capture.inputs))
        if name not in capture.inputs:
            raise CaptureExportError(f"capture {capture_id} has no input {name!r} (it has "
                                     f"{', '.join(capture.inputs)})")
        names.add(name)
        array = np.asarray(capture.inputs[name])
        if flatten:
            row = array.reshape(-1)
        else:
            row = array[0] if array.ndim >= 2 and array.shape[0] == 1 else array
        if rows and row.shape != rows[0].shape:
            raise CaptureExportError(f"capture {capture_id}: input {name!r} is "
                                     f"{list(array.shape)}, the rows before are "
                                     f"{list(rows[0].shape)}")
        rows.append(row.astype(np.float32))
    x = np.stack(rows)
    y = np.asarray(labels, dtype=np.int64)
    body = npz_bytes({"x": x, "y": y, "capture_id": np.asarray(labelled, dtype="<U32")})
    path = out / TRAIN_FILE
    try:
        atomic_write(path, body)
    except OSError as err:
        raise CaptureExportError(f"cannot write {path}: {err}") from err
    return ExportResult(
        path=path, rows=len(labelled), unlabelled=len(data.entries) - len(labelled),
        input_name=names.pop() if len(names) == 1 else "", row_shape=tuple(x.shape[1:]),
        by_label=dict(sorted(Counter(labels).items())),
        sha256=hashlib.sha256(body).hexdigest())
