"""IpcTransport with the real Greengrass SDK client, against the emulated nucleus bridged
to a real mosquitto broker that plays AWS IoT Core."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import waits
from paths import REPO_ROOT

from agent.device.greengrass.component import ComponentUpdateEvent, GreengrassComponent
from agent.device.uplink.ipc import SOCKET_ENV, TOKEN_ENV, IpcTransport, ipc_available
from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto
from agent.tools.nucleus import EmulatedNucleus, Recipe
from agent.wire.transport import TransportError

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

RECIPE = REPO_ROOT / "recipes" / "com.edgeinference.Agent.yaml"
THING = "demo-1"
T = 5.0


def wait_for(condition: Callable[[], Any], timeout_s: float = T) -> Any:
    return waits.wait_for(condition, timeout_s)


class CloudClient:
    """A separate MQTT client at the broker: the fleet controller's side of IoT Core."""

    def __init__(self, broker: MosquittoBroker) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud")
        self.client.on_message = lambda _c, _u, msg: self.messages.append(
            (msg.topic, bytes(msg.payload)))
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe("edge/#", qos=1)
        assert self._subscribed.wait(T)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(T)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    running.start()
    yield running
    running.stop()


@pytest.fixture()
def nucleus(broker: MosquittoBroker) -> Iterator[EmulatedNucleus]:
    with EmulatedNucleus(recipes=[Recipe.load(RECIPE)], thing_name=THING,
                         broker=broker.address, ack_timeout_s=3) as running:
        yield running


@pytest.fixture()
def transport(nucleus: EmulatedNucleus) -> Iterator[IpcTransport]:
    connected = IpcTransport.from_environ(nucleus.ipc_env(), request_timeout_s=T)
    connected.connect(timeout_s=T)
    yield connected
    connected.close()


@pytest.fixture()
def component(transport: IpcTransport) -> GreengrassComponent:
    """The component's own operations, over the transport's connection."""
    return GreengrassComponent(transport.connection)


@pytest.fixture()
def cloud(broker: MosquittoBroker) -> Iterator[CloudClient]:
    client = CloudClient(broker)
    yield client
    client.close()


def test_ipc_is_chosen_from_the_greengrass_environment(nucleus: EmulatedNucleus) -> None:
    env = nucleus.ipc_env()
    assert ipc_available(env)
    assert not ipc_available({SOCKET_ENV: env[SOCKET_ENV]})
    assert not ipc_available({SOCKET_ENV: "", TOKEN_ENV: "x"})
    with pytest.raises(TransportError, match="not set"):
        IpcTransport.from_environ({})


def test_publish_reaches_the_broker(transport: IpcTransport, cloud: CloudClient) -> None:
    payload = bytes(range(256))  # binary survives the base64 leg
    transport.publish(f"edge/{THING}/metrics", payload).result(T)
    wait_for(lambda: (f"edge/{THING}/metrics", payload) in cloud.messages)


def test_broker_messages_reach_the_subscriber(transport: IpcTransport,
                                              cloud: CloudClient) -> None:
    got: list[tuple[str, bytes]] = []
    transport.subscribe(f"edge/{THING}/commands", lambda t, p: got.append((t, p)))
    transport.subscribe("edge/groups/+/commands", lambda t, p: got.append((t, p)))
    cloud.publish(f"edge/{THING}/commands", b"stage")
    cloud.publish("edge/groups/lab/commands", b"promote")
    cloud.publish("edge/other-thing/commands", b"not for us")
    wait_for(lambda: len(got) == 2)
    assert sorted(got) == [("edge/demo-1/commands", b"stage"),
                           ("edge/groups/lab/commands", b"promote")]


def test_topics_the_recipe_does_not_grant_are_refused(transport: IpcTransport) -> None:
    with pytest.raises(TransportError, match=r"not authorized.*edge/demo-1/commands"):
        transport.publish(f"edge/{THING}/commands", b"x").result(T)
    with pytest.raises(TransportError, match=r"not authorized.*edge/other/metrics"):
        transport.publish("edge/other/metrics", b"x").result(T)
    with pytest.raises(TransportError, match="UnauthorizedError"):
        transport.subscribe("edge/#", lambda t, p: None)


def test_configuration_and_its_updates(component: GreengrassComponent,
                                       nucleus: EmulatedNucleus) -> None:
    assert component.get_configuration(["heartbeatIntervalSeconds"]) == {
        "heartbeatIntervalSeconds": 30}
    assert component.get_configuration()["topicPrefix"] == "edge"
    changed: list[tuple[str, ...]] = []
    component.subscribe_to_configuration_update(changed.append)
    nucleus.update_configuration({"metricsIntervalSeconds": 2})
    wait_for(lambda: changed == [("metricsIntervalSeconds",)])
    with pytest.raises(TransportError, match="ResourceNotFoundError"):
        component.get_configuration(["missing"])


def test_state_and_a_deferred_component_update(component: GreengrassComponent,
                                               nucleus: EmulatedNucleus) -> None:
    component.update_state("RUNNING")
    assert nucleus.states() == ["RUNNING"]
    events: list[ComponentUpdateEvent] = []

    def on_update(event: ComponentUpdateEvent) -> None:
        events.append(event)
        if event.kind == "pre" and len(events) == 1:
            component.defer_component_update(event.deployment_id, 200, "inference busy")
        elif event.kind == "pre":
            component.accept_component_update(event.deployment_id)

    component.subscribe_to_component_updates(on_update)
    update = nucleus.announce_component_update("dep-7", timeout_s=T)
    assert update.wait(T) == "accepted"
    assert [d.recheck_after_ms for d in update.deferrals] == [200]
    wait_for(lambda: len(events) == 3)
    assert events == [ComponentUpdateEvent("pre", "dep-7"), ComponentUpdateEvent("pre", "dep-7"),
                      ComponentUpdateEvent("post", "dep-7")]


def test_reconnects_after_a_nucleus_restart(transport: IpcTransport, nucleus: EmulatedNucleus,
                                            cloud: CloudClient) -> None:
    got: list[bytes] = []
    transport.subscribe(f"edge/{THING}/commands", lambda t, p: got.append(p))
    nucleus.stop()
    wait_for(lambda: not transport.is_connected())
    with pytest.raises(TransportError, match="not connected"):
        transport.publish(f"edge/{THING}/heartbeat", b"down").result(T)
    nucleus.start()
    wait_for(transport.is_connected, timeout_s=10)
    transport.publish(f"edge/{THING}/heartbeat", b"back").result(T)
    wait_for(lambda: (f"edge/{THING}/heartbeat", b"back") in cloud.messages)
    cloud.publish(f"edge/{THING}/commands", b"after restart")  # the subscription came back
    wait_for(lambda: got == [b"after restart"])


def test_publish_completes_only_once_the_broker_acknowledged(
        transport: IpcTransport, broker: MosquittoBroker) -> None:
    broker.pause()
    try:
        sent = transport.publish(f"edge/{THING}/events", b"e")
        time.sleep(0.3)
        assert not sent.done()  # no PUBACK yet, so no PublishToIoTCore answer either
    finally:
        broker.resume()
    sent.result(T)


def test_publish_fails_while_the_broker_is_down(transport: IpcTransport, nucleus: EmulatedNucleus,
                                                broker: MosquittoBroker) -> None:
    broker.stop()
    try:
        with pytest.raises(TransportError, match="not connected to AWS IoT Core"):
            wait_for(lambda: not nucleus.link.connected)
            transport.publish(f"edge/{THING}/metrics", b"x").result(T)
    finally:
        broker.start()
    wait_for(lambda: nucleus.link.connected, timeout_s=10)
    transport.publish(f"edge/{THING}/metrics", b"y").result(T)


def test_wrong_svcuid_or_socket_fails_to_connect(nucleus: EmulatedNucleus) -> None:
    wrong = IpcTransport(socket_path=nucleus.socket_path, auth_token="not-the-svcuid")
    with pytest.raises(TransportError, match="refused the IPC connection"):
        wrong.connect(timeout_s=T)
    missing = IpcTransport(socket_path="/tmp/no-such-nucleus.sock", auth_token="x")
    with pytest.raises(TransportError, match="no Greengrass IPC socket"):
        missing.connect(timeout_s=T)
