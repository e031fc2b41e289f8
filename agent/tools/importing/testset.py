"""The optional evaluation set (``--testset FILE.npz``), checked and written as ``testset.npz``.

The file holds ``x`` (a single-input model) or one array per input name, each ``[N, ...]``
with one case per row in the input's shape (a leading batch dimension of 1 optional), of
any numeric dtype: it is cast to the input's dtype. ``y``, optional, holds N integer labels
(a regression model has none); with metadata labels, each must index one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.model_layout import TensorSpec
from agent.tools.importing.arrays import as_cases, case_count, cases_by_tensor, read_npz
from agent.tools.importing.errors import ImportTestsetError


@dataclass(frozen=True)
class Testset:
    """A checked test set: its cases per input (``[N, *shape]``) and labels, if any."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def count(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``testset.npz`` holds: ``x`` for a single-input model, else by input name."""
        named = (dict(self.inputs) if len(self.inputs) != 1
                 else {"x": next(iter(self.inputs.values()))})
        if self.labels is not None:
            named["y"] = self.labels
        return named


def read_testset(path: Path, inputs: Sequence[TensorSpec], *,
                 classes: int | None = None) -> Testset:
    """Check ``path`` against ``inputs``; ``classes``: how many labels the metadata names."""
    where = f"--testset {path.name}"
    arrays = read_npz(path, where, ImportTestsetError)
    found = cases_by_tensor(arrays, inputs, prefix="in/", where=where,
                            error=ImportTestsetError, extra=("y",))
    cases = {spec.name: as_cases(found[spec.name], spec, where=where,
                                 error=ImportTestsetError, cast=True) for spec in inputs}
    count = case_count(cases, where, ImportTestsetError)
    labels = arrays.get("y")
    if labels is None:
        return Testset(cases, None)
    if labels.dtype.kind not in "iu":
        raise ImportTestsetError(f"{where}: array 'y' is {labels.dtype}; labels are integers "
                                 "(class indices)")
    if labels.shape != (count,):
        raise ImportTestsetError(f"{where}: array 'y' is {list(labels.shape)}, the inputs "
                                 f"hold {count} cases: it needs [{count}]")
    if classes is not None and labels.size and not (labels.min() >= 0 and
                                                    labels.max() < classes):
        raise ImportTestsetError(f"{where}: array 'y' holds labels from {labels.min()} to "
                                 f"{labels.max()}, the metadata names {classes} classes")
    return Testset(cases, labels.astype(np.int64))
