"""The model builder: layout, metadata, formats, determinism and idempotence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.core.model_layout import (
    ARTIFACT_INFO,
    ONNX_FILE,
    TESTSET,
    list_artifacts,
    read_model_info,
)
from agent.device.platform.elf import host_arch
from agent.device.platform.targets import DEFAULT_BUILD_TARGETS, NEO_TARGETS
from models.build import (
    MODELS,
    TRAININGS,
    WORK_DIR,
    ModelSpec,
    build_all,
    host_target,
    plan_artifacts,
)
from models.digits import train
from models.export.neo import CROSS_COMPILERS, Compiler
from models.export.tvm_format import read_params
from models.files import load_npz

GOOD = ["digits-v1", "digits-v2"]
BAD = ["digits-v1-slow", "digits-v1-wrong", "digits-v1-crash", "digits-v1-segfault",
       "digits-v1-hang"]
# Everything in a model directory except native code and the runner binary.
DATA_FILES = ("model.json", TESTSET, "compiled.params", "compiled_model.json",
              "compiled.meta", ARTIFACT_INFO, "runner.c", "model.onnx")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and WORK_DIR not in path.parts
    }


def test_model_directories_and_metadata(built_models: Path) -> None:
    names = sorted(path.name for path in built_models.iterdir() if (path / "model.json").exists())
    assert names == sorted(GOOD + BAD)
    for spec in MODELS:
        model_dir = built_models / spec.dir_name
        info = read_model_info(model_dir)
        assert (info.name, info.version, info.variant) == ("digits", spec.version, spec.variant)
        assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("input", "float32", (1, 64))]
        assert [(t.name, t.dtype, t.shape) for t in info.outputs] == \
            [("probabilities", "float32", (1, 10))]
        test = load_npz(model_dir / TESTSET)
        assert test["x"].dtype == np.float32 and test["x"].shape[1:] == (64,)
        assert test["y"].dtype == np.int64 and len(test["y"]) == len(test["x"]) == 360
        assert test["x"].min() >= 0.0 and test["x"].max() <= 1.0
        assert (model_dir / ONNX_FILE).is_file() == (spec.variant in (None, "wrong"))


def test_artifact_matrix(built_models: Path) -> None:
    host = host_arch()
    for name in GOOD:
        dirs = {path.name: info for path, info in list_artifacts(built_models / name)}
        for target in DEFAULT_BUILD_TARGETS:
            arch = NEO_TARGETS[target].arch
            if arch == host:
                assert not dirs[f"{target}-{host}"].emulated
                continue
            assert dirs[f"{target}-{host}"].emulated
            if shutil.which(CROSS_COMPILERS[arch]):
                assert not dirs[f"{target}-{arch}"].emulated
        for dir_name, info in dirs.items():
            assert dir_name == f"{info.target}-{info.arch}"
            assert info.jetpack == NEO_TARGETS[info.target].jetpack
            assert info.compiler and "-O3" in info.cflags and "-shared" in info.cflags
    emulated = {f"{t}-{host}" for t in DEFAULT_BUILD_TARGETS if NEO_TARGETS[t].arch != host}
    for name in BAD:
        artifacts = {path.name: info for path, info in list_artifacts(built_models / name)}
        assert set(artifacts) == {f"{host_target()}-{host}"} | emulated
        assert all(info.arch == host for info in artifacts.values())


def test_params_and_graph_hold_the_trained_weights(built_models: Path) -> None:
    weights = load_npz(built_models / WORK_DIR / "train" / "v1" / "model" / train.WEIGHTS_FILE)
    artifact = next(path for path, _ in list_artifacts(built_models / "digits-v1"))
    params = read_params((artifact / "compiled.params").read_bytes())
    for layer in range(3):
        np.testing.assert_array_equal(params[f"dense{layer}_weight"], weights[f"w{layer}"])
        np.testing.assert_array_equal(params[f"dense{layer}_bias"], weights[f"b{layer}"])
    graph = json.loads((artifact / "compiled_model.json").read_text())
    kernels = [node["attrs"]["func_name"] for node in graph["nodes"] if node["op"] == "tvm_op"]
    assert kernels == ["fused_nn_dense_add_nn_relu", "fused_nn_dense_add_nn_relu_1",
                       "fused_nn_dense_add_nn_softmax"]
    assert graph["attrs"]["shape"][1][0] == [1, 64] and graph["attrs"]["shape"][1][-1] == [1, 10]
    meta = json.loads((artifact / "compiled.meta").read_text())
    assert meta["Model"]["Outputs"][0]["name"] == "probabilities"


def test_versions_differ(built_models: Path) -> None:
    assert TRAININGS["v1"].hyperparameters != TRAININGS["v2"].hyperparameters
    v1 = (built_models / "digits-v1" / ONNX_FILE).read_bytes()
    v2 = (built_models / "digits-v2" / ONNX_FILE).read_bytes()
    assert v1 != v2


def test_second_build_is_a_no_op(built_models: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in built_models.rglob("*") if path.is_file()}
    messages: list[str] = []
    build_all(built_models, log=messages.append)
    assert all(message.endswith("up to date") for message in messages), messages
    after = {path: path.stat().st_mtime_ns for path in built_models.rglob("*") if path.is_file()}
    assert after == before


def test_building_again_from_scratch_gives_the_same_bytes(built_models: Path,
                                                          tmp_path: Path) -> None:
    build_all(tmp_path, log=lambda _message: None)
    first, second = _files(built_models), _files(tmp_path)
    assert first.keys() == second.keys()
    for name in first:
        if Path(name).name in DATA_FILES or name.endswith(("compiled.so", "runner")):
            assert first[name] == second[name], name


def test_plan_skips_foreign_targets_without_a_cross_compiler() -> None:
    host = host_arch()
    compilers: dict[str, Compiler | None] = {arch: None for arch in ("x86_64", "aarch64", "armv7l")}
    compilers[host] = Compiler("gcc", host, "12")
    messages: list[str] = []
    plan = plan_artifacts(ModelSpec("1", "v1"), compilers, cross=True, log=messages.append)
    assert all(request.arch == host for request in plan)
    assert len(plan) == len(DEFAULT_BUILD_TARGETS)
    foreign = [t for t in DEFAULT_BUILD_TARGETS if NEO_TARGETS[t].arch != host]
    assert len(messages) == len(foreign)
    assert all("cross compiler" in message for message in messages)


@pytest.mark.parametrize("spec", [spec for spec in MODELS if spec.variant])
def test_bad_builds_get_host_architecture_artifacts_only(spec: ModelSpec) -> None:
    compilers: dict[str, Compiler | None] = {host_arch(): Compiler("gcc", host_arch(), "12")}
    plan = plan_artifacts(spec, compilers, cross=True, log=lambda _message: None)
    assert {request.arch for request in plan} == {host_arch()}, "never cross-built"
    assert plan[0].emulated is False, "the host's own target first"
    emulated = {request.target for request in plan if request.emulated}
    assert emulated == {t for t in DEFAULT_BUILD_TARGETS if NEO_TARGETS[t].arch != host_arch()}
