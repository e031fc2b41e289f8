"""Where an imported artifact's target comes from, JetPack lines, a bundled libdlr.so, and a
``compiled.meta`` that must agree with its graph."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from foreign_neo import compile_so, fusion_reference, neo_output_files, write_tar_gz
from import_support import run_import, snapshot

from agent.core.model_layout import read_artifact_info
from agent.device.runtime.dlr.library import locate_installed
from agent.tools.importing.errors import ImportLayoutError, ImportTargetError, ModelImportError


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """User golden vectors of the fusion model, for imports without a host artifact."""
    out = tmp_path_factory.mktemp("golden")
    frame, counts = np.ones((1, 1, 6), np.float32), np.ones((1, 1, 3), np.int32)
    want = fusion_reference(frame[0], counts[0])
    np.savez(out / "in.npz", sensor_frame=frame, event_counts=counts)
    np.savez(out / "out.npz", **{name: value[None] for name, value in want.items()})
    return {"inputs_file": out / "in.npz", "expected_file": out / "out.npz"}


def _refused(error: type[ModelImportError], sources: list[str | Path], tmp_path: Path,
             *needles: str, **kwargs: object) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(error) as caught:
        run_import(sources, tmp_path / "out", **kwargs)
    for needle in needles:
        assert needle in str(caught.value), str(caught.value)
    assert snapshot(tmp_path) == before


def test_a_neo_manifest_states_the_target(tmp_path: Path, golden: dict[str, Path]) -> None:
    files = neo_output_files("fusion", arch="aarch64")  # compiled.meta names no target
    files["manifest"] = json.dumps({"Requirements": {"TargetDevice": "jetson_xavier"}}).encode()
    archive = write_tar_gz(tmp_path / "model-jetson_xavier.tar.gz", files)
    run_import([archive], tmp_path / "fusion", golden=golden, jetpack="5.1.2")
    info = read_artifact_info(tmp_path / "fusion" / "dlr" / "jetson_xavier-aarch64")
    assert (info.target, info.neo_target, info.jetpack) == ("jetson_xavier", "jetson_xavier",
                                                            "5.1")


def test_a_jetson_artifact_takes_its_targets_jetpack_line(tmp_path: Path,
                                                          golden: dict[str, Path]) -> None:
    files = neo_output_files("fusion", arch="aarch64", target_device="jetson_nano")
    archive = write_tar_gz(tmp_path / "model-jetson_nano.tar.gz", files)
    run_import([archive], tmp_path / "fusion", golden=golden)
    info = read_artifact_info(tmp_path / "fusion" / "dlr" / "jetson_nano-aarch64")
    assert (info.target, info.neo_target, info.jetpack) == ("jetson_nano", "jetson_nano", "4.6")


def test_generic_arm64_gpu_code_needs_a_jetpack_line(tmp_path: Path,
                                                     golden: dict[str, Path]) -> None:
    files = neo_output_files("fusion", arch="aarch64", meta=False)
    archive = write_tar_gz(tmp_path / "model.tar.gz", files)
    _refused(ImportTargetError, [f"linux_arm64_nvidia={archive}"], tmp_path,
             "model.tar.gz", "--jetpack", golden=golden)


def test_a_jetpack_flag_without_a_jetson_artifact_is_refused(tmp_path: Path) -> None:
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz",
                           neo_output_files("fusion", target_device="ml_c5"))
    _refused(ImportTargetError, [archive], tmp_path, "--jetpack 4.6", "Jetson", jetpack="4.6")


def test_a_bundled_libdlr_is_kept_and_reported(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    files["libdlr.so"] = locate_installed().read_bytes()
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    result = run_import([archive], tmp_path / "fusion", emulate=("rasp4b",))
    assert [(a.path, a.libdlr) for a in result.artifacts] == [
        ("dlr/linux_x86_64-x86_64", True), ("dlr/rasp4b-x86_64", True)]
    for artifact in result.artifacts:
        copy = tmp_path / "fusion" / artifact.path / "libdlr.so"
        assert copy.read_bytes() == files["libdlr.so"]
    assert "ships libdlr.so" in result.summary()


def test_a_bundled_libdlr_of_another_arch_is_refused(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    with tempfile.TemporaryDirectory() as tmp:
        compile_so("int dlr_stub(void) { return 0; }\n", "aarch64", Path(tmp) / "libdlr.so")
        files["libdlr.so"] = (Path(tmp) / "libdlr.so").read_bytes()
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    _refused(ImportTargetError, [archive], tmp_path,
             "model-ml_c5.tar.gz: compiled.so is x86_64 code, libdlr.so is aarch64")


def test_a_compiled_meta_that_disagrees_with_the_graph_is_refused(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    meta = json.loads(files["compiled.meta"])
    meta["Model"]["Inputs"][1]["dtype"] = "float32"  # the graph's event_counts is int32
    files["compiled.meta"] = json.dumps(meta).encode()
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    _refused(ImportLayoutError, [archive], tmp_path,
             "model-ml_c5.tar.gz: compiled.meta: Model.Inputs[1].dtype 'float32'",
             "'event_counts' is int32")


def test_a_dynamic_dimension_in_compiled_meta_takes_the_graphs_shape(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    meta = json.loads(files["compiled.meta"])
    meta["Model"]["Inputs"][0]["shape"] = [-1, 6]
    files["compiled.meta"] = json.dumps(meta).encode()
    source = tmp_path / "model-ml_c5"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    result = run_import([source], tmp_path / "fusion", golden={"count": 1})
    assert result.info.inputs[0].shape == (1, 6)
    shutil.rmtree(source)
