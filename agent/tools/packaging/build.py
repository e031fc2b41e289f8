"""Build signed model packages: ``<name>-v<version>[-<variant>]-<target>-<arch>.tar.gz``.

A package holds one Neo artifact of a model directory and is itself laid out
as a model directory, so the device can use the unpacked files as they are; the
layout (what goes where) is :mod:`agent.device.packages.manifest`'s. Its golden
vectors come from :mod:`agent.tools.packaging.golden`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.core.errors import ArtifactMissingError, ConfigError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    DLR_DIR,
    artifact_dir_name,
    is_artifact_dir,
    list_artifacts,
    model_label,
    read_artifact_info,
    read_model_info,
)
from agent.device.packages.archive import write_archive
from agent.device.packages.manifest import (
    FileEntry,
    ManifestBody,
    PackageManifest,
    manifest_bytes,
    package_members,
)
from agent.tools.packaging.golden import compute_golden
from agent.wire.signing import Signer

_READ_CHUNK = 1024 * 1024


def build_package(model_dir: Path, artifact: Path | str, *, signer: Signer, out_dir: Path,
                  version: int, reference: Path | None = None, golden_count: int = 8,
                  label: str | None = None) -> Path:
    """Write the signed package of one artifact of ``model_dir``; its path.

    ``artifact`` is an artifact directory or its name under ``dlr/`` (e.g.
    ``"rasp4b-x86_64"``). Golden outputs come from ONNX Runtime on
    ``reference``'s ``onnx/model.onnx`` (default: ``model_dir``'s own); a build
    without a trustworthy export (slow, crash, segfault, hang) needs the good one.
    """
    if version < 0:
        raise ConfigError(f"package version must be >= 0, got {version}")
    info = read_model_info(model_dir)
    artifact_dir = _artifact_dir(model_dir, artifact)
    artifact_info = read_artifact_info(artifact_dir)
    files = package_members(model_dir, artifact_dir, artifact_info)
    golden = compute_golden(model_dir=model_dir, reference_dir=reference or model_dir,
                            info=info, count=golden_count)
    body = ManifestBody(
        name=info.name,
        version=version,
        label=label or model_label(info),
        variant=info.variant,
        target=artifact_info.target,
        arch=artifact_info.arch,
        emulated=artifact_info.emulated,
        jetpack=artifact_info.jetpack,
        inputs=info.inputs,
        outputs=info.outputs,
        files={name: _file_entry(path) for name, path in files},
        golden=golden,
    )
    manifest = PackageManifest.model_validate(signer.seal(body.model_dump(mode="json")))
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / package_file_name(manifest)
    write_archive(dest, manifest=manifest_bytes(manifest), files=files)
    return dest


def build_packages(model_dir: Path, *, signer: Signer, out_dir: Path, version: int,
                   reference: Path | None = None, golden_count: int = 8) -> list[Path]:
    """One package per artifact of ``model_dir``."""
    artifacts = list_artifacts(model_dir)
    if not artifacts:
        raise ArtifactMissingError(f"{model_dir}: no artifacts under {DLR_DIR}/")
    return [build_package(model_dir, path, signer=signer, out_dir=out_dir, version=version,
                          reference=reference, golden_count=golden_count)
            for path, _ in artifacts]


def package_file_name(manifest: PackageManifest) -> str:
    variant = f"-{manifest.variant}" if manifest.variant else ""
    return (f"{manifest.name}-v{manifest.version}{variant}-"
            f"{artifact_dir_name(manifest.target, manifest.arch)}.tar.gz")


def _artifact_dir(model_dir: Path, artifact: Path | str) -> Path:
    candidate = Path(artifact)
    if not is_artifact_dir(candidate):
        candidate = model_dir / DLR_DIR / str(artifact)
    if not is_artifact_dir(candidate):
        known = ", ".join(path.name for path, _ in list_artifacts(model_dir)) or "none"
        raise ArtifactMissingError(f"{model_dir}: no artifact {artifact} (has: {known})")
    if not (candidate / ARTIFACT_INFO).is_file():
        raise ArtifactMissingError(f"{candidate / ARTIFACT_INFO}: no such file (a package "
                                   "names its target and architecture)")
    return candidate


def _file_entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(sha256=digest.hexdigest(), size=size)
