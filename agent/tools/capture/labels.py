"""``capture label``: labels for a dataset's captures, one at a time or from a CSV file.

A capture keeps the label its application gave (``label_source`` ``"application"``)
unless ``overwrite`` is asked for; every label set here has ``label_source``
``"operator"``. The CSV file has the header ``capture_id,label`` and one capture a row;
a malformed row, an unknown capture id or a capture given two labels is a
:class:`~agent.tools.capture.errors.CaptureLabelError` naming the line, and then nothing
is changed. The index is rewritten atomically.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.capture.record import MAX_TEXT
from agent.tools.capture.dataset import CaptureDataset
from agent.tools.capture.errors import CaptureLabelError

HEADER = ("capture_id", "label")
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class LabelResult:
    """What labelling changed: ``changed`` labels set, ``unchanged`` already so,
    ``kept`` application labels left as they were (no ``overwrite``)."""

    changed: int
    unchanged: int
    kept: int
    labelled: int  # in the dataset, after
    unlabelled: int

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "unchanged": self.unchanged, "kept": self.kept,
                "labelled": self.labelled, "unlabelled": self.unlabelled}

    def text(self) -> str:
        return (f"labels: {self.changed} set, {self.unchanged} unchanged, {self.kept} "
                f"application labels kept; dataset: {self.labelled} labelled, "
                f"{self.unlabelled} unlabelled")


def check_label(label: str, where: str) -> str:
    """``label`` stripped, or a :class:`CaptureLabelError` naming ``where``."""
    text = label.strip()
    if not text:
        raise CaptureLabelError(f"{where}: the label is empty")
    if len(text) > MAX_TEXT or any(c in text for c in "\r\n\x00"):
        raise CaptureLabelError(f"{where}: a label is one line of at most {MAX_TEXT} "
                                f"characters")
    return text


def read_label_csv(path: Path) -> dict[str, tuple[int, str]]:
    """The labels of a ``capture_id,label`` CSV file: capture id -> (line, label)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CaptureLabelError(f"cannot read {path}: {err}") from err
    rows: dict[str, tuple[int, str]] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            if line == 1:
                if tuple(cell.strip() for cell in row) != HEADER:
                    raise CaptureLabelError(f"{path} line 1: the header is {row}, not "
                                            f"capture_id,label")
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise CaptureLabelError(f"{path} line {line}: {len(row)} columns, not 2")
            capture_id = row[0].strip()
            if not _ID.match(capture_id):
                raise CaptureLabelError(f"{path} line {line}: {capture_id!r} is not a "
                                        f"capture id")
            label = check_label(row[1], f"{path} line {line}")
            if capture_id in rows and rows[capture_id][1] != label:
                raise CaptureLabelError(f"{path} line {line}: capture {capture_id} was "
                                        f"given another label on line {rows[capture_id][0]}")
            rows[capture_id] = (line, label)
    except csv.Error as err:
        raise CaptureLabelError(f"{path} line {reader.line_num}: {err}") from err
    if reader.line_num == 0:
        raise CaptureLabelError(f"{path} is empty (the header is capture_id,label)")
    return rows


def apply_labels(dataset: Path, labels: Mapping[str, str] | Path, *,
                 overwrite: bool = False) -> LabelResult:
    """Set labels in the dataset ``dataset``: ``labels`` maps capture ids to labels, or is
    a ``capture_id,label`` CSV file. All or nothing: any bad row or unknown id raises
    :class:`CaptureLabelError` before anything is written."""
    if isinstance(labels, Path):
        rows = read_label_csv(labels)
        where = {capture_id: f"{labels} line {line}" for capture_id, (line, _) in rows.items()}
        wanted = {capture_id: label for capture_id, (_, label) in rows.items()}
    else:
        where = {capture_id: f"capture {capture_id}" for capture_id in labels}
        wanted = {capture_id: check_label(label, where[capture_id])
                  for capture_id, label in labels.items()}
    with CaptureDataset.lock(dataset):
        data = CaptureDataset.open(dataset)
        unknown = [capture_id for capture_id in wanted if capture_id not in data.entries]
        if unknown:
            raise CaptureLabelError(f"{where[unknown[0]]}: no capture {unknown[0]} in "
                                    f"{dataset}" + (f" (and {len(unknown) - 1} more unknown)"
                                                    if len(unknown) > 1 else ""))
        changed = unchanged = kept = 0
        for capture_id, label in wanted.items():
            entry = data.entries[capture_id]
            if entry.get("label_source") == "application" and not overwrite:
                kept += 1 if entry.get("label") != label else 0
                unchanged += 1 if entry.get("label") == label else 0
                continue
            if entry.get("label") == label and entry.get("label_source") == "operator":
                unchanged += 1
                continue
            data.entries[capture_id] = {**entry, "label": label, "label_source": "operator"}
            changed += 1
        if changed:
            data.rewrite_index()
        counts = data.counts()
    return LabelResult(changed=changed, unchanged=unchanged, kept=kept,
                       labelled=counts.labelled, unlabelled=counts.unlabelled)
