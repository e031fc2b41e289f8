"""The Greengrass recipe templates in recipes/ and the recipe checker's rules.

The real templates pass every rule; each rule has a negative case (the template edited,
or a small recipe in tests/fixtures/recipes/) whose message names the key at fault.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES, REPO_ROOT

from agent.core.errors import ConfigError
from agent.tools.greengrass import agent_rules
from agent.tools.greengrass.access_policy import MQTT_PROXY, AccessDeniedError, AccessPolicy
from agent.tools.greengrass.agent_rules import PUBLISH, SUBSCRIBE, agent_problems, agent_topics
from agent.tools.greengrass.interpolation import interpolate
from agent.tools.greengrass.recipe import Recipe, load_recipe_data
from agent.tools.greengrass.recipe_check import (
    RecipeCheckError,
    check_recipe,
    check_recipe_file,
    find_problems,
)
from agent.tools.greengrass.versions import satisfies
from agent.wire.topics import EXTRA_CHANNELS, UP_CHANNELS, Topics

ROOT = REPO_ROOT
AGENT = ROOT / "recipes" / "com.edgeinference.Agent.yaml"
MODEL = ROOT / "recipes" / "com.edgeinference.Model.yaml"
FIXTURES = FIXTURES / "recipes"
MODEL_NAME = "com.edgeinference.Model.MODEL_NAME"  # the templates' stand-in for any model
CONFIG = ("ComponentConfiguration", "DefaultConfiguration")


def template(path: Path) -> dict[str, Any]:
    data = load_recipe_data(path)
    assert isinstance(data, dict)
    return copy.deepcopy(data)


def model() -> Recipe:
    return Recipe.load(MODEL)


def messages(data: dict[str, Any] | Recipe, **options: Any) -> list[str]:
    options.setdefault("dependencies", {MODEL_NAME: model()})
    return [str(p) for p in find_problems(data, **options)]


def edited(change: Callable[[dict[str, Any]], object]) -> list[str]:
    data = template(AGENT)
    data["Manifests"] = [copy.deepcopy(m) for m in data["Manifests"]]  # unshare YAML aliases
    change(data)
    return messages(data)


def config(data: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = data[CONFIG[0]][CONFIG[1]]
    return value


def mqtt_policies(data: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = config(data)["accessControl"][MQTT_PROXY]
    return value


# --- the real templates -------------------------------------------------------------------


def test_the_templates_pass_every_rule() -> None:
    agent = check_recipe_file(AGENT, dependencies={MODEL_NAME: model()})
    assert agent.component_name == "com.edgeinference.Agent"
    assert check_recipe_file(MODEL).component_name == MODEL_NAME
    assert check_recipe(template(AGENT)).component_version == "0.1.0"


def test_the_nucleus_policy_from_the_recipe_allows_exactly_the_agent_topics() -> None:
    recipe = Recipe.load(AGENT)
    policy = AccessPolicy.from_configuration(
        component=recipe.component_name, configuration=recipe.default_configuration(),
        thing_name="dev-1")
    topics = Topics("dev-1")
    for channel in (*UP_CHANNELS, *EXTRA_CHANNELS):
        policy.check(service=MQTT_PROXY, operation=PUBLISH, resource=topics.up(channel))
    for topic in (topics.commands, topics.group_commands("lab"), "edge/groups/+/commands"):
        policy.check(service=MQTT_PROXY, operation=SUBSCRIBE, resource=topic)
    for operation, resource in [(PUBLISH, "edge/dev-2/metrics"), (SUBSCRIBE, "edge/dev-2/commands"),
                                (PUBLISH, "edge/dev-1/commands"), (SUBSCRIBE, "edge/#")]:
        with pytest.raises(AccessDeniedError, match="not authorized"):
            policy.check(service=MQTT_PROXY, operation=operation, resource=resource)


def test_agent_topics_come_from_the_protocol() -> None:
    topics = agent_topics("fleet")
    assert topics[PUBLISH] == {f"fleet/{{iot:thingName}}/{c}"
                               for c in (*UP_CHANNELS, *EXTRA_CHANNELS)}
    assert topics[SUBSCRIBE] == {"fleet/{iot:thingName}/commands", "fleet/groups/+/commands"}


# --- rule: the recipe matches the recipe reference ----------------------------------------


def test_unknown_field_and_wrong_type_name_their_key() -> None:
    def rename_run(data: dict[str, Any]) -> None:
        data["Manifests"][1]["Lifecycle"]["rnu"] = data["Manifests"][1]["Lifecycle"].pop("run")

    assert any(m.startswith("Manifests[1].Lifecycle.rnu: Extra inputs")
               for m in edited(rename_run))
    found = edited(lambda d: d["Manifests"][0]["Lifecycle"]["install"].update(Timeout="soon"))
    assert any(m.startswith("Manifests[0].Lifecycle.install.Timeout: Input should be a valid "
                            "integer") for m in found), found
    found = edited(lambda d: d.update(ComponentVersion="1.0"))
    assert found == ["ComponentVersion: '1.0' is not a semantic version (major.minor.patch)"]
    found = edited(lambda d: d["ComponentDependencies"]["variant.DLR"].update(
        VersionRequirement="newest"))
    assert found == ['ComponentDependencies["variant.DLR"].VersionRequirement: \'newest\' is '
                     'not a version or a partial version']


def test_keys_and_enumerations_in_any_case() -> None:
    recipe = check_recipe_file(FIXTURES / "mixed-case.yaml", platforms=(("linux", "amd64"),))
    lifecycle = recipe.manifests[0].lifecycle
    assert lifecycle is not None and set(lifecycle.steps()) == {"install", "run"}
    assert lifecycle.steps()["install"].skipif == "onpath git"
    assert recipe.component_dependencies["com.example.Dep"].dependency_type == "SOFT"
    assert recipe.manifests[0].artifacts[0].permission.read == "ALL"
    with pytest.raises(RecipeCheckError, match="'Run' repeats 'run'"):
        check_recipe({**template(AGENT), "Manifests": [
            {"Lifecycle": {"run": "a", "Run": "b"}}]})


# --- rule: a manifest for each platform ---------------------------------------------------


def test_a_missing_platform_is_named() -> None:
    found = edited(lambda d: d["Manifests"].pop(2))
    assert found == ["Manifests: missing manifest for linux/arm"]
    recipe = Recipe.load(AGENT)
    assert recipe.manifests[0].platform.model_copy(
        update={"architecture": "/amd64|x86/"}).matches(os="linux", architecture="x86")


# --- rule: recipe variables resolve -------------------------------------------------------


def set_run(script: str, index: int = 1) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["Manifests"][index]["Lifecycle"].update(run=script)


@pytest.mark.parametrize(("script", "expected"), [
    ("run {configuration:/nope}",
     "Manifests[1].Lifecycle.run: {configuration:/nope} does not resolve: "
     "DefaultConfiguration has no /nope"),
    ("run {com.other.Thing:artifacts:path}",
     "Manifests[1].Lifecycle.run: {com.other.Thing:artifacts:path} does not resolve: "
     "com.other.Thing is not in ComponentDependencies (only direct dependencies resolve)"),
    ("run {com.edgeinference.Model.MODEL_NAME:configuration:/x}",
     "Manifests[1].Lifecycle.run: {com.edgeinference.Model.MODEL_NAME:configuration:/x} does "
     "not resolve: com.edgeinference.Model.MODEL_NAME's DefaultConfiguration has no /x"),
    ("run {secrets:token}",
     "Manifests[1].Lifecycle.run: {secrets:token} does not resolve: unknown namespace "
     "'secrets'"),
    ("run {work:dir}", "Manifests[1].Lifecycle.run: {work:dir} does not resolve: work has path"),
    ("run {com.edgeinference.Model.MODEL_NAME:iot:thingName}",
     "Manifests[1].Lifecycle.run: {com.edgeinference.Model.MODEL_NAME:iot:thingName} does not "
     "resolve: iot is only a component's own, not a dependency's"),
    ("run {artifacts:decompressedPath}", "Manifests[1].Lifecycle.run: "
     "{artifacts:decompressedPath} names no folder: no artifact has Unarchive: ZIP"),
    ("sh {artifacts:path}/setup.sh", "Manifests[1].Lifecycle.run: {artifacts:path}/setup.sh "
     "is not an artifact of this manifest (has: edge_inference_agent-0.1.0-py3-none-any.whl, "
     "install-agent.sh)"),
    ("ls {com.edgeinference.Model.MODEL_NAME:artifacts:path}/model.tar.gz",
     "Manifests[1].Lifecycle.run: {com.edgeinference.Model.MODEL_NAME:artifacts:path}/"
     "model.tar.gz is not an artifact of com.edgeinference.Model.MODEL_NAME (has: "
     "model-package.tar.gz)"),
])
def test_a_variable_that_does_not_resolve_is_named(script: str, expected: str) -> None:
    assert edited(set_run(script)) == [expected]


def test_variables_that_resolve_and_shell_braces_pass() -> None:
    script = ("run {configuration:/guardrails/minSamples} {configuration:/thingGroups/0x} "
              "{kernel:rootPath} {iot:thingName} ${PYTHON:-python3} {a,b} '{\"k\": 1}' "
              "{com.edgeinference.Model.MODEL_NAME:work:path}")
    found = edited(set_run(script))
    assert found == ["Manifests[1].Lifecycle.run: {configuration:/thingGroups/0x} does not "
                     "resolve: DefaultConfiguration has no /thingGroups/0x"]
    found = edited(lambda d: d["Manifests"][0]["Lifecycle"]["Setenv"].update(
        WHERE="{work:pth}"))
    assert found == ["Manifests[0].Lifecycle.Setenv.WHERE: {work:pth} does not resolve: "
                     "work has path"]


def test_configuration_takes_only_the_thing_name() -> None:
    found = edited(lambda d: config(d).update(stateDir="{work:path}/state"))
    assert found == ["ComponentConfiguration.DefaultConfiguration.stateDir: {work:path} stays "
                     "as written: only {iot:thingName} is interpolated in configuration "
                     "(interpolateComponentConfiguration)"]


def test_interpolate_resolves_dependencies_and_configuration() -> None:
    text = ("{com.x.Dep:artifacts:path}/a {configuration:/n} {configuration:/o} "
            "{com.x.Dep:configuration:/flag} {configuration:/missing} {iot:thingName}")
    out = interpolate(text, {"com.x.Dep:artifacts:path": "/gg/dep", "iot:thingName": "t1"},
                      configuration={"n": None, "o": {"b": 1, "a": [True]}},
                      configurations={"com.x.Dep": {"flag": False}})
    assert out == '/gg/dep/a null {"a":[true],"b":1} false {configuration:/missing} t1'


# --- rule: the agent's settings -----------------------------------------------------------


def test_agent_settings_are_checked_by_the_agent_config() -> None:
    found = edited(lambda d: config(d).update(metricsIntervalSeconds="often"))
    assert found == ["ComponentConfiguration.DefaultConfiguration.metricsIntervalSeconds: "
                     "Input should be a valid number, unable to parse string as a number"]
    found = edited(lambda d: config(d)["guardrails"].update(minAgreement=2))
    assert found == ["ComponentConfiguration.DefaultConfiguration.guardrails.minAgreement: "
                     "Input should be less than or equal to 1"]
    found = edited(lambda d: config(d).pop("keepVersions"))
    assert found == ["ComponentConfiguration.DefaultConfiguration: missing agent setting(s) "
                     "keepVersions: the recipe lists every setting with its default"]
    found = edited(lambda d: config(d).update(thingName="pi-1", colour="red"))
    assert found == [
        "ComponentConfiguration.DefaultConfiguration.thingName: must not be set: every device "
        "has its own, from AWS_IOT_THING_NAME",
        "ComponentConfiguration.DefaultConfiguration.colour: Extra inputs are not permitted"]


def test_agent_settings_must_survive_integers_becoming_floats(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = agent_rules.load_config

    def strict_about_keep_versions(raw: dict[str, Any]) -> Any:
        if isinstance(raw.get("keepVersions"), float):
            raise ConfigError("invalid agent configuration: keepVersions: not an integer")
        return real(raw)

    monkeypatch.setattr(agent_rules, "load_config", strict_about_keep_versions)
    assert agent_problems(Recipe.load(AGENT).default_configuration()) == [
        ("ComponentConfiguration.DefaultConfiguration", "invalid agent configuration: "
         "keepVersions: not an integer once Greengrass stores its integers as floats")]


# --- rule: accessControl grants exactly the agent's topics --------------------------------


def test_a_missing_topic_is_named() -> None:
    found = edited(lambda d: mqtt_policies(d)["com.edgeinference.Agent:mqttproxy:1"][
        "resources"].remove("edge/{iot:thingName}/emf"))
    assert found == ["ComponentConfiguration.DefaultConfiguration.accessControl: missing "
                     "grant: aws.greengrass#PublishToIoTCore on edge/{iot:thingName}/emf"]


@pytest.mark.parametrize(("policy", "expected"), [
    ({"operations": [SUBSCRIBE], "resources": ["edge/#"]},
     ".resources: too wide: grants aws.greengrass#SubscribeToIoTCore on edge/#, a topic the "
     "agent does not use"),
    ({"operations": [PUBLISH], "resources": ["*"]},
     ".resources: too wide: grants aws.greengrass#PublishToIoTCore on *, a topic the agent "
     "does not use"),
    ({"operations": ["*"], "resources": ["edge/{iot:thingName}/commands"]},
     ".operations: too wide: grants *"),
    ({"operations": ["aws.greengrass#PublishToTopic"], "resources": ["edge/x"]},
     ".operations: too wide: grants aws.greengrass#PublishToTopic"),
])
def test_a_wider_grant_is_refused(policy: dict[str, Any], expected: str) -> None:
    found = edited(lambda d: mqtt_policies(d).update({"extra:1": policy}))
    where = ('ComponentConfiguration.DefaultConfiguration.accessControl'
             '["aws.greengrass.ipc.mqttproxy"]["extra:1"]')
    assert [m for m in found if "too wide" in m] == [where + expected]


def test_another_service_or_prefix_is_refused() -> None:
    found = edited(lambda d: config(d)["accessControl"].update(
        {"aws.greengrass.SecretManager": {"p:1": {"operations": ["*"]}}}))
    assert found == ['ComponentConfiguration.DefaultConfiguration.accessControl'
                     '["aws.greengrass.SecretManager"]: too wide: the agent uses no '
                     'aws.greengrass.SecretManager']
    found = edited(lambda d: config(d).update(topicPrefix="fleet"))
    assert sum("too wide" in m for m in found) == 10  # every edge/... MQTT grant
    assert sum("missing grant" in m and "fleet/" in m for m in found) == 10


# --- rule: artifacts ----------------------------------------------------------------------


def test_published_recipes_need_base64_sha256_digests() -> None:
    found = messages(Recipe.load(AGENT), require_digests=True)
    assert found[0] == "Manifests[0].Artifacts[0].Digest: missing (SHA-256, base64)"
    assert len(found) == 6

    def digest(value: str, algorithm: str = "SHA-256") -> Callable[[dict[str, Any]], None]:
        return lambda d: d["Manifests"][0]["Artifacts"][0].update(Digest=value,
                                                                  Algorithm=algorithm)

    hexdigest = "ab" * 32
    assert edited(digest(hexdigest)) == [
        f"Manifests[0].Artifacts[0].Digest: '{hexdigest}' is not a base64 SHA-256 digest (the "
        "nucleus compares base64, not hex)"]
    assert edited(digest("A" * 43 + "=", "MD5")) == [
        "Manifests[0].Artifacts[0].Digest: Algorithm must be SHA-256, got 'MD5'"]
    assert edited(digest("A" * 43 + "=")) == []


def test_artifact_schemes_and_names() -> None:
    def artifacts(*uris: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["Manifests"][2].update(Artifacts=[{"URI": u} for u in uris])

    wheel = "s3://b/edge_inference_agent-0.1.0-py3-none-any.whl"
    found = edited(artifacts(wheel, "file:///tmp/install-agent.sh"))
    assert found == ["Manifests[2].Artifacts[1].URI: scheme 'file' is not one the nucleus "
                     "downloads (s3, greengrass, docker)"]
    assert edited(artifacts(wheel, "s3://a/install-agent.sh", "s3://b/install-agent.sh")) == [
        "Manifests[2].Artifacts[2].URI: install-agent.sh twice in one manifest (file names "
        "must be unique)"]


def test_yaml_aliases_are_refused_for_deployment() -> None:
    path = FIXTURES / "aliases.yaml"
    assert check_recipe_file(path).component_name == "com.example.Aliased"
    with pytest.raises(RecipeCheckError, match=r"\(file\): uses YAML aliases \*lifecycle"):
        check_recipe_file(path, forbid_yaml_aliases=True)


# --- rule: dependencies -------------------------------------------------------------------


def test_dependency_versions_and_artifact_permissions() -> None:
    newer = model().model_copy(update={"component_version": "2.0.0"})
    found = messages(Recipe.load(AGENT), dependencies={MODEL_NAME: newer})
    assert found == [f'ComponentDependencies["{MODEL_NAME}"].VersionRequirement: '
                     f"'>=1.0.0 <2.0.0' does not admit {MODEL_NAME} 2.0.0"]
    data = template(MODEL)
    del data["Manifests"][1]["Artifacts"][0]["Permission"]
    found = messages(Recipe.load(AGENT), dependencies={MODEL_NAME: Recipe.parse(data)})
    assert found == [f"{MODEL_NAME}: Manifests[1].Artifacts[0].Permission.Read: must be ALL: "
                     "com.edgeinference.Agent reads model-package.tar.gz through "
                     f"{{{MODEL_NAME}:artifacts:path}}"]


@pytest.mark.parametrize(("version", "requirement", "ok"), [
    ("1.0.0", ">=1.0.0 <2.0.0", True), ("2.0.0", ">=1.0.0 <2.0.0", False),
    ("1.6.12", ">=1.6.0 <1.7.0", True), ("1.2.0", "^1.1.0", True), ("2.0.0", "^1.1.0", False),
    ("0.2.0", "^0.1.0", False), ("1.2.9", "~1.2.0", True), ("1.3.0", "~1.2", False),
    ("3.1.0", "1.x || 3", True), ("1.4.1", "1.0.0 - 1.4", True), ("1.5.0", "1.0.0 - 1.4", False),
    ("2.0.0-rc.1", "<2.0.0", False), ("2.0.0-rc.1", ">=2.0.0-rc.0", True),
    ("5.0.0", "*", True), ("1.0.1", "=1.0.0", False), ("1.0.0", ">= 0.9", True),
])
def test_npm_version_ranges(version: str, requirement: str, ok: bool) -> None:
    assert satisfies(version, requirement) is ok
