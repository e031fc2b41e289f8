"""File writing that survives being killed and gives the same bytes every time.

Builds and training jobs can be interrupted at any instruction (a spot
instance reclaimed, a SIGKILL); a reader must then see either the old file or
the new one, never half of one. ``np.savez`` stamps the current time into its
zip entries, so it is replaced here by a writer with a fixed timestamp: the
same arrays always give the same bytes, which lets builds be compared and
stamped by digest. Whole files are replaced with :func:`agent.core.durable.atomic_write`
(text with ``atomic_write_text``), the one atomic writer of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write
from agent.tools.importing.arrays import npz_bytes

__all__ = ["npz_bytes"]


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, npz_bytes(arrays))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
