"""Capture uploads under a Greengrass nucleus: the agent component, its recipe made by the
component builder's S3 capture option (a HARD dependency on
``aws.greengrass.TokenExchangeService``), runs under the emulated nucleus with no AWS
credentials of its own, and its captured batches reach the loopback S3 server with the
credentials the token exchange service hands it; and the IAM policy shipped for the
device's token exchange role grants exactly the S3 actions the uploader needs."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import waits
from cloud import CloudSubscriber
from paths import REPO_ROOT

from agent.device.capture.batches import BATCH_FILE
from agent.device.capture.config import BatchConfig
from agent.device.capture.record import Capture, decode
from agent.device.capture.s3_destination import S3Destination
from agent.device.capture.store import CaptureStore
from agent.device.capture.upload import BatchUploader
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.tools.greengrass.component_recipes import s3_capture
from agent.tools.greengrass.recipe import Recipe, host_platform, load_recipe_data
from agent.tools.nucleus import EmulatedNucleus
from agent.tools.nucleus.token_exchange import AUTH_TOKEN_ENV, FULL_URI_ENV, TOKEN_EXCHANGE_SERVICE
from agent.tools.s3.local_server import REGION, LocalS3Server
from agent.wire.messages import Metrics

AGENT = "com.edgeinference.Agent"
TEMPLATE = REPO_ROOT / "recipes" / f"{AGENT}.yaml"
POLICY = REPO_ROOT / "recipes" / "iot" / "capture-upload-policy.json"
PREFIX = "fleet"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", FULL_URI_ENV, AUTH_TOKEN_ENV,
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE")


@pytest.fixture
def bucket(s3_server: LocalS3Server) -> str:
    name = f"gg-captures-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """This process's environment (the components' base) without AWS credentials of any
    kind, so that whatever the agent signs with came from the token exchange service."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def agent_recipe(bucket: str) -> Recipe:
    """The template as ``package component --capture-bucket`` writes it (the builder's own
    function), its manifests swapped for one that runs this checkout's agent: no artifacts,
    so no model component and no variant.DLR (the model comes from ``modelDir``)."""
    data = s3_capture(dict(load_recipe_data(TEMPLATE)), bucket=bucket, prefix=PREFIX)
    assert data["ComponentDependencies"][TOKEN_EXCHANGE_SERVICE]["DependencyType"] == "HARD"
    data["ComponentDependencies"] = {TOKEN_EXCHANGE_SERVICE:
                                     data["ComponentDependencies"][TOKEN_EXCHANGE_SERVICE]}
    os_name, arch = host_platform()
    data["Manifests"] = [{
        "Platform": {"os": os_name, "architecture": arch},
        "Lifecycle": {"Setenv": {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)},
                      "run": f"exec {sys.executable} -m agent.cli serve"}}]
    return Recipe.parse(data)


def agent_environ(pid: int) -> dict[str, str] | None:
    """The environment of the agent's process, once ``sh`` has exec'd into it."""
    try:
        if b"agent.cli" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    return env if "SVCUID" in env else None


def complete_batches(s3: Any, bucket: str, thing: str) -> dict[str, dict[str, bytes]]:
    """Every batch under the thing's folder whose batch.json is there: batch id -> files."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{thing}/")
    names = [o["Key"] for o in listed.get("Contents", [])]
    batches: dict[str, dict[str, bytes]] = {}
    for key in names:
        _, _, batch_id, name = key.split("/")
        if name == "batch.json":
            batches[batch_id] = {}
    for key in names:
        _, _, batch_id, name = key.split("/")
        if batch_id in batches:
            batches[batch_id][name] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return batches


def check_batch(batch_id: str, files: dict[str, bytes], thing: str) -> int:
    """The batch is complete and verifiable, as uploaded; its capture count."""
    info = json.loads(files["batch.json"])
    assert (info["batch_id"], info["thing"], info["model"]) == (batch_id, thing, "digits")
    manifest = files["manifest.jsonl"]
    assert info["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    lines = [json.loads(line) for line in manifest.decode().splitlines()]
    assert len(lines) == info["count"] >= 1
    assert sorted(files) == sorted([*(line["file"] for line in lines), "manifest.jsonl",
                                    "batch.json"]), "no file missing, none extra"
    for line in lines:
        data = files[line["file"]]
        assert hashlib.sha256(data).hexdigest() == line["sha256"] and len(data) == line["bytes"]
        capture = decode(data)
        assert capture.capture_id == line["capture_id"] and capture.rule == "sample"
    return int(info["count"])


def test_captures_reach_s3_with_only_the_token_exchange_services_credentials(
        shared_broker: MosquittoBroker, s3_server: LocalS3Server, bucket: str,
        no_credentials: None, built_models: Path, tmp_path: Path) -> None:
    thing = f"gg-capture-{uuid.uuid4().hex[:6]}"
    config = {"modelDir": str((built_models / "digits-v1").resolve()),
              "stateDir": str(tmp_path / "state"),
              "rateHz": 200, "metricsIntervalSeconds": 1.0, "heartbeatIntervalSeconds": 5.0,
              "server": {"enabled": False},
              "capture": {"rules": {"sampleRate": 0.05, "seed": 14, "disagreement": False,
                                    "errors": False, "requests": False},
                          "batch": {"maxCaptures": 6, "maxAgeSeconds": 2},
                          "upload": {"endpointUrl": s3_server.endpoint_url, "region": REGION,
                                     "bandwidthBytesPerSecond": 0,
                                     "retryInitialSeconds": 0.2, "retryMaxSeconds": 1}}}
    cloud = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                            topic=f"edge/{thing}/metrics").start()
    nucleus = EmulatedNucleus(recipes=[agent_recipe(bucket)], thing_name=thing,
                              broker=shared_broker.address, root_dir=tmp_path / "gg",
                              socket_path=f"/tmp/gg-cap-{uuid.uuid4().hex[:8]}.sock",
                              config_overrides={AGENT: config})
    s3 = s3_server.client()
    try:
        nucleus.start()
        started = time.monotonic()
        plan = nucleus.deploy(timeout_s=60)
        assert dict(plan.provided) == {TOKEN_EXCHANGE_SERVICE: ">=2.0.0 <3.0.0"}
        process = nucleus.process(AGENT)
        assert process is not None
        env = waits.wait_for(lambda: agent_environ(process.pid), 10)
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)
        assert env[FULL_URI_ENV] == nucleus.token_exchange.url
        assert env[AUTH_TOKEN_ENV] == nucleus.svcuid_for(AGENT)

        batches: dict[str, dict[str, bytes]] = {}
        deadline = started + 90
        while len(batches) < 3 and time.monotonic() < deadline:
            assert process.poll() is None, nucleus.log_path(AGENT).read_text()[-3000:]
            time.sleep(0.5)
            batches = complete_batches(s3, bucket, thing)
        log_tail = nucleus.log_path(AGENT).read_text()[-3000:]
        assert len(batches) >= 3, f"batches in the bucket: {len(batches)}\n{log_tail}"
        arrived_s = time.monotonic() - started
        captures = sum(check_batch(batch_id, files, thing) for batch_id, files in
                       sorted(batches.items()))
        assert nucleus.token_exchange.served[AGENT] >= 1, "the agent fetched its credentials"
        assert nucleus.token_exchange.refused == {}

        def uploaded(ms: list[Any]) -> bool:
            return any(m.capture is not None and m.capture.batches_uploaded >= 3
                       for m in ms if isinstance(m, Metrics))
        cloud.wait_for(uploaded, 30, "metrics counting the uploaded batches")
        report = next(m.capture for m in cloud.messages
                      if isinstance(m, Metrics) and m.capture is not None
                      and m.capture.batches_uploaded >= 3)
        assert report.last_upload_error is None and report.upload_failures == 0, report
        print(f"{len(batches)} batches ({captures} captures) in s3://{bucket}/{PREFIX}/"
              f"{thing}/ within {arrived_s:.1f} s of the deployment; TES answered "
              f"{nucleus.token_exchange.served[AGENT]} credential request(s)")
        nucleus.stop_components()
        states = [(s.state, s.detail) for s in nucleus.lifecycle_states(AGENT)]
        assert states[-1] == ("FINISHED", "exited 0 on SIGTERM"), (states, log_tail)
    finally:
        nucleus.close()
        cloud.stop()


def _grants(action: str, resource: str, thing: str) -> bool:
    policy = json.loads(POLICY.read_text())
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        if statement["Effect"] != "Allow" or action not in actions:
            continue
        for granted in resources:
            text = granted.replace("${credentials-iot:ThingName}", thing)
            pattern = "^" + ".*".join(re.escape(p) for p in text.split("*")) + "$"
            if re.match(pattern, resource):
                return True
    return False


# What each S3 operation needs of the caller's IAM policy. A read of a missing key is
# answered 404 only with s3:ListBucket on the bucket; 403 without it, which the uploader
# could not tell from a refusal (it asks for batch.json before uploading a batch).
NEEDS = {"PutObject": ["s3:PutObject"], "GetObject": ["s3:GetObject", "s3:ListBucket"]}


def test_the_token_exchange_role_policy_grants_what_the_uploader_calls(
        s3_server: LocalS3Server, bucket: str, tmp_path: Path) -> None:
    called: list[str] = []
    client = s3_server.client()
    client.meta.events.register(  # type: ignore[attr-defined]
        "before-call.s3.*", lambda model, **_kw: called.append(model.name))
    thing = "kitchen-pi-1"
    store = CaptureStore(tmp_path / "capture", thing=thing, model="digits",
                         budget_bytes=1 << 20, max_per_hour=100, max_capture_bytes=1 << 20,
                         batch=BatchConfig())
    for frame in range(3):
        assert store.put(Capture(
            thing=thing, model="digits", rule="sample",
            inputs={"x": np.full((1, 64), frame, np.float32)},
            outputs={"blue": {"scores": np.zeros((1, 10), np.float32)}},
            variants={"blue": "digits-v1"}, served_by="blue", frame_id=frame,
            time=time.time()))
    batch_id = store.seal()
    assert batch_id is not None
    destination = S3Destination(bucket, "PREFIX", thing,  # the prefix as the policy names it
                                client_factory=lambda: client)
    uploader = BatchUploader(store, destination, thing=thing, bandwidth_bytes_per_second=0,
                             retry_initial_s=0.1, retry_max_s=1.0)
    assert uploader.run_once() == 1 and store.batches() == []
    listed = s3_server.client().list_objects_v2(  # type: ignore[attr-defined]
        Bucket=bucket, Prefix=f"PREFIX/{thing}/{batch_id}/")
    assert len(listed["Contents"]) == 3 + 2  # the captures, manifest.jsonl, batch.json
    assert called.count("GetObject") == 1, "asked whether the batch is there (a 404)"
    assert destination.has_batch(batch_id) is True  # after a kill before the local delete
    operations = set(called)
    assert operations == {"GetObject", "PutObject"}, operations

    actions = {a for op in operations for a in NEEDS[op]}
    policy = json.loads(POLICY.read_text())
    granted = {a for s in policy["Statement"] for a in (
        s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert granted == actions, "exactly what the uploader needs"
    own = f"arn:aws:s3:::BUCKET/{destination.key(batch_id, BATCH_FILE)}"
    assert _grants("s3:PutObject", own, thing) and _grants("s3:GetObject", own, thing)
    assert _grants("s3:ListBucket", "arn:aws:s3:::BUCKET", thing)
    other = own.replace(f"/{thing}/", "/kitchen-pi-2/")
    assert not _grants("s3:PutObject", other, thing), "a device writes only its own folder"
    assert not _grants("s3:GetObject", "arn:aws:s3:::BUCKET/elsewhere/x", thing)
