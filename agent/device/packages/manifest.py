"""``manifest.json``: what a model package holds, signed by a controller key, and the
package layout: where each thing lies inside a package.

The manifest is the archive's first member. A device parses it strictly
(:mod:`agent.device.packages.manifest_json`: duplicate keys, NaN, out-of-range numbers
and invalid text refused, so the signed bytes mean one thing), verifies the signature
over the canonical form of that raw object *before* validating the schema (an unsigned
or forged manifest is reported as such, never as a schema error), then validates it
strictly: integers fit 64 bits, tensor shapes are static (each dimension 1..2**31-1, at
most 32 of them, names unique), and every golden case fits its tensor specs.

A package is laid out as a model directory (see :mod:`agent.core.model_layout`),
archived or unpacked (staged, or stored in the model store) alike::

    manifest.json                 PackageManifest, signed (first member)
    model.json                    the model's ModelInfo
    onnx/model.onnx               the ONNX export: an ONNX package's model, and in a DLR
                                  package when the model has one
    dlr/<target>-<arch>/          a DLR package's Neo artifact: ARTIFACT_FILES, those present

A DLR package (``backend: dlr``) holds one Neo artifact for one target and architecture;
an ONNX package (``backend: onnx``, target and arch ``any``) holds the ONNX model only and
serves on any device whose agent runs the ONNX backend.

This module is the one place that knows these paths: builders, staging, the
golden check, the swap controller and the Lambda loader ask it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.core.model_layout import (
    ARTIFACT_INFO,
    DLR_DIR,
    DLR_FILES,
    MODEL_INFO,
    ONNX_FILE,
    ArtifactInfo,
    GoldenSource,
    TensorSpec,
    artifact_dir_name,
)
from agent.core.model_metadata import ModelMetadata
from agent.device.packages.errors import (
    BadPackageSignatureError,
    PackageFormatError,
    PackageSignatureError,
    RevokedPackageKeyError,
    UnknownPackageKeyError,
    UnsignedPackageError,
)
from agent.device.packages.manifest_json import INT64_MAX
from agent.device.packages.manifest_json import MANIFEST_NAME as MANIFEST_NAME
from agent.device.packages.manifest_json import parse_manifest_json as parse_manifest_json
from agent.wire.canonical import canonical_json
from agent.wire.errors import (
    BadSignatureError,
    MissingSignatureError,
    RevokedKeyError,
    SignatureError,
    UnknownKeyError,
)
from agent.wire.signing import TrustStore

# What a package takes from an artifact directory, where present (``runner``, ``runner.c``,
# the build's harness, stay behind: devices never run them).
ARTIFACT_FILES = (*DLR_FILES, "compiled.meta", ARTIFACT_INFO, "libdlr.so")
DEFAULT_TOLERANCE = 1e-4
ANY = "any"  # an ONNX package's target and arch: it is not native code
Backend = Literal["dlr", "onnx"]
_MAX_PATH_PART = 255
MAX_TENSOR_DIMS = 32  # numpy's own limit
MAX_DIM = 2**31 - 1


def path_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative POSIX path inside a package, or None."""
    if not name or "\0" in name or "\\" in name:
        return "empty, NUL or backslash in the name"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if any(part == ".." for part in parts):
        return "'..' component (path traversal)"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' component"
    if any(len(part.encode("utf-8", errors="replace")) > _MAX_PATH_PART for part in parts):
        return f"a component longer than {_MAX_PATH_PART} bytes"
    return None


class FileEntry(BaseModel):
    """Digest and size of one file of the package."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=INT64_MAX)


class Golden(BaseModel):
    """Inputs and the reference outputs the device must reproduce before serving.

    Each case maps a tensor name to its values, flattened in C order; the
    tensor's shape is the one in the manifest's ``inputs``/``outputs``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    inputs: list[dict[str, list[float]]] = Field(min_length=1)
    outputs: list[dict[str, list[float]]] = Field(min_length=1)
    tolerance: float = Field(default=DEFAULT_TOLERANCE, gt=0)
    source: GoldenSource = Field(default="onnx", description="what computed the outputs")
    reference: str | None = Field(default=None, description="e.g. 'dlr/ml_c5-x86_64'")

    @model_validator(mode="after")
    def _same_case_count(self) -> Golden:
        if len(self.inputs) != len(self.outputs):
            raise ValueError(f"{len(self.inputs)} golden inputs but {len(self.outputs)} outputs")
        return self


class ManifestBody(BaseModel):
    """Everything in the manifest except who signed it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: Literal[1] = 1
    name: str = Field(min_length=1)
    version: int = Field(ge=0, le=INT64_MAX,
                         description="monotonic; the anti-rollback floor compares it")
    label: str = Field(min_length=1, description="human name of the build, e.g. 'digits-v2'")
    variant: str | None = None
    target: str = Field(min_length=1, description="Neo target, e.g. 'rasp4b'")
    arch: str = Field(min_length=1, description="CPU architecture of the native code")
    emulated: bool = False
    jetpack: str | None = None
    backend: Backend = "dlr"
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    files: dict[str, FileEntry] = Field(min_length=1)
    golden: Golden
    metadata: ModelMetadata | None = Field(
        default=None, description="labels, pre/post-processing: model.json's, signed here")

    @field_validator("files")
    @classmethod
    def _safe_paths(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            problem = path_problem(name)
            if problem is not None:
                raise ValueError(f"file {name!r}: {problem}")
            if name == MANIFEST_NAME:
                raise ValueError(f"{MANIFEST_NAME} cannot list itself")
        return files

    @field_validator("inputs", "outputs")
    @classmethod
    def _static_specs(cls, specs: list[TensorSpec]) -> list[TensorSpec]:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names {names} are not unique")
        for spec in specs:
            if len(spec.shape) > MAX_TENSOR_DIMS:
                raise ValueError(f"tensor {spec.name!r}: {len(spec.shape)} dimensions, more "
                                 f"than {MAX_TENSOR_DIMS}")
            if not all(1 <= dim <= MAX_DIM for dim in spec.shape):
                raise ValueError(f"tensor {spec.name!r}: shape {list(spec.shape)} has a "
                                 f"dimension outside 1..{MAX_DIM}")
        return specs

    @model_validator(mode="after")
    def _onnx_is_portable(self) -> ManifestBody:
        if self.backend == "onnx" and (self.target, self.arch, self.emulated, self.jetpack) != (
                ANY, ANY, False, None):
            raise ValueError(f"an onnx package has target and arch {ANY!r}, no emulated flag "
                             "and no jetpack")
        return self

    @model_validator(mode="after")
    def _golden_fits_specs(self) -> ManifestBody:
        for kind, specs, cases in (("input", self.inputs, self.golden.inputs),
                                   ("output", self.outputs, self.golden.outputs)):
            sizes = {spec.name: _element_count(spec) for spec in specs}
            for index, case in enumerate(cases):
                got = {name: len(values) for name, values in case.items()}
                if got != sizes:
                    raise ValueError(f"golden {kind} case {index}: tensors {got} do not fit the "
                                     f"{kind} specs {sizes}")
        return self

    @property
    def artifact_path(self) -> str:
        """What the backend loads inside the package: the Neo artifact directory, e.g.
        ``dlr/rasp4b-x86_64``, or an ONNX package's ``onnx/model.onnx``."""
        if self.backend == "onnx":
            return ONNX_FILE.as_posix()
        return artifact_path(self.target, self.arch)

    def describe(self) -> str:
        """For messages, e.g. ``digits-v1-crash v5 (dlr/linux_x86_64-x86_64)``."""
        variant = f"-{self.variant}" if self.variant else ""
        return f"{self.label}{variant} v{self.version} ({self.artifact_path})"

    def artifact_info(self) -> ArtifactInfo:
        return ArtifactInfo(target=self.target, arch=self.arch, emulated=self.emulated,
                            jetpack=self.jetpack)


class PackageManifest(ManifestBody):
    """The signed manifest (``key_id`` is covered by the signature, ``signature`` is not)."""

    key_id: str = Field(min_length=1)
    signature: str = Field(min_length=1)


def _element_count(spec: TensorSpec) -> int:
    count = 1
    for dim in spec.shape:
        count *= dim
    return count


def manifest_bytes(manifest: PackageManifest) -> bytes:
    """The file form: canonical JSON (what the signature covers, plus ``signature``)."""
    return canonical_json(manifest.model_dump(mode="json")) + b"\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SIGNATURE_ERRORS: tuple[tuple[type[SignatureError], type[PackageSignatureError]], ...] = (
    (MissingSignatureError, UnsignedPackageError),
    (RevokedKeyError, RevokedPackageKeyError),
    (UnknownKeyError, UnknownPackageKeyError),
    (BadSignatureError, BadPackageSignatureError),
)


def verify_manifest(doc: Mapping[str, Any], trust: TrustStore) -> PackageManifest:
    """Verify the raw manifest object's signature, then validate it; the manifest."""
    try:
        trust.verify_document(doc)
    except (ValueError, RecursionError) as err:  # no canonical form: see manifest_json
        raise PackageFormatError(f"{MANIFEST_NAME} has no canonical form: {err}") from err
    except SignatureError as err:
        for protocol_error, package_error in _SIGNATURE_ERRORS:
            if isinstance(err, protocol_error):
                raise package_error(f"package manifest: {err}") from err
        raise PackageSignatureError(f"package manifest: {err}") from err
    try:
        return PackageManifest.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise PackageFormatError(
            f"{MANIFEST_NAME}: {where}: {first['msg']} ({err.error_count()} problem(s))"
        ) from err


# ---- the package layout ----------------------------------------------------------------

def artifact_path(target: str, arch: str) -> str:
    """Where the artifact for ``target`` and ``arch`` lies inside a package (POSIX, relative)."""
    return f"{DLR_DIR}/{artifact_dir_name(target, arch)}"


def package_members(model_dir: Path, artifact_dir: Path,
                    info: ArtifactInfo) -> list[tuple[str, Path]]:
    """Every file a package of ``artifact_dir`` (an artifact of ``model_dir``, for
    ``info``'s target and architecture) holds besides its manifest: (path inside the
    package, the file it is taken from)."""
    members = [(MODEL_INFO, model_dir / MODEL_INFO)]
    if (model_dir / ONNX_FILE).is_file():
        members.append((ONNX_FILE.as_posix(), model_dir / ONNX_FILE))
    inside = artifact_path(info.target, info.arch)
    members += [(f"{inside}/{name}", artifact_dir / name)
                for name in ARTIFACT_FILES if (artifact_dir / name).is_file()]
    return members


def onnx_package_members(model_dir: Path) -> list[tuple[str, Path]]:
    """Every file an ONNX package of ``model_dir`` holds besides its manifest: model.json
    and the ONNX model (path inside the package, the file it is taken from)."""
    return [(MODEL_INFO, model_dir / MODEL_INFO), (ONNX_FILE.as_posix(), model_dir / ONNX_FILE)]


def manifest_file(package_dir: Path) -> Path:
    """The manifest of the package unpacked in ``package_dir``."""
    return package_dir / MANIFEST_NAME


def package_file(package_dir: Path, name: str) -> Path:
    """The file a manifest lists as ``name`` in the package unpacked in ``package_dir``."""
    return package_dir / name


def package_artifact_dir(package_dir: Path, manifest: ManifestBody) -> Path:
    """What the backend loads in the package unpacked in ``package_dir``: its Neo artifact
    directory, or an ONNX package's model file."""
    return package_dir / manifest.artifact_path


def staged_dir_name(manifest: ManifestBody, archive_sha256: str) -> str:
    """The directory a verified package is unpacked into: ``<name>-v<version>-<sha12>``."""
    return f"{manifest.name}-v{manifest.version}-{archive_sha256[:12]}"


def read_manifest_doc(package_dir: Path) -> dict[str, Any]:
    """The raw manifest object of the package unpacked in ``package_dir`` (for
    :func:`verify_manifest`): :class:`OSError` when it cannot be read,
    :class:`PackageFormatError` when it is not a JSON object."""
    return parse_manifest_json(manifest_file(package_dir).read_bytes())


def read_package_manifest(package_dir: Path) -> PackageManifest:
    """The manifest of the package unpacked in ``package_dir``, validated but not verified:
    for a package whose signature was verified when it was staged. A stored manifest that no
    longer fits the schema raises :class:`PackageFormatError`."""
    try:
        return PackageManifest.model_validate(read_manifest_doc(package_dir))
    except ValidationError as err:
        raise PackageFormatError(
            f"{MANIFEST_NAME} does not fit the manifest schema: {err}") from err
