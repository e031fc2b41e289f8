"""Which Neo (DLR) artifact runs on this device: the rules, the choice and the check.

These rules decide wherever a DLR artifact is chosen or admitted: for model paths a user
gives (:mod:`agent.device.platform.resolve`), for signed packages being staged, and for
the first model a folder of packages offers.

An artifact fits a device when all of these hold:

- its Neo target is the device's (``profile.neo_target``) or, as a fallback, the
  generic ``linux_<arch>`` target of the device's reported architecture (plain
  CPU code for that architecture runs on any board of it); an exact target
  always wins over the fallback;
- its architecture is the one the process really runs on (``profile.arch``): an
  emulated rasp4b on x86_64 takes ``rasp4b-x86_64`` (built on its behalf), a
  real Pi takes ``rasp4b-aarch64``;
- when it is Jetson code (a Jetson target, or any artifact naming a JetPack),
  its JetPack line equals the device's: CUDA and TensorRT differ between lines.

:func:`select_artifact` decides from ``artifact.info`` alone; :func:`verify_artifact`
repeats those checks and reads the ELF header of every shared object, so an
artifact whose metadata lies is caught before ``dlopen``.
"""

from __future__ import annotations

from pathlib import Path

from agent.core.errors import (
    ArchitectureMismatchError,
    ArtifactCorruptError,
    ArtifactMissingError,
    TargetMismatchError,
)
from agent.core.model_layout import ARTIFACT_INFO, DLR_DIR, ArtifactInfo, list_artifacts
from agent.device.platform.boards import generic_target, normalize_jetpack
from agent.device.platform.elf import check_elf_arch, normalize_arch
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.targets import NEO_TARGETS

COMPILED_SO = "compiled.so"


def acceptable_targets(profile: DeviceProfile) -> tuple[str, ...]:
    """Neo targets whose code this device can use, preferred first."""
    generic = generic_target(profile.reported_arch)
    if generic == profile.neo_target:
        return (profile.neo_target,)
    return (profile.neo_target, generic)


def select_artifact(model_dir: Path, profile: DeviceProfile) -> tuple[Path, ArtifactInfo]:
    """The artifact directory of ``model_dir`` this device should load, with its metadata."""
    artifacts = list_artifacts(model_dir)
    if not artifacts:
        raise ArtifactMissingError(
            f"{model_dir}: no DLR artifacts (no {DLR_DIR}/<target>-<arch>/{ARTIFACT_INFO})"
        )
    problems = {path: _problem(info, profile) for path, info in artifacts}
    for wanted in acceptable_targets(profile):
        for path, info in artifacts:
            if info.target == wanted and problems[path] is None:
                return path, info
    available = "; ".join(f"{path.name}: {problems[path]}" for path, _ in artifacts)
    raise TargetMismatchError(
        f"no artifact in {model_dir} fits this device, which needs {_needs(profile)}. "
        f"Available: {available}"
    )


def verify_artifact(artifact_dir: Path, info: ArtifactInfo, profile: DeviceProfile) -> None:
    """Raise unless the artifact in ``artifact_dir`` (described by ``info``) runs here.

    :class:`TargetMismatchError` for another Neo target or JetPack line,
    :class:`ArchitectureMismatchError` for native code of another architecture,
    :class:`ArtifactCorruptError` when ``artifact.info`` contradicts itself or the
    ELF headers, :class:`ArtifactMissingError` without ``compiled.so``.
    """
    problem = _target_problem(info, profile)
    if problem is not None:
        raise TargetMismatchError(f"{artifact_dir.name}: {problem}")
    declared = normalize_arch(info.arch)
    native = NEO_TARGETS[info.target].arch
    if declared != native and not info.emulated:
        raise ArtifactCorruptError(
            f"{artifact_dir / ARTIFACT_INFO}: {info.target} code is {native}, but the file "
            f"says arch {info.arch} without emulated=true"
        )
    if not (artifact_dir / COMPILED_SO).is_file():
        raise ArtifactMissingError(f"{artifact_dir / COMPILED_SO}: no such file")
    # compiled.so always exists here, so these checks also prove info.arch == profile.arch.
    for library in sorted(artifact_dir.glob("*.so")):
        try:
            built_for = check_elf_arch(library, profile.arch)
        except ArchitectureMismatchError as err:
            raise ArchitectureMismatchError(f"{artifact_dir.name}/{err}{_as(profile)}") from err
        if built_for != declared:
            raise ArtifactCorruptError(
                f"{library}: built for {built_for}, but {ARTIFACT_INFO} says {info.arch}"
            )


def _problem(info: ArtifactInfo, profile: DeviceProfile) -> str | None:
    """Why the artifact does not fit the device, or None when it does."""
    target_problem = _target_problem(info, profile)
    if target_problem is not None:
        return target_problem
    if normalize_arch(info.arch) != profile.arch:
        return f"built for {info.arch}, but this machine is {profile.arch}{_as(profile)}"
    return None


def _target_problem(info: ArtifactInfo, profile: DeviceProfile) -> str | None:
    accepted = acceptable_targets(profile)
    if info.target not in accepted:
        return (
            f"compiled for Neo target {info.target}, but this device is "
            f"{' or '.join(accepted)} ({profile.board})"
        )
    target = NEO_TARGETS.get(info.target)
    is_jetson_code = info.jetpack is not None or (target is not None and target.jetpack is not None)
    if not is_jetson_code:
        return None
    if info.jetpack is None:
        return f"{info.target} code that names no JetPack line"
    line = normalize_jetpack(info.jetpack)
    if line is None:
        return f"malformed JetPack version {info.jetpack!r}"
    if profile.jetpack is None:
        return f"built against JetPack {info.jetpack}, but this device has no JetPack"
    if line != profile.jetpack:
        return (
            f"built against JetPack {info.jetpack}, but this device runs JetPack "
            f"{profile.jetpack} (L4T {profile.l4t_release})"
        )
    return None


def _needs(profile: DeviceProfile) -> str:
    accepted = acceptable_targets(profile)
    targets = accepted[0] + (f" (or generic {accepted[1]})" if len(accepted) > 1 else "")
    jetpack = f" for JetPack {profile.jetpack}" if profile.jetpack is not None else ""
    return f"Neo target {targets} built for {profile.arch}{jetpack}{_as(profile)}"


def _as(profile: DeviceProfile) -> str:
    if not profile.emulated:
        return ""
    return f" (emulating a {profile.neo_target} board, {profile.reported_arch})"
