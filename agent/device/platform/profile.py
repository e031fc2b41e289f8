"""The device profile: which board this is, what it tells the cloud, what it runs on.

Every fact is read from files under a root directory (``/`` on a device), so a
fixture tree stands in for a board in tests and in emulation::

    <root>/proc/device-tree/model       board name, NUL-terminated (Pi, Jetson, other DT boards)
    <root>/proc/device-tree/compatible  board and SoC ids, NUL-separated
    <root>/etc/nv_tegra_release         L4T release, Jetson only
    <root>/proc/cpuinfo                 CPU count; a Pi's ``Model`` line if there is no device tree
    <root>/proc/meminfo                 MemTotal and MemAvailable
    <root>/proc/driver/nvidia/version   an NVIDIA GPU driver on x86 (or <root>/dev/nvidia0)
    <root>/proc/sys/kernel/arch         the board's ``uname -m`` (read only when emulating)

Emulation: an emulated profile *reports* the fixture's board, Neo target and
architecture (``reported_arch``, from ``proc/sys/kernel/arch``, the kernel's own
``uname -m`` file) while ``arch`` stays the architecture of the machine the
process really runs on. Nothing is relaxed for emulation: the cloud sees the
reported target, and native code must still match the real ``arch``, which is
why an emulated device gets artifacts compiled for the host on its behalf.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import DeviceProfileError
from agent.device.platform.boards import (
    BoardFamily,
    identify_board,
    jetpack_line,
    parse_l4t_release,
    supported_arches,
)
from agent.device.platform.elf import host_arch, normalize_arch
from agent.device.platform.targets import NEO_TARGETS

DT_MODEL = Path("proc/device-tree/model")
DT_COMPATIBLE = Path("proc/device-tree/compatible")
NV_TEGRA_RELEASE = Path("etc/nv_tegra_release")
CPUINFO = Path("proc/cpuinfo")
MEMINFO = Path("proc/meminfo")
NVIDIA_DRIVER = (Path("proc/driver/nvidia/version"), Path("dev/nvidia0"))
KERNEL_ARCH = Path("proc/sys/kernel/arch")

_GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """A device as the agent sees it. Only ``arch`` describes the real machine."""

    board: str
    board_family: BoardFamily
    neo_target: str
    arch: str  # architecture of the machine this process runs on; native code must match it
    reported_arch: str  # the board's architecture, as the cloud sees it (== arch unless emulated)
    emulated: bool
    os_bits: int
    cpu_count: int
    mem_total_bytes: int
    mem_available_bytes: int
    l4t_release: str | None = None  # e.g. "R32.7.1", Jetson only
    jetpack: str | None = None  # JetPack line, e.g. "4.6", Jetson only
    accelerator: str | None = None  # "nvidia" on a Jetson or an x86 machine with a CUDA GPU

    def __post_init__(self) -> None:
        target = NEO_TARGETS.get(self.neo_target)
        if target is None:
            raise DeviceProfileError(f"unknown Neo target {self.neo_target!r}")
        if target.arch != self.reported_arch:
            raise DeviceProfileError(
                f"Neo target {self.neo_target} is {target.arch} code, "
                f"but the device reports {self.reported_arch}"
            )
        if not self.emulated and self.arch != self.reported_arch:
            raise DeviceProfileError(
                f"a device that is not emulated reports {self.reported_arch} "
                f"but runs on {self.arch}"
            )

    def to_dict(self) -> dict[str, str | int | bool | None]:
        """JSON-ready fields, for the register message."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        parts = [f"{self.board} ({self.reported_arch}) -> {self.neo_target}"]
        if self.l4t_release is not None:
            parts.append(f"L4T {self.l4t_release} / JetPack {self.jetpack}")
        if self.accelerator is not None:
            parts.append(self.accelerator)
        parts.append(
            f"{self.cpu_count} CPUs, {self.mem_total_bytes / _GIB:.1f} GiB RAM "
            f"({self.mem_available_bytes / _GIB:.1f} GiB available)"
        )
        if self.emulated:
            parts.append(f"emulated on {self.arch}")
        return ", ".join(parts)


def detect_profile(
    *, root: Path = Path("/"), machine: str | None = None, emulate: bool = False
) -> DeviceProfile:
    """Read the profile of the device whose files lie under ``root``.

    ``machine`` is the real architecture (default: this process's). With
    ``emulate`` the reported architecture comes from ``<root>/proc/sys/kernel/arch``.
    """
    arch = check_arch(machine if machine is not None else process_arch(), source="this machine")
    if emulate:
        arch_file = root / KERNEL_ARCH
        reported_arch = check_arch(_read_required(arch_file).strip(), source=str(arch_file))
    else:
        reported_arch = arch

    cpu_count, cpu_model = parse_cpuinfo(_read_required(root / CPUINFO), source=root / CPUINFO)
    model = _read_dt_strings(root / DT_MODEL)
    compatible = _read_dt_strings(root / DT_COMPATIBLE)
    tegra_file = root / NV_TEGRA_RELEASE
    tegra_release = _read_optional(tegra_file)
    board = identify_board(
        arch=reported_arch,
        model=model[0] if model else cpu_model,
        compatible=compatible,
        has_tegra_release=tegra_release is not None,
    )

    l4t_release = jetpack = None
    if board.family == "jetson":
        if tegra_release is None:
            raise DeviceProfileError(
                f"{board.name}: {tegra_file} is missing, so its L4T release and JetPack are unknown"
            )
        try:
            l4t_release = parse_l4t_release(tegra_release)
            jetpack = jetpack_line(l4t_release)
        except DeviceProfileError as err:
            raise DeviceProfileError(f"{tegra_file}: {err}") from err

    mem_total, mem_available = parse_meminfo(_read_required(root / MEMINFO), source=root / MEMINFO)
    has_nvidia_driver = any((root / path).exists() for path in NVIDIA_DRIVER)
    return DeviceProfile(
        board=board.name,
        board_family=board.family,
        neo_target=board.neo_target,
        arch=arch,
        reported_arch=reported_arch,
        emulated=emulate,
        os_bits=32 if reported_arch in ("armv7l", "i686") else 64,
        cpu_count=cpu_count,
        mem_total_bytes=mem_total,
        mem_available_bytes=mem_available,
        l4t_release=l4t_release,
        jetpack=jetpack,
        accelerator="nvidia" if board.family == "jetson" or has_nvidia_driver else None,
    )


def emulated_profile(*, fixture_root: Path, machine: str | None = None) -> DeviceProfile:
    """The profile of the board in ``fixture_root``, emulated on this (or ``machine``'s) arch."""
    return detect_profile(root=fixture_root, machine=machine, emulate=True)


def process_arch() -> str:
    """The architecture whose native code this process can load (see ``elf.host_arch``)."""
    return host_arch()


def check_arch(raw: str, *, source: str) -> str:
    """Normalise a ``uname -m`` name; raise unless some Neo target runs on it."""
    if not raw:
        raise DeviceProfileError(f"{source}: empty architecture name")
    if raw.lower().startswith("armv6"):
        # elf.normalize_arch folds armv6l into armv7l, but ARMv7 code faults on ARMv6.
        raise DeviceProfileError(f"{source}: {raw} (ARMv6) cannot run any Neo target's code")
    arch = normalize_arch(raw)
    if arch not in supported_arches():
        raise DeviceProfileError(
            f"{source}: unsupported architecture {raw!r} "
            f"(Neo targets exist for {', '.join(supported_arches())})"
        )
    return arch


def parse_cpuinfo(text: str, *, source: Path) -> tuple[int, str | None]:
    """CPU count and the board ``Model`` line (Raspberry Pi kernels write one)."""
    count = len(re.findall(r"^processor\s*:\s*\d+\s*$", text, flags=re.MULTILINE))
    if count == 0:
        raise DeviceProfileError(f"{source}: no 'processor : N' entries")
    model = re.search(r"^Model\s*:\s*(\S.*?)\s*$", text, flags=re.MULTILINE)
    return count, model.group(1) if model else None


def parse_meminfo(text: str, *, source: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes; kernels before 3.14 lack MemAvailable."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+):\s+(\d+)(?:\s+kB)?\s*", line)
        if match is not None:
            fields[match.group(1)] = int(match.group(2)) * 1024
    if "MemTotal" not in fields:
        raise DeviceProfileError(f"{source}: no MemTotal line")
    available = fields.get("MemAvailable")
    if available is None:
        available = sum(fields.get(name, 0) for name in ("MemFree", "Buffers", "Cached"))
    return fields["MemTotal"], available


def _read_required(path: Path) -> str:
    text = _read_optional(path)
    if text is None:
        raise DeviceProfileError(f"{path}: no such file; cannot read the device profile")
    return text


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DeviceProfileError(f"{path}: {err.strerror or err}") from err


def _read_dt_strings(path: Path) -> tuple[str, ...]:
    """A device-tree string property: NUL-terminated strings, possibly several."""
    text = _read_optional(path)
    if text is None:
        return ()
    return tuple(part.strip() for part in text.split("\0") if part.strip())
