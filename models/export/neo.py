"""Neo-format (TVM graph executor) artifacts that the real libdlr loads, built with gcc.

SageMaker Neo compiles a model per target board into ``compiled.so`` +
``compiled.params`` + ``compiled_model.json`` (+ ``compiled.meta``). This module
produces the same artifact for an MLP from C kernels (see
:mod:`models.export.kernels`), natively or with a Debian cross gcc, so every
test of the DLR path can run the real ``libdlr.so`` and every ARM artifact is
genuine ARM code. Beside the four Neo files each artifact carries
``artifact.info`` (which board and compiler it is for) and ``runner.c`` plus
its binary ``runner`` (see :mod:`models.export.runner`).

Builds are reproducible: the sources are fixed text, compiled from a fixed
relative path without debug info, so the same weights, compiler and flags
give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write, atomic_write_text
from agent.core.errors import ModelBuildError
from agent.core.model_layout import ARTIFACT_INFO, ArtifactInfo, artifact_dir_name
from agent.device.platform.elf import host_arch
from agent.device.platform.targets import NEO_TARGETS
from models.export.kernels import Fault, graph_params, kernels_source, mlp_graph
from models.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from models.export.runner import runner_source
from models.export.tvm_format import graph_json, meta_json, params_bytes

# Debian's cross compilers (gcc-<triple> packages), by the architecture they emit.
CROSS_COMPILERS: dict[str, str] = {
    "x86_64": "x86_64-linux-gnu-gcc",
    "aarch64": "aarch64-linux-gnu-gcc",
    "armv7l": "arm-linux-gnueabihf-gcc",
}

# Lets gcc vectorise and inline without giving up IEEE infinities/NaNs (which
# -ffast-math's -ffinite-math-only would, breaking softmax on overflow).
COMMON_CFLAGS: tuple[str, ...] = (
    "-O3",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-fvisibility=hidden",
)

# Baseline code for a generic machine of each architecture.
ARCH_CFLAGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("-march=x86-64",),
    "aarch64": ("-march=armv8-a",),
    # NEON is not IEEE-exact (it flushes denormals), so gcc vectorises float
    # code for ARMv7 only when told that is acceptable.
    "armv7l": ("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard",
               "-funsafe-math-optimizations"),
}

# The board's own CPU, where Neo's target names one.
TARGET_CFLAGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("rasp4b", "aarch64"): ("-mcpu=cortex-a72",),
    ("jetson_nano", "aarch64"): ("-mcpu=cortex-a57",),
    ("jetson_tx2", "aarch64"): ("-mcpu=cortex-a57",),
    ("jetson_xavier", "aarch64"): ("-march=armv8.2-a",),  # Carmel; gcc 12 has no -mcpu for it
    ("jetson_orin", "aarch64"): ("-mcpu=cortex-a78ae",),
    # The Pi 3's Cortex-A53 running a 32-bit (armhf) OS, as Neo's rasp3b target assumes.
    ("rasp3b", "armv7l"): ("-mcpu=cortex-a53", "-mfpu=neon-fp-armv8", "-mfloat-abi=hard",
                           "-funsafe-math-optimizations"),
}

SHARED_FLAGS: tuple[str, ...] = ("-shared", "-fPIC")
RUNNER_SOURCE = "runner.c"
RUNNER_BINARY = "runner"


@dataclass(frozen=True)
class Compiler:
    """A gcc that emits code for ``arch``."""

    command: str
    arch: str
    version: str

    @property
    def description(self) -> str:
        return f"{self.command} {self.version}"


def find_compiler(arch: str) -> Compiler | None:
    """The host gcc for the host's architecture, else Debian's cross gcc; None if absent."""
    candidates = ["gcc", "cc", CROSS_COMPILERS.get(arch, "")] if arch == host_arch() else [
        CROSS_COMPILERS.get(arch, "")
    ]
    for command in candidates:
        if command and shutil.which(command):
            try:
                version = subprocess.run(
                    [command, "-dumpfullversion"], capture_output=True, text=True, check=True,
                    timeout=30,
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                continue
            return Compiler(command, arch, version)
    return None


def cflags_for(target: str, arch: str, *, emulated: bool = False) -> list[str]:
    """Compiler flags for ``target``'s kernels on ``arch``.

    An emulated build runs on the host in place of the board, so it gets the
    generic flags of the host's architecture, not the board's CPU.
    """
    board = None if emulated else TARGET_CFLAGS.get((target, arch))
    return [*COMMON_CFLAGS, *(board or ARCH_CFLAGS.get(arch, ()))]


def _compile(compiler: Compiler, source_name: str, output_name: str, flags: Sequence[str],
             libs: Sequence[str], workdir: Path) -> None:
    # Relative names and no -g keep build paths out of the binary, so rebuilds are identical.
    command = [compiler.command, *flags, source_name, "-o", output_name, *libs]
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                timeout=300)
    except (OSError, subprocess.SubprocessError) as err:
        raise ModelBuildError(f"{' '.join(command)}: {err}") from err
    if result.returncode != 0:
        raise ModelBuildError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.strip()}"
        )


@dataclass(frozen=True)
class ArtifactRequest:
    """One artifact to build: which board, which architecture, and whether it is emulated."""

    target: str
    arch: str
    emulated: bool = False

    @property
    def dir_name(self) -> str:
        return artifact_dir_name(self.target, self.arch)


def export_neo(params: Mapping[str, np.ndarray], artifact_dir: Path, request: ArtifactRequest,
               compiler: Compiler, *, fault: Fault | None = None) -> ArtifactInfo:
    """Write a complete Neo-format artifact for an MLP weight set into ``artifact_dir``.

    The directory is assembled beside its final place and renamed into it, so a
    reader never finds a half-built artifact. Raises :class:`ModelBuildError`
    when compilation fails.
    """
    if request.target not in NEO_TARGETS:
        raise ModelBuildError(f"unknown Neo target {request.target!r}")
    if compiler.arch != request.arch:
        raise ModelBuildError(f"{compiler.command} emits {compiler.arch}, not {request.arch}")
    graph = mlp_graph(params, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    flags = cflags_for(request.target, request.arch, emulated=request.emulated)
    info = ArtifactInfo(
        target=request.target,
        arch=request.arch,
        emulated=request.emulated,
        jetpack=NEO_TARGETS[request.target].jetpack,
        compiler=compiler.description,
        cflags=[*flags, *SHARED_FLAGS],
    )
    artifact_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{artifact_dir.name}.", dir=artifact_dir.parent))
    try:
        (staging / "kernels.c").write_text(kernels_source(graph, fault=fault))
        _compile(compiler, "kernels.c", "compiled.so", info.cflags, ["-lm"], staging)
        (staging / "kernels.c").unlink()
        (staging / RUNNER_SOURCE).write_text(runner_source(graph))
        _compile(compiler, RUNNER_SOURCE, RUNNER_BINARY, flags, ["-ldl"], staging)
        named = graph_params(params)
        order = [entry.name for entry in graph.params]
        atomic_write(staging / "compiled.params", params_bytes(named, order))
        atomic_write_text(staging / "compiled_model.json", graph_json(graph))
        atomic_write_text(staging / "compiled.meta", meta_json(graph))
        atomic_write_text(
            staging / ARTIFACT_INFO, json.dumps(info.model_dump(mode="json"), indent=2) + "\n"
        )
        staging.chmod(0o755)
        if artifact_dir.exists():
            shutil.rmtree(artifact_dir)
        staging.rename(artifact_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info
