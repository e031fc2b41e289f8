"""Capture batches written to a local folder (an air-gapped site's export folder, a mounted
drive), in the same layout as S3 (see :mod:`agent.device.capture.destinations`).

Each file is written to a hidden temporary name in the batch's folder, flushed to disk
and renamed into place, and the folder is flushed after the rename, so a file that is
there is whole; ``batch.json`` comes last. The folder itself must exist (a drive that is
not mounted is reported, never written under the mount point); the folders below it are
created.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agent.core.durable import TMP_SUFFIX, atomic_write, fsync_dir
from agent.device.capture.batches import BATCH_FILE
from agent.device.capture.destinations import check_names, check_thing, clean_prefix
from agent.device.capture.errors import CaptureUploadError


class FolderDestination:
    """``FolderDestination(folder, prefix, thing)``: batches go to
    ``folder/prefix/thing/<batch_id>/``."""

    def __init__(self, folder: Path | str, prefix: str, thing: str) -> None:
        self.folder = Path(folder)
        self.thing = check_thing(thing)
        self.prefix = clean_prefix(prefix)
        self.root = self.folder.joinpath(*self.prefix.split("/"), self.thing) \
            if self.prefix else self.folder / self.thing
        self.description = str(self.root)

    def batch_path(self, batch_id: str) -> Path:
        return self.root / batch_id

    def _check_folder(self) -> None:
        if not self.folder.is_dir():
            raise CaptureUploadError(
                f"capture folder {self.folder} does not exist or is not a folder (a drive "
                "not mounted?)", code="folder_missing")
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise CaptureUploadError(f"capture folder {self.folder} is not writable by "
                                     "the agent", code="folder_not_writable")

    def has_batch(self, batch_id: str) -> bool:
        check_names(batch_id, BATCH_FILE)
        self._check_folder()
        return (self.batch_path(batch_id) / BATCH_FILE).is_file()

    def begin_batch(self, batch_id: str) -> None:
        """Remove the temporary files a cut upload of this batch left behind."""
        check_names(batch_id, BATCH_FILE)
        directory = self.batch_path(batch_id)
        if not directory.is_dir():
            return
        for leftover in directory.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

    def put(self, batch_id: str, name: str, data: bytes) -> None:
        check_names(batch_id, name)
        self._check_folder()
        directory = self.batch_path(batch_id)
        try:
            created = _make_dirs(directory)
            atomic_write(directory / name, data)
            for parent in created:
                fsync_dir(parent)
        except OSError as err:
            code = "folder_not_writable" if isinstance(err, PermissionError) else \
                "folder_write_failed"
            raise CaptureUploadError(f"cannot write {name} of batch {batch_id} to "
                                     f"{directory}: {err}", code=code) from err

    def close(self) -> None:
        pass


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; the parents whose entries changed."""
    missing: list[Path] = []
    path = directory
    while not path.exists():
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
    return [path.parent for path in missing]
