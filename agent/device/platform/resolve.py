"""From a model path a user gives to what a backend loads on this device.

The entry point for unpackaged models (``edge-agent run --model``, the agent's
``modelDir``, the benches): a path may be a model directory (``model.json``, one ONNX
export and several Neo artifacts), one Neo artifact directory, an ``onnx/`` directory or a
``.onnx`` file. This module finds the parts of the model the path names (the artifact or
ONNX file to load, the owning model directory, its test set); which Neo artifact fits this
device is decided by :mod:`agent.device.platform.selection`, whose checks run on every DLR
artifact resolved here, also on emulated devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import ArtifactMissingError, ConfigError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    MODEL_INFO,
    ONNX_FILE,
    TESTSET,
    ArtifactInfo,
    is_artifact_dir,
    list_artifacts,
    read_artifact_info,
)
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.selection import select_artifact, verify_artifact


@dataclass(frozen=True)
class ResolvedModel:
    backend: str
    load_dir: Path  # what the backend loads: an artifact dir (dlr) or the .onnx file (onnx)
    model_dir: Path | None
    artifact: ArtifactInfo | None
    testset: Path | None


_ARCHIVES = (".tar.gz", ".tgz", ".zip")


def model_file(path: Path) -> Path:
    """Accept a model directory, an ``onnx/`` directory or a ``.onnx`` file."""
    for candidate in (path / ONNX_FILE, path / "model.onnx", path):
        if candidate.is_file():
            return candidate
    raise ArtifactMissingError(f"{path}: no ONNX model ({ONNX_FILE} or model.onnx)")


def default_backend(path: Path) -> str:
    """The backend a model path runs on when the user names none: ``onnx`` for an ONNX file
    or a model directory with an ONNX model and no Neo artifact, else ``dlr``."""
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_dir() and not is_artifact_dir(path) and not list_artifacts(path) and \
            any(candidate.is_file() for candidate in (path / ONNX_FILE, path / "model.onnx")):
        return "onnx"
    return "dlr"


def _owning_model_dir(artifact_dir: Path) -> Path | None:
    candidate = artifact_dir.parent.parent
    return candidate if (candidate / MODEL_INFO).is_file() else None


def resolve_model(path: Path, *, backend: str, profile: DeviceProfile) -> ResolvedModel:
    if not path.exists():
        raise ArtifactMissingError(f"{path}: no such model directory")
    if path.is_file() and path.name.lower().endswith(_ARCHIVES):
        raise ConfigError(
            f"{path} is an archive: a SageMaker Neo output becomes a model directory with "
            f"`edge-agent models import {path} --name NAME --out DIR`; a signed package runs "
            "with `edge-agent predict --model PACKAGE --trusted-key ID=KEY` or is staged by "
            "`edge-agent serve`")
    if is_artifact_dir(path):
        model_dir = _owning_model_dir(path)
        if backend == "dlr":
            info = None
            if (path / ARTIFACT_INFO).is_file():
                info = read_artifact_info(path)
                verify_artifact(path, info, profile)
            return ResolvedModel("dlr", path, model_dir, info, _testset(model_dir))
        if model_dir is None:
            raise ConfigError(f"{path} is a Neo artifact; the onnx backend needs a model "
                              "directory with onnx/model.onnx")
        path = model_dir
    if backend == "dlr":
        artifact_dir, info = select_artifact(path, profile)
        verify_artifact(artifact_dir, info, profile)
        return ResolvedModel("dlr", artifact_dir, path, info, _testset(path))
    if backend == "onnx":
        onnx_file = model_file(path)
        owner = _onnx_model_dir(path, onnx_file)
        return ResolvedModel("onnx", onnx_file, owner, None, _testset(owner))
    raise ConfigError(f"unknown backend {backend!r} (choose dlr or onnx)")


def _onnx_model_dir(path: Path, onnx_file: Path) -> Path | None:
    """The model directory ``path`` names or lies in: the nearest of the ``.onnx`` file's
    folder and that folder's parent (``<model>/onnx/model.onnx``) holding ``model.json``;
    else ``path`` itself when it is a folder."""
    for candidate in (onnx_file.parent, onnx_file.parent.parent):
        if (candidate / MODEL_INFO).is_file():
            return candidate
    return path if path.is_dir() else None


def _testset(model_dir: Path | None) -> Path | None:
    if model_dir is None:
        return None
    candidate = model_dir / TESTSET
    return candidate if candidate.is_file() else None
