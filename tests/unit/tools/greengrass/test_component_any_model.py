"""``edge-agent package component`` for a user's own model: the model component is named
after the model, and both components have a manifest for exactly the platforms the model
has real builds for. Models: the foreign-topology ``fusion`` model (two inputs, one int32,
two outputs) written as model directories by hand (:mod:`model_dirs`), golden vectors
from ``golden.npz``, with DLR builds, an ONNX export (its ONNX package rides in the amd64
and aarch64 manifests) or both. A model with only an ONNX export is built for amd64 and
aarch64, where ONNX Runtime runs, and its agent defaults to the onnx backend.

On this x86_64 host the aarch64 components cannot run, so what is proven for them is what
can be: the recipe checks pass for their platform, and the nucleus's platform matching
(``Recipe.manifest_for``, on the deployment the component store resolves) gives an aarch64
device the aarch64 manifest, in which a Raspberry Pi 4 and a Jetson Nano each choose the
package of their own Neo target (the agent's own choice, on their emulated device trees)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from foreign_neo import write_onnx_fusion_like
from model_dirs import HOST_ARTIFACT, fusion_model_dir
from packaging.requirements import Requirement
from paths import REPO_ROOT

from agent.cli.main import main
from agent.device.app.config import load_config
from agent.device.app.first_model import choose_package
from agent.device.packages.archive import read_manifest_member
from agent.device.packages.extract import extract_archive
from agent.device.packages.limits import PackageLimits
from agent.device.packages.manifest import (
    PackageManifest,
    parse_manifest_json,
    sha256_hex,
    verify_manifest,
)
from agent.device.packages.staging import (
    check_artifact,
    check_files,
    check_model_info,
    stage,
)
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.runtime import OnnxConfig
from agent.tools.boards import board_root
from agent.tools.greengrass.component_models import ONNX_PLATFORMS, PLATFORM_OF_ARCH
from agent.tools.greengrass.recipe import Recipe, RecipeError
from agent.tools.greengrass.recipe_check import RecipeCheckError, check_recipe_file
from agent.tools.nucleus.components import ComponentStore
from agent.tools.packaging.keys import KeyFiles, keys_generate
from agent.wire.signing import TrustStore

AGENT = "com.edgeinference.Agent"
WHEEL = "edge_inference_agent-0.1.0-py3-none-any.whl"
PROVIDED = {"variant.DLR"}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return keys_generate(tmp_path_factory.mktemp("keys"), "ctl-byo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the agent's wheel: these tests read recipes and never install it."""
    path = tmp_path_factory.mktemp("wheel") / WHEEL
    path.write_bytes(b"not installed by these tests")
    return path


def package_component(models: Path, key: KeyFiles, out: Path, wheel: Path,
                      *extra: str) -> int:
    return main(["package", "component", "--models", str(models), "--signing-key",
                 str(key.private), "--key-id", key.key_id, "--out", str(out), "--wheel",
                 str(wheel), "--json", *extra])


def recipe_data(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def manifest_files(data: dict[str, Any]) -> dict[str, list[str]]:
    return {m["Platform"]["architecture"]: [a["URI"].rsplit("/", 1)[1] for a in m["Artifacts"]]
            for m in data["Manifests"]}


def built(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def check_both(out: Path, model: str, platforms: tuple[tuple[str, str], ...]) -> None:
    """Both written recipes pass every check for ``platforms``, digests against the files."""
    recipes = out / "greengrass-local" / "recipes"
    model_recipe = Recipe.load(recipes / f"{model}-1.0.0.yaml")
    check_recipe_file(recipes / f"{model}-1.0.0.yaml", require_digests=True,
                      forbid_yaml_aliases=True, platforms=platforms,
                      artifacts_dir=out / "greengrass-local" / "artifacts" / model / "1.0.0")
    check_recipe_file(recipes / f"{AGENT}-0.1.0.yaml", require_digests=True,
                      forbid_yaml_aliases=True, platforms=platforms,
                      dependencies={model: model_recipe},
                      artifacts_dir=out / "greengrass-local" / "artifacts" / AGENT / "0.1.0")


def staged_but_golden(package: Path, profile: DeviceProfile, key: KeyFiles,
                      work: Path) -> PackageManifest:
    """Every check staging makes on ``package`` for a device of ``profile`` but the golden
    run (which needs that device's CPU): signature, digests, model.json, target and ELF."""
    limits = PackageLimits()
    raw = read_manifest_member(package, max_bytes=limits.max_manifest_bytes)
    manifest = verify_manifest(parse_manifest_json(raw),
                               TrustStore.from_text({key.key_id: key.public_b64}))
    files = extract_archive(package, work, limits=limits)
    check_files(manifest, files, manifest_sha256=sha256_hex(raw))
    check_model_info(work, manifest)
    check_artifact(work, manifest, profile)
    return manifest


def test_an_x86_only_model(tmp_path: Path, key: KeyFiles, wheel: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "sensor-fusion-v1", builds=["linux_x86_64-x86_64"],
                     name="sensor-fusion", testset=True)
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, err = built(out, capsys)
    model = "com.edgeinference.Model.sensor-fusion"
    assert [(c["name"], c["platforms"]) for c in printed["components"]] == [
        (AGENT, ["amd64"]), (model, ["amd64"])]
    assert printed["left_out"] == [f"{model} has no build for linux/aarch64, linux/arm: "
                                   f"devices of those platforms cannot install it or {AGENT}"]
    assert f"note: {printed['left_out'][0]}" in err

    recipes = out / "greengrass-local" / "recipes"
    agent = recipe_data(recipes / f"{AGENT}-0.1.0.yaml")
    assert list(agent["ComponentDependencies"]) == [model, "variant.DLR"]
    assert agent["ComponentDependencies"][model]["VersionRequirement"] == ">=1.0.0 <2.0.0"
    assert [m["Platform"] for m in agent["Manifests"]] == [{"os": "linux",
                                                           "architecture": "amd64"}]
    assert agent["Manifests"][0]["Lifecycle"]["run"].endswith(
        f"--initial-package {{{model}:artifacts:path}}")
    assert "MODEL_NAME" not in (recipes / f"{AGENT}-0.1.0.yaml").read_text()
    assert "MODEL_NAME" not in (out / model / "recipe.yaml").read_text()
    data = recipe_data(recipes / f"{model}-1.0.0.yaml")
    assert data["ComponentName"] == model
    assert manifest_files(data) == {
        "amd64": ["sensor-fusion-v1-linux_x86_64-x86_64.tar.gz", "testset.npz"]}
    assert data["ComponentDescription"].startswith("sensor-fusion-v1 compiled for linux_x86_64")
    check_both(out, model, (("linux", "amd64"),))

    # What an aarch64 or armv7l device would meet: no manifest for it, in either recipe.
    with pytest.raises(RecipeCheckError, match="missing manifest for linux/aarch64"):
        check_recipe_file(recipes / f"{model}-1.0.0.yaml")
    plan = ComponentStore.load(out / "greengrass-local").resolve({AGENT: None},
                                                                 provided=PROVIDED)
    assert plan.names == [model, AGENT]
    for name in plan.names:
        assert plan.recipe(name).manifest_for(os="linux", architecture="amd64")
        for arch in ("aarch64", "arm"):
            with pytest.raises(RecipeError, match=f"no manifest for linux/{arch}"):
                plan.recipe(name).manifest_for(os="linux", architecture=arch)


def test_a_raspberry_pi_4_and_jetson_nano_model(tmp_path: Path, key: KeyFiles, wheel: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", builds=["rasp4b-aarch64", "jetson_nano-aarch64"],
                     testset=True)
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, _ = built(out, capsys)
    model = "com.edgeinference.Model.fusion"
    assert [(c["name"], c["platforms"]) for c in printed["components"]] == [
        (AGENT, ["aarch64"]), (model, ["aarch64"])]
    assert printed["left_out"] == [f"{model} has no build for linux/amd64, linux/arm: "
                                   f"devices of those platforms cannot install it or {AGENT}"]
    recipes = out / "greengrass-local" / "recipes"
    data = recipe_data(recipes / f"{model}-1.0.0.yaml")
    assert manifest_files(data) == {"aarch64": ["fusion-v1-jetson_nano-aarch64.tar.gz",
                                                "fusion-v1-rasp4b-aarch64.tar.gz",
                                                "testset.npz"]}
    assert "compiled for jetson_nano, rasp4b" in data["ComponentDescription"]
    check_both(out, model, (("linux", "aarch64"),))

    # The nucleus's platform matching on an aarch64 device: the aarch64 manifest of both
    # components; in it, each board stages the package of its own Neo target.
    plan = ComponentStore.load(out / "greengrass-local").resolve({AGENT: None},
                                                                 provided=PROVIDED)
    assert plan.names == [model, AGENT]
    manifest = plan.recipe(model).manifest_for(os="linux", architecture="aarch64")
    assert plan.recipe(AGENT).manifest_for(os="linux", architecture="aarch64").lifecycle
    with pytest.raises(RecipeError, match="no manifest for linux/amd64"):
        plan.recipe(AGENT).manifest_for(os="linux", architecture="amd64")
    files = out / "greengrass-local" / "artifacts" / model / "1.0.0"
    assert sorted(a.file_name for a in manifest.artifacts) == sorted(p.name
                                                                     for p in files.iterdir())
    for board, target in (("rpi4_64", "rasp4b"), ("jetson_nano_r32", "jetson_nano")):
        profile = detect_profile(root=board_root(board), machine="aarch64")
        package = choose_package(files, profile)
        assert package.name == f"fusion-v1-{target}-aarch64.tar.gz"
        manifest = staged_but_golden(package, profile, key, tmp_path / board)
        assert (manifest.label, manifest.target, manifest.arch) == ("fusion-v1", target,
                                                                    "aarch64")


def test_emulated_builds_ride_with_a_real_build_and_make_no_platform(
        tmp_path: Path, key: KeyFiles, wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", builds=["rasp4b-aarch64", "rasp4b-x86_64"],
                     emulated={"rasp4b-x86_64"})
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, _ = built(out, capsys)
    assert printed["components"][1]["platforms"] == ["aarch64"]
    assert printed["left_out"][0] == (
        f"{models / 'fusion-v1' / 'dlr' / 'rasp4b-x86_64'}: an emulated build (x86_64 code on "
        "behalf of rasp4b) makes no platform, and there is no real amd64 build for it to "
        "ride with: left out")
    model = "com.edgeinference.Model.fusion"
    data = recipe_data(out / "greengrass-local" / "recipes" / f"{model}-1.0.0.yaml")
    assert manifest_files(data) == {"aarch64": ["fusion-v1-rasp4b-aarch64.tar.gz"]}

    fusion_model_dir(models / "fusion-v2", builds=["linux_x86_64-x86_64", "rasp4b-x86_64"],
                     version=2, emulated={"rasp4b-x86_64"})
    assert package_component(models / "fusion-v2", key, out, wheel) == 0  # one model dir
    printed, _ = built(out, capsys)
    assert printed["left_out"] == [f"{model} has no build for linux/aarch64, linux/arm: "
                                   f"devices of those platforms cannot install it or {AGENT}"]
    data = recipe_data(out / "greengrass-local" / "recipes" / f"{model}-2.0.0.yaml")
    assert manifest_files(data) == {"amd64": ["fusion-v2-linux_x86_64-x86_64.tar.gz",
                                              "fusion-v2-rasp4b-x86_64.tar.gz"]}
    assert "emulated boards (rasp4b-x86_64)" in data["ComponentDescription"]


def test_versions_share_the_platforms_every_version_has(
        tmp_path: Path, key: KeyFiles, wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", builds=["linux_x86_64-x86_64"])
    fusion_model_dir(models / "fusion-v2", builds=["linux_x86_64-x86_64", "rasp4b-aarch64"],
                     version=2)
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, _ = built(out, capsys)
    assert [c["platforms"] for c in printed["components"]] == [["amd64"], ["amd64"]]
    assert printed["left_out"][0] == (
        f"{models / 'fusion-v2' / 'dlr' / 'rasp4b-aarch64'}: left out: v1 of fusion has no "
        "aarch64 build, and one agent recipe admits every version (build v2 alone with "
        "--model-version 2)")
    agent = recipe_data(out / "greengrass-local" / "recipes" / f"{AGENT}-0.1.0.yaml")
    model = "com.edgeinference.Model.fusion"
    assert agent["ComponentDependencies"][model]["VersionRequirement"] == ">=1.0.0 <3.0.0"

    assert package_component(models, key, out, wheel, "--model-version", "2") == 0
    printed, _ = built(out, capsys)
    assert [c["platforms"] for c in printed["components"]] == [["amd64", "aarch64"]] * 2


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_several_models_need_a_pick(tmp_path: Path, key: KeyFiles, wheel: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", builds=["linux_x86_64-x86_64"])
    fusion_model_dir(models / "sensor-v1", builds=["linux_x86_64-x86_64"], name="sensor")
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 2
    assert f"{models} holds the models fusion, sensor: pick one with --model NAME" in \
        capsys.readouterr().err
    assert package_component(models, key, out, wheel, "--model", "radar") == 2
    assert f"{models}: no model named radar (has: fusion, sensor)" in capsys.readouterr().err
    assert not out.exists()
    assert package_component(models, key, out, wheel, "--model", "sensor") == 0
    printed, _ = built(out, capsys)
    assert [c["name"] for c in printed["components"]] == [AGENT, "com.edgeinference.Model.sensor"]


@pytest.mark.parametrize(("name", "problem"), [
    ("my model", "'my model' cannot name a Greengrass component"),
    ("m" * 105, "so the name takes at most 104 of them"),
])
def test_a_name_no_component_can_carry_writes_nothing(
        tmp_path: Path, key: KeyFiles, wheel: Path, capsys: pytest.CaptureFixture[str],
        name: str, problem: str) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "m-v1", builds=["linux_x86_64-x86_64"], name=name)
    before = snapshot(models)
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 2
    err = capsys.readouterr().err
    assert f"{models / 'm-v1' / 'model.json'}: name" in err and problem in err, err
    assert not out.exists() and snapshot(models) == before


def test_a_model_with_only_emulated_builds_is_refused(tmp_path: Path, key: KeyFiles,
                                                     wheel: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", builds=["rasp4b-x86_64"], emulated={"rasp4b-x86_64"})
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 2
    err = capsys.readouterr().err
    assert re.search(r"fusion v1 has no real build for any platform .*emulated false\), so no "
                     r"device could install com\.edgeinference\.Model\.fusion", err), err
    assert not out.exists()


def test_onnx_runtime_runs_on_the_onnx_platforms_only() -> None:
    """The ONNX-only components' platforms are those pyproject installs onnxruntime on."""
    requirements = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]
    onnxruntime = next(Requirement(r) for r in requirements if r.startswith("onnxruntime"))
    assert onnxruntime.marker is not None
    runs_on = tuple(platform for arch, platform in PLATFORM_OF_ARCH.items()
                    if onnxruntime.marker.evaluate({"platform_machine": arch}))
    assert runs_on == ONNX_PLATFORMS == ("amd64", "aarch64")


def onnx_note(model: str, shared: str = "any platform") -> str:
    return (f"{model} runs on the ONNX backend ({AGENT}'s default backend is onnx; fusion has "
            f"no real DLR build for {shared}): built for linux/amd64, linux/aarch64; linux/arm "
            "is left out (ONNX Runtime has no armv7l build), so devices of that platform "
            f"cannot install it or {AGENT}")


def test_an_onnx_only_model(tmp_path: Path, key: KeyFiles, wheel: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", neo=False, onnx=True, testset=True)
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, err = built(out, capsys)
    model = "com.edgeinference.Model.fusion"
    assert [(c["name"], c["platforms"]) for c in printed["components"]] == [
        (AGENT, ["amd64", "aarch64"]), (model, ["amd64", "aarch64"])]
    assert printed["left_out"] == [onnx_note(model)]
    assert f"note: {onnx_note(model)}" in err

    recipes = out / "greengrass-local" / "recipes"
    data = recipe_data(recipes / f"{model}-1.0.0.yaml")
    assert manifest_files(data) == {"amd64": ["fusion-v1-onnx.tar.gz", "testset.npz"],
                                    "aarch64": ["fusion-v1-onnx.tar.gz", "testset.npz"]}
    assert data["ComponentDescription"].startswith(
        "fusion-v1 exported to ONNX (for agents running the onnx backend, on amd64, aarch64), "
        "as signed packages")
    agent = recipe_data(recipes / f"{AGENT}-0.1.0.yaml")
    defaults = agent["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["backend"] == "onnx"
    assert "variant.DLR" not in agent["ComponentDependencies"], "no libdlr for an ONNX agent"
    assert load_config({**defaults, "thingName": "t"}).backend == OnnxConfig()
    assert [m["Platform"]["architecture"] for m in agent["Manifests"]] == ["amd64", "aarch64"]
    check_both(out, model, (("linux", "amd64"), ("linux", "aarch64")))
    with pytest.raises(RecipeCheckError, match="missing manifest for linux/arm"):
        check_recipe_file(recipes / f"{model}-1.0.0.yaml")

    # Each platform's manifest puts the ONNX package in the folder --initial-package
    # names; an onnx-backend agent on an x86_64 host or a Raspberry Pi 4 chooses it.
    plan = ComponentStore.load(out / "greengrass-local").resolve({AGENT: None},
                                                                 provided=PROVIDED)
    files = out / "greengrass-local" / "artifacts" / model / "1.0.0"
    for arch in ("amd64", "aarch64"):
        manifest = plan.recipe(model).manifest_for(os="linux", architecture=arch)
        assert sorted(a.file_name for a in manifest.artifacts) == sorted(
            p.name for p in files.iterdir())
    with pytest.raises(RecipeError, match="no manifest for linux/arm"):
        plan.recipe(AGENT).manifest_for(os="linux", architecture="arm")
    trust = TrustStore.from_text({key.key_id: key.public_b64})
    staged = stage(choose_package(files, detect_profile(), backend="onnx"), trust=trust,
                   min_version=0, profile=detect_profile(), work_dir=tmp_path / "host",
                   backend_config=OnnxConfig())  # golden vectors through ONNX Runtime
    assert (staged.manifest.label, staged.manifest.backend) == ("fusion-v1", "onnx")
    pi = detect_profile(root=board_root("rpi4_64"), machine="aarch64")
    manifest = staged_but_golden(choose_package(files, pi, backend="onnx"), pi, key,
                                 tmp_path / "pi")
    assert (manifest.target, manifest.arch, manifest.artifact_path) == ("any", "any",
                                                                        "onnx/model.onnx")


def test_a_dlr_model_with_an_onnx_export_carries_both(
        tmp_path: Path, key: KeyFiles, wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", onnx=True)  # the host's real build and ONNX
    out = tmp_path / "out"
    assert package_component(models, key, out, wheel) == 0
    printed, _ = built(out, capsys)
    model = "com.edgeinference.Model.fusion"
    assert printed["components"][1]["platforms"] == ["amd64"]
    assert printed["left_out"] == [f"{model} has no build for linux/aarch64, linux/arm: "
                                   f"devices of those platforms cannot install it or {AGENT}"]
    recipes = out / "greengrass-local" / "recipes"
    data = recipe_data(recipes / f"{model}-1.0.0.yaml")
    assert manifest_files(data) == {"amd64": [f"fusion-v1-{HOST_ARTIFACT}.tar.gz",
                                              "fusion-v1-onnx.tar.gz"]}
    assert "compiled for linux_x86_64 and exported to ONNX" in data["ComponentDescription"]
    agent = recipe_data(recipes / f"{AGENT}-0.1.0.yaml")
    assert agent["ComponentConfiguration"]["DefaultConfiguration"]["backend"] == "dlr"
    assert "variant.DLR" in agent["ComponentDependencies"]
    check_both(out, model, (("linux", "amd64"),))
    files = out / "greengrass-local" / "artifacts" / model / "1.0.0"
    assert choose_package(files, detect_profile()).name == f"fusion-v1-{HOST_ARTIFACT}.tar.gz"
    assert choose_package(files, detect_profile(), backend="onnx").name == \
        "fusion-v1-onnx.tar.gz"


def test_versions_on_the_onnx_backend(tmp_path: Path, key: KeyFiles, wheel: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """No real DLR platform every version shares, but ONNX in each: the ONNX backend, with
    the DLR builds of amd64 and aarch64 riding along and an armv7l build left out."""
    models = tmp_path / "models"
    fusion_model_dir(models / "fusion-v1", neo=False, onnx=True)
    fusion_model_dir(models / "fusion-v2", builds=["linux_x86_64-x86_64", "rasp3b-armv7l"],
                     version=2)  # no ONNX export
    out = tmp_path / "out"
    model = "com.edgeinference.Model.fusion"
    assert package_component(models, key, out, wheel) == 2
    err = capsys.readouterr().err
    assert (f"fusion v1, v2 have no real build for a platform every version shares "
            "(dlr/<target>-<arch>/ with emulated false), so no device could install "
            f"{model} (nor run it on the ONNX backend: "
            f"{models / 'fusion-v2' / 'onnx' / 'model.onnx'} is missing)") in err, err
    assert not out.exists()

    write_onnx_fusion_like(models / "fusion-v2" / "onnx" / "model.onnx")
    assert package_component(models, key, out, wheel) == 0
    printed, _ = built(out, capsys)
    assert printed["components"][1]["platforms"] == ["amd64", "aarch64"]
    assert printed["left_out"] == [
        f"{models / 'fusion-v2' / 'dlr' / 'rasp3b-armv7l'}: left out: the components run "
        "fusion on the ONNX backend, which has no arm manifest (ONNX Runtime has no armv7l "
        "build)", onnx_note(model, "a platform every version shares")]
    data = recipe_data(out / "greengrass-local" / "recipes" / f"{model}-2.0.0.yaml")
    assert manifest_files(data) == {"amd64": ["fusion-v2-linux_x86_64-x86_64.tar.gz",
                                              "fusion-v2-onnx.tar.gz"],
                                    "aarch64": ["fusion-v2-onnx.tar.gz"]}
    agent = recipe_data(out / "greengrass-local" / "recipes" / f"{AGENT}-0.1.0.yaml")
    assert agent["ComponentConfiguration"]["DefaultConfiguration"]["backend"] == "onnx"
    assert agent["ComponentDependencies"][model]["VersionRequirement"] == ">=1.0.0 <3.0.0"
