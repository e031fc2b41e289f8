"""Every bad artifact or input gets a typed AgentError, and the process keeps running."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import (
    AgentError,
    ArchitectureMismatchError,
    ArtifactCorruptError,
    ArtifactMissingError,
    BackendError,
    InferenceError,
    InputSpecError,
)
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrBackend, OnnxBackend


def _artifact(built_models: Path, name: str = "digits-v1") -> Path:
    return resolve_model(built_models / name, backend="dlr", profile=detect_profile()).load_dir


@pytest.fixture
def artifact_copy(built_models: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifact"
    shutil.copytree(_artifact(built_models), dst)
    return dst


def _still_serving(built_models: Path) -> None:
    backend = DlrBackend(artifact_dir=_artifact(built_models))
    (out,) = backend.bind([np.ones((1, 64), np.float32)])
    backend.run()
    assert abs(float(out.sum()) - 1.0) < 1e-4
    backend.close()


@pytest.mark.parametrize("missing", ["compiled.so", "compiled.params", "compiled_model.json"])
def test_missing_artifact_file(artifact_copy: Path, built_models: Path, missing: str) -> None:
    (artifact_copy / missing).unlink()
    with pytest.raises(ArtifactMissingError, match=missing):
        DlrBackend(artifact_dir=artifact_copy)
    _still_serving(built_models)


@pytest.mark.parametrize("damage", ["truncate", "magic", "shape", "trailing"])
def test_corrupt_params(artifact_copy: Path, built_models: Path, damage: str) -> None:
    params = artifact_copy / "compiled.params"
    data = bytearray(params.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "magic":
        data[0] ^= 0xFF
    elif damage == "trailing":
        data += b"\0" * 7
    else:  # claim a bigger first dimension in the first array's shape
        graph = json.loads((artifact_copy / "compiled_model.json").read_text())
        assert graph  # the params layout is fixed by the format; patch via the header walk
        from agent.device.runtime.dlr.neo_format import read_params_index

        index = read_params_index(params)
        first = next(iter(index.values()))
        needle = np.array(first.shape, dtype="<i8").tobytes()
        at = bytes(data).index(needle)
        data[at:at + 8] = np.array([first.shape[0] + 1], dtype="<i8").tobytes()
    params.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptError, match=r"compiled\.params"):
        DlrBackend(artifact_dir=artifact_copy)
    _still_serving(built_models)


def test_graph_json_not_json(artifact_copy: Path) -> None:
    (artifact_copy / "compiled_model.json").write_text("{not json")
    with pytest.raises(ArtifactCorruptError, match=r"compiled_model\.json"):
        DlrBackend(artifact_dir=artifact_copy)


def test_graph_naming_a_missing_kernel(artifact_copy: Path, built_models: Path) -> None:
    path = artifact_copy / "compiled_model.json"
    graph = json.loads(path.read_text())
    op = next(n for n in graph["nodes"] if n["op"] == "tvm_op")
    op["attrs"]["func_name"] = "fused_kernel_that_does_not_exist"
    path.write_text(json.dumps(graph))
    with pytest.raises(ArtifactCorruptError, match="fused_kernel_that_does_not_exist"):
        DlrBackend(artifact_dir=artifact_copy)
    _still_serving(built_models)


def _foreign_so(built_models: Path) -> tuple[Path, str]:
    for arm in sorted((built_models / "digits-v1" / "dlr").glob("*-aarch64")):
        return arm / "compiled.so", "aarch64"
    pytest.skip("no cross-built aarch64 artifact (gcc-aarch64-linux-gnu missing)")


def test_compiled_so_for_another_architecture(artifact_copy: Path, built_models: Path) -> None:
    foreign, arch = _foreign_so(built_models)
    shutil.copy(foreign, artifact_copy / "compiled.so")
    with pytest.raises(ArchitectureMismatchError) as err:
        DlrBackend(artifact_dir=artifact_copy)
    assert arch in str(err.value) and "x86_64" in str(err.value)
    _still_serving(built_models)


@pytest.mark.parametrize("bad", [
    np.zeros((1, 64), np.float64),
    np.zeros((1, 63), np.float32),
    np.zeros((64,), np.float32),
    np.zeros((1, 128), np.float32)[:, ::2],  # right shape, not contiguous
])
def test_input_of_wrong_dtype_or_shape(built_models: Path, bad: np.ndarray) -> None:
    dlr = DlrBackend(artifact_dir=_artifact(built_models))
    onnx = OnnxBackend(artifact_dir=built_models / "digits-v1")
    for backend in (dlr, onnx):
        with pytest.raises(InputSpecError, match="input"):
            backend.bind([bad])
    with pytest.raises(InputSpecError):
        dlr.bind([np.zeros((1, 64), np.float32)] * 2)


def test_kernel_that_returns_an_error_code(built_models: Path) -> None:
    crash = DlrBackend(artifact_dir=_artifact(built_models, "digits-v1-crash"))
    crash.bind([np.ones((1, 64), np.float32)])
    for _ in range(3):  # repeatable, and the process survives each one
        with pytest.raises(InferenceError) as err:
            crash.run()
        assert str(err.value)
    crash.close()
    _still_serving(built_models)


def test_corrupt_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ArtifactCorruptError, match="onnxruntime refused"):
        OnnxBackend(artifact_dir=bad)
    with pytest.raises(ArtifactMissingError):
        OnnxBackend(artifact_dir=tmp_path / "nowhere")


def test_every_error_is_an_agent_error() -> None:
    for cls in (ArtifactMissingError, ArtifactCorruptError, ArchitectureMismatchError,
                InferenceError, InputSpecError, BackendError):
        assert issubclass(cls, AgentError)
