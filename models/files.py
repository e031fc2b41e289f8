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

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write

# The earliest timestamp a zip entry can hold; any fixed value would do.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise arrays as an ``.npz`` (readable by ``np.load``) with reproducible bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            entry.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            archive.writestr(entry, member.getvalue())
    return buffer.getvalue()


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, npz_bytes(arrays))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
