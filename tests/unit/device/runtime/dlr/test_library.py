"""Which libdlr.so loads when an artifact ships its own, and which ONNX providers are used."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import ArchitectureMismatchError, BackendUnavailableError, ModelLoadError
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrBackend, DlrConfig, OnnxBackend, OnnxConfig
from agent.device.runtime.dlr.library import locate_installed


@pytest.fixture
def artifact_with_own_lib(built_models: Path, tmp_path: Path) -> Path:
    src = resolve_model(built_models / "digits-v1", backend="dlr", profile=detect_profile())
    dst = tmp_path / "artifact"
    shutil.copytree(src.load_dir, dst)
    shutil.copy(locate_installed(), dst / "libdlr.so")  # a second copy at another path
    return dst


def test_installed_library_wins_by_default(artifact_with_own_lib: Path) -> None:
    backend = DlrBackend(artifact_dir=artifact_with_own_lib)
    assert backend.library.path == locate_installed().resolve()
    (out,) = backend.bind([np.ones((1, 64), np.float32)])
    backend.run()
    assert abs(float(out.sum()) - 1.0) < 1e-4


def test_artifact_library_is_refused_while_another_is_open(artifact_with_own_lib: Path) -> None:
    DlrBackend(artifact_dir=artifact_with_own_lib)  # opens the installed library first
    with pytest.raises(ModelLoadError, match="already open"):
        DlrBackend(artifact_dir=artifact_with_own_lib, config=DlrConfig(library="artifact"))


def test_artifact_library_for_another_architecture(artifact_with_own_lib: Path,
                                                   built_models: Path) -> None:
    arm = sorted((built_models / "digits-v1" / "dlr").glob("*-aarch64"))
    if not arm:
        pytest.skip("no aarch64 build (gcc-aarch64-linux-gnu missing)")
    shutil.copy(arm[0] / "compiled.so", artifact_with_own_lib / "libdlr.so")
    with pytest.raises(ArchitectureMismatchError, match="aarch64"):
        DlrBackend(artifact_dir=artifact_with_own_lib, config=DlrConfig(library="artifact"))


def test_explicit_library_path_that_does_not_exist(artifact_with_own_lib: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="not found"):
        locate_installed(artifact_with_own_lib / "nowhere" / "libdlr.so")


def test_onnx_providers_best_available_or_refused(built_models: Path) -> None:
    auto = OnnxBackend(artifact_dir=built_models / "digits-v1")
    assert auto.providers[-1] == "CPUExecutionProvider"
    if "TensorrtExecutionProvider" in auto._ort.get_available_providers():
        return  # a TensorRT build: nothing to refuse
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        OnnxBackend(artifact_dir=built_models / "digits-v1",
                    config=OnnxConfig(providers=["TensorrtExecutionProvider"]))
