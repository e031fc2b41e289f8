"""Golden vectors and test sets of ``models import``: user-given, ONNX, or the host artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from foreign_neo import (
    compile_so,
    fusion_reference,
    neo_output_files,
    neo_tarball,
    write_onnx_fusion_like,
    write_tar_gz,
)
from import_support import run_import, snapshot

from agent.core.model_layout import GOLDEN, ONNX_FILE, TESTSET, read_model_info
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import OnnxBackend
from agent.tools.boards import board_root
from agent.tools.importing.errors import (
    GoldenNotReproducedError,
    ImportGoldenError,
    ImportTestsetError,
    ModelImportError,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sources")
    neo_tarball(out, "fusion", "ml_c5")
    neo_tarball(out, "fusion", "rasp4b", arch="aarch64")
    write_onnx_fusion_like(out / "fusion.onnx")
    return out


def _cases(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"sensor_frame": rng.standard_normal((count, 1, 6)).astype(np.float32),
            "event_counts": rng.integers(0, 9, size=(count, 1, 3)).astype(np.int32)}


def _expected(cases: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outs = [fusion_reference(f, c) for f, c in zip(cases["sensor_frame"],
                                                    cases["event_counts"], strict=True)]
    return {name: np.stack([o[name] for o in outs]) for name in outs[0]}


def _refused(error: type[ModelImportError], sources: list[Path], tmp_path: Path,
             *needles: str, **kwargs: object) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(error) as caught:
        run_import(sources, tmp_path / "out", **kwargs)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert snapshot(tmp_path) == before
    return message


def test_user_golden_vectors_checked_by_the_host_artifact(sources: Path,
                                                          tmp_path: Path) -> None:
    cases = _cases(3)
    np.savez(tmp_path / "in.npz", **cases)
    np.savez(tmp_path / "out.npz", **_expected(cases))
    result = run_import([sources / "model-ml_c5.tar.gz", sources / "model-rasp4b.tar.gz"],
                        tmp_path / "fusion", golden={"inputs_file": tmp_path / "in.npz",
                                                     "expected_file": tmp_path / "out.npz"})
    assert result.golden_checked_by == "dlr/linux_x86_64-x86_64"
    info = read_model_info(tmp_path / "fusion")
    assert info.golden is not None and info.golden.source == "user"
    with np.load(tmp_path / "fusion" / GOLDEN) as golden:
        assert np.array_equal(golden["in/event_counts"], cases["event_counts"])
        assert np.array_equal(golden["out/Identity:0"], _expected(cases)["Identity:0"])


def test_expected_outputs_the_artifact_does_not_reproduce_are_refused(
        sources: Path, tmp_path: Path) -> None:
    cases = _cases(3)
    expected = _expected(cases)
    expected["Identity:0"][1, 0, 2] += 0.25
    np.savez(tmp_path / "in.npz", **cases)
    np.savez(tmp_path / "out.npz", **expected)
    _refused(GoldenNotReproducedError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--expected out.npz", "'Identity:0'", "max |difference| 0.25", "case 1",
             "dlr/linux_x86_64-x86_64",
             golden={"inputs_file": tmp_path / "in.npz", "expected_file": tmp_path / "out.npz"})


def test_golden_inputs_of_the_wrong_shape_are_refused(sources: Path, tmp_path: Path) -> None:
    cases = _cases(2)
    cases["sensor_frame"] = np.zeros((2, 1, 5), np.float32)
    np.savez(tmp_path / "in.npz", **cases)
    np.savez(tmp_path / "out.npz", **_expected(_cases(2)))
    _refused(ImportGoldenError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--golden in.npz: array 'sensor_frame' is [2, 1, 5]", "[N, 1, 6]",
             golden={"inputs_file": tmp_path / "in.npz", "expected_file": tmp_path / "out.npz"})


def test_golden_inputs_of_the_wrong_dtype_are_refused(sources: Path, tmp_path: Path) -> None:
    cases = _cases(2)
    cases["event_counts"] = cases["event_counts"].astype(np.float32)
    np.savez(tmp_path / "in.npz", **cases)
    _refused(ImportGoldenError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--golden in.npz: array 'event_counts' is float32", "int32",
             golden={"inputs_file": tmp_path / "in.npz"})


def test_expected_outputs_need_their_inputs(sources: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "out.npz", **_expected(_cases(2)))
    _refused(ImportGoldenError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--expected out.npz", "--golden", golden={"expected_file": tmp_path / "out.npz"})


def test_an_onnx_only_import_takes_golden_vectors_from_onnx_runtime(sources: Path,
                                                                    tmp_path: Path) -> None:
    result = run_import([sources / "fusion.onnx"], tmp_path / "fusion",
                        golden={"count": 3})
    model = tmp_path / "fusion"
    assert result.artifacts == () and (model / ONNX_FILE).is_file()
    info = read_model_info(model)
    assert info.golden is not None and info.golden.source == "onnx"
    assert info.golden.reference == "onnx/model.onnx"
    with np.load(model / GOLDEN) as golden:
        got = {key: golden[key] for key in golden.files}
    want = _expected({"sensor_frame": got["in/sensor_frame"],
                      "event_counts": got["in/event_counts"]})
    np.testing.assert_allclose(got["out/Identity:0"], want["Identity:0"], atol=1e-5)
    assert np.array_equal(got["out/Identity_1:0"], want["Identity_1:0"])
    profile = detect_profile(root=board_root("x86_laptop"), emulate=True)
    resolved = resolve_model(model, backend="onnx", profile=profile)
    backend = OnnxBackend(artifact_dir=resolved.load_dir)
    assert [s.name for s in backend.inputs] == ["sensor_frame", "event_counts"]


def test_a_reference_onnx_model_gives_golden_outputs_for_board_only_builds(
        sources: Path, tmp_path: Path) -> None:
    run_import([sources / "model-rasp4b.tar.gz"], tmp_path / "fusion",
               golden={"reference_onnx": sources / "fusion.onnx"})
    info = read_model_info(tmp_path / "fusion")
    assert info.golden is not None
    assert (info.golden.source, info.golden.reference) == ("onnx", "fusion.onnx")
    assert not (tmp_path / "fusion" / ONNX_FILE).exists()  # a reference, not a source


def test_neo_and_onnx_sources_together_prefer_the_host_artifact(sources: Path,
                                                                tmp_path: Path) -> None:
    result = run_import([sources / "model-ml_c5.tar.gz", sources / "fusion.onnx"],
                        tmp_path / "fusion")
    assert result.onnx_source == "fusion.onnx"
    assert result.info.golden is not None and result.info.golden.source == "dlr-host"


def test_a_testset_gives_the_golden_inputs_and_is_written(sources: Path,
                                                          tmp_path: Path) -> None:
    cases = _cases(5)
    np.savez(tmp_path / "test.npz", sensor_frame=cases["sensor_frame"][:, 0].astype(np.float64),
             event_counts=cases["event_counts"])
    result = run_import([sources / "model-ml_c5.tar.gz"], tmp_path / "fusion",
                        testset=tmp_path / "test.npz", golden={"count": 3})
    assert (result.testset_cases, result.testset_labelled, result.golden_cases) == (5, False, 3)
    with np.load(tmp_path / "fusion" / TESTSET) as testset:
        assert sorted(testset.files) == ["event_counts", "sensor_frame"]
        assert testset["sensor_frame"].dtype == np.float32
    with np.load(tmp_path / "fusion" / GOLDEN) as golden:
        np.testing.assert_array_equal(golden["in/sensor_frame"], cases["sensor_frame"][:3])


def test_a_testset_of_the_wrong_shape_is_refused(sources: Path, tmp_path: Path) -> None:
    cases = _cases(4)
    np.savez(tmp_path / "test.npz", sensor_frame=np.zeros((4, 7)),
             event_counts=cases["event_counts"])
    _refused(ImportTestsetError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--testset test.npz: array 'sensor_frame' is [4, 7]",
             testset=tmp_path / "test.npz")


def test_testset_labels_must_be_one_integer_per_case(sources: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "test.npz", **_cases(4), y=np.zeros(3, np.int64))
    _refused(ImportTestsetError, [sources / "model-ml_c5.tar.gz"], tmp_path,
             "--testset test.npz: array 'y' is [3]", "4 cases", testset=tmp_path / "test.npz")


def test_a_kernel_that_faults_fails_the_import_not_the_importer(tmp_path: Path) -> None:
    files = neo_output_files("colour", target_device="ml_c5")
    crash = ('#include <stdint.h>\n__attribute__((visibility("default"))) void* '
             "__tvm_module_ctx = 0;\n__attribute__((visibility(\"default\"))) int32_t "
             "fused_mean_softmax(void* a, int32_t* c, int32_t n, void* r, int32_t* rc, "
             "void* h) { return *(volatile int32_t*)0; }\n")
    with tempfile.TemporaryDirectory() as tmp:
        compile_so(crash, "x86_64", Path(tmp) / "crash.so")
        files["compiled.so"] = (Path(tmp) / "crash.so").read_bytes()
    archive = write_tar_gz(tmp_path / "model-ml_c5.tar.gz", files)
    _refused(ImportGoldenError, [archive], tmp_path, "reference run of "
             "dlr/linux_x86_64-x86_64 died of SIGSEGV")
