"""Which board a device is, and which Neo target and JetPack line it maps to.

Pure functions over the strings a board exposes (device-tree ``model`` and
``compatible``, ``/etc/nv_tegra_release``), so that every table here is tested
without a device. Reading the files is :mod:`agent.device.platform.profile`'s job.

Raspberry Pi: the SoC, read from the device-tree ``compatible`` list (or
guessed from the model string), and the architecture the OS runs decide::

    SoC      boards                       aarch64       armv7l (32-bit OS)
    bcm2711  Pi 4 B, Pi 400, CM4          rasp4b        rasp3b
    bcm2837  Pi 3 B/B+/A+, CM3, Zero 2 W  linux_arm64   rasp3b
    bcm2712  Pi 5, CM5                    linux_arm64   linux_arm_eabihf
    bcm2836  Pi 2 B (v1.1)                -             linux_arm_eabihf
    bcm2835  Pi 1, Zero, Zero W           no target (ARMv6 cannot run ARMv7 code)

Neo's ``rasp4b`` is AArch64 code, so a Pi 4 on a 32-bit OS cannot use it; its
Cortex-A72 runs Neo's ``rasp3b`` code (ARMv7 + NEON, tuned for the Pi 3's
Cortex-A53) unchanged, so that is its target. Boards Neo has no target for get
the generic ``linux_<arch>`` target of their architecture.

Jetson: the model string, else the ``compatible`` list, names the module::

    Orin (tegra234) -> jetson_orin      Xavier (tegra194) -> jetson_xavier
    TX2 (tegra186)  -> jetson_tx2       Nano (p3448)      -> jetson_nano
    any other Jetson (TX1, ...)         -> linux_arm64 (CPU code only)

L4T release to JetPack line (``JETPACK_BY_L4T``): R32.1/R32.2 -> 4.2, R32.3 ->
4.3, R32.4 -> 4.4, R32.5 -> 4.5, R32.6/R32.7 -> 4.6, R35.1 -> 5.0,
R35.2-R35.6 -> 5.1, R36.2/R36.3 -> 6.0, R36.4 -> 6.1 (JetPack 6.2 is R36.4.3,
same CUDA and TensorRT as 6.1). A line is ``major.minor``: releases within one
line share CUDA and TensorRT versions, so code compiled for one runs on all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from agent.core.errors import DeviceProfileError
from agent.device.platform.targets import NEO_TARGETS

BoardFamily = Literal["raspberry_pi", "jetson", "generic"]

# Raspberry Pi SoC (device-tree compatible suffix) -> {arch: Neo target}.
_PI_TARGETS: dict[str, dict[str, str]] = {
    "bcm2711": {"aarch64": "rasp4b", "armv7l": "rasp3b"},
    "bcm2837": {"aarch64": "linux_arm64", "armv7l": "rasp3b"},
    "bcm2712": {"aarch64": "linux_arm64", "armv7l": "linux_arm_eabihf"},
    "bcm2836": {"armv7l": "linux_arm_eabihf"},
    "bcm2835": {},
}

# Model-string fragments -> SoC, for when the compatible list is not readable
# (e.g. the board name came from /proc/cpuinfo). Checked in order.
_PI_SOC_BY_MODEL: tuple[tuple[str, str], ...] = (
    ("Raspberry Pi 5", "bcm2712"),
    ("Compute Module 5", "bcm2712"),
    ("Raspberry Pi 4", "bcm2711"),  # also "Raspberry Pi 400"
    ("Compute Module 4", "bcm2711"),
    ("Raspberry Pi 3", "bcm2837"),
    ("Compute Module 3", "bcm2837"),
    ("Zero 2", "bcm2837"),
    ("Raspberry Pi 2", "bcm2836"),
)

# Fragments of the model string, then of the compatible list -> Neo target.
# Orin before Nano: "Jetson Orin Nano" is an Orin.
_JETSON_BY_MODEL: tuple[tuple[str, str], ...] = (
    ("orin", "jetson_orin"),
    ("xavier", "jetson_xavier"),
    ("tx2", "jetson_tx2"),
    ("nano", "jetson_nano"),
)
_JETSON_BY_COMPATIBLE: tuple[tuple[str, str], ...] = (
    ("nvidia,tegra234", "jetson_orin"),
    ("nvidia,tegra194", "jetson_xavier"),
    ("nvidia,tegra186", "jetson_tx2"),
    ("nvidia,jetson-nano", "jetson_nano"),
    ("nvidia,p3448", "jetson_nano"),
)

JETPACK_BY_L4T: dict[tuple[int, int], str] = {
    (32, 1): "4.2",
    (32, 2): "4.2",
    (32, 3): "4.3",
    (32, 4): "4.4",
    (32, 5): "4.5",
    (32, 6): "4.6",
    (32, 7): "4.6",
    (35, 1): "5.0",
    (35, 2): "5.1",
    (35, 3): "5.1",
    (35, 4): "5.1",
    (35, 5): "5.1",
    (35, 6): "5.1",
    (36, 2): "6.0",
    (36, 3): "6.0",
    (36, 4): "6.1",
}

_NV_TEGRA_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, kw_only=True)
class Board:
    """What the board strings say: its name, family and Neo target."""

    name: str
    family: BoardFamily
    neo_target: str


def supported_arches() -> tuple[str, ...]:
    """Architectures some Neo target exists for, sorted."""
    return tuple(sorted({target.arch for target in NEO_TARGETS.values()}))


def generic_target(arch: str) -> str:
    """The generic ``linux_<arch>`` Neo target of an architecture."""
    for target in NEO_TARGETS.values():
        if target.name.startswith("linux_") and target.arch == arch:
            return target.name
    raise DeviceProfileError(
        f"no Neo target for architecture {arch!r} (supported: {', '.join(supported_arches())})"
    )


def is_jetson(*, model: str | None, compatible: tuple[str, ...], has_tegra_release: bool) -> bool:
    if has_tegra_release:
        return True
    if model is not None and "jetson" in model.lower():
        return True
    return any(entry.startswith("nvidia,tegra") for entry in compatible)


def is_raspberry_pi(*, model: str | None, compatible: tuple[str, ...]) -> bool:
    if model is not None and model.startswith("Raspberry Pi"):
        return True
    return any(entry.startswith("raspberrypi,") for entry in compatible)


def identify_board(
    *, arch: str, model: str | None, compatible: tuple[str, ...], has_tegra_release: bool
) -> Board:
    """Name the board and map it to a Neo target for code of ``arch``."""
    if is_jetson(model=model, compatible=compatible, has_tegra_release=has_tegra_release):
        return _jetson_board(arch=arch, model=model, compatible=compatible)
    if is_raspberry_pi(model=model, compatible=compatible):
        return _pi_board(arch=arch, model=model or "Raspberry Pi", compatible=compatible)
    target = generic_target(arch)
    return Board(name=model or f"generic {arch}", family="generic", neo_target=target)


def _pi_board(*, arch: str, model: str, compatible: tuple[str, ...]) -> Board:
    socs = [entry.partition(",")[2] for entry in compatible if entry.startswith("brcm,")]
    soc = next((s for s in socs if s in _PI_TARGETS), None)
    if soc is None:
        soc = next((s for fragment, s in _PI_SOC_BY_MODEL if fragment in model), None)
    if soc is None:
        return Board(name=model, family="raspberry_pi", neo_target=generic_target(arch))
    runs = _PI_TARGETS[soc]
    if not runs:
        raise DeviceProfileError(f"{model} ({soc}) is an ARMv6 board; no Neo target runs on it")
    if arch not in runs:
        raise DeviceProfileError(
            f"{model} ({soc}) reports {arch}, but this board runs {' or '.join(runs)}"
        )
    return Board(name=model, family="raspberry_pi", neo_target=runs[arch])


def _jetson_board(*, arch: str, model: str | None, compatible: tuple[str, ...]) -> Board:
    name = model or "NVIDIA Jetson"
    if arch != "aarch64":
        raise DeviceProfileError(f"{name} reports {arch}, but every Jetson runs aarch64")
    lowered = name.lower()
    target = next((t for fragment, t in _JETSON_BY_MODEL if fragment in lowered), None)
    if target is None:
        target = next(
            (t for prefix, t in _JETSON_BY_COMPATIBLE for e in compatible if e.startswith(prefix)),
            None,
        )
    return Board(name=name, family="jetson", neo_target=target or generic_target(arch))


def parse_l4t_release(text: str) -> str:
    """``# R32 (release), REVISION: 7.1, ...`` -> ``"R32.7.1"``."""
    match = _NV_TEGRA_RELEASE.search(text)
    if match is None:
        first_line = text.strip().splitlines()[0] if text.strip() else "(empty)"
        raise DeviceProfileError(f"cannot read the L4T release from {first_line!r}")
    major, minor, patch = match.group(1), match.group(2), match.group(3) or "0"
    return f"R{major}.{minor}.{patch}"


def jetpack_line(l4t_release: str) -> str:
    """The JetPack line of an L4T release, e.g. ``"R32.7.1"`` -> ``"4.6"``."""
    match = re.fullmatch(r"R(\d+)\.(\d+)(?:\.\d+)?", l4t_release)
    if match is None:
        raise DeviceProfileError(f"malformed L4T release {l4t_release!r}")
    key = (int(match.group(1)), int(match.group(2)))
    try:
        return JETPACK_BY_L4T[key]
    except KeyError:
        known = ", ".join(f"R{a}.{b}" for a, b in JETPACK_BY_L4T)
        raise DeviceProfileError(
            f"L4T {l4t_release} is not in the JetPack table (known: {known})"
        ) from None


def normalize_jetpack(version: str) -> str | None:
    """A JetPack version's line: ``"4.6.1"`` -> ``"4.6"``, ``"5"`` -> ``"5.0"``, junk -> None."""
    parts = version.strip().split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return f"{parts[0]}.{parts[1] if len(parts) > 1 else '0'}"
