"""``edge-agent package component``: the GDK layout, digests, signed packages a device
accepts, recipes that pass the checker, and bad inputs that leave nothing behind."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import REPO_ROOT

from agent.cli.main import main
from agent.device.app.first_model import choose_package
from agent.device.packages.staging import stage
from agent.device.platform.elf import host_arch
from agent.device.platform.profile import detect_profile
from agent.tools.boards import board_root
from agent.tools.greengrass.component import PLACEHOLDER_BASE
from agent.tools.greengrass.recipe import Recipe
from agent.tools.greengrass.recipe_check import check_recipe_file
from agent.tools.packaging.keys import KeyFiles, keys_generate
from agent.wire.signing import TrustStore

AGENT = "com.edgeinference.Agent"
MODEL = "com.edgeinference.Model.digits"
ROOT = REPO_ROOT


@dataclass(frozen=True)
class Built:
    out: Path
    key: KeyFiles


def run_cli(models: Path, key: KeyFiles, out: Path, *extra: str) -> int:
    return main(["package", "component", "--models", str(models),
                 "--signing-key", str(key.private), "--key-id", key.key_id, "--out", str(out),
                 *extra])


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return keys_generate(tmp_path_factory.mktemp("keys"), "ctl-1")


@pytest.fixture(scope="module")
def built(built_models: Path, key: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One full build (the agent wheel too) shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("components") / "out"
    assert run_cli(built_models, key, out) == 0
    return Built(out=out, key=key)


def recipe_data(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def artifacts_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for m in data["Manifests"] for a in m["Artifacts"]]


def b64_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_gdk_layout_and_config(built: Built) -> None:
    agent = built.out / AGENT
    model = built.out / MODEL
    assert sorted(p.name for p in built.out.iterdir()) == [AGENT, MODEL, "greengrass-local"]
    # GDK's project recipes: the templates, naming this model's component.
    for folder, template in ((agent, f"{AGENT}.yaml"), (model, "com.edgeinference.Model.yaml")):
        assert (folder / "recipe.yaml").read_text() == (ROOT / "recipes" / template).read_text(
            ).replace("com.edgeinference.Model.MODEL_NAME", MODEL)
    assert sorted(p.name for p in (agent / "greengrass-build" / "recipes").iterdir()) == \
        [f"{AGENT}-0.1.0.yaml", "recipe.yaml"]
    assert sorted(p.name for p in (model / "greengrass-build" / "recipes").iterdir()) == \
        [f"{MODEL}-1.0.0.yaml", f"{MODEL}-2.0.0.yaml", "recipe.yaml"]
    files = agent / "greengrass-build" / "artifacts" / AGENT / "0.1.0"
    assert sorted(p.name for p in files.iterdir()) == [
        "edge_inference_agent-0.1.0-py3-none-any.whl", "install-agent.sh"]
    config = json.loads((model / "gdk-config.json").read_text())
    assert config["gdk_version"] == "1.0.0"
    component = config["component"][MODEL]
    assert list(config["component"]) == [MODEL]
    assert component["author"] == "edge-inference" and component["version"] == "2.0.0"
    assert component["publish"] == {"bucket": "edge-inference-components", "region": "us-east-1"}
    assert component["build"]["build_system"] == "custom"
    command = component["build"]["custom_build_command"]
    assert command[:3] == ["edge-agent", "package", "component"]
    assert "--key" not in command  # the signing key is --signing-key, as in every command
    assert command[command.index("--signing-key") + 1].endswith(".key")
    # GDK publishes greengrass-build/recipes/recipe.yaml: the gdk-config version's recipe.
    build_recipes = model / "greengrass-build" / "recipes"
    assert (build_recipes / "recipe.yaml").read_text() == \
        (build_recipes / f"{MODEL}-2.0.0.yaml").read_text()


def test_model_components_group_packages_by_platform(built: Built) -> None:
    data = recipe_data(built.out / MODEL / "greengrass-build" / "recipes" / f"{MODEL}-1.0.0.yaml")
    assert data["ComponentVersion"] == "1.0.0"
    names = {m["Platform"]["architecture"]: [a["URI"].rsplit("/", 1)[1] for a in m["Artifacts"]]
             for m in data["Manifests"]}
    # The ONNX package where ONNX Runtime runs (no armv7l wheel), for onnx-backend agents.
    assert names == {
        "amd64": ["digits-v1-linux_x86_64-x86_64.tar.gz", "digits-v1-jetson_nano-x86_64.tar.gz",
                  "digits-v1-rasp3b-x86_64.tar.gz", "digits-v1-rasp4b-x86_64.tar.gz",
                  "digits-v1-onnx.tar.gz", "testset.npz"],
        "aarch64": ["digits-v1-jetson_nano-aarch64.tar.gz", "digits-v1-rasp4b-aarch64.tar.gz",
                    "digits-v1-onnx.tar.gz", "testset.npz"],
        "arm": ["digits-v1-rasp3b-armv7l.tar.gz", "testset.npz"]}
    assert "emulated boards (jetson_nano-x86_64" in data["ComponentDescription"]
    assert all(a["Permission"] == {"Read": "ALL"} for a in artifacts_of(data))
    assert all(a["URI"].startswith(PLACEHOLDER_BASE + "/") for a in artifacts_of(data))


def test_digests_match_the_files_and_recipes_pass_the_checker(built: Built) -> None:
    recipes = sorted(built.out.glob("*/greengrass-build/recipes/*-*.yaml"))
    assert len(recipes) == 3
    for path in recipes:
        data = recipe_data(path)
        files = path.parents[1] / "artifacts" / data["ComponentName"] / data["ComponentVersion"]
        for artifact in artifacts_of(data):
            assert artifact["Algorithm"] == "SHA-256"
            assert artifact["Digest"] == b64_sha256(files / artifact["URI"].rsplit("/", 1)[1])
        assert "&id" not in path.read_text() and "*id" not in path.read_text()
        check_recipe_file(path, require_digests=True, forbid_yaml_aliases=True,
                          artifacts_dir=files)
    agent = recipe_data(recipes[0])
    assert agent["ComponentDependencies"][MODEL]["VersionRequirement"] == ">=1.0.0 <3.0.0"
    assert "aws.greengrass.TokenExchangeService" not in agent["ComponentDependencies"]
    assert agent["ComponentConfiguration"]["DefaultConfiguration"]["trustedKeys"] == {}


def test_the_wheel_holds_the_agent(built: Built) -> None:
    wheel = built.out / AGENT / "greengrass-build" / "artifacts" / AGENT / "0.1.0" / \
        "edge_inference_agent-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("edge_inference_agent-0.1.0.dist-info/METADATA").decode()
    assert {"agent/__init__.py", "agent/cli/main.py", "agent/tools/boards/README.md"} <= names
    assert not any(n.startswith("tests/") for n in names)
    assert "Requires-Dist: dlr==1.6.0" in metadata


def test_a_device_installs_its_package_from_the_model_component(built: Built,
                                                                tmp_path: Path) -> None:
    folder = built.out / MODEL / "greengrass-build" / "artifacts" / MODEL / "2.0.0"
    if host_arch() == "x86_64":
        profile = detect_profile(root=board_root("rpi4_64"), emulate=True)
        assert choose_package(folder, profile).name == "digits-v2-rasp4b-x86_64.tar.gz"
    profile = detect_profile()
    package = choose_package(folder, profile)
    trust = TrustStore.from_text({built.key.key_id: built.key.public_b64})
    staged = stage(package, trust=trust, min_version=0, profile=profile, work_dir=tmp_path)
    assert (staged.manifest.name, staged.manifest.version) == ("digits", 2)


def test_local_deployment_folder_holds_every_recipe_and_artifact(built: Built) -> None:
    local = built.out / "greengrass-local"
    assert sorted(p.name for p in (local / "recipes").iterdir()) == [
        f"{AGENT}-0.1.0.yaml", f"{MODEL}-1.0.0.yaml", f"{MODEL}-2.0.0.yaml"]
    for name, version in ((AGENT, "0.1.0"), (MODEL, "1.0.0"), (MODEL, "2.0.0")):
        here = local / "artifacts" / name / version
        there = built.out / name / "greengrass-build" / "artifacts" / name / version
        assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in there.iterdir())
        assert all((here / p.name).read_bytes() == p.read_bytes() for p in there.iterdir())


def test_options_rebuild_in_place(built: Built, built_models: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(built.out, out)
    (out / "unrelated.txt").write_text("kept")
    wheel = next(out.glob(f"{AGENT}/greengrass-build/artifacts/{AGENT}/*/*.whl"))
    kept_wheel = tmp_path / wheel.name
    shutil.copyfile(wheel, kept_wheel)
    assert run_cli(built_models, built.key, out, "--wheel", str(kept_wheel), "--uri-base", "file",
                   "--model-version", "1", "--s3-packages", "--trust-signing-key") == 0
    assert "deploy locally: sudo greengrass-cli deployment create" in capsys.readouterr().out
    assert (out / "unrelated.txt").read_text() == "kept"
    assert not list(out.glob(".component-build-*"))
    assert sorted(p.name for p in (out / MODEL / "greengrass-build" / "recipes").iterdir()) == \
        [f"{MODEL}-1.0.0.yaml", "recipe.yaml"]
    agent = recipe_data(out / AGENT / "greengrass-build" / "recipes" / f"{AGENT}-0.1.0.yaml")
    dependencies = agent["ComponentDependencies"]
    assert dependencies[MODEL]["VersionRequirement"] == ">=1.0.0 <2.0.0"
    assert dependencies["aws.greengrass.TokenExchangeService"]["DependencyType"] == "HARD"
    trusted = agent["ComponentConfiguration"]["DefaultConfiguration"]["trustedKeys"]
    assert trusted == {"ctl-1": built.key.public_b64}
    for artifact in artifacts_of(agent):
        assert artifact["URI"].startswith("file:///")
        assert Path(artifact["URI"][len("file://"):]).is_file()

    assert run_cli(built_models, built.key, out, "--wheel", str(kept_wheel), "--uri-base",
                   "s3://my-bucket/edge/", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in printed["components"]] == [AGENT, MODEL]
    # digits has real builds for every platform: nothing is left out.
    assert [c["platforms"] for c in printed["components"]] == [["amd64", "aarch64", "arm"]] * 2
    assert printed["left_out"] == []
    model = recipe_data(Path(printed["components"][1]["recipes"][0]))
    assert artifacts_of(model)[0]["URI"] == \
        f"s3://my-bucket/edge/{MODEL}/1.0.0/digits-v1-linux_x86_64-x86_64.tar.gz"
    assert Recipe.parse(model).component_version == "1.0.0"


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("change", "message"), [
    ({"models": "missing"}, "--models .*missing: no such folder"),
    ({"key": "missing.key"}, "missing.key: No such file"),
    ({"extra": ["--model-version", "7"]}, "no digits model for version\\(s\\) 7 \\(has: 1, 2\\)"),
    ({"extra": ["--uri-base", "https://example.com"]}, "give s3://BUCKET\\[/PREFIX\\] or file"),
    ({"extra": ["--wheel", "agent.zip"]}, "agent.zip: not an agent wheel"),
])
def test_bad_input_writes_nothing(built_models: Path, key: KeyFiles, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], change: dict[str, Any],
                                  message: str) -> None:
    out = tmp_path / "out"
    models = tmp_path / change["models"] if "models" in change else built_models
    bad_key = key if "key" not in change else KeyFiles(
        key_id=key.key_id, private=tmp_path / change["key"], public=key.public,
        public_b64=key.public_b64)
    assert run_cli(models, bad_key, out, *change.get("extra", [])) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_a_recipe_that_fails_the_checker_leaves_the_output_as_it_was(
        built: Built, built_models: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes)
    template = recipes / f"{AGENT}.yaml"
    template.write_text(template.read_text().replace("edge/groups/+/commands", "edge/#"))
    out = tmp_path / "out"
    shutil.copytree(built.out, out)
    before = snapshot(out)
    wheel = next(out.glob(f"{AGENT}/greengrass-build/artifacts/{AGENT}/*/*.whl"))
    kept_wheel = tmp_path / wheel.name
    shutil.copyfile(wheel, kept_wheel)
    assert run_cli(built_models, built.key, out, "--recipes", str(recipes),
                   "--wheel", str(kept_wheel)) == 2
    err = capsys.readouterr().err
    assert "RecipeCheckError" in err and "too wide: grants aws.greengrass#SubscribeToIoTCore " \
                                         "on edge/#" in err
    assert snapshot(out) == before
    assert not list(out.glob(".component-build-*"))
