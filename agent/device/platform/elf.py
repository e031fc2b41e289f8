"""Read the CPU architecture of an ELF shared object without loading it.

``dlopen`` of a library built for another machine fails with an unhelpful
message at best; reading the header first lets the agent say which
architecture the file is for and which one it runs on.
"""

from __future__ import annotations

import platform
import struct
import sys
from pathlib import Path

from agent.core.errors import ArchitectureMismatchError, ArtifactCorruptError, ArtifactMissingError

# e_machine values from the ELF specification, named as `uname -m` names machines.
_MACHINES: dict[int, str] = {
    0x03: "i686",
    0x28: "armv7l",
    0x3E: "x86_64",
    0xB7: "aarch64",
    0xF3: "riscv64",
}

# `uname -m` spellings that denote the same ELF machine.
_ALIASES: dict[str, str] = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "armv7": "armv7l",
    "armv8l": "armv7l",
    "armv6l": "armv7l",
    "armhf": "armv7l",
}


def normalize_arch(name: str) -> str:
    """Map a `uname -m` style name onto the names this module reports."""
    lowered = name.lower()
    return _ALIASES.get(lowered, lowered)


def host_arch() -> str:
    """The architecture whose native code this process can load.

    A 32-bit userland on a 64-bit kernel (32-bit Raspberry Pi OS boots a 64-bit
    kernel on a Pi 4) makes ``uname -m`` say aarch64 while Python can only load
    ARMv7 code; the pointer size tells the truth.
    """
    arch = normalize_arch(platform.machine())
    if sys.maxsize <= 2**32:
        return {"aarch64": "armv7l", "x86_64": "i686"}.get(arch, arch)
    return arch


def elf_arch(path: Path) -> str:
    """Return the architecture an ELF file was built for, e.g. ``"aarch64"``."""
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no such file") from err
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ArtifactCorruptError(f"{path}: not an ELF file")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return _MACHINES.get(machine, f"elf-machine-0x{machine:x}")


def check_elf_arch(path: Path, expected: str | None = None) -> str:
    """Raise :class:`ArchitectureMismatchError` unless ``path`` runs on ``expected``.

    ``expected`` defaults to the host architecture. The message names both.
    """
    want = normalize_arch(expected) if expected else host_arch()
    got = elf_arch(path)
    if got != want:
        raise ArchitectureMismatchError(
            f"{path.name} is built for {got}, but this machine is {want}"
        )
    return got


def exported_symbols(path: Path) -> frozenset[str]:
    """Names of the defined symbols in an ELF file's dynamic symbol table.

    Lets the agent check that every kernel a graph names is in ``compiled.so``
    before libdlr loads it (libdlr only logs that failure to stderr).
    """
    data = path.read_bytes()
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise ArtifactCorruptError(f"{path}: not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        if is64:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            sh_fmt, sym_size = end + "IIQQQQIIQQ", 24
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            sh_fmt, sym_size = end + "IIIIIIIIII", 16
        sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
        names: set[str] = set()
        for sec in sections:
            if sec[1] != 11:  # SHT_DYNSYM
                continue
            offset, size, link = sec[4], sec[5], sec[6]
            str_off = sections[link][4]
            for pos in range(offset, offset + size, sym_size):
                if is64:
                    name_idx, _info, _other, shndx = struct.unpack_from(end + "IBBH", data, pos)
                else:
                    name_idx, = struct.unpack_from(end + "I", data, pos)
                    shndx, = struct.unpack_from(end + "H", data, pos + 14)
                if shndx == 0 or name_idx == 0:
                    continue  # undefined (imported) or unnamed
                stop = data.index(b"\0", str_off + name_idx)
                names.add(data[str_off + name_idx:stop].decode("utf-8", errors="replace"))
        return frozenset(names)
    except (struct.error, IndexError, ValueError) as err:
        raise ArtifactCorruptError(f"{path}: malformed ELF section or symbol table") from err
