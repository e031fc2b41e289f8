"""Neo compilation targets the agent knows, and what each one runs on.

Names are SageMaker Neo ``TargetDevice`` values where Neo has one for the board
(``rasp4b``, ``jetson_nano``, ...) and the ``TargetPlatform`` triple rendered as
``linux_<arch>`` for generic machines (Neo's ``Os=LINUX, Arch=X86_64`` etc.).

Neo also names targets a device profile never reports: cloud instance families
(``ml_c5``, ``ml_m5``: plain x86_64 CPU code, so :data:`NEO_ALIASES` maps them to
``linux_x86_64``) and accelerators this agent's DLR backend cannot drive (``ml_inf1``
needs the Neuron runtime, ``ml_p3``/``ml_g4dn`` CUDA on a server GPU). :func:`parse_target`
turns any of those spellings into the target devices use, or says why it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.errors import ConfigError


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

# SageMaker's CPU instance families: x86_64 code that any x86_64 machine of the same
# instruction-set level runs (ml_c5/ml_m5 code may use AVX-512: a device lacking it faults,
# which the golden check in staging catches before the model serves).
_X86_FAMILIES = ("ml_c4", "ml_c5", "ml_c6i", "ml_m4", "ml_m5", "ml_m6i", "ml_r5", "ml_t3",
                 "x86_64", "intel_x86_64")
NEO_ALIASES: dict[str, str] = {
    **{family: "linux_x86_64" for family in _X86_FAMILIES},
    "linux_armv7": "linux_arm_eabihf",
    "linux_arm_eabi": "linux_arm_eabihf",
    "linux_aarch64": "linux_arm64",
    "aarch64": "linux_arm64",
    "jetson_xavier_nx": "jetson_xavier",
    "jetson_agx_xavier": "jetson_xavier",
}
# Names Neo knows whose code needs a runtime this agent does not ship.
UNSUPPORTED_TARGETS: dict[str, str] = {
    "ml_inf1": "Inferentia code needs the AWS Neuron runtime",
    "ml_inf2": "Inferentia code needs the AWS Neuron runtime",
    "ml_p2": "server GPU code needs CUDA on an x86_64 GPU host",
    "ml_p3": "server GPU code needs CUDA on an x86_64 GPU host",
    "ml_g4dn": "server GPU code needs CUDA on an x86_64 GPU host",
    "ml_eia2": "Elastic Inference is retired",
    "deeplens": "DeepLens runs Intel OpenCL code",
}
_ACCELERATORS = ("nvidia",)


@dataclass(frozen=True)
class ParsedTarget:
    """A target as a user or an artifact spelt it, and the device target it means."""

    target: NeoTarget
    given: str  # as spelt, e.g. "ML_C5" or "linux_arm64_nvidia"
    accelerator: str | None = None


def parse_target(name: str) -> ParsedTarget:
    """The device target of a Neo ``TargetDevice`` or ``TargetPlatform`` spelling.

    Case does not matter (``compiled.meta`` writes ``ML_M4``); a ``TargetPlatform`` form may
    end in an accelerator (``linux_arm64_nvidia``). Raises :class:`ConfigError` naming the
    known targets, or why a known one cannot run here.
    """
    key = name.strip().lower().replace("-", "_")
    accelerator = None
    for suffix in _ACCELERATORS:
        if key.startswith("linux_") and key.endswith(f"_{suffix}"):
            key, accelerator = key[: -len(suffix) - 1], suffix
    if key in UNSUPPORTED_TARGETS:
        raise ConfigError(f"Neo target {name!r}: {UNSUPPORTED_TARGETS[key]}; this agent runs "
                          f"CPU code (and Jetson GPUs) through libdlr")
    canonical = NEO_ALIASES.get(key, key)
    target = NEO_TARGETS.get(canonical)
    if target is None:
        raise ConfigError(f"unknown Neo target {name!r}; known: {', '.join(known_target_names())}")
    if accelerator is not None and target.accelerator not in (None, accelerator):
        raise ConfigError(f"Neo target {name!r}: {target.name} has no {accelerator} accelerator")
    return ParsedTarget(target=target, given=name, accelerator=accelerator or target.accelerator)


def known_target_names() -> list[str]:
    """Every spelling :func:`parse_target` accepts, sorted."""
    return sorted({*NEO_TARGETS, *NEO_ALIASES})
