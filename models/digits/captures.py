"""The digits trainer's optional captures channel: field captures as extra training rows.

``SM_CHANNEL_CAPTURES`` names a directory holding ``train.npz`` as ``edge-agent capture
export`` writes it: ``x`` float32 [N, 64] (the device's model input, scaled as the
model's input contract says), ``y`` int [N] (labels of the original classes) and
``capture_id`` (str [N]). Each row is repeated ``capture_weight`` times and appended to
the training set, so a few hundred field samples can outweigh the 1,437 originals. The
channel's digest goes into every checkpoint: a job never resumes from a checkpoint of
training on other captures.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from models.files import load_npz

CAPTURES_FILE = "train.npz"


class CapturesChannelError(ValueError):
    """The captures channel cannot be used (unreadable, or rows that do not fit)."""


def with_captures(x: np.ndarray, y: np.ndarray, directory: Path | None,
                  weight: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``x``/``y`` with the channel's rows (each ``weight`` times) appended, and the
    channel's sha256 (``""`` when there is no channel)."""
    if directory is None:
        return x, y, ""
    path = directory / CAPTURES_FILE
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        data = load_npz(path)
        x_new, y_raw = data["x"], data["y"]
    except (OSError, KeyError, ValueError) as err:
        raise CapturesChannelError(f"cannot read the captures channel {path}: {err}") from err
    ids = data.get("capture_id", np.arange(len(y_raw)))
    if x_new.ndim != 2 or x_new.shape[1] != x.shape[1] or len(x_new) != len(y_raw):
        raise CapturesChannelError(f"{path}: x is {list(x_new.shape)} for {len(y_raw)} "
                                   f"labels; the training set's rows have {x.shape[1]} "
                                   f"features")
    if len(y_raw) and not np.issubdtype(y_raw.dtype, np.integer):
        raise CapturesChannelError(f"{path}: y is {y_raw.dtype}, not integer labels")
    n_classes = int(y.max()) + 1
    outside = np.flatnonzero((y_raw < 0) | (y_raw >= n_classes))
    if outside.size:
        first = int(outside[0])
        raise CapturesChannelError(f"{path}: capture {ids[first]} has label {y_raw[first]}, "
                                   f"outside the classes 0..{n_classes - 1}")
    rows = np.repeat(x_new.astype(np.float64), weight, axis=0)
    labels = np.repeat(y_raw.astype(np.int64), weight)
    return np.concatenate([x, rows]), np.concatenate([y, labels]), digest
