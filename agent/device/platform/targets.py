"""Neo compilation targets the agent knows, and what each one runs on.

Names are SageMaker Neo ``TargetDevice`` values where Neo has one for the board
(``rasp4b``, ``jetson_nano``, ...) and the ``TargetPlatform`` triple rendered as
``linux_<arch>`` for generic machines (Neo's ``Os=LINUX, Arch=X86_64`` etc.).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeoTarget:
    name: str
    arch: str  # CPU architecture of the compiled code, as `uname -m` names it
    accelerator: str | None = None  # "nvidia" for Jetson boards
    jetpack: str | None = None  # JetPack line a Jetson artifact is compiled against


NEO_TARGETS: dict[str, NeoTarget] = {
    t.name: t
    for t in (
        NeoTarget("linux_x86_64", "x86_64"),
        NeoTarget("linux_arm64", "aarch64"),
        NeoTarget("linux_arm_eabihf", "armv7l"),
        NeoTarget("rasp3b", "armv7l"),
        NeoTarget("rasp4b", "aarch64"),
        NeoTarget("jetson_nano", "aarch64", accelerator="nvidia", jetpack="4.6"),
        NeoTarget("jetson_tx2", "aarch64", accelerator="nvidia", jetpack="4.6"),
        NeoTarget("jetson_xavier", "aarch64", accelerator="nvidia", jetpack="5.1"),
        NeoTarget("jetson_orin", "aarch64", accelerator="nvidia", jetpack="5.1"),
    )
}

# What `edge-agent models build` compiles by default: each target once for its
# own architecture (cross-compiled when that is not the host's), and once for
# the host on behalf of emulated devices of that target.
DEFAULT_BUILD_TARGETS: tuple[str, ...] = ("linux_x86_64", "rasp4b", "jetson_nano", "rasp3b")
