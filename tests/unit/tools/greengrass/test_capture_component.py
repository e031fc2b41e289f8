"""Capture uploads to S3 in the agent component: ``package component --capture-bucket``
turns capture on with that bucket and makes ``aws.greengrass.TokenExchangeService`` a HARD
dependency; without it the recipe has no such dependency; the recipe checks accept both and
refuse S3 uploads without the token exchange service."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import REPO_ROOT

from agent.cli.main import main
from agent.core.errors import ConfigError
from agent.tools.greengrass.component_recipes import s3_capture
from agent.tools.greengrass.recipe import Recipe, load_recipe_data
from agent.tools.greengrass.recipe_check import RecipeCheckError, check_recipe, check_recipe_file
from agent.tools.packaging.keys import KeyFiles, keys_generate

AGENT = "com.edgeinference.Agent"
TES = "aws.greengrass.TokenExchangeService"
TEMPLATE = REPO_ROOT / "recipes" / f"{AGENT}.yaml"
MODEL_TEMPLATE = REPO_ROOT / "recipes" / "com.edgeinference.Model.yaml"
MODEL_SLOT = "com.edgeinference.Model.MODEL_NAME"
WHEEL = "edge_inference_agent-0.1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return keys_generate(tmp_path_factory.mktemp("keys"), "ctl-cap")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the agent's wheel: these tests read recipes and never install it."""
    path = tmp_path_factory.mktemp("wheel") / WHEEL
    path.write_bytes(b"not installed by these tests")
    return path


def agent_recipe(models: Path, key: KeyFiles, out: Path, wheel: Path,
                 *extra: str) -> tuple[Path, dict[str, Any]]:
    assert main(["package", "component", "--models", str(models), "--signing-key",
                 str(key.private), "--key-id", key.key_id, "--out", str(out), "--wheel",
                 str(wheel), "--model-version", "1", "--json", *extra]) == 0
    path = out / "greengrass-local" / "recipes" / f"{AGENT}-0.1.0.yaml"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return path, data


def template() -> dict[str, Any]:
    data = load_recipe_data(TEMPLATE)
    assert isinstance(data, dict)
    return copy.deepcopy(data)


def configuration(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = data["ComponentConfiguration"]["DefaultConfiguration"]
    return found


def test_the_capture_bucket_option_adds_the_dependency_and_the_upload(
        built_models: Path, key: KeyFiles, wheel: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, data = agent_recipe(built_models, key, tmp_path / "s3", wheel,
                              "--capture-bucket", "field-captures", "--capture-prefix",
                              "fleet/kitchen")
    assert data["ComponentDependencies"][TES] == {"VersionRequirement": ">=2.0.0 <3.0.0",
                                                  "DependencyType": "HARD"}
    capture = configuration(data)["capture"]
    assert capture["enabled"] is True
    assert capture["upload"] == {**configuration(template())["capture"]["upload"],
                                 "kind": "s3", "bucket": "field-captures",
                                 "prefix": "fleet/kitchen"}
    rest = {k: v for k, v in capture.items() if k not in ("enabled", "upload")}
    assert rest == {k: v for k, v in configuration(template())["capture"].items()
                    if k not in ("enabled", "upload")}, "rules and budgets stay the template's"
    model = out_model(tmp_path / "s3")
    check_recipe_file(path, require_digests=True, forbid_yaml_aliases=True,
                      dependencies={model.component_name: model},
                      artifacts_dir=path.parents[1] / "artifacts" / AGENT / "0.1.0")
    gdk = json.loads((tmp_path / "s3" / AGENT / "gdk-config.json").read_text())
    rebuild = " ".join(gdk["component"][AGENT]["build"]["custom_build_command"])
    assert "--capture-bucket field-captures --capture-prefix fleet/kitchen" in rebuild
    capsys.readouterr()

    _, plain = agent_recipe(built_models, key, tmp_path / "plain", wheel)
    assert TES not in plain["ComponentDependencies"]
    assert configuration(plain)["capture"] == configuration(template())["capture"]
    assert configuration(plain)["capture"]["enabled"] is False


def out_model(out: Path) -> Recipe:
    recipes = out / "greengrass-local" / "recipes"
    return Recipe.load(next(p for p in recipes.iterdir() if p.name != f"{AGENT}-0.1.0.yaml"))


def test_a_bad_bucket_or_prefix_is_refused(built_models: Path, key: KeyFiles, wheel: Path,
                                           tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"s3://ab/captures: String should have at least 3"):
        s3_capture(template(), bucket="ab")
    with pytest.raises(ConfigError, match=r"must not contain '\.\.'"):
        s3_capture(template(), bucket="field-captures", prefix="a/../b")
    assert main(["package", "component", "--models", str(built_models), "--signing-key",
                 str(key.private), "--key-id", key.key_id, "--out", str(tmp_path / "out"),
                 "--wheel", str(wheel), "--model-version", "1",
                 "--capture-bucket", "x"]) != 0
    assert not (tmp_path / "out").exists(), "a refused build leaves nothing behind"


def test_the_template_has_no_token_exchange_dependency() -> None:
    data = template()
    assert TES not in data["ComponentDependencies"]
    assert configuration(data)["capture"]["enabled"] is False
    assert configuration(data)["capture"]["upload"]["kind"] == "none"
    assert "--capture-bucket BUCKET" in TEMPLATE.read_text()


def test_the_checks_accept_both_and_refuse_s3_uploads_without_it() -> None:
    dependencies = {MODEL_SLOT: Recipe.load(MODEL_TEMPLATE)}
    check_recipe(template(), dependencies=dependencies)
    with_upload = s3_capture(template(), bucket="field-captures")
    check_recipe(with_upload, dependencies=dependencies)

    del with_upload["ComponentDependencies"][TES]
    with pytest.raises(RecipeCheckError) as caught:
        check_recipe(with_upload, dependencies=dependencies)
    assert [str(p) for p in caught.value.problems] == [
        f"ComponentDependencies: capture.upload.kind is s3 but the recipe does not depend on "
        f"{TES}: a component gets its AWS credentials only from it under Greengrass"]

    disabled = template()  # S3 configured but off: a deployment may still turn it on
    configuration(disabled)["capture"]["upload"].update(kind="s3", bucket="field-captures")
    with pytest.raises(RecipeCheckError, match=r"does not depend on aws\.greengrass\.Token"):
        check_recipe(disabled, dependencies=dependencies)
