"""``models import`` of Neo and TVM outputs: layouts, targets, tensors, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from foreign_neo import (
    FUSION_INPUTS,
    FUSION_OUTPUTS,
    fusion_reference,
    fusion_weights,
    neo_output_files,
    neo_tarball,
    write_tar_gz,
)
from import_support import run_import, snapshot, tvm_export_files, write_dir

from agent.core.model_layout import (
    GOLDEN,
    list_artifacts,
    read_artifact_info,
    read_model_info,
)
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, load_backend
from agent.tools.boards import board_root
from agent.tools.importing.errors import (
    ImportLayoutError,
    ImportOutputError,
    ImportTargetError,
    ModelImportError,
)
from models.export.tvm_format import params_bytes


@pytest.fixture(scope="module")
def neo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fusion compiled by "Neo" for ml_c5 (x86_64) and rasp4b (real aarch64 code)."""
    out = tmp_path_factory.mktemp("neo")
    neo_tarball(out, "fusion", "ml_c5")
    neo_tarball(out, "fusion", "rasp4b", arch="aarch64")
    return out


@pytest.fixture(scope="module")
def imported(neo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "fusion"
    run_import([neo / "model-ml_c5.tar.gz", neo / "model-rasp4b.tar.gz"], out,
               emulate=("rasp4b", "jetson_nano"))
    return out


def _refused(error: type[ModelImportError], sources: list[str | Path], tmp_path: Path,
             *needles: str, **kwargs: object) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(error) as caught:
        run_import(sources, tmp_path / "out", **kwargs)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert snapshot(tmp_path) == before, "a refused import wrote something"
    return message


def test_neo_tarballs_for_a_host_and_a_board_with_emulated_copies(imported: Path) -> None:
    info = read_model_info(imported)
    assert (info.name, info.version) == ("fusion", "1")
    assert [(s.name, s.dtype, s.shape) for s in info.inputs] == list(FUSION_INPUTS)
    assert [(s.name, s.dtype, s.shape) for s in info.outputs] == list(FUSION_OUTPUTS)
    assert info.golden is not None and info.golden.source == "dlr-host"
    assert info.golden.reference == "dlr/linux_x86_64-x86_64"
    assert info.golden.tolerance == 1e-4
    artifacts = {path.name: a for path, a in list_artifacts(imported)}
    assert sorted(artifacts) == ["jetson_nano-x86_64", "linux_x86_64-x86_64",
                                 "rasp4b-aarch64", "rasp4b-x86_64"]
    host, board = artifacts["linux_x86_64-x86_64"], artifacts["rasp4b-aarch64"]
    assert (host.target, host.arch, host.emulated, host.neo_target, host.source) == \
        ("linux_x86_64", "x86_64", False, "ml_c5", "model-ml_c5.tar.gz")
    assert (board.target, board.arch, board.emulated, board.neo_target) == \
        ("rasp4b", "aarch64", False, "rasp4b")
    nano = artifacts["jetson_nano-x86_64"]
    assert (nano.emulated, nano.jetpack, nano.source) == (True, "4.6", "model-ml_c5.tar.gz")
    assert artifacts["rasp4b-x86_64"].emulated
    for name in ("compiled.so", "compiled.params", "compiled_model.json", "compiled.meta"):
        assert (imported / "dlr" / "rasp4b-aarch64" / name).is_file()
    assert not [p for p in imported.parent.iterdir() if p.name.startswith(".")]


def test_the_golden_outputs_are_the_models_own(imported: Path) -> None:
    with np.load(imported / GOLDEN) as golden:
        frames, counts = golden["in/sensor_frame"], golden["in/event_counts"]
        assert frames.shape == (8, 1, 6) and counts.shape == (8, 1, 3)
        assert counts.dtype == np.int32 and counts.min() >= 0 and counts.max() < 16
        for case in range(8):
            want = fusion_reference(frames[case], counts[case])
            np.testing.assert_allclose(golden["out/Identity:0"][case], want["Identity:0"],
                                       atol=1e-5)
            assert np.array_equal(golden["out/Identity_1:0"][case], want["Identity_1:0"])


@pytest.mark.parametrize("board", ["x86_laptop", "rpi4_64", "jetson_nano_r32"])
def test_the_imported_model_loads_and_runs_on_its_devices(imported: Path, board: str) -> None:
    profile = detect_profile(root=board_root(board), emulate=True)
    resolved = resolve_model(imported, backend="dlr", profile=profile)
    backend = load_backend(resolved.load_dir, DlrConfig())
    try:
        frame = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6)
        counts = np.array([[1, 2, 3]], dtype=np.int32)
        by_name = {"sensor_frame": frame, "event_counts": counts}
        outputs = backend.bind([by_name[spec.name].copy() for spec in backend.inputs])
        backend.run()
        want = fusion_reference(frame, counts)
        got = {spec.name: out for spec, out in zip(backend.outputs, outputs, strict=True)}
        np.testing.assert_allclose(got["Identity:0"], want["Identity:0"], atol=1e-5)
        assert np.array_equal(got["Identity_1:0"], want["Identity_1:0"])
    finally:
        backend.close()


def test_a_tvm_export_library_directory_without_compiled_meta(tmp_path: Path) -> None:
    source = write_dir(tmp_path / "deploy", {**tvm_export_files(), "README.txt": b"notes"})
    result = run_import([source], tmp_path / "fusion", metadata={"version": 3})
    (artifact,) = result.artifacts
    assert artifact.path == "dlr/linux_x86_64-x86_64"  # generic target of the ELF arch
    assert artifact.info.neo_target is None and artifact.ignored == ("README.txt",)
    assert artifact.renamed == {"deploy_lib.so": "compiled.so",
                                "deploy_graph.json": "compiled_model.json",
                                "deploy_param.params": "compiled.params"}
    model = tmp_path / "fusion"
    assert sorted(p.name for p in (model / artifact.path).iterdir()) == [
        "artifact.info", "compiled.params", "compiled.so", "compiled_model.json"]
    info = read_model_info(model)
    assert info.version == "3"
    # Without compiled.meta, the graph's own node names are the tensor names.
    assert [(s.name, s.dtype, s.shape) for s in info.inputs] == list(FUSION_INPUTS)
    assert [(s.name, s.dtype) for s in info.outputs] == [
        ("fused_dense_add_count_out", "float32"), ("fused_sum_scale_out", "int32")]


def test_a_stated_target_names_the_artifact(tmp_path: Path) -> None:
    source = write_dir(tmp_path / "deploy", tvm_export_files(arch="aarch64"))
    golden = _golden_files(tmp_path)
    run_import([f"rasp4b={source}"], tmp_path / "fusion", golden=golden)
    info = read_artifact_info(tmp_path / "fusion" / "dlr" / "rasp4b-aarch64")
    assert (info.target, info.neo_target, info.source) == ("rasp4b", "rasp4b", "deploy")
    assert read_model_info(tmp_path / "fusion").golden.source == "user"  # type: ignore[union-attr]


def _golden_files(tmp_path: Path) -> dict[str, Path]:
    frame = np.zeros((1, 1, 6), np.float32)
    counts = np.ones((1, 1, 3), np.int32)
    want = fusion_reference(frame[0], counts[0])
    np.savez(tmp_path / "in.npz", sensor_frame=frame, event_counts=counts)
    np.savez(tmp_path / "out.npz", fused_dense_add_count_out=want["Identity:0"][None],
             fused_sum_scale_out=want["Identity_1:0"][None])
    return {"inputs_file": tmp_path / "in.npz", "expected_file": tmp_path / "out.npz"}


def test_an_archive_without_a_graph_is_refused(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    del files["compiled_model.json"]
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    _refused(ImportLayoutError, [archive], tmp_path, "model-ml_c5.tar.gz", "no TVM graph JSON",
             "compiled.so", "compiled.params")


def test_an_archive_with_two_graphs_is_refused(tmp_path: Path) -> None:
    files = neo_output_files("fusion", target_device="ml_c5")
    files["deploy_graph.json"] = files["compiled_model.json"]
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    _refused(ImportLayoutError, [archive], tmp_path, "model-ml_c5.tar.gz", "2 files",
             "compiled_model.json", "deploy_graph.json")


def test_params_that_do_not_match_the_graph_are_refused(tmp_path: Path) -> None:
    files = tvm_export_files()
    weights = fusion_weights()
    weights["fc_weight"] = weights["fc_weight"].T.copy()  # [4, 6], the graph says [6, 4]
    files["deploy_param.params"] = params_bytes(weights, ["fc_weight", "fc_bias"])
    source = write_dir(tmp_path / "deploy", files)
    _refused(ImportLayoutError, [source], tmp_path, "deploy: deploy_param.params",
             "'fc_weight'", "[4, 6]", "[6, 4]")


def test_kernels_for_another_arch_than_the_given_target_are_refused(tmp_path: Path) -> None:
    archive = neo_tarball(tmp_path, "fusion", "rasp4b", arch="aarch64", meta=False)
    _refused(ImportTargetError, [archive], tmp_path,
             "model-rasp4b.tar.gz: --target ml_c5 is x86_64 code, compiled.so is aarch64",
             target="ml_c5")


def test_x86_kernels_for_a_board_target_are_refused(tmp_path: Path) -> None:
    archive = neo_tarball(tmp_path, "fusion", "rasp4b", meta=False)
    _refused(ImportTargetError, [f"rasp4b={archive}"], tmp_path,
             "model-rasp4b.tar.gz: rasp4b= prefix rasp4b is aarch64 code, compiled.so is "
             "x86_64")


def test_a_given_target_that_compiled_meta_contradicts_is_refused(tmp_path: Path) -> None:
    archive = neo_tarball(tmp_path, "fusion", "jetson_nano", arch="aarch64")
    _refused(ImportTargetError, [archive], tmp_path, "--target rasp4b",
             "compiled.meta Requirements.TargetDevice JETSON_NANO", "different targets",
             target="rasp4b")


def test_an_unknown_target_name_is_refused_listing_the_known_ones(tmp_path: Path) -> None:
    archive = neo_tarball(tmp_path, "fusion", "ml_c5", meta=False)
    message = _refused(ImportTargetError, [f"raspberry5={archive}"], tmp_path,
                       "raspberry5", "unknown Neo target")
    assert "rasp4b" in message and "jetson_nano" in message and "ml_c5" in message


def test_a_target_this_agent_cannot_run_says_why(tmp_path: Path) -> None:
    archive = neo_tarball(tmp_path, "fusion", "ml_c5", meta=False)
    _refused(ImportTargetError, [archive], tmp_path, "--target 'ml_inf1'", "Neuron",
             target="ml_inf1")


def test_sources_of_different_models_are_refused(tmp_path: Path) -> None:
    fusion = neo_tarball(tmp_path / "a", "fusion", "ml_c5")
    colour = neo_tarball(tmp_path / "b", "colour", "rasp4b", arch="aarch64")
    _refused(ImportLayoutError, [fusion, colour], tmp_path, "model-rasp4b.tar.gz and "
             "model-ml_c5.tar.gz are not the same model", "pixels float32 [1, 3, 8, 8]")


def test_emulation_needs_a_host_artifact(neo: Path, tmp_path: Path) -> None:
    _refused(ImportTargetError, [neo / "model-rasp4b.tar.gz"], tmp_path, "--emulate rasp4b",
             "x86_64", "model-rasp4b.tar.gz is aarch64", emulate=("rasp4b",))


def test_no_golden_source_is_an_error_saying_what_to_give(neo: Path, tmp_path: Path) -> None:
    message = _refused(ModelImportError, [neo / "model-rasp4b.tar.gz"], tmp_path,
                       "no golden vectors")
    assert "--reference-onnx" in message and "--golden" in message


def test_an_existing_output_needs_force(neo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    _refused(ImportOutputError, [neo / "model-ml_c5.tar.gz"], tmp_path, "already exists",
             "--force")
    run_import([neo / "model-ml_c5.tar.gz"], out, force=True)
    assert not (out / "keep").exists() and (out / "model.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_missing_parent_of_out_is_created_only_on_success(neo: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "fusion"
    run_import([neo / "model-ml_c5.tar.gz"], out)
    assert json.loads((out / "model.json").read_text())["name"] == "fusion"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["fusion"]
