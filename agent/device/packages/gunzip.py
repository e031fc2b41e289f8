"""Decompress a gzip file as a stream that stops at a size limit and a compression ratio.

A decompression bomb is refused while it is read, after at most one more chunk than the
limit allows: nothing is written and memory stays at a few chunks whatever the stream
claims. The ratio (bytes out per compressed byte consumed so far) is judged only once more
than a floor came out, so a small package that compresses well is never refused for it.
Concatenated gzip members and zero padding after the last are read as ``gzip`` reads
them; any other trailing byte, a bad CRC or length, and a stream that ends early are
refused with the packages' typed errors.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import BinaryIO

from agent.device.packages.errors import (
    ArchiveLimitError,
    PackageFormatError,
    TruncatedArchiveError,
    staging_io_error,
)

CHUNK = 256 * 1024  # the most one decompression step produces
_READ = 64 * 1024  # compressed bytes read from the file at a time
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer (CRC-32, length) are checked


class BoundedGunzip(io.RawIOBase):
    """The decompressed bytes of gzip file ``path``, read like a file.

    :class:`ArchiveLimitError` once more than ``max_bytes`` came out (named
    ``size_limit`` in the message) or, past ``ratio_floor_bytes``, once the output is more
    than ``max_ratio`` times the compressed bytes consumed (``None``: not judged).
    """

    def __init__(self, path: Path, *, max_bytes: int, size_limit: str = "max_total_bytes",
                 size_limit_value: int | None = None, max_ratio: int | None = None,
                 ratio_floor_bytes: int = 0) -> None:
        super().__init__()
        self.label = path.name
        self.max_bytes, self.size_limit = max_bytes, size_limit
        self.size_limit_value = max_bytes if size_limit_value is None else size_limit_value
        self.max_ratio, self.ratio_floor_bytes = max_ratio, ratio_floor_bytes
        self.total = 0  # decompressed bytes handed out
        self.read_in = 0  # compressed bytes read from the file
        self._pending = b""  # compressed bytes read but not yet consumed by zlib
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._finished = False
        try:
            self._file: BinaryIO = path.open("rb")
        except OSError as err:
            raise staging_io_error(err, f"reading {path.name}") from err
        self._first_member()

    @property
    def consumed(self) -> int:
        """Compressed bytes zlib has consumed so far."""
        return self.read_in - len(self._pending)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` (at most one chunk) decompressed bytes; ``b""`` at the end."""
        want = CHUNK if size is None or size < 0 else min(size, CHUNK)
        while want and not self._finished:
            if self._inflate.eof:
                self._next_member()
                continue
            if not self._pending and not self._fill():
                raise TruncatedArchiveError(f"{self.label} is truncated: the gzip stream "
                                            "ends early")
            try:
                out = self._inflate.decompress(self._pending, want)
            except zlib.error as err:
                raise PackageFormatError(f"{self.label} is not a valid gzip file: "
                                         f"{err}") from err
            self._pending = (self._inflate.unused_data if self._inflate.eof
                             else self._inflate.unconsumed_tail)
            if out:
                self._count(len(out))
                return out
        return b""

    def drain(self) -> int:
        """Read to the end of the stream (every CRC checked); the decompressed size."""
        while self.read(CHUNK):
            pass
        return self.total

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def _count(self, produced: int) -> None:
        self.total += produced
        if self.total > self.max_bytes:
            raise ArchiveLimitError(f"{self.label} unpacks to more than {self.max_bytes} bytes",
                                    limit=self.size_limit, value=self.size_limit_value)
        ratio = self.max_ratio
        if ratio is not None and self.total > self.ratio_floor_bytes \
                and self.total > ratio * max(self.consumed, 1):
            raise ArchiveLimitError(
                f"{self.label} decompresses more than {ratio}:1 ({self.total} bytes out of "
                f"{self.consumed}, judged past ratio_floor_bytes={self.ratio_floor_bytes})",
                limit="max_ratio", value=ratio)

    def _fill(self) -> bool:
        """Read more compressed bytes into the pending ones; False at the end of the file."""
        try:
            data = self._file.read(_READ)
        except OSError as err:
            raise staging_io_error(err, f"reading {self.label}") from err
        self.read_in += len(data)
        self._pending += data
        return bool(data)

    def _first_member(self) -> None:
        while len(self._pending) < len(_GZIP_MAGIC) and self._fill():
            pass
        if not self._pending.startswith(_GZIP_MAGIC):
            raise PackageFormatError(f"{self.label} is not a gzip file")

    def _next_member(self) -> None:
        """After a gzip member: another member, zero padding to the end, or the end."""
        while True:
            self._pending = self._pending.lstrip(b"\0")
            if len(self._pending) >= len(_GZIP_MAGIC):
                break
            if not self._fill():
                if self._pending:
                    break
                self._finished = True
                return
        if not self._pending.startswith(_GZIP_MAGIC):
            raise PackageFormatError(f"{self.label} has trailing bytes after its gzip stream")
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
