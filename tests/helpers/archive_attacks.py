"""Hostile package archives built around a really signed package (no tests here).

Each attack keeps the package's signed ``manifest.json`` as the first member, so staging
verifies the signature and the refusal comes where it would on a device: in extraction.
Bombs are written without ever holding their decompressed bytes: deflate output for a
run of zeros repeats after a full flush, and the gzip trailer's CRC-32 of the zeros is
computed (:func:`crc32_after_zeros`), so a bomb is a valid gzip file to its last byte.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import unicodedata
import zlib
from pathlib import Path
from typing import Literal

from package_support import members

Format = Literal[0, 1, 2]  # tarfile.USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT
MIB = 1024**2
GIB = 1024**3
_ZERO_BLOCK = 16 * MIB


def crc32_after_zeros(crc: int, count: int) -> int:
    """``zlib.crc32`` of some data followed by ``count`` zero bytes, from that of the data
    (the register update for a zero byte is linear: apply its matrix ``count`` times)."""
    def times(matrix: list[int], vector: int) -> int:
        out, row = 0, 0
        while vector:
            if vector & 1:
                out ^= matrix[row]
            vector >>= 1
            row += 1
        return out

    def square(matrix: list[int]) -> list[int]:
        return [times(matrix, column) for column in matrix]

    operator = [0xEDB88320] + [1 << bit for bit in range(31)]  # one zero bit
    for _ in range(3):
        operator = square(operator)  # 2, 4, then 8 bits: one zero byte
    register = crc ^ 0xFFFFFFFF
    while count:
        if count & 1:
            register = times(operator, register)
        operator = square(operator)
        count >>= 1
    return register ^ 0xFFFFFFFF


def gzip_with_zeros(dest: Path, prefix: bytes, zeros: int) -> Path:
    """A valid gzip file of ``prefix`` then ``zeros`` zero bytes, written in O(output)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with dest.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # no name, mtime 0
        out.write(deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH))
        blocks, rest = divmod(zeros, _ZERO_BLOCK)
        if blocks:
            block = deflate.compress(bytes(_ZERO_BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH)
            again = deflate.compress(bytes(_ZERO_BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH)
            assert again == block, "deflate output of zeros after a full flush repeats"
            out.write(block * 2)
            for _ in range(blocks - 2):
                out.write(block)
        out.write(deflate.compress(bytes(rest)) + deflate.flush())
        crc = crc32_after_zeros(zlib.crc32(prefix), zeros)
        out.write(struct.pack("<II", crc, (len(prefix) + zeros) & 0xFFFFFFFF))
    return dest


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]], *,
              fmt: Format = tarfile.PAX_FORMAT, end: bool = True) -> bytes:
    """The tar stream of ``entries`` exactly as given, with its end blocks when ``end``."""
    buffer = io.BytesIO()
    for info, data in entries:
        buffer.write(info.tobuf(fmt, "utf-8", "surrogateescape"))
        buffer.write(data)
        if len(data) % tarfile.BLOCKSIZE:
            buffer.write(bytes(tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
    if end:
        buffer.write(bytes(2 * tarfile.BLOCKSIZE))
    return buffer.getvalue()


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, size: int | None = None,
          linkname: str = "", pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    """One member: a header (its size ``size`` if given, else the data's) and its data."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    info.size = len(data) if size is None else size
    info.pax_headers = dict(pax or {})
    return info, data


def package_entries(good: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The signed package's own members (its manifest first), as they are."""
    return [entry(name, data) for name, data in members(good)]


def hostile(good: Path, dest: Path, extra: list[tuple[tarfile.TarInfo, bytes]], *,
            fmt: Format = tarfile.PAX_FORMAT, first: bool = False) -> Path:
    """``good`` with ``extra`` members after its own (before them with ``first``, but
    always after the signed manifest)."""
    own = package_entries(good)
    ordered = [own[0], *extra, *own[1:]] if first else [*own, *extra]
    dest.write_bytes(gzip.compress(tar_bytes(ordered, fmt=fmt), compresslevel=6, mtime=0))
    return dest


def tiny_members(count: int) -> bytes:
    """``count`` headers of empty files ``m/000000``, ... (patched copies of one header:
    building them with tarfile takes seconds)."""
    template = bytearray(entry("m/000000")[0].tobuf(tarfile.USTAR_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template) - sum(b"m/000000")
    out = bytearray()
    for index in range(count):
        name = b"m/%06d" % index
        template[0:8] = name
        template[148:156] = b"%06o\0 " % (base + sum(name))
        out += template
    return bytes(out)


def zeros_bomb(good: Path, dest: Path, *, member_bytes: int = 0, tail_bytes: int = 0) -> Path:
    """``good`` with a member of ``member_bytes`` zeros and/or ``tail_bytes`` zeros after
    the tar's end: honest headers, every byte decompressed is real."""
    own = tar_bytes(package_entries(good), end=False)
    if member_bytes:
        own += entry("dlr/zeros.bin", size=member_bytes)[0].tobuf(tarfile.PAX_FORMAT)
    # The member's data, its padding and the end blocks are all zeros too.
    padding = -member_bytes % tarfile.BLOCKSIZE
    return gzip_with_zeros(dest, own, member_bytes + padding + 2 * tarfile.BLOCKSIZE
                           + tail_bytes)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)
