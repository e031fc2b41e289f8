"""The Greengrass Lambda entry point, called directly with real DLR on real signed packages.

What runs here: ``agent.lambda_handler.handler`` in this process, the real libdlr, the
agent's staging and store, and Greengrass IPC publishing against the emulated nucleus.
What does not: the Greengrass Lambda launcher, manager and runtimes, and container mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from paths import REPO_ROOT

from agent.core.model_layout import TensorSpec
from agent.device.app.first_model import install_first_model
from agent.device.lambda_function import handler as lambda_handler
from agent.device.lambda_function import loading as models
from agent.device.lambda_function.loading import LambdaSettings
from agent.device.platform.profile import detect_profile
from agent.device.store.store import ModelStore
from agent.tools.bench.alloc import bytes_per_call
from agent.tools.packaging.build import build_onnx_package, build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer, TrustStore

ARTIFACT = "linux_x86_64-x86_64"
RECIPES = REPO_ROOT / "recipes" / "lambda"
ENV_NAMES = {name for name in vars(models) if name.startswith("ENV_")}


@pytest.fixture(scope="module")
def packages(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lambda-packages")
    trusted = keys_generate(root / "keys", "ctl-1")
    rogue = keys_generate(root / "keys", "rogue-1")
    signer = Signer.from_file(trusted.private, key_id="ctl-1")
    out: dict[str, Any] = {"keys": json.dumps({"ctl-1": trusted.public.read_text()}),
                           "trust": TrustStore.from_text({"ctl-1": trusted.public.read_text()})}
    for name, version in [("digits-v1", 1), ("digits-v2", 2)]:
        folder = root / name
        folder.mkdir()
        out[name] = build_package(built_models / name, ARTIFACT, signer=signer,
                                  out_dir=folder, version=version)
    out["digits-v2-onnx"] = build_onnx_package(built_models / "digits-v2", signer=signer,
                                               out_dir=root / "onnx")
    (root / "rogue").mkdir()
    out["rogue"] = build_package(built_models / "digits-v1", ARTIFACT,
                                 signer=Signer.from_file(rogue.private, key_id="rogue-1"),
                                 out_dir=root / "rogue", version=1)
    with np.load(built_models / "digits-v1" / "testset.npz") as data:
        out["x"], out["y"] = data["x"][:50], data["y"][:50]
    return out


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [*os.environ]:
        if name.startswith("EDGE_") and name != "EDGE_TEST_MODELS_DIR":
            monkeypatch.delenv(name)
    lambda_handler._reset_for_tests()
    yield
    lambda_handler._reset_for_tests()


def _signed(monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path,
            package: str = "digits-v1") -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("EDGE_INITIAL_PACKAGE", str(packages[package]))
    monkeypatch.setenv("EDGE_TRUSTED_KEYS", packages["keys"])
    monkeypatch.setenv("EDGE_STATE_DIR", str(state))
    return state


def _rows(packages: dict[str, Any], count: int = 50) -> list[list[float]]:
    rows: list[list[float]] = packages["x"][:count].tolist()
    return rows


def _error(result: dict[str, Any]) -> str:
    assert set(result) == {"error"}, result
    assert set(result["error"]) == {"type", "message"}
    kind: str = result["error"]["type"]
    return kind


# ---- a signed package ---------------------------------------------------------------

def test_signed_package_serves_the_testset_and_keeps_its_core(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    state = _signed(monkeypatch, packages, tmp_path)
    result = lambda_handler.handler({"inputs": _rows(packages)}, None)
    assert "error" not in result, result
    assert result["model"] == "digits-v1" and result["version"].startswith("v1-")
    assert result["rows"] == 50 and len(result["outputs"]) == 50
    assert all(len(row) == 10 for row in result["outputs"])
    assert result["top1"] == [int(np.argmax(row)) for row in result["outputs"]]
    correct = int((np.array(result["top1"]) == packages["y"]).sum())
    assert correct >= 48, f"{correct}/50 correct"  # >= 95 %
    assert result["latency_us"] > 0

    core = lambda_handler.current_core()
    assert core is not None
    again = lambda_handler.handler({"input": _rows(packages, 1)[0], "id": "req-7"}, None)
    assert lambda_handler.current_core() is core, "the second event reuses the loaded model"
    assert again["id"] == "req-7" and again["rows"] == 1
    assert again["top1"] == result["top1"][:1]
    assert np.allclose(again["outputs"][0], result["outputs"][0])

    with ModelStore(state / "models") as store:  # installed through the agent's staging
        assert store.current() == result["version"] and store.versions() == [result["version"]]


def test_a_package_already_current_is_not_staged_again(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    _signed(monkeypatch, packages, tmp_path)
    first = lambda_handler.handler({"inputs": _rows(packages, 2)}, None)
    lambda_handler._reset_for_tests()  # a new process of the function, same state dir

    def no_staging(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("staged again")

    monkeypatch.setattr(models, "install_first_model", no_staging)
    second = lambda_handler.handler({"inputs": _rows(packages, 2)}, None)
    assert second["version"] == first["version"] and second["top1"] == first["top1"]


def test_a_different_package_replaces_the_current_one(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    _signed(monkeypatch, packages, tmp_path)
    assert lambda_handler.handler({"inputs": _rows(packages, 1)}, None)["model"] == "digits-v1"
    lambda_handler._reset_for_tests()
    monkeypatch.setenv("EDGE_INITIAL_PACKAGE", str(packages["digits-v2"]))
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert result["model"] == "digits-v2" and result["version"].startswith("v2-")


def test_an_onnx_package_is_served_by_onnx_runtime(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    """An ONNX package (target ``any``) goes through the same staging and is loaded by the
    runtime its manifest names, from the Lambda's own store and from the agent's."""
    from agent.device.lambda_function.loading import load_model
    from agent.device.runtime import OnnxBackend, OnnxConfig

    monkeypatch.setenv("EDGE_NUM_THREADS", "1")
    state = _signed(monkeypatch, packages, tmp_path, "digits-v2-onnx")
    result = lambda_handler.handler({"inputs": _rows(packages)}, None)
    assert result["model"] == "digits-v2" and result["version"].startswith("v2-"), result
    assert int((np.array(result["top1"]) == packages["y"]).sum()) >= 48
    lambda_handler._reset_for_tests()
    settings = LambdaSettings.from_environ({"EDGE_MODEL_STORE": str(state),
                                            "EDGE_TRUSTED_KEYS": packages["keys"],
                                            "EDGE_NUM_THREADS": "1"})
    loaded = load_model(settings)
    try:
        assert isinstance(loaded.backend, OnnxBackend) and loaded.label == "digits-v2"
        assert loaded.backend.config == OnnxConfig(intra_op_threads=1)
    finally:
        loaded.backend.close()


def test_an_untrusted_package_is_refused_and_nothing_is_installed(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    state = _signed(monkeypatch, packages, tmp_path, package="rogue")
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert _error(result) == "UnknownPackageKeyError"
    assert "rogue-1" in result["error"]["message"]
    assert lambda_handler.current_core() is None
    with ModelStore(state / "models") as store:  # the lock was released, nothing stored
        assert store.current() is None and store.versions() == []
    assert not [p for p in (state / "staging").iterdir()], "no staging leftovers"


# ---- bad events ---------------------------------------------------------------------

GOOD = [0.0] * 64


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lambda-state")


@pytest.mark.parametrize(("event", "kind", "words"), [
    ({}, "EventError", "exactly one of"),
    ({"inputs": [GOOD], "input": GOOD}, "EventError", "exactly one of"),
    ({"rows": [GOOD]}, "EventError", "exactly one of"),
    ([GOOD], "EventError", "JSON object"),
    (None, "EventError", "got null"),
    ("{not json", "EventError", "not JSON"),
    ({"inputs": GOOD[0]}, "EventError", "list of rows"),
    ({"inputs": []}, "EventError", "no rows"),
    ({"inputs": [GOOD], "id": {"a": 1}}, "EventError", "'id'"),
    ({"inputs": [GOOD[:63]]}, "InputSpecError", "expected 64 numbers"),
    ({"inputs": [GOOD, [*GOOD, 1.0]]}, "InputSpecError", "row 1: expected 64"),
    ({"input": [GOOD]}, "InputSpecError", "got 1"),
    ({"inputs": ["0" * 64]}, "InputSpecError", "got a str"),
    ({"inputs": [[*GOOD[:5], "7", *GOOD[6:]]]}, "InputSpecError", "row 0, item 5: '7'"),
    ({"inputs": [[*GOOD[:63], None]]}, "InputSpecError", "item 63: None is not a number"),
    ({"inputs": [[True, *GOOD[1:]]]}, "InputSpecError", "item 0: True is not a number"),
    ({"inputs": [[[0.0], *GOOD[1:]]]}, "InputSpecError", "item 0: [0.0]"),
    ({"inputs": [GOOD, [float("nan"), *GOOD[1:]]]}, "InputSpecError", "row 1, item 0: nan"),
    ({"inputs": [[*GOOD[:9], float("-inf"), *GOOD[10:]]]}, "InputSpecError", "not finite"),
    ({"inputs": [[1e39, *GOOD[1:]]]}, "InputSpecError", "overflows the model's float32"),
    ({"inputs": [[10**400, *GOOD[1:]]]}, "InputSpecError", "too large"),
    ({"inputs": [GOOD] * 9}, "TooManyRowsError", "9 rows in one event; at most 8"),
])
def test_bad_events_get_typed_errors_and_change_nothing(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], shared_state: Path,
        event: object, kind: str, words: str) -> None:
    monkeypatch.setenv("EDGE_MAX_ROWS", "8")
    _signed(monkeypatch, packages, shared_state)  # staged once, then found current
    rows = _rows(packages, 3)
    before = lambda_handler.handler({"inputs": rows}, None)
    core = lambda_handler.current_core()
    result = lambda_handler.handler(event, None)
    assert _error(result) == kind and words in result["error"]["message"], result
    assert lambda_handler.current_core() is core
    assert lambda_handler.handler({"inputs": rows}, None)["outputs"] == before["outputs"]


def test_a_json_text_event_is_decoded(monkeypatch: pytest.MonkeyPatch,
                                      packages: dict[str, Any], tmp_path: Path) -> None:
    _signed(monkeypatch, packages, tmp_path)
    rows = _rows(packages, 2)
    as_dict = lambda_handler.handler({"inputs": rows}, None)
    as_bytes = lambda_handler.handler(json.dumps({"inputs": rows}).encode(), None)
    assert as_bytes["top1"] == as_dict["top1"]


def test_the_row_loop_allocates_nothing_per_row(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    _signed(monkeypatch, packages, tmp_path)
    lambda_handler.handler({"inputs": _rows(packages)}, None)
    core = lambda_handler.current_core()
    assert core is not None
    one = bytes_per_call(lambda: core.run_staged(1), calls=300, warmup=30)
    many = bytes_per_call(lambda: core.run_staged(50), calls=300, warmup=30)
    print(f"{one:.1f} B for 1 row, {many:.1f} B for 50 rows")
    assert (many - one) / 49 < 1.0, f"{one:.1f} B for 1 row, {many:.1f} B for 50 rows"


# ---- settings -----------------------------------------------------------------------

def test_an_unsigned_model_dir_needs_the_development_switch(
        monkeypatch: pytest.MonkeyPatch, built_models: Path, packages: dict[str, Any]) -> None:
    monkeypatch.setenv("EDGE_MODEL_DIR", str(built_models / "digits-v1"))
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert _error(result) == "ConfigError" and "EDGE_ALLOW_UNSIGNED=1" in str(result)
    assert lambda_handler.current_core() is None

    monkeypatch.setenv("EDGE_ALLOW_UNSIGNED", "1")
    result = lambda_handler.handler({"inputs": _rows(packages, 5)}, None)
    assert result["model"] == "digits-v1" and result["version"] is None
    assert result["top1"] == packages["y"][:5].tolist()


@pytest.mark.parametrize(("env", "words"), [
    ({}, "got none"),
    ({"EDGE_MODEL_STORE": "/s", "EDGE_MODEL_DIR": "/m"}, "EDGE_MODEL_STORE, EDGE_MODEL_DIR"),
    ({"EDGE_INITIAL_PACKAGE": "/p.tar.gz"}, "needs EDGE_TRUSTED_KEYS"),
    ({"EDGE_INITIAL_PACKAGE": "/p", "EDGE_TRUSTED_KEYS": "{"}, "is not JSON"),
    ({"EDGE_INITIAL_PACKAGE": "/p", "EDGE_TRUSTED_KEYS": '["k"]'}, "non-empty JSON object"),
    ({"EDGE_MODEL_STORE": "/s", "EDGE_MAX_ROWS": "0"}, "EDGE_MAX_ROWS must be between"),
    ({"EDGE_MODEL_STORE": "/s", "EDGE_NUM_THREADS": "two"}, "must be an integer"),
    ({"EDGE_MODEL_STORE": "/s", "EDGE_RESULT_TOPIC": "a/+/b"}, "wildcards"),
])
def test_bad_settings_are_config_errors(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        words: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = lambda_handler.handler({"input": GOOD}, None)
    assert _error(result) == "ConfigError" and words in result["error"]["message"], result


# ---- the agent's store --------------------------------------------------------------

def _agent_store(state: Path, packages: dict[str, Any], package: str) -> ModelStore:
    """What the agent does: own the store (its lock) and install a package into it."""
    store = ModelStore(state / "models")
    install_first_model(packages[package], store=store, trust=packages["trust"],
                        profile=detect_profile(), work_dir=state / "staging",
                        min_version=0, golden_timeout_s=10.0)
    return store


def test_the_agents_store_is_served_in_place_and_followed(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    store = _agent_store(state, packages, "digits-v1")  # the agent holds the store's lock
    try:
        monkeypatch.setenv("EDGE_MODEL_STORE", str(state))
        monkeypatch.setenv("EDGE_TRUSTED_KEYS", packages["keys"])  # adds a signature check
        first = lambda_handler.handler({"inputs": _rows(packages)}, None)
        assert first["model"] == "digits-v1" and first["version"] == store.current()
        assert int((np.array(first["top1"]) == packages["y"]).sum()) >= 48
        core = lambda_handler.current_core()
        lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
        assert lambda_handler.current_core() is core, "same pointer: same core"

        install_first_model(packages["digits-v2"], store=store, trust=packages["trust"],
                            profile=detect_profile(), work_dir=state / "staging",
                            min_version=0, golden_timeout_s=10.0)
        moved = lambda_handler.handler({"inputs": _rows(packages, 3)}, None)
        assert moved["model"] == "digits-v2" and moved["version"] == store.current()
        assert lambda_handler.current_core() is not core

        store.rollback("the agent's trial failed")
        back = lambda_handler.handler({"inputs": _rows(packages, 3)}, None)
        assert back["model"] == "digits-v1" and back["version"] == first["version"]
    finally:
        store.close()


def test_a_tampered_store_version_is_refused(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    with _agent_store(state, packages, "digits-v1") as store:
        current = store.current()
        assert current is not None
        params = store.path(current) / "dlr" / ARTIFACT / "compiled.params"
    params.write_bytes(params.read_bytes()[:-1] + b"\x00")
    monkeypatch.setenv("EDGE_MODEL_STORE", str(state / "models"))  # the store folder itself
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert _error(result) == "StoreError" and "signed digest" in result["error"]["message"]


def test_a_store_signed_by_another_key_is_refused_when_keys_are_given(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    _agent_store(state, packages, "digits-v1").close()
    other = keys_generate(tmp_path / "keys", "ctl-1")  # same id, different key
    monkeypatch.setenv("EDGE_MODEL_STORE", str(state))
    monkeypatch.setenv("EDGE_TRUSTED_KEYS", json.dumps({"ctl-1": other.public.read_text()}))
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert _error(result) == "BadPackageSignatureError"


def test_an_empty_store_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ModelStore(tmp_path / "models").close()
    monkeypatch.setenv("EDGE_MODEL_STORE", str(tmp_path))
    result = lambda_handler.handler({"input": GOOD}, None)
    assert _error(result) == "ArtifactMissingError" and "no current model" in str(result)


# ---- start-up and publishing --------------------------------------------------------

def test_load_at_start_loads_when_the_module_is_imported(built_models: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env.update(EDGE_MODEL_DIR=str(built_models / "digits-v1"), EDGE_ALLOW_UNSIGNED="1",
               EDGE_LOAD_AT_START="1")
    code = ("import agent.lambda_handler; import agent.device.lambda_function.handler as h; "
            "core = h.current_core(); "
            "print(core.label if core else None)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "digits-v1", out.stderr


def _deployment_merge() -> dict[str, Any]:
    deployment = yaml.safe_load((RECIPES / "deployment.yaml").read_text())
    merge: dict[str, Any] = json.loads(
        deployment["components"]["com.edgeinference.LambdaInference"]["configurationUpdate"]
        ["merge"])
    return merge


def test_results_are_published_through_greengrass_ipc(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    from agent.tools.nucleus import EmulatedNucleus, Recipe
    from agent.tools.nucleus.iotcore import LoopbackIoTCore

    name = "com.edgeinference.LambdaInference"
    merge = _deployment_merge()
    topic = merge["lambdaExecutionParameters"]["EnvironmentVariables"]["EDGE_RESULT_TOPIC"]
    recipe = Recipe.parse({"RecipeFormatVersion": "2020-01-25", "ComponentName": name,
                           "ComponentVersion": "1.0.0"})
    with EmulatedNucleus(recipes=[recipe], thing_name="lambda-dev-1",
                         config_overrides={name: merge}) as nucleus:
        for key, value in nucleus.ipc_env(name).items():
            monkeypatch.setenv(key, value)
        _signed(monkeypatch, packages, tmp_path)
        monkeypatch.setenv("EDGE_RESULT_TOPIC", topic)
        result = lambda_handler.handler({"inputs": _rows(packages, 2), "id": 11}, None)
        assert result["published"] is True, result
        assert isinstance(nucleus.link, LoopbackIoTCore)  # no broker: publishes are recorded
        published = [json.loads(p) for t, p in nucleus.link.published if t == topic]
        assert published == [{k: v for k, v in result.items() if k != "published"}]

        lambda_handler._reset_for_tests()
        monkeypatch.setenv("EDGE_RESULT_TOPIC", "edge/inference/elsewhere")
        refused = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
        assert refused["published"] is False and refused["top1"] == result["top1"][:1]
        assert "not authorized" in refused["publish_error"].lower(), refused


def test_without_greengrass_the_result_still_comes_back(
        monkeypatch: pytest.MonkeyPatch, packages: dict[str, Any], tmp_path: Path) -> None:
    _signed(monkeypatch, packages, tmp_path)
    monkeypatch.setenv("EDGE_RESULT_TOPIC", "edge/inference/results")
    monkeypatch.delenv("SVCUID", raising=False)
    result = lambda_handler.handler({"inputs": _rows(packages, 1)}, None)
    assert result["published"] is False and "not set" in result["publish_error"]
    assert result["model"] == "digits-v1"


# ---- the deployment files -----------------------------------------------------------

def test_the_deployment_files_match_the_handler() -> None:
    imported = yaml.safe_load((RECIPES / "lambda-function-component.yaml").read_text())
    params = imported["lambdaFunction"]["componentLambdaParameters"]
    assert params["pinned"] is True
    assert params["linuxProcessParams"]["isolationMode"] == "NoContainer"
    merge = _deployment_merge()
    assert merge["containerMode"] == "NoContainer" and merge["pinned"] is True
    known = {getattr(models, n) for n in ENV_NAMES} | {lambda_handler.ENV_LOAD_AT_START}
    for env in (params["environmentVariables"],
                merge["lambdaExecutionParameters"]["EnvironmentVariables"]):
        assert set(env) <= known, set(env) - known
        settings = LambdaSettings.from_environ(env)
        assert settings.model_store == Path("/greengrass/v2/work/com.edgeinference.Agent/state")
    policy = merge["accessControl"]["aws.greengrass.ipc.mqttproxy"]
    [rule] = policy.values()
    assert rule["operations"] == ["aws.greengrass#PublishToIoTCore"]
    assert merge["lambdaExecutionParameters"]["EnvironmentVariables"]["EDGE_RESULT_TOPIC"] \
        in rule["resources"]


# ---- integer inputs (a stand-in backend: no reference model takes integers) ----------

class _EchoBackend:
    """Copies its int8 input to a float32 output: only to exercise the integer checks."""

    name = "echo"

    def __init__(self, inputs: int = 1) -> None:
        self.inputs: tuple[TensorSpec, ...] = tuple(
            TensorSpec(name=f"x{i}", dtype="int8", shape=(1, 4)) for i in range(inputs))
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec(name="y", dtype="float32", shape=(1, 4)),)
        self._out = np.zeros((1, 4), dtype=np.float32)
        self._in: tuple[np.ndarray, ...] = ()

    def bind(self, inputs: Any) -> tuple[np.ndarray, ...]:
        self._in = tuple(inputs)
        return (self._out,)

    def run(self) -> None:
        self._out[...] = self._in[0]

    def runner(self) -> Any:
        return self.run

    def translate(self, err: Exception) -> Any:
        from agent.core.errors import InferenceError

        return InferenceError(str(err))

    def describe(self) -> dict[str, str]:
        return {"backend": self.name}

    def close(self) -> None:
        pass


def test_integer_models_take_integers_in_range() -> None:
    from agent.core.errors import ConfigError, InputSpecError
    from agent.device.lambda_function.batches import InferenceCore

    core = InferenceCore(_EchoBackend(), label="echo", version=None, max_rows=4)
    result = core.infer([[1, -2, 3, 127], [-128, 0, 5, 4]])
    assert result["outputs"] == [[1.0, -2.0, 3.0, 127.0], [-128.0, 0.0, 5.0, 4.0]]
    assert result["top1"] == [3, 2]
    with pytest.raises(InputSpecError, match=r"row 0, item 1: 1.5 is not an integer"):
        core.infer([[0, 1.5, 0, 0]])
    with pytest.raises(InputSpecError, match=r"row 1, item 3: 200 is outside .*int8"):
        core.infer([[0, 0, 0, 0], [0, 0, 0, 200]])
    with pytest.raises(ConfigError, match="one input and one output"):
        InferenceCore(_EchoBackend(inputs=2), label="two", version=None, max_rows=4)
