"""The ``images`` source: image files from a folder or a glob, in name order, once or looped.

``sourcePath`` is a folder (its image files, not its sub-folders), a glob (``frames/*.jpg``,
``shots/**/*.png``) or one image file; only names ending in an image suffix
(:data:`IMAGE_FILES`, any case) are taken, sorted by path as text (``frame_10`` sorts before
``frame_2``: zero-pad numbers). The list is made once, when the source starts.

The loop's ``ready()`` call before each fill decodes the next file with Pillow (the
``images`` extra) and resizes it to the model's input with Pillow's bilinear filter; the
fill pre-processes it into the bound buffer
(:class:`~agent.device.inference.frames.FramePreprocessor`): exactly what ``edge-agent
predict`` does to the same file. A file that cannot be decoded (corrupt, truncated, gone)
is skipped, counted in :attr:`ImageSource.skipped` and logged once: one bad frame does not
stop a camera app. At the end of the list the source starts over when ``loop`` is set;
otherwise (or when no file of a whole pass could be decoded) it ends: ``source_ended`` is
logged, :attr:`ImageSource.ended` turns true, and the loop stops filling while it keeps
answering API requests. After each fill, :attr:`ImageSource.frame_id` counts the images
filled (1, 2, ...), :attr:`ImageSource.frame_time` is the wall-clock time it was read, and
:attr:`ImageSource.path` its file.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import numpy as np

from agent.core.errors import ConfigError, InputSpecError, SourceError
from agent.device.inference.frames import NO_LABEL, FramePreprocessor
from agent.device.inference.preprocess import decode_image, resize_image

log = logging.getLogger("edge_agent.sources")

IMAGE_FILES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
               ".pgm")
_GLOB_CHARS = frozenset("*?[")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_FILES and path.is_file()


def list_images(path: str | None) -> list[Path]:
    """The image files ``sourcePath`` names, sorted; a :class:`SourceError` for a path
    that does not exist, a glob that matches no image, or a folder that holds none."""
    if not path:
        raise SourceError("source images needs sourcePath: a folder, a glob or an image file")
    if _GLOB_CHARS & set(path):
        found = sorted(p for p in map(Path, glob.glob(path, recursive=True)) if _is_image(p))
        if not found:
            raise SourceError(f"source images: glob {path!r} matches no image file "
                              f"({', '.join(IMAGE_FILES)})")
        return found
    where = Path(path)
    if where.is_dir():
        found = sorted(p for p in where.iterdir() if _is_image(p))
        if not found:
            raise SourceError(f"source images: folder {path} holds no image file "
                              f"({', '.join(IMAGE_FILES)})")
        return found
    if where.is_file():
        return [where]
    raise SourceError(f"source images: {path}: no such file or folder")


class ImageSource:
    """Decodes the next image file into the bound buffer at each fill."""

    name = "images"

    def __init__(self, *, buffer: np.ndarray, preprocessor: FramePreprocessor,
                 paths: list[Path], loop: bool = True, where: str | None = None) -> None:
        if not paths:
            raise SourceError("source images: no image file to read")
        self._buffer = buffer
        self._pre = preprocessor
        self._paths = paths
        self._loop = loop
        self._index = 0
        self._good_in_pass = 0
        self._failed: set[Path] = set()
        self._exhausted = False
        self.decoded = 0
        self.skipped = 0
        self.frame_id = 0
        self.frame_time = 0.0
        self.path: Path | None = None
        self._next: tuple[Path, np.ndarray] | None = None
        self._where = where or str(paths[0].parent)

    @property
    def ended(self) -> bool:
        """True once every image was filled (a source read once, or nothing decodes)."""
        return self._exhausted and self._next is None

    def ready(self) -> bool:
        """Whether an image is ready to fill: the next file that decodes is read here, so
        a source whose remaining files are all unreadable ends without a fill."""
        if self._next is None and not self._exhausted:
            self._next = self._decode_next()
        return self._next is not None

    def fill(self) -> int:
        image = self._next if self._next is not None else self._decode_next()
        self._next = None
        if image is None:
            return NO_LABEL  # ended: the buffer keeps the last image
        self._pre.into(self._buffer, image[1])
        self.frame_id += 1
        self.frame_time = time.time()
        self.path = image[0]
        return NO_LABEL

    def _decode_next(self) -> tuple[Path, np.ndarray] | None:
        """The next file that decodes, resized; None once the source has ended."""
        size = self._pre.size
        while not self._exhausted:
            path = self._paths[self._index]
            self._index += 1
            try:
                image: np.ndarray | None = resize_image(decode_image(path), size)
            except (InputSpecError, ConfigError) as err:
                image = None
                self.skipped += 1
                if path not in self._failed:
                    self._failed.add(path)
                    log.warning("source images: %s skipped (%d so far): %s", path,
                                self.skipped, err)
            else:
                self._good_in_pass += 1
                self.decoded += 1
            if self._index == len(self._paths):
                self._end_of_pass()
            if image is not None:
                return path, image
        return None

    def _end_of_pass(self) -> None:
        self._index = 0
        good, self._good_in_pass = self._good_in_pass, 0
        if self._loop and good:
            return
        self._exhausted = True
        reason = "end of the list" if good else "no file of the list could be decoded"
        log.info("source_ended: images %s: %s after %d images (%d skipped); the loop stops "
                 "filling and keeps answering API requests", self._where, reason, self.decoded,
                 self.skipped)

    def close(self) -> None:
        self._paths = []
        self._next = None
