"""Signed model packages: contents, manifest, determinism, keys and the CLI pieces."""

from __future__ import annotations

import argparse
import json
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
from package_support import HOST_ARTIFACT, HOST_TARGET, Keys, build, make_keys, members

from agent.core.errors import AgentError, ArtifactMissingError, ConfigError
from agent.core.model_layout import read_artifact_info
from agent.device.packages.manifest import (
    ARTIFACT_FILES,
    MANIFEST_NAME,
    PackageManifest,
    sha256_hex,
)
from agent.device.platform.elf import host_arch
from agent.device.runtime.onnx import OnnxBackend, OnnxConfig
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.keys import read_private_key, read_public_key
from agent.wire.signing import Signer, TrustStore


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def test_package_contents_and_manifest(built_models: Path, keys: Keys, tmp_path: Path) -> None:
    path = build(built_models, "digits-v2", keys, tmp_path, version=7)
    assert path.name == f"digits-v7-{HOST_ARTIFACT}.tar.gz"
    items = members(path)
    names = [name for name, _ in items]
    assert names[0] == MANIFEST_NAME
    assert names[1:] == sorted(names[1:])
    raw = dict(items)[MANIFEST_NAME]
    doc = json.loads(raw)
    assert keys.trust.verify_document(doc) == "ctl-1"
    manifest = PackageManifest.model_validate(doc)
    # One version, one label: packaged as 7, digits-v2 is digits-v7 in its label and model.json.
    assert (manifest.name, manifest.version, manifest.label) == ("digits", 7, "digits-v7")
    assert json.loads(dict(items)["model.json"])["version"] == "7"
    assert manifest.variant is None and manifest.backend == "dlr"
    assert (manifest.golden.source, manifest.golden.reference) == ("onnx", "onnx/model.onnx")
    info = read_artifact_info(built_models / "digits-v2" / "dlr" / HOST_ARTIFACT)
    assert (manifest.target, manifest.arch, manifest.emulated) == \
        (info.target, info.arch, info.emulated)
    # The manifest lists exactly the other members, with their digests and sizes.
    listed = {name: (entry.sha256, entry.size) for name, entry in manifest.files.items()}
    assert listed == {name: (sha256_hex(data), len(data)) for name, data in items[1:]}
    expected = {"model.json", "onnx/model.onnx"} | {
        f"dlr/{HOST_ARTIFACT}/{name}" for name in ARTIFACT_FILES
        if (built_models / "digits-v2" / "dlr" / HOST_ARTIFACT / name).is_file()}
    assert set(listed) == expected  # no build harness (runner, runner.c)
    # Members are anonymous and timeless.
    with tarfile.open(path, "r:gz") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in tar} == {(0, 0, 0, "", 0o644)}


def test_golden_outputs_are_onnx_runtime_on_the_reference(built_models: Path, keys: Keys,
                                                          tmp_path: Path) -> None:
    path = build(built_models, "digits-v1-crash", keys, tmp_path, reference="digits-v1")
    manifest = PackageManifest.model_validate(json.loads(dict(members(path))[MANIFEST_NAME]))
    assert manifest.variant == "crash" and path.name.startswith("digits-v1-crash-")
    assert manifest.label == "digits-v1-crash"  # model.json's own version by default
    assert "onnx/model.onnx" not in manifest.files  # the crash build has no export
    golden = manifest.golden
    assert len(golden.inputs) == 8 and golden.tolerance == 1e-4
    assert (golden.source, golden.reference) == ("onnx", "digits-v1/onnx/model.onnx")
    testset = np.load(built_models / "digits-v1-crash" / "testset.npz")["x"]
    reference = OnnxBackend(artifact_dir=built_models / "digits-v1",
                            config=OnnxConfig(providers=["CPUExecutionProvider"]))
    buffer = np.zeros((1, 64), np.float32)
    (out,) = reference.bind([buffer])
    for index, (case_in, case_out) in enumerate(zip(golden.inputs, golden.outputs, strict=True)):
        assert case_in["input"] == testset[index].tolist()
        buffer[...] = testset[index]
        reference.run()
        assert case_out["probabilities"] == out.ravel().tolist()


def test_build_without_an_onnx_reference_fails(built_models: Path, keys: Keys,
                                               tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissingError, match=r"ONNX export.*models import"):
        build(built_models, "digits-v1-hang", keys, tmp_path)
    with pytest.raises(ArtifactMissingError, match="no artifact"):
        build(built_models, "digits-v2", keys, tmp_path, artifact="ml_c5-x86_64")
    assert list(tmp_path.iterdir()) == []


def test_archives_are_reproducible(built_models: Path, keys: Keys, tmp_path: Path) -> None:
    first = build(built_models, "digits-v2", keys, tmp_path / "a")
    second = build(built_models, "digits-v2", keys, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()


def test_keys_generate(tmp_path: Path) -> None:
    files = keys_generate(tmp_path / "k", "ctl-7")
    assert files.private == tmp_path / "k" / "ctl-7.key"
    assert stat.S_IMODE(files.private.stat().st_mode) == 0o600
    signer = Signer(private_key=read_private_key(files.private), key_id="ctl-7")
    trust = TrustStore(keys={"ctl-7": read_public_key(files.public)})
    assert trust.verify_document(signer.seal({"a": 1})) == "ctl-7"
    assert TrustStore.from_text({"ctl-7": files.public_b64}).key_ids == {"ctl-7"}
    with pytest.raises(ConfigError, match="already exists"):
        keys_generate(tmp_path / "k", "ctl-7")
    with pytest.raises(AgentError, match="key id"):
        keys_generate(tmp_path / "k", "bad id!")


def _cli(argv: list[str]) -> int:
    from agent.cli.package import add_package_arguments

    parser = argparse.ArgumentParser()
    add_package_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_keys_and_package(built_models: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["keys", "generate", "--out", str(tmp_path / "keys"), "--key-id", "ci"]) == 0
    key = tmp_path / "keys" / "ci.key"
    common = ["--signing-key", str(key), "--key-id", "ci", "--version", "3", "--golden-count", "2"]
    capsys.readouterr()
    assert _cli(["package", "model", str(built_models / "digits-v2"), *common,
                 "--target", HOST_TARGET, "--out", str(tmp_path / "one"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (one,) = printed["packages"]
    assert Path(one).name == f"digits-v3-{HOST_ARTIFACT}.tar.gz"
    assert printed["version"] == 3 and "label digits-v3" in printed["note"]
    assert _cli(["package", "model", str(built_models / "digits-v2"), *common, "--all",
                 "--out", str(tmp_path / "all")]) == 0
    built = sorted(p.name for p in (tmp_path / "all").iterdir())
    artifacts = sorted(p.name for p in (built_models / "digits-v2" / "dlr").iterdir())
    # every artifact, and the ONNX package (digits-v2 has an export)
    assert built == sorted([f"digits-v3-{name}.tar.gz" for name in artifacts]
                           + ["digits-v3-onnx.tar.gz"])
    with pytest.raises(ConfigError, match="unknown Neo target"):
        _cli(["package", "model", str(built_models / "digits-v2"), *common,
              "--target", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):  # --target and --all exclude each other
        _cli(["package", "model", str(built_models / "digits-v2"), *common, "--all",
              "--target", "rasp4b", "--out", str(tmp_path)])


@pytest.mark.skipif(host_arch() != "x86_64", reason="uses the x86_64 build of a rasp4b artifact")
def test_build_package_takes_an_artifact_path(built_models: Path, keys: Keys,
                                              tmp_path: Path) -> None:
    artifact = built_models / "digits-v2" / "dlr" / "rasp4b-x86_64"
    path = build_package(built_models / "digits-v2", artifact, signer=keys.signer,
                         out_dir=tmp_path, version=1, golden_count=1)
    manifest = PackageManifest.model_validate(json.loads(dict(members(path))[MANIFEST_NAME]))
    assert (manifest.target, manifest.arch, manifest.emulated) == ("rasp4b", "x86_64", True)
    assert len(manifest.golden.inputs) == 1
