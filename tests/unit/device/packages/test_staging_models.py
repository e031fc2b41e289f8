"""Staging any model: model.json must agree with the signed manifest, the metadata is signed
like the rest, a multi-input model's golden cases (from golden.npz, no ONNX) are reproduced by
the real libdlr in the child, and ONNX packages skip the Neo checks but not the golden check,
which loads each package with the runtime its manifest names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from model_dirs import fusion_model_dir
from package_support import (
    HOST_ARTIFACT,
    Keys,
    leftovers,
    make_keys,
    members,
    repack,
)

from agent.device.packages.errors import (
    BadPackageSignatureError,
    DigestMismatchError,
    GoldenMismatchError,
    GoldenRuntimeError,
    MissingFileError,
    ModelInfoMismatchError,
)
from agent.device.packages.golden_check import check_package
from agent.device.packages.staging import StagedPackage, stage
from agent.device.platform.elf import host_arch
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.runtime import DlrConfig, OnnxConfig
from agent.tools.boards import board_root
from agent.tools.packaging.build import build_onnx_package, build_package

pytestmark = pytest.mark.skipif(host_arch() != "x86_64", reason="the fusion artifact is ml_c5")
LABELLED = {"labels": ["a", "b", "c", "d"], "postprocess": {"output": "Identity:0"}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def fusion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fusion_model_dir(tmp_path_factory.mktemp("models") / "fusion", onnx=True,
                            metadata=LABELLED)


@pytest.fixture(scope="module")
def dlr_package(fusion: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(fusion, HOST_ARTIFACT, signer=keys.signer,
                         out_dir=tmp_path_factory.mktemp("dlr"))


@pytest.fixture(scope="module")
def onnx_package(fusion: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx_package(fusion, signer=keys.signer, out_dir=tmp_path_factory.mktemp("onnx"))


def _stage(package: Path, keys: Keys, work: Path, profile: DeviceProfile | None = None,
           **options: Any) -> StagedPackage:
    return stage(package, trust=keys.trust, min_version=0, profile=profile or detect_profile(),
                 work_dir=work, **options)


def test_a_multi_input_model_is_staged_with_its_golden_cases(dlr_package: Path, keys: Keys,
                                                             tmp_path: Path) -> None:
    staged = _stage(dlr_package, keys, tmp_path / "work")
    assert staged.manifest.golden.source == "user" and len(staged.manifest.golden.inputs) == 3
    assert staged.manifest.metadata is not None
    assert staged.manifest.metadata.labels == ("a", "b", "c", "d")
    matched, message = check_package(staged.dir)
    assert matched and "3 golden case(s) matched on dlr" in message, message


def test_golden_outputs_the_artifact_does_not_reproduce(dlr_package: Path, keys: Keys,
                                                         tmp_path: Path) -> None:
    def off(doc: dict[str, Any]) -> None:
        doc["golden"]["outputs"][1]["Identity_1:0"][0] += 1.0

    bad = repack(dlr_package, tmp_path / "bad.tgz", edit=off, resign=keys.signer)
    with pytest.raises(GoldenMismatchError, match=r"golden case 1, output Identity_1:0: max "
                                                  r"\|diff\| 1 exceeds tolerance 1e-05"):
        _stage(bad, keys, tmp_path / "work")
    assert leftovers(tmp_path / "work") == []


def _model_json(package: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(dict(members(package))["model.json"])
    return loaded


@pytest.mark.parametrize(("field", "change", "pattern"), [
    ("metadata", lambda info: info["metadata"].update(labels=["a", "b", "c", "X"]),
     r"model.json: metadata .*\"X\".*the signed manifest says"),
    ("name", lambda info: info.update(name="other"),
     r"model.json: name 'other', the signed manifest says 'fusion'"),
    ("version", lambda info: info.update(version="9"),
     r"model.json: label 'fusion-v9', the signed manifest says 'fusion-v1'"),
    ("inputs", lambda info: info["inputs"].reverse(), r"model.json: inputs"),
])
def test_a_model_json_that_disagrees_with_the_manifest(dlr_package: Path, keys: Keys,
                                                       tmp_path: Path, field: str,
                                                       change: Any, pattern: str) -> None:
    """Signed as it is (its digest in the manifest), but not the model the manifest says."""
    info = _model_json(dlr_package)
    change(info)
    bad = repack(dlr_package, tmp_path / f"{field}.tgz",
                 replace={"model.json": json.dumps(info).encode()}, resign=keys.signer)
    with pytest.raises(ModelInfoMismatchError, match=pattern):
        _stage(bad, keys, tmp_path / "work")
    assert leftovers(tmp_path / "work") == []


def test_a_label_changed_after_signing_is_refused(dlr_package: Path, keys: Keys,
                                                  tmp_path: Path) -> None:
    def relabel(doc: dict[str, Any]) -> None:
        doc["metadata"]["labels"][0] = "renamed"

    in_manifest = repack(dlr_package, tmp_path / "manifest.tgz", edit=relabel)
    with pytest.raises(BadPackageSignatureError, match="does not match"):
        _stage(in_manifest, keys, tmp_path / "work")
    info = _model_json(dlr_package)
    info["metadata"]["labels"][0] = "renamed"
    in_model_json = repack(dlr_package, tmp_path / "model-json.tgz",
                           replace={"model.json": json.dumps(info).encode()})
    with pytest.raises(DigestMismatchError, match=r"model\.json: sha256"):
        _stage(in_model_json, keys, tmp_path / "work")
    assert leftovers(tmp_path / "work") == []


def test_an_onnx_package_skips_the_neo_checks_not_the_golden_check(
        onnx_package: Path, keys: Keys, tmp_path: Path) -> None:
    # An emulated Raspberry Pi takes it: no Neo target or ELF to check, ONNX Runtime runs it.
    rpi4 = detect_profile(root=board_root("rpi4_64"), emulate=True)
    staged = _stage(onnx_package, keys, tmp_path / "work", rpi4)
    assert (staged.manifest.backend, staged.artifact_dir) == (
        "onnx", staged.dir / "onnx" / "model.onnx")
    matched, message = check_package(staged.dir, config=OnnxConfig(intra_op_threads=1))
    assert matched and "matched on onnx" in message, message

    def off(doc: dict[str, Any]) -> None:
        doc["golden"]["outputs"][0]["Identity:0"][2] += 0.5

    wrong = repack(onnx_package, tmp_path / "wrong.tgz", edit=off, resign=keys.signer)
    with pytest.raises(GoldenMismatchError, match="output Identity:0"):
        _stage(wrong, keys, tmp_path / "work2", rpi4)

    def unlist(doc: dict[str, Any]) -> None:
        del doc["files"]["onnx/model.onnx"]

    no_model = repack(onnx_package, tmp_path / "no-model.tgz", edit=unlist,
                      drop=("onnx/model.onnx",), resign=keys.signer)
    with pytest.raises(MissingFileError, match=r"onnx/model\.onnx: an onnx package's model"):
        _stage(no_model, keys, tmp_path / "work2", rpi4)
    assert leftovers(tmp_path / "work2") == []


def test_the_golden_check_uses_the_settings_of_the_package_runtime(
        dlr_package: Path, onnx_package: Path, keys: Keys, tmp_path: Path) -> None:
    missing = DlrConfig(library_path=tmp_path / "no" / "libdlr.so")
    with pytest.raises(GoldenRuntimeError, match="libdlr not found at"):
        _stage(dlr_package, keys, tmp_path / "work", backend_config=missing)
    # The device's DLR settings do not apply to an ONNX package, nor ONNX ones to a DLR one.
    _stage(onnx_package, keys, tmp_path / "work", backend_config=missing)
    _stage(dlr_package, keys, tmp_path / "work",
           backend_config=OnnxConfig(providers=["NoSuchExecutionProvider"]))
    with pytest.raises(GoldenRuntimeError, match="NoSuchExecutionProvider"):
        _stage(onnx_package, keys, tmp_path / "work2",
               backend_config=OnnxConfig(providers=["NoSuchExecutionProvider"]))
