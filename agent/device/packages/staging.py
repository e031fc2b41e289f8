"""Stage a model package: everything a device checks before a new model may serve.

:func:`stage` runs these steps in order and stops at the first failure:

1. fetch the archive (size cap while streaming; its sha256 when the command gave one);
2. read ``manifest.json`` (the first member) and verify its Ed25519 signature
   against trusted, unrevoked keys, then validate its schema;
3. the anti-rollback floor: ``version < min_version`` is refused;
4. safe extraction (:mod:`agent.device.packages.extract`);
5. every file's sha256 and size against the manifest; a listed file missing
   or a file the manifest does not list is refused;
6. the package's model.json against the manifest: the same name, label, variant,
   tensors and metadata (:func:`check_model_info`);
7. a DLR package's Neo target against the device profile and every shared object's ELF
   architecture against the real machine (:func:`verify_artifact`; emulated
   devices keep every check); an ONNX package (target ``any``) has no native code, so
   only its model file is required;
8. the golden vectors, reproduced in a child process with a timeout (a fault or hang
   kills only the child) by the agent's own backend of the package's runtime, with the
   device's settings for it (:mod:`agent.device.packages.backends`).

Everything temporary lives in one ``.stage-*`` directory under ``work_dir``,
removed on success and on every failure; only the verified package directory
is left, renamed into place last. A process killed mid-way leaves a
``.stage-*`` directory that :func:`remove_stale_staging` clears at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from agent.core.durable import fsync_dir
from agent.core.errors import ArtifactCorruptError, ArtifactError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    MODEL_INFO,
    model_label,
    read_artifact_info,
    read_model_info,
)
from agent.device.packages.archive import read_manifest_member
from agent.device.packages.errors import (
    DigestMismatchError,
    MissingFileError,
    ModelInfoMismatchError,
    UnlistedFileError,
    VersionBelowFloorError,
    staging_io_error,
)
from agent.device.packages.extract import ExtractedFile, extract_archive
from agent.device.packages.fetch import fetch
from agent.device.packages.golden import run_golden_check
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import (
    MANIFEST_NAME,
    PackageManifest,
    package_artifact_dir,
    parse_manifest_json,
    sha256_hex,
    staged_dir_name,
    verify_manifest,
)
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.selection import verify_artifact
from agent.device.runtime import BackendConfig
from agent.wire.signing import TrustStore

STAGING_PREFIX = ".stage-"
_ARCHIVE = "package.tar.gz"
_UNPACKED = "package"


@dataclass(frozen=True, kw_only=True)
class StagedPackage:
    """A verified package unpacked in ``dir`` (a model directory plus ``manifest.json``)."""

    dir: Path
    manifest: PackageManifest
    archive_sha256: str

    @property
    def artifact_dir(self) -> Path:
        return package_artifact_dir(self.dir, self.manifest)


def stage(url_or_path: str | Path, *, trust: TrustStore, min_version: int,
          profile: DeviceProfile, work_dir: Path, limits: PackageLimits | None = None,
          expected_sha256: str | None = None, golden_timeout_s: float = 10.0,
          dlr_library: Path | None = None,
          backend_config: BackendConfig | None = None,
          allowed_dirs: Sequence[Path] | None = None,
          cancel: threading.Event | None = None) -> StagedPackage:
    """Fetch, verify and unpack a package into ``work_dir``; raise a typed error otherwise.

    The result is ``work_dir/<name>-v<version>-<sha256[:12]>``; one already there
    (the same archive staged before) is replaced. The caller moves or removes it.
    ``backend_config`` is the device's runtime settings (the golden check of a package of
    that runtime uses them); ``dlr_library`` overrides its libdlr. A local source must be a
    regular file in one of ``allowed_dirs`` (None: any); setting ``cancel`` stops the
    download (:class:`~agent.device.packages.errors.FetchCancelledError`).
    """
    limits = limits or PackageLimits()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=work_dir))
    except OSError as err:
        raise staging_io_error(err, f"creating a staging dir in {work_dir}") from err
    try:
        fetched = fetch(url_or_path, tmp / _ARCHIVE, expected_sha256=expected_sha256,
                        max_bytes=limits.max_archive_bytes, timeout_s=limits.fetch_timeout_s,
                        retries=limits.fetch_retries, deadline_s=limits.fetch_deadline_s,
                        min_bytes_per_s=limits.fetch_min_bytes_per_s,
                        rate_window_s=limits.fetch_rate_window_s, allowed_dirs=allowed_dirs,
                        cancel=cancel)
        raw_manifest = read_manifest_member(fetched.path, max_bytes=limits.max_manifest_bytes,
                                            limits=limits)
        manifest = verify_manifest(
            parse_manifest_json(raw_manifest, max_depth=limits.max_manifest_depth), trust)
        if manifest.version < min_version:
            raise VersionBelowFloorError(
                f"{manifest.describe()}: version {manifest.version} is below the floor "
                f"{min_version}")
        unpacked = tmp / _UNPACKED
        files = extract_archive(fetched.path, unpacked, limits=limits)
        with contextlib.suppress(OSError):  # halves the peak disk use; rmtree retries it
            fetched.path.unlink()
        check_files(manifest, files, manifest_sha256=sha256_hex(raw_manifest))
        check_model_info(unpacked, manifest)
        check_artifact(unpacked, manifest, profile)
        run_golden_check(unpacked, timeout_s=golden_timeout_s, library_path=dlr_library,
                         label=manifest.describe(), config=backend_config)
        final = work_dir / staged_dir_name(manifest, fetched.sha256)
        _move_into_place(unpacked, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return StagedPackage(dir=final, manifest=manifest, archive_sha256=fetched.sha256)


def check_files(manifest: PackageManifest, files: Mapping[str, ExtractedFile], *,
                manifest_sha256: str) -> None:
    """Raise unless the unpacked files are exactly the manifest's, byte for byte."""
    unlisted = sorted(set(files) - set(manifest.files) - {MANIFEST_NAME})
    if unlisted:
        raise UnlistedFileError(f"files not listed in the manifest: {', '.join(unlisted)}")
    for name, entry in sorted(manifest.files.items()):
        got = files.get(name)
        if got is None:
            raise MissingFileError(f"{name}: listed in the manifest, absent from the archive")
        if got.size != entry.size or got.sha256 != entry.sha256:
            raise DigestMismatchError(
                f"{name}: sha256 {got.sha256} ({got.size} bytes), the manifest says "
                f"{entry.sha256} ({entry.size} bytes)")
    unpacked_manifest = files.get(MANIFEST_NAME)
    if unpacked_manifest is None or unpacked_manifest.sha256 != manifest_sha256:
        raise DigestMismatchError(f"the unpacked {MANIFEST_NAME} is not the one verified")


def check_model_info(package_dir: Path, manifest: PackageManifest) -> None:
    """Raise :class:`ModelInfoMismatchError` unless the package's model.json describes the
    model its signed manifest does (name, label, variant, inputs, outputs, metadata)."""
    try:
        info = read_model_info(package_dir)
    except ArtifactError as err:
        raise ModelInfoMismatchError(f"{MODEL_INFO}: {err}") from err
    ours = {"name": manifest.name, "label": manifest.label, "variant": manifest.variant,
            "inputs": list(manifest.inputs), "outputs": list(manifest.outputs),
            "metadata": manifest.metadata}
    theirs = {"name": info.name, "label": model_label(info), "variant": info.variant,
              "inputs": info.inputs, "outputs": info.outputs, "metadata": info.metadata}
    for field, value in ours.items():
        if theirs[field] != value:
            raise ModelInfoMismatchError(
                f"{MODEL_INFO}: {field} {_shown(theirs[field])}, the signed manifest says "
                f"{_shown(value)}")


def _shown(value: object) -> str:
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json", exclude_none=True))[:200]
    if isinstance(value, list):
        return str([_shown(item) for item in value])[:200]
    return repr(value)


def check_artifact(package_dir: Path, manifest: PackageManifest, profile: DeviceProfile) -> None:
    """Target and architecture checks of the package's artifact on this device; an ONNX
    package's model file must be one the manifest lists."""
    if manifest.backend == "onnx":
        if manifest.artifact_path not in manifest.files:
            raise MissingFileError(f"{manifest.artifact_path}: an onnx package's model, not "
                                   "listed in its manifest")
        return
    artifact_dir = package_artifact_dir(package_dir, manifest)
    declared = manifest.artifact_info()
    inside = read_artifact_info(artifact_dir)
    ours = (declared.target, declared.arch, declared.emulated, declared.jetpack)
    theirs = (inside.target, inside.arch, inside.emulated, inside.jetpack)
    if ours != theirs:
        raise ArtifactCorruptError(
            f"{manifest.artifact_path}/{ARTIFACT_INFO} says {theirs}, the manifest {ours}")
    verify_artifact(artifact_dir, declared, profile)


def _move_into_place(unpacked: Path, final: Path) -> None:
    try:
        if final.exists():
            shutil.rmtree(final)
        os.rename(unpacked, final)
        fsync_dir(final.parent)
    except OSError as err:
        raise staging_io_error(err, f"moving the staged package to {final}") from err


def remove_stale_staging(work_dir: Path) -> list[Path]:
    """Remove what a killed :func:`stage` left in ``work_dir``; the paths removed.

    Call it only while no :func:`stage` runs on this ``work_dir``.
    """
    if not work_dir.is_dir():
        return []
    stale = sorted(p for p in work_dir.iterdir() if p.name.startswith(STAGING_PREFIX))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
