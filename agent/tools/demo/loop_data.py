"""The loop demo's data: a field whose distribution has shifted, and what it is judged on.

The field: every digit arrives one pixel to the right of where the training images
put it (a camera knocked sideways). The reference v1 model, right on about 97% of the
original test split, is right on about half of the shifted digits.

- the **capture stream**: the shifted images of the original *training* split, cut into
  one disjoint slice per device, each an ``.npz`` (``x``, labels ``y``) the device
  replays (``source: testset`` with ``sourcePath``) so that its lanes count top-1
  against the labels;
- the **held-out shifted set**: the shifted images of the original *test* split, never
  replayed, captured or trained on: the before/after table's fair measure;
- the original train and test splits, as ``models.digits.data`` defines them.

The demo plays the human labeller from its own ground truth: :func:`tensor_key` names an
input by the digest of its float32 bytes, so a captured input maps back to the label
of the stream sample it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write
from agent.tools.importing.arrays import npz_bytes

SHIFT_PIXELS = 1
SIDE = 8  # the digits are 8x8 images, flattened to 64 features


def shift_right(x: np.ndarray, pixels: int = SHIFT_PIXELS) -> np.ndarray:
    """Flattened 8x8 images moved ``pixels`` to the right (zeros come in on the left)."""
    images = np.asarray(x, dtype=np.float32).reshape(-1, SIDE, SIDE)
    out = np.zeros_like(images)
    out[:, :, pixels:] = images[:, :, :SIDE - pixels]
    return out.reshape(len(images), SIDE * SIDE)


def tensor_key(x: np.ndarray) -> str:
    """A digest naming one input by its float32 values (whatever its shape)."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


@dataclass(frozen=True)
class LoopData:
    x_train: np.ndarray  # the original training split (v1's, and v3's base channel)
    y_train: np.ndarray
    x_test: np.ndarray  # the original test split
    y_test: np.ndarray
    x_field: np.ndarray  # the capture stream: shifted training images
    y_field: np.ndarray
    x_heldout: np.ndarray  # shifted test images: never captured, never trained on
    y_heldout: np.ndarray

    def labels_by_key(self) -> dict[str, int]:
        """The ground truth of every capture-stream input, by :func:`tensor_key`."""
        return {tensor_key(row): int(label)
                for row, label in zip(self.x_field, self.y_field, strict=True)}

    def write_streams(self, folder: Path, devices: int) -> list[Path]:
        """One disjoint slice of the capture stream per device, as ``stream-<i>.npz``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, part in enumerate(np.array_split(np.arange(len(self.x_field)), devices)):
            path = folder / f"stream-{i + 1}.npz"
            atomic_write(path, npz_bytes({"x": self.x_field[part], "y": self.y_field[part]}))
            paths.append(path)
        return paths

    def write_train_channel(self, folder: Path) -> Path:
        """The original training split as a training job's ``train.npz`` channel."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "train.npz", npz_bytes({"x": self.x_train, "y": self.y_train}))
        return folder

    def write_test_channel(self, folder: Path) -> Path:
        """The original test split as a training job's ``test.npz`` channel (the accuracy
        it reports; the held-out shifted set is never shown to the job)."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "test.npz", npz_bytes({"x": self.x_test, "y": self.y_test}))
        return folder


def load_loop_data() -> LoopData:
    from models.digits.data import load_split

    split = load_split()
    return LoopData(x_train=split.x_train, y_train=split.y_train, x_test=split.x_test,
                    y_test=split.y_test, x_field=shift_right(split.x_train),
                    y_field=split.y_train, x_heldout=shift_right(split.x_test),
                    y_heldout=split.y_test)
