"""Packaging any model: golden vectors from golden.npz (multi-input, no ONNX) or from ONNX
Runtime on a multi-input test set, one version and one label, ONNX packages, metadata in the
signed manifest, SageMaker target names on the command line, and the bad inputs (each a typed
error naming the file and field, with nothing written)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from foreign_neo import fusion_reference
from model_dirs import fusion_model_dir
from package_support import HOST_ARTIFACT, Keys, make_keys, members

from agent.core.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError
from agent.device.packages.manifest import MANIFEST_NAME, PackageManifest
from agent.device.platform.elf import host_arch
from agent.tools.packaging.build import build_onnx_package, build_package, build_packages

X86_ONLY = pytest.mark.skipif(host_arch() != "x86_64", reason="ml_c5 is x86_64 code")
LABELS = {"description": "fusion of two sensors", "labels": ["a", "b", "c", "d"],
          "postprocess": {"output": "Identity:0", "softmax": True, "top_k": 2}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def _manifest(path: Path) -> PackageManifest:
    return PackageManifest.model_validate(json.loads(dict(members(path))[MANIFEST_NAME]))


def _model_json(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(dict(members(path))["model.json"])
    return loaded


def test_golden_cases_come_from_golden_npz(keys: Keys, tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", metadata=LABELS)
    path = build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out")
    assert path.name == f"fusion-v1-{HOST_ARTIFACT}.tar.gz"
    manifest = _manifest(path)
    assert (manifest.label, manifest.version, manifest.backend) == ("fusion-v1", 1, "dlr")
    golden = manifest.golden
    assert (golden.source, golden.reference, golden.tolerance) == ("user", "numpy", 1e-5)
    assert len(golden.inputs) == 3 and set(golden.inputs[0]) == {"sensor_frame", "event_counts"}
    with np.load(model / "golden.npz") as data:
        for i, (case_in, case_out) in enumerate(zip(golden.inputs, golden.outputs,
                                                    strict=True)):
            assert case_in["event_counts"] == data["in/event_counts"][i].ravel().tolist()
            expected = fusion_reference(data["in/sensor_frame"][i], data["in/event_counts"][i])
            assert case_out["Identity:0"] == expected["Identity:0"].ravel().tolist()
            assert case_out["Identity_1:0"] == [float(expected["Identity_1:0"][0, 0])]
    # The model's metadata travels in the signed manifest, as model.json says it.
    assert manifest.metadata is not None and manifest.metadata.labels == ("a", "b", "c", "d")
    assert _model_json(path)["metadata"] == json.loads((model / "model.json").read_text())[
        "metadata"]
    assert keys.trust.verify_document(json.loads(dict(members(path))[MANIFEST_NAME]))
    one = build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "one",
                        golden_count=1)
    assert len(_manifest(one).golden.inputs) == 1


def test_another_version_rewrites_the_label_and_model_json(keys: Keys, tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", version="1")
    path = build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out",
                         version=4)
    manifest = _manifest(path)
    assert path.name == f"fusion-v4-{HOST_ARTIFACT}.tar.gz"
    assert (manifest.version, manifest.label) == (4, "fusion-v4")
    assert _model_json(path)["version"] == "4"
    assert json.loads((model / "model.json").read_text())["version"] == "1"  # untouched
    same = build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "same")
    assert dict(members(same))["model.json"] == (model / "model.json").read_bytes()


def test_a_version_that_is_no_integer_needs_the_flag(keys: Keys, tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", version="2024.06")
    with pytest.raises(ConfigError, match=r"model.json: version '2024.06' is not an integer.*"
                                          r"--version N"):
        build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out")
    path = build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out",
                         version=3)
    assert _manifest(path).label == "fusion-v3" and _model_json(path)["version"] == "3"


def test_onnx_package_of_a_multi_input_model(keys: Keys, tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", neo=False, golden=False, onnx=True)
    rng = np.random.default_rng(3)
    np.savez(model / "testset.npz",
             sensor_frame=rng.standard_normal((5, 1, 6)).astype(np.float32),
             event_counts=rng.integers(0, 5, (5, 1, 3)).astype(np.int32))
    path = build_onnx_package(model, signer=keys.signer, out_dir=tmp_path / "out",
                              golden_count=4)
    assert path.name == "fusion-v1-onnx.tar.gz"
    manifest = _manifest(path)
    assert (manifest.backend, manifest.target, manifest.arch) == ("onnx", "any", "any")
    assert set(manifest.files) == {"model.json", "onnx/model.onnx"}
    assert (manifest.golden.source, manifest.golden.reference) == ("onnx", "onnx/model.onnx")
    with np.load(model / "testset.npz") as data:
        for i, case in enumerate(manifest.golden.outputs):
            expected = fusion_reference(data["sensor_frame"][i], data["event_counts"][i])
            assert np.allclose(case["Identity:0"], expected["Identity:0"].ravel(), atol=1e-5)
            assert case["Identity_1:0"] == [float(expected["Identity_1:0"][0, 0])]
    # --all: every Neo artifact and the ONNX package
    both = fusion_model_dir(tmp_path / "both", onnx=True)
    built = build_packages(both, signer=keys.signer, out_dir=tmp_path / "all")
    assert [p.name for p in built] == [f"fusion-v1-{HOST_ARTIFACT}.tar.gz",
                                       "fusion-v1-onnx.tar.gz"]
    assert _manifest(built[1]).golden.source == "user"  # golden.npz serves both


def test_a_model_with_neither_golden_npz_nor_onnx(keys: Keys, tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", golden=False)
    with pytest.raises(ArtifactMissingError, match=r"no golden vectors.*edge-agent models "
                                                   r"import.*--reference"):
        build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out")
    with pytest.raises(ArtifactMissingError, match=r"onnx/model.onnx: no such file"):
        build_onnx_package(model, signer=keys.signer, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _edit_golden(model: Path, changes: dict[str, np.ndarray | None]) -> None:
    with np.load(model / "golden.npz") as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(model / "golden.npz", **arrays)


BAD_GOLDEN: dict[str, tuple[dict[str, np.ndarray | None], str]] = {
    "missing array": ({"out/Identity_1:0": None}, r"golden.npz: no array 'out/Identity_1:0'"),
    "unknown array": ({"in/extra": np.zeros((3, 1))},
                      r"golden.npz: array 'in/extra' is no input or output"),
    "wrong shape": ({"in/sensor_frame": np.zeros((3, 6), np.float32)},
                    r"golden.npz: array 'in/sensor_frame' has shape \[3, 6\], sensor_frame "
                    r"needs \[N, 1, 6\]"),
    "fractional int": ({"in/event_counts": np.full((3, 1, 3), 0.5)},
                       r"golden.npz: array 'in/event_counts': its values do not fit int32"),
    "case counts": ({"in/sensor_frame": np.zeros((2, 1, 6), np.float32)},
                    r"golden.npz: the arrays hold different or no case counts"),
    "not finite": ({"out/Identity:0": np.full((3, 1, 4), np.nan, np.float32)},
                   r"golden.npz: array 'out/Identity:0' holds NaN or infinity"),
}


@pytest.mark.parametrize("case", [*BAD_GOLDEN, "no provenance"])
def test_bad_golden_npz(keys: Keys, tmp_path: Path, case: str) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    if case == "no provenance":
        info = json.loads((model / "model.json").read_text())
        del info["golden"]
        (model / "model.json").write_text(json.dumps(info))
        pattern = r"model.json: golden: missing"
    else:
        changes, pattern = BAD_GOLDEN[case]
        _edit_golden(model, changes)
    with pytest.raises(ArtifactCorruptError, match=pattern):
        build_package(model, HOST_ARTIFACT, signer=keys.signer, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _cli(argv: list[str]) -> int:
    from agent.cli.package import add_package_arguments

    parser = argparse.ArgumentParser()
    add_package_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@X86_ONLY
def test_cli_sagemaker_targets_versions_and_onnx(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    make_keys(tmp_path / "keys")
    model = fusion_model_dir(tmp_path / "fusion", onnx=True)
    common = ["package", "model", str(model), "--signing-key", str(tmp_path / "keys" /
                                                                   "ctl-1.key"),
              "--key-id", "ctl-1"]
    assert _cli([*common, "--target", "ML_C5", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(tmp_path / "a" / f"fusion-v1-{HOST_ARTIFACT}.tar.gz")]  # no note
    assert _cli([*common, "--target", "ml_c5", "--version", "6", "--out",
                 str(tmp_path / "b")]) == 0
    note, path = capsys.readouterr().out.splitlines()
    assert note == (f"{model / 'model.json'} says version 1: packaged as version 6, label "
                    "fusion-v6 (the packaged model.json says 6 too)")
    assert _manifest(Path(path)).label == "fusion-v6"
    assert _cli([*common, "--backend", "onnx", "--out", str(tmp_path / "c"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in printed["packages"]] == ["fusion-v1-onnx.tar.gz"]
    with pytest.raises(ConfigError, match=r"unknown Neo target 'ml_c99'; known: .*ml_c5"):
        _cli([*common, "--target", "ml_c99", "--out", str(tmp_path / "d")])
    with pytest.raises(ConfigError, match="Neuron"):
        _cli([*common, "--target", "ml_inf1", "--out", str(tmp_path / "d")])
    with pytest.raises(ConfigError, match="drop --target"):
        _cli([*common, "--backend", "onnx", "--target", "ml_c5", "--out", str(tmp_path / "d")])
    with pytest.raises(ConfigError, match="--target T, --all or --backend onnx"):
        _cli([*common, "--out", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()
