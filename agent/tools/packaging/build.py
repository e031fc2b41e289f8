"""Build signed model packages: ``<name>-v<version>[-<variant>]-<target>-<arch>.tar.gz`` for a
Neo artifact (backend ``dlr``), ``<name>-v<version>[-<variant>]-onnx.tar.gz`` for the ONNX
model (backend ``onnx``, for devices whose agent runs ONNX Runtime).

A package is itself laid out as a model directory, so the device can use the unpacked files
as they are; the layout (what goes where) is :mod:`agent.device.packages.manifest`'s. Its
golden vectors come from :mod:`agent.tools.packaging.golden`.

**One version, one label.** A package's version is an integer, by default model.json's own
version. The label is always ``<name>-v<version>[-<variant>]`` of the package's version, and
when that differs from model.json's, the packaged model.json says the package's version too:
file name, manifest label and model.json agree, so a rollout waits for the label the
devices will report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.core.errors import ArtifactMissingError, ConfigError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    DLR_DIR,
    MODEL_INFO,
    ONNX_FILE,
    ArtifactInfo,
    ModelInfo,
    artifact_dir_name,
    is_artifact_dir,
    list_artifacts,
    model_label,
    read_artifact_info,
    read_model_info,
)
from agent.device.packages.archive import write_archive
from agent.device.packages.manifest import (
    ANY,
    FileEntry,
    Golden,
    ManifestBody,
    PackageManifest,
    manifest_bytes,
    onnx_package_members,
    package_members,
)
from agent.tools.packaging.golden import check_onnx_export, package_golden
from agent.wire.signing import Signer

_READ_CHUNK = 1024 * 1024
_INTEGER = re.compile(r"0|[1-9][0-9]*")


def package_version(model_dir: Path, info: ModelInfo, version: int | None) -> int:
    """The package version: ``version`` if given, else model.json's when it is an integer."""
    if version is not None:
        if version < 0:
            raise ConfigError(f"package version must be >= 0, got {version}")
        return version
    if _INTEGER.fullmatch(info.version) is None:
        raise ConfigError(f"{model_dir / MODEL_INFO}: version {info.version!r} is not an "
                          "integer, and a package's version is one (devices compare it with "
                          "their floor): give it (--version N)")
    return int(info.version)


def packaged_info(info: ModelInfo, version: int) -> ModelInfo:
    """model.json as a package of ``version`` holds it: that version, the rest unchanged."""
    return info if info.version == str(version) else \
        info.model_copy(update={"version": str(version)})


def build_package(model_dir: Path, artifact: Path | str, *, signer: Signer, out_dir: Path,
                  version: int | None = None, reference: Path | None = None,
                  golden_count: int = 8) -> Path:
    """Write the signed package of one Neo artifact of ``model_dir``; its path.

    ``artifact`` is an artifact directory or its name under ``dlr/`` (e.g.
    ``"rasp4b-x86_64"``). ``version`` defaults to model.json's. Golden vectors come from
    the model's ``golden.npz``, else ONNX Runtime on ``reference``'s ``onnx/model.onnx``
    (default: ``model_dir``'s own); a build without a trustworthy export (slow, crash,
    segfault, hang) needs the good one.
    """
    info = read_model_info(model_dir)
    number = package_version(model_dir, info, version)
    artifact_dir = _artifact_dir(model_dir, artifact)
    artifact_info = read_artifact_info(artifact_dir)
    golden = package_golden(model_dir, info, reference=reference, count=golden_count)
    files = package_members(model_dir, artifact_dir, artifact_info)
    return _write(info, number, files, golden, signer=signer, out_dir=out_dir,
                  artifact=artifact_info)


def build_onnx_package(model_dir: Path, *, signer: Signer, out_dir: Path,
                       version: int | None = None, reference: Path | None = None,
                       golden_count: int = 8) -> Path:
    """Write the signed ONNX package of ``model_dir`` (model.json and ``onnx/model.onnx``,
    backend ``onnx``, target and arch ``any``); its path. Golden vectors as for
    :func:`build_package`."""
    info = read_model_info(model_dir)
    number = package_version(model_dir, info, version)
    if not (model_dir / ONNX_FILE).is_file():
        raise ArtifactMissingError(f"{model_dir / ONNX_FILE}: no such file (an onnx package "
                                   "holds the model's ONNX export)")
    check_onnx_export(model_dir, info)
    golden = package_golden(model_dir, info, reference=reference, count=golden_count)
    return _write(info, number, onnx_package_members(model_dir), golden, signer=signer,
                  out_dir=out_dir, artifact=None)


def build_packages(model_dir: Path, *, signer: Signer, out_dir: Path,
                   version: int | None = None, reference: Path | None = None,
                   golden_count: int = 8) -> list[Path]:
    """One package per Neo artifact of ``model_dir``, and its ONNX package when it has an
    ONNX export."""
    artifacts = list_artifacts(model_dir)
    has_onnx = (model_dir / ONNX_FILE).is_file()
    if not artifacts and not has_onnx:
        raise ArtifactMissingError(f"{model_dir}: no artifacts under {DLR_DIR}/ and no "
                                   f"{ONNX_FILE}")
    built = [build_package(model_dir, path, signer=signer, out_dir=out_dir, version=version,
                           reference=reference, golden_count=golden_count)
             for path, _ in artifacts]
    if has_onnx:
        built.append(build_onnx_package(model_dir, signer=signer, out_dir=out_dir,
                                        version=version, reference=reference,
                                        golden_count=golden_count))
    return built


def package_file_name(manifest: ManifestBody) -> str:
    variant = f"-{manifest.variant}" if manifest.variant else ""
    where = "onnx" if manifest.backend == "onnx" else \
        artifact_dir_name(manifest.target, manifest.arch)
    return f"{manifest.name}-v{manifest.version}{variant}-{where}.tar.gz"


def _write(info: ModelInfo, version: int, files: list[tuple[str, Path]], golden: Golden, *,
           signer: Signer, out_dir: Path, artifact: ArtifactInfo | None) -> Path:
    packaged = packaged_info(info, version)
    with _model_json(files, info, packaged) as members:
        where = artifact or ArtifactInfo(target=ANY, arch=ANY)
        body = ManifestBody(
            name=info.name, version=version, label=model_label(packaged), variant=info.variant,
            target=where.target, arch=where.arch, emulated=where.emulated,
            jetpack=where.jetpack, backend="onnx" if artifact is None else "dlr",
            inputs=info.inputs, outputs=info.outputs,
            files={name: _file_entry(path) for name, path in members}, golden=golden,
            metadata=info.metadata)
        manifest = PackageManifest.model_validate(signer.seal(body.model_dump(mode="json")))
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / package_file_name(manifest)
        write_archive(dest, manifest=manifest_bytes(manifest), files=members)
    return dest


@contextlib.contextmanager
def _model_json(files: list[tuple[str, Path]], info: ModelInfo,
                packaged: ModelInfo) -> Iterator[list[tuple[str, Path]]]:
    """``files`` with model.json taken as it is, or rewritten for the package's version."""
    if packaged is info:
        yield files
        return
    with tempfile.TemporaryDirectory(prefix="edge-package-") as tmp:
        rewritten = Path(tmp) / MODEL_INFO
        rewritten.write_text(json.dumps(packaged.model_dump(mode="json"), indent=2) + "\n")
        yield [(name, rewritten if name == MODEL_INFO else path) for name, path in files]


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
