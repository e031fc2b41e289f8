"""Result streams end to end: the real agent, deployed as a Greengrass component on the
emulated nucleus, runs a video file (generated here with PyAV: solid red, green and blue
frames) through the colour model (DLR, image pre-processing from its metadata) and
publishes a result each time the best class changes. The results arrive at a second
component subscribed through the real awsiotsdk IPC client to the local topic, and at a
mosquitto subscriber on the IoT topic (through the agent's spool and the nucleus's IoT
Core bridge); the policy's counts in the agent's metrics match what arrived. The nucleus
refuses, to the same SDK client, every topic the agent recipe does not grant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from cloud import CloudSubscriber
from foreign_neo import COLOUR_LABELS
from model_dirs import colour_model_dir
from paths import REPO_ROOT
from waits import wait_for

from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.tools.greengrass.component import ComponentOptions, build_components
from agent.tools.greengrass.recipe import Recipe, host_platform
from agent.tools.nucleus import EmulatedNucleus
from agent.tools.packaging.keys import keys_generate
from agent.wire.mqtt_config import MqttConfig
from agent.wire.results import Result, parse_result

AGENT = "com.edgeinference.Agent"
READER = "com.example.ResultReader"
THING = "results-1"
TOPIC = f"edge/{THING}/results"
COLOURS = ((235, 16, 16), (16, 235, 16), (16, 16, 235))  # red, green, blue
SEGMENTS, SEGMENT_FRAMES = 6, 10  # red, green, blue, red, green, blue: ten frames each

READER_SCRIPT = """\
import json, sys, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, UnauthorizedError

topic = sys.argv[1]
received = open("received.jsonl", "a")
client = GreengrassCoreIPCClientV2()  # socket and SVCUID from the nucleus's environment

def on_event(event):
    message = event.json_message
    received.write(json.dumps({"topic": message.context.topic, "message": message.message})
                   + "\\n")
    received.flush()

client.subscribe_to_topic(topic=topic, on_stream_event=on_event)
try:  # this component may only listen: the nucleus must refuse it
    client.publish_to_topic(topic=topic, publish_message=PublishMessage(
        json_message=JsonMessage(message={"forged": True})))
    print("publish allowed", flush=True)
except UnauthorizedError as err:
    print("publish refused:", err.message, flush=True)
print("subscribed", flush=True)
while True:
    time.sleep(0.2)
"""


def write_clip(path: Path) -> Path:
    """Sixty 32x32 frames, MPEG-4 Part 2, ten of each colour twice over."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(SEGMENTS * SEGMENT_FRAMES):
            pixels = np.empty((32, 32, 3), np.uint8)
            pixels[:] = COLOURS[(i // SEGMENT_FRAMES) % 3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def add_reader(store: Path) -> Path:
    """The second component: a recipe granting SubscribeToTopic on the results topic only,
    and its script as an artifact."""
    os_name, arch = host_platform()
    recipe = {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": READER,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
            "aws.greengrass.ipc.pubsub": {f"{READER}:pubsub:1": {
                "policyDescription": "Read the agent's results.",
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": ["edge/{iot:thingName}/results"]}}}}},
        "Manifests": [{"Platform": {"os": os_name, "architecture": arch},
                       "Artifacts": [{"URI": f"s3://bucket/{READER}/1.0.0/reader.py"}]}]}
    (store / "recipes" / f"{READER}-1.0.0.yaml").write_text(yaml.safe_dump(recipe))
    folder = store / "artifacts" / READER / "1.0.0"
    folder.mkdir(parents=True)
    script = folder / "reader.py"
    script.write_text(READER_SCRIPT)
    return script


class IotSubscriber:
    """What reaches the broker on the IoT results topic (raw payloads, QoS 1)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"results-app-{os.getpid()}")
        self._client.on_connect = lambda c, *_a: c.subscribe(TOPIC, qos=1)
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port, keepalive=10)
        self._client.loop_start()
        assert self._ready.wait(10), "the IoT subscriber did not subscribe"

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.payloads.append(bytes(message.payload))

    def results(self) -> list[Result]:
        with self._lock:
            return [parse_result(p) for p in self.payloads]

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def unique(results: list[Result]) -> list[Result]:
    """One of each (run, seq): IoT delivery is at least once."""
    seen: dict[tuple[str, int], Result] = {}
    for result in results:
        seen.setdefault((result.run, result.seq), result)
    return sorted(seen.values(), key=lambda r: r.seq)


def test_video_results_reach_a_local_component_and_iot_core_as_counted(
        tmp_path: Path, shared_broker: MosquittoBroker) -> None:
    models = tmp_path / "models"
    colour_model_dir(models / "colour-v1", onnx=True)  # ONNX: the golden vectors
    clip = write_clip(tmp_path / "colours.mp4")
    keys = keys_generate(tmp_path / "keys", "ctl")
    build_components(ComponentOptions(models=models, key=keys.private, key_id="ctl",
                                      out=tmp_path / "components", uri_base="file"),
                     warn=lambda _note: None)
    store = tmp_path / "components" / "greengrass-local"
    script = add_reader(store)
    iot = IotSubscriber(shared_broker)
    cloud = CloudSubscriber(host=shared_broker.host, port=shared_broker.port,
                            topic=f"edge/{THING}/metrics").start()
    nucleus = EmulatedNucleus.from_store(
        store, {AGENT: None, READER: "1.0.0"}, thing_name=THING, provided={"variant.DLR"},
        root_dir=tmp_path / "gg", socket_path=f"/tmp/gg-results-{os.getpid()}.sock",
        broker=MqttConfig(host=shared_broker.host, port=shared_broker.port,
                          client_id=THING, clean_session=True),
        config_overrides={AGENT: {
            "trustedKeys": {"ctl": keys.public_b64}, "metricsIntervalSeconds": 0.5,
            "source": "video", "sourcePath": str(clip), "sourceLoop": False, "rateHz": 100,
            "server": {"enabled": False},
            "results": {"iot": True, "policy": {"onChange": True, "minScore": 0.5,
                                                "maxPerSecond": None}}}})
    venv = nucleus.work_dir(AGENT) / "venv"
    venv.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(sys.prefix, venv)
    reader: subprocess.Popen[bytes] | None = None
    try:
        nucleus.start()
        work = nucleus.work_dir(READER)
        work.mkdir(parents=True, exist_ok=True)
        with (work / "reader.log").open("wb") as log:
            reader = nucleus.launch(READER, argv=[sys.executable, str(script), TOPIC],
                                    stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "subscribed" in (work / "reader.log").read_text(), 30)
        assert "publish refused: Principal com.example.ResultReader is not authorized to " \
               f"perform aws.greengrass.ipc.pubsub:aws.greengrass#PublishToTopic on resource " \
               f"{TOPIC}" in (work / "reader.log").read_text()
        nucleus.deploy(timeout_s=120)

        def final_counts() -> Any:
            reports = [m.results for m in cloud.messages
                       if m.type == "metrics" and m.results is not None]
            return next((r for r in reversed(reports)
                         if r.seen == SEGMENTS * SEGMENT_FRAMES), None)

        counts = wait_for(final_counts, 60)
        local = [parse_result(line["message"]) for line in wait_for(
            lambda: received(work, counts.published), 10)]
        arrived = wait_for(lambda: len(unique(iot.results())) >= counts.published
                           and unique(iot.results()), 10)
        expected = [COLOUR_LABELS[s % 3] for s in range(SEGMENTS)]
        assert counts.published == SEGMENTS == len(local) == len(arrived)
        assert counts.suppressed == {"every_n": 0, "rate": 0, "below_score": 0,
                                     "unchanged": SEGMENTS * (SEGMENT_FRAMES - 1)}
        assert counts.dropped == 0 and counts.failed == {"local": 0, "iot": 0, "shm": 0}
        for results in (local, arrived):
            assert [r.top_k[0].label for r in results] == expected
            assert [r.frame.id for r in results] == [1 + s * SEGMENT_FRAMES
                                                     for s in range(SEGMENTS)]
            assert [r.seq for r in results] == list(range(1, SEGMENTS + 1))
            assert all(r.model == "colour" and r.version == "colour-v1"
                       and r.variant == "blue" and r.source == "video" and r.thing == THING
                       and r.top_k[0].score > 0.5 and len(r.top_k) == 3 for r in results)
        assert local == arrived
        assert {line["topic"] for line in received(work, 0)} == {TOPIC}
        assert nucleus.relayed_to_iot_core().get(TOPIC, 0) >= SEGMENTS
        log = nucleus.log_path(AGENT).read_text()
        assert "results of colour published to iot, local" in log, log[-3000:]
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait(10)
        nucleus.close()
        iot.stop()
        cloud.stop()


def received(work: Path, at_least: int) -> list[dict[str, Any]] | None:
    path = work / "received.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] \
        if path.exists() else []
    return lines if len(lines) >= at_least else None


# --- the nucleus enforces the agent recipe's grant, for the real SDK client -------------

@pytest.fixture()
def agent_ipc() -> Iterator[tuple[EmulatedNucleus, Any]]:
    import awsiot.greengrasscoreipc as ggipc

    recipe = Recipe.load(REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml")
    with EmulatedNucleus(recipes=[recipe], thing_name="grant-1") as nucleus:
        client = GreengrassCoreIPCClientV2(client=ggipc.connect(
            ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid_for(AGENT), timeout=5))
        try:
            yield nucleus, client
        finally:
            client.close(executor_wait=False)


def test_the_nucleus_lets_the_agent_publish_on_its_result_topic_only(
        agent_ipc: tuple[EmulatedNucleus, Any]) -> None:
    _nucleus, client = agent_ipc

    def publish(topic: str) -> Any:
        return client.publish_to_topic_async(topic=topic, publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"v": 1}))).result(5)

    assert publish("edge/grant-1/results") is not None
    for topic in ("edge/grant-1/other", "edge/grant-2/results", "ml/dlr/image-classification",
                  "edge/grant-1/results/extra"):
        with pytest.raises(model.UnauthorizedError) as refused:
            publish(topic)
        assert f"on resource {topic}" in str(refused.value.message)
    with pytest.raises(model.UnauthorizedError):
        client.subscribe_to_topic_async(topic="edge/grant-1/results",
                                        on_stream_event=lambda _e: None)[0].result(5)
