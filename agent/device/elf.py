"""Read the CPU architecture of an ELF shared object without loading it.

``dlopen`` of a library built for another machine fails with an unhelpful
message at best; reading the header first lets the agent say which
architecture the file is for and which one it runs on.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from agent.errors import ArchitectureMismatchError, ArtifactCorruptError, ArtifactMissingError

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
