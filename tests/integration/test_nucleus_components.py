"""The emulated nucleus deploys components from a component store: dependencies, artifacts
(digest, permissions, unarchiving), lifecycles as real processes, and their states."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waits
import yaml
from paths import REPO_ROOT

from agent.tools.greengrass.recipe import Recipe, host_platform
from agent.tools.greengrass.versions import satisfies
from agent.tools.nucleus import (
    ComponentArtifactError,
    ComponentStore,
    DependencyError,
    EmulatedNucleus,
    LifecycleError,
    NucleusError,
    PlatformError,
    UnresolvedVariableError,
)

APP, DATA, OTHER = "com.example.App", "com.example.Data", "com.example.Other"
OS, ARCH = host_platform()
REPO = REPO_ROOT

APP_SCRIPT = """\
import os, signal, sys, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

client = GreengrassCoreIPCClientV2()  # socket and SVCUID from the environment
stop = []
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
client.update_state(state="RUNNING")
print("app running", os.environ["APP_MODE"], os.environ["STEP_VAR"], os.getcwd(), flush=True)
while not stop:
    time.sleep(0.05)
print("app stopping", flush=True)
os._exit(0)
"""


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def manifest(lifecycle: dict[str, Any] | None, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"Platform": {"os": OS, "architecture": ARCH},
                             "Artifacts": artifacts}
    if lifecycle is not None:
        found["Lifecycle"] = lifecycle
    return found


def data_recipe(version: str = "1.0.0") -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": DATA, "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": {"port": 8080}},
        "Manifests": [manifest(None, [
            {"URI": f"s3://bucket/{DATA}/{version}/data.txt", "Digest": digest(b"hello data"),
             "Algorithm": "SHA-256", "Permission": {"Read": "ALL"}},
            {"URI": "s3://bucket/bundle.zip", "Unarchive": "ZIP",
             "Permission": {"Read": "ALL", "Execute": "OWNER"}}])]}


def app_recipe(*, install: dict[str, Any] | None = None, run: str | None = None,
               dependencies: dict[str, str] | None = None) -> dict[str, Any]:
    deps = {DATA: ">=1.0.0 <2.0.0"} if dependencies is None else dependencies
    install = install or {
        "Script": "cat {com.example.Data:artifacts:path}/data.txt > installed.txt && "
                  "echo ' {configuration:/greeting} {com.example.Data:configuration:/port}' "
                  ">> installed.txt && echo once >> {kernel:rootPath}/install-count",
        "Skipif": "exists {work:path}/installed.txt"}
    run = run or f"IGNORE_TERM={{configuration:/ignoreTerm}} exec {sys.executable} " \
                 "{artifacts:path}/app.py"
    return {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": APP, "ComponentVersion": "1.0.0",
        "ComponentDependencies": {n: {"VersionRequirement": r} for n, r in deps.items()},
        "ComponentConfiguration": {"DefaultConfiguration": {"greeting": "hi", "ignoreTerm": ""}},
        "Manifests": [manifest({"Setenv": {"APP_MODE": "test"}, "install": install,
                                "run": {"Script": run, "Setenv": {"STEP_VAR": "step"}}},
                               [{"URI": "file:///nowhere/app.py"}])]}


def write_store(root: Path, *recipes: dict[str, Any]) -> Path:
    """A component store with ``recipes`` (YAML and JSON in turn) and the artifacts of
    the Data and App components."""
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    for i, recipe in enumerate(recipes):
        stem = f"{recipe['ComponentName']}-{recipe['ComponentVersion']}"
        if i % 2:
            (root / "recipes" / f"{stem}.json").write_text(json.dumps(recipe))
        else:
            (root / "recipes" / f"{stem}.yaml").write_text(yaml.safe_dump(recipe))
        folder = root / "artifacts" / recipe["ComponentName"] / recipe["ComponentVersion"]
        folder.mkdir(parents=True, exist_ok=True)
        if recipe["ComponentName"] == DATA:
            (folder / "data.txt").write_bytes(b"hello data")
            with zipfile.ZipFile(folder / "bundle.zip", "w") as bundle:
                bundle.writestr("inner/readme.txt", "unpacked")
        if recipe["ComponentName"] == APP:
            (folder / "app.py").write_text(APP_SCRIPT)
    return root


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store", data_recipe(), app_recipe())


@pytest.fixture()
def nucleus(store: Path) -> Iterator[EmulatedNucleus]:
    with EmulatedNucleus.from_store(store, {APP: None}, thing_name="t1") as running:
        yield running


def nucleus_states(nucleus: EmulatedNucleus, name: str) -> list[str]:
    return [s.state for s in nucleus.lifecycle_states(name)]


def test_deploy_installs_artifacts_and_runs_lifecycles_in_order(nucleus: EmulatedNucleus) -> None:
    plan = nucleus.deploy(timeout_s=30)
    assert plan.names == [DATA, APP] and nucleus.main_component == APP
    root = nucleus.root_dir
    data = root / "packages" / "artifacts" / DATA / "1.0.0" / "data.txt"
    assert data.read_bytes() == b"hello data" and data.stat().st_mode & 0o777 == 0o444
    unpacked = root / "packages" / "artifacts-unarchived" / DATA / "1.0.0" / "bundle"
    readme = unpacked / "inner" / "readme.txt"
    assert readme.read_text() == "unpacked" and readme.stat().st_mode & 0o777 == 0o544
    app = root / "packages" / "artifacts" / APP / "1.0.0" / "app.py"
    assert app.stat().st_mode & 0o777 == 0o400  # Read OWNER, Execute NONE by default
    assert (nucleus.work_dir(APP) / "installed.txt").read_text() == "hello data hi 8080\n"

    waits.wait_for(lambda: nucleus.states(APP) == ["RUNNING"], 15)  # over IPC
    assert nucleus_states(nucleus, DATA) == ["NEW", "INSTALLED", "STARTING", "FINISHED"]
    timeline = [(s.state, s.source) for s in nucleus.component_states(APP)]
    assert timeline == [("NEW", "nucleus"), ("INSTALLED", "nucleus"), ("STARTING", "nucleus"),
                        ("RUNNING", "nucleus"), ("RUNNING", "component")]
    process = nucleus.process(APP)
    assert process is not None and process.poll() is None
    log = nucleus.log_path(APP)
    assert log == root / "logs" / f"{APP}.log"
    waits.wait_for(lambda: f"app running test step {nucleus.work_dir(APP)}" in log.read_text())

    started = time.monotonic()
    nucleus.stop_components(timeout_s=10)
    assert time.monotonic() - started < 5
    assert process.returncode == 0 and nucleus.process(APP) is None
    last = nucleus.lifecycle_states(APP)[-2:]
    assert [s.state for s in last] == ["STOPPING", "FINISHED"]
    assert last[1].detail == "exited 0 on SIGTERM"
    assert "app stopping" in log.read_text()

    # Deploying again: install is skipped (Skipif), the component runs again.
    nucleus.deploy(timeout_s=30)
    assert (nucleus.root_dir / "install-count").read_text() == "once\n"
    assert nucleus_states(nucleus, APP)[-4:] == ["NEW", "INSTALLED", "STARTING", "RUNNING"]
    waits.wait_for(lambda: nucleus.states(APP) == ["RUNNING", "RUNNING"], 15)
    assert "skipped: exists" in log.read_text()


def test_a_component_ignoring_sigterm_is_killed_after_the_timeout(store: Path) -> None:
    with EmulatedNucleus.from_store(store, {APP: "1.0.0"}, thing_name="t2",
                                    config_overrides={APP: {"ignoreTerm": "1"}}) as nucleus:
        nucleus.deploy(timeout_s=30)
        waits.wait_for(lambda: nucleus.states(APP) == ["RUNNING"], 15)
        process = nucleus.process(APP)
        assert process is not None
        started = time.monotonic()
        nucleus.stop_components(timeout_s=0.5)
        assert 0.5 <= time.monotonic() - started < 3
        assert process.returncode == -signal.SIGKILL
        final = nucleus.lifecycle_states(APP)[-1]
        assert (final.state, final.detail) == ("FINISHED", "killed with SIGKILL after 0.5 s")


def test_a_run_process_that_exits_is_recorded(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(), app_recipe(run="exit 3"))
    with EmulatedNucleus.from_store(store, {APP: None}, thing_name="t3") as nucleus:
        nucleus.deploy(timeout_s=30)
        waits.wait_for(lambda: nucleus_states(nucleus, APP)[-1] == "ERRORED")
        assert nucleus.lifecycle_states(APP)[-1].detail == "run exited 3"
    store = write_store(tmp_path / "s2", data_recipe(), app_recipe(run="true"))
    with EmulatedNucleus.from_store(store, {APP: None}, thing_name="t3") as nucleus:
        nucleus.deploy(timeout_s=30)
        waits.wait_for(lambda: nucleus_states(nucleus, APP)[-1] == "FINISHED")
        assert nucleus_states(nucleus, APP)[-3:] == ["RUNNING", "STOPPING", "FINISHED"]


def test_newest_fitting_versions_and_provided_dependencies(tmp_path: Path) -> None:
    recipes = [data_recipe("1.0.0"), data_recipe("1.5.0"), data_recipe("2.0.0"),
               app_recipe(dependencies={DATA: ">=1.0.0 <2.0.0", "variant.DLR": ">=1.6.0"})]
    store = ComponentStore.load(write_store(tmp_path / "s", *recipes))
    plan = store.resolve({APP: None}, provided={"variant.DLR"})
    assert [(r.component_name, r.component_version) for r in plan.components] == [
        (DATA, "1.5.0"), (APP, "1.0.0")]
    assert dict(plan.provided) == {"variant.DLR": ">=1.6.0"}
    with pytest.raises(DependencyError, match=r"variant\.DLR") as caught:
        store.resolve({APP: None})
    assert caught.value.component == "variant.DLR"
    with pytest.raises(DependencyError, match=r"com\.example\.Mine"):
        store.resolve({APP: None}, provided={"variant.DLR", "com.example.Mine"})
    assert store.resolve({DATA: "2.0.0"}).components[0].component_version == "2.0.0"


@pytest.mark.parametrize(("requirement", "versions"), [
    (">=1.0.0 <2.0.0", {"1.0.0": True, "1.9.9": True, "2.0.0": False, "0.9.0": False}),
    ("1.2.3", {"1.2.3": True, "1.2.4": False}),
    ("=1.2.3", {"1.2.3": True}),
    (">1.0.0 <=1.1.0", {"1.0.0": False, "1.1.0": True, "1.1.1": False}),
    ("^1.1.0", {"1.9.0": True, "2.0.0": False}),
    ("~1.2.0", {"1.2.9": True, "1.3.0": False}),
    ("2.0.*", {"2.0.7": True, "2.1.0": False}),
    ("<1.0.0 || >=3.0.0", {"0.1.0": True, "2.0.0": False, "3.1.0": True}),
    (">=1.0.0", {"1.0.0-rc.1": False, "1.0.0": True}),
])
def test_version_requirements(requirement: str, versions: dict[str, bool]) -> None:
    for version, expected in versions.items():
        assert satisfies(version, requirement) is expected, (version, requirement)


def no_process_started(nucleus: EmulatedNucleus) -> None:
    assert nucleus.lifecycle_states(APP) == [] and nucleus.lifecycle_states(DATA) == []
    assert nucleus.process(APP) is None and not (nucleus.root_dir / "logs").exists()


def deploy_fails(store: Path, error: type[Exception], match: str,
                 roots: dict[str, str | None] | None = None) -> Exception:
    with EmulatedNucleus.from_store(store, roots or {APP: None}, thing_name="t4") as nucleus:
        with pytest.raises(error, match=match) as caught:
            nucleus.deploy(timeout_s=30)
        no_process_started(nucleus)
    return caught.value


def test_a_digest_mismatch_is_refused(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(), app_recipe())
    (store / "artifacts" / DATA / "1.0.0" / "data.txt").write_bytes(b"tampered")
    error = deploy_fails(store, ComponentArtifactError,
                         "data.txt does not match its SHA-256 Digest")
    assert getattr(error, "component", None) == DATA


def test_a_missing_artifact_is_refused(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(), app_recipe())
    (store / "artifacts" / APP / "1.0.0" / "app.py").unlink()
    error = deploy_fails(store, ComponentArtifactError, "artifact app.py .* is not in")
    assert getattr(error, "component", None) == APP


@pytest.mark.parametrize(("script", "variable"), [
    ("echo {configuration:/nope}", "{configuration:/nope}"),
    ("echo {com.example.Other:artifacts:path}", "{com.example.Other:artifacts:path}"),
    ("echo {com.example.Data:work:home}", "{com.example.Data:work:home}"),
    ("echo {iot:thingname}", "{iot:thingname}"),
])
def test_an_unresolvable_variable_is_refused(tmp_path: Path, script: str, variable: str) -> None:
    other = {**data_recipe(), "ComponentName": OTHER}
    store = write_store(tmp_path / "s", data_recipe(), other,
                        app_recipe(install={"Script": script}))
    error = deploy_fails(store, UnresolvedVariableError, re.escape(variable),
                         roots={APP: None, OTHER: None})
    assert isinstance(error, UnresolvedVariableError)
    assert (error.component, error.variable) == (APP, variable)


def test_missing_dependencies_and_unmet_requirements_are_refused(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(),
                        app_recipe(dependencies={"com.example.Missing": "1.0.0"}))
    with pytest.raises(DependencyError, match=r"com\.example\.Missing, which is not in") as caught:
        EmulatedNucleus.from_store(store, {APP: None}, thing_name="t5")
    assert caught.value.component == "com.example.Missing"
    store = write_store(tmp_path / "s2", data_recipe(),
                        app_recipe(dependencies={DATA: ">=2.0.0"}))
    with pytest.raises(DependencyError, match=r"requires com\.example\.Data '>=2\.0\.0'.*1\.0\.0"):
        EmulatedNucleus.from_store(store, {APP: None}, thing_name="t5")
    with pytest.raises(DependencyError, match=r"9\.9\.9"):
        EmulatedNucleus.from_store(store, {DATA: "9.9.9"}, thing_name="t5")


def test_a_component_without_a_manifest_for_this_platform_is_refused(tmp_path: Path) -> None:
    app = app_recipe()
    app["Manifests"][0]["Platform"] = {"os": "windows"}
    store = write_store(tmp_path / "s", data_recipe(), app)
    error = deploy_fails(store, PlatformError, f"{APP}: no manifest for {OS}/{ARCH}")
    assert getattr(error, "component", None) == APP


def test_a_failing_install_stops_the_deployment(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(),
                        app_recipe(install={"Script": "echo broken >&2; exit 1"}))
    with EmulatedNucleus.from_store(store, {APP: None}, thing_name="t6") as nucleus:
        with pytest.raises(LifecycleError, match="install step exited 1") as caught:
            nucleus.deploy(timeout_s=30)
        assert caught.value.component == APP and caught.value.log_path == nucleus.log_path(APP)
        assert nucleus_states(nucleus, APP) == ["NEW", "ERRORED"]
        assert nucleus.process(APP) is None
        log = nucleus.log_path(APP).read_text()
        assert "broken" in log and "[run]" not in log


def test_an_install_that_times_out_is_errored(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", data_recipe(),
                        app_recipe(install={"Script": "sleep 30", "Timeout": 1}))
    with EmulatedNucleus.from_store(store, {APP: None}, thing_name="t7") as nucleus:
        started = time.monotonic()
        with pytest.raises(LifecycleError, match="install step timed out after 1 s"):
            nucleus.deploy()
        assert time.monotonic() - started < 5
        assert nucleus_states(nucleus, APP) == ["NEW", "ERRORED"]


def test_command_line_deploys_from_a_store_and_stops_the_components(store: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.tools.nucleus", "--store", str(store),
         "--component", f"{APP}=1.0.0", "--thing", "cli-2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stderr is not None
        log_path = None
        while log_path is None:
            line = process.stderr.readline()
            assert line, "the nucleus exited before deploying"
            found = re.match(rf"deployed {re.escape(APP)} 1\.0\.0: RUNNING \(log: (.+)\)", line)
            log_path = Path(found.group(1)) if found else None
        pid = int(re.findall(r"RUNNING \(pid (\d+)\)", log_path.read_text())[-1])
        os.kill(pid, 0)  # the app runs
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def gone(pid: int) -> bool:
    """No such process any more (or only a zombie waiting for init to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_startup_and_shutdown_steps_of_plain_recipes() -> None:
    recipe = Recipe.parse({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Daemon",
        "Manifests": [manifest({
            "Install": {"Script": "echo never > never.txt", "Skipif": "onpath sh"},
            "Startup": {"Script": "sleep 30 & echo $! > daemon.pid", "Timeout": 10},
            "Shutdown": "echo bye > shutdown.txt"}, [])]})
    idle = EmulatedNucleus(recipes=[recipe], thing_name="t8")
    with pytest.raises(NucleusError, match="start the nucleus before deploying"):
        idle.deploy()
    idle.close()
    with EmulatedNucleus(recipes=[recipe], thing_name="t8") as nucleus:
        nucleus.deploy(timeout_s=30)
        work = nucleus.work_dir()
        assert not (work / "never.txt").exists()
        assert nucleus_states(nucleus, "com.example.Daemon") == [
            "NEW", "INSTALLED", "STARTING", "RUNNING"]
        pid = int((work / "daemon.pid").read_text())
        assert not gone(pid)
        nucleus.stop_components(timeout_s=1)
        assert (work / "shutdown.txt").read_text() == "bye\n"
        assert nucleus_states(nucleus, "com.example.Daemon")[-2:] == ["STOPPING", "FINISHED"]
        waits.wait_for(lambda: gone(pid))
