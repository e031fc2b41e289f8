"""The digits data set and the fixed held-out split every build and test uses.

scikit-learn ships the 1,797 8x8 images inside the package, so builds work
offline. Pixels (0..16) are scaled to 0..1 here, once: the model's input
contract is the scaled image, and ``testset.npz`` holds exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_FEATURES = 64
N_CLASSES = 10
TEST_SIZE = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # float32 [N, 64], scaled to 0..1
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray


def load_split() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return Split(
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
    )
