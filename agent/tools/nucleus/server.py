"""The emulated nucleus: an IPC server on a Unix socket for the components of some recipes.

From asyncio code::

    async with EmulatedNucleus(recipes=[recipe], thing_name="demo-1", broker="127.0.0.1:1883"):
        ...

From threaded code (tests driving the real SDK client)::

    with EmulatedNucleus(recipes=[recipe], thing_name="demo-1") as nucleus:
        env = nucleus.component_env()   # socket path, SVCUID, thing name for the component

``start()``/``stop()`` run it on a background thread and may be repeated to emulate a
nucleus restart: the socket path and the SVCUIDs stay the same, connections drop (see
:mod:`~agent.tools.nucleus.threaded`; the SVCUIDs and the IPC environment:
:mod:`~agent.tools.nucleus.identity`). The control methods (``update_configuration``,
``announce_component_update``...) may be called from any thread.

:meth:`EmulatedNucleus.from_store` and :meth:`deploy` install components from a component
store and run their lifecycles as processes (see :mod:`agent.tools.nucleus.hosting`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from agent.tools.greengrass.access_policy import AccessPolicy, check_policy_ids_unique
from agent.tools.greengrass.interpolation import interpolate_tree
from agent.tools.greengrass.recipe import Recipe, RecipeError
from agent.tools.nucleus.components import ComponentStore, DeploymentPlan
from agent.tools.nucleus.config import ConfigStore, KeyPath, config_operations
from agent.tools.nucleus.connection import Connection
from agent.tools.nucleus.deployment import Deployment
from agent.tools.nucleus.env import MAX_SOCKET_PATH
from agent.tools.nucleus.errors import NucleusError
from agent.tools.nucleus.hosting import ComponentHosting
from agent.tools.nucleus.iotcore import IoTCoreLink, IoTCoreProxy, LoopbackIoTCore, MqttBridge
from agent.tools.nucleus.iotcore_transport import TransportBridge
from agent.tools.nucleus.lifecycle import ComponentUpdate, Lifecycle, StateReport
from agent.tools.nucleus.loop_thread import LoopThread, call_in_loop
from agent.tools.nucleus.pubsub import LocalPubSub
from agent.tools.nucleus.threaded import ThreadedNucleus
from agent.tools.nucleus.token_exchange import TesCredentials, TokenExchange, dependents
from agent.wire.mqtt_config import MqttConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_broker(broker: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(broker, tuple):
        return broker
    host, sep, port = broker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NucleusError(f"broker {broker!r} must be host:port")
    return host, int(port)


class EmulatedNucleus(ComponentHosting, ThreadedNucleus):
    """A nucleus for the components of ``recipes`` on the device ``thing_name``.

    ``broker`` (``host:port``) is the MQTT broker that plays AWS IoT Core, over MQTT 5 in
    the clear; an :class:`MqttConfig` connects over MQTT 3.1.1 instead, with mutual TLS
    when it names certificate files (AWS IoT Core itself); without one,
    IoT Core publishes loop back. ``config_overrides`` maps a component name to the
    configuration merged over its recipe's ``DefaultConfiguration``, as a deployment's
    ``merge`` update does. ``{iot:thingName}`` is filled in throughout the configuration.
    ``plan`` is what :meth:`deploy` installs and runs (:meth:`from_store` resolves one);
    without it, :meth:`deploy` runs the lifecycles of ``recipes``, which then have no
    artifacts and must not depend on anything else. The components that depend on
    ``aws.greengrass.TokenExchangeService`` get its credentials, ``tes_credentials``
    (default: the loopback S3 server's; see :mod:`~agent.tools.nucleus.token_exchange`).
    """

    def __init__(self, *, recipes: Sequence[Recipe], thing_name: str,
                 broker: str | tuple[str, int] | MqttConfig | None = None,
                 socket_path: str | None = None,
                 root_dir: str | Path | None = None,
                 config_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 region: str = "us-east-1", ack_timeout_s: float = 10.0,
                 plan: DeploymentPlan | None = None,
                 tes_credentials: TesCredentials | None = None) -> None:
        if not recipes:
            raise NucleusError("the nucleus needs at least one component recipe")
        names = [r.component_name for r in recipes]
        if len(set(names)) != len(names):
            raise RecipeError(f"component names repeat: {names}")
        if plan is not None and set(plan.names) != set(names):
            raise NucleusError(f"the plan deploys {plan.names}, the recipes are {names}")
        if socket_path is None and root_dir is not None:
            socket_path = str(Path(root_dir) / "ipc.socket")
        if socket_path is not None and len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise NucleusError(f"socket path {socket_path!r} is over {MAX_SOCKET_PATH} bytes; "
                               "a Unix socket cannot be bound there (use a short folder)")
        self.thing_name = thing_name
        self.region = region
        self.recipes = {r.component_name: r for r in recipes}
        self._tokens = {name: secrets.token_hex(16) for name in names}
        self.token_exchange = TokenExchange(self._tokens, dependents(self.recipes),
                                            tes_credentials)
        overrides = config_overrides or {}
        unknown = set(overrides) - set(names)
        if unknown:
            raise NucleusError(f"configuration overrides for unknown components {unknown}")
        variables = {"iot:thingName": thing_name}
        self._store = ConfigStore({
            name: interpolate_tree(recipe.default_configuration(), variables)
            for name, recipe in self.recipes.items()})
        for name, changes in overrides.items():
            self._store.update(name, interpolate_tree(dict(changes), variables))
        self._policies: dict[str, tuple[int, AccessPolicy]] = {}
        check_policy_ids_unique([self._policy(name) for name in names])  # fail early

        self.link: IoTCoreLink
        if broker is None:
            self.link = LoopbackIoTCore()
        elif isinstance(broker, MqttConfig):
            self.link = TransportBridge(broker, ack_timeout_s=ack_timeout_s)
        else:
            host, port = parse_broker(broker)
            self.link = MqttBridge(host=host, port=port, client_id=thing_name,
                                   ack_timeout_s=ack_timeout_s)
        self._lifecycle = Lifecycle(frozenset(names))
        self._iotcore = IoTCoreProxy(link=self.link, policy_for=self._policy)
        operations = [*config_operations(self._store), *self._lifecycle.operations(),
                      *self._iotcore.operations(), *LocalPubSub(self._policy).operations()]
        self._operations = {op.name: op for op in operations}
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: LoopThread | None = None  # when started from threaded code
        # Made last, so that a constructor that fails leaves nothing behind. /tmp rather
        # than a possibly long TMPDIR: the socket path must stay short.
        self._owns_root = root_dir is None
        self.root_dir = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="gg",
                                                                             dir="/tmp"))
        self.socket_path = socket_path or str(self.root_dir / "ipc.socket")
        self._deployment: Deployment | None = None
        self._plan = plan

    @classmethod
    def from_store(cls, store_dir: str | Path, components: Mapping[str, str | None], *,
                   thing_name: str, provided: Iterable[str] = (),
                   **options: Any) -> EmulatedNucleus:
        """A nucleus for ``components`` ({name: version, or None for the newest}) of the
        component store at ``store_dir`` and their dependencies; ``provided`` names the
        ``aws.greengrass.*`` / ``variant.DLR`` dependencies the platform stands in for.
        ``options`` are the constructor's (broker, root_dir, config_overrides...)."""
        plan = ComponentStore.load(store_dir).resolve(components, provided=provided)
        roots = [plan.recipe(name) for name in plan.roots]
        recipes = roots + [r for r in plan.components if r.component_name not in plan.roots]
        return cls(recipes=recipes, thing_name=thing_name, plan=plan, **options)

    # ---- control, from any thread --------------------------------------------------

    def get_configuration(self, key_path: Sequence[str] = (), *,
                          component: str | None = None) -> Any:
        name = self._name(component)
        return self._call(lambda: self._store.get(name, key_path))

    def update_configuration(self, changes: Mapping[str, Any], *, component: str | None = None,
                             key_path: Sequence[str] = ()) -> list[KeyPath]:
        """Merge ``changes`` (at ``key_path``) into a component's configuration, as a
        deployment's ``merge`` update does; subscribers get one event per changed key."""
        name = self._name(component)
        changes = interpolate_tree(dict(changes), {"iot:thingName": self.thing_name})
        return self._call(lambda: self._store.update(name, changes, key_path))

    def relayed_to_iot_core(self) -> dict[str, int]:
        """Per topic, how many of the components' IPC publishes reached IoT Core."""
        return self._call(lambda: dict(self._iotcore.relayed))

    def state_reports(self) -> list[StateReport]:
        return self._call(lambda: list(self._lifecycle.reports))

    def states(self, component: str | None = None) -> list[str]:
        name = self._name(component)
        return self._call(lambda: self._lifecycle.states(name))

    def announce_component_update(self, deployment_id: str | None = None, *,
                                  is_ggc_restarting: bool = False,
                                  timeout_s: float = 60.0) -> ComponentUpdate:
        """Tell subscribed components an update is pending; the handle shows whether they
        deferred it and, once it could go on, the outcome."""
        if self._loop is None:
            raise NucleusError("the nucleus is not running")
        update = ComponentUpdate(deployment_id=deployment_id or str(uuid.uuid4()),
                                 is_ggc_restarting=is_ggc_restarting, timeout_s=timeout_s)
        self._call(lambda: self._lifecycle.announce(update))
        return update

    @property
    def running(self) -> bool:
        return self._loop is not None

    # ---- asyncio lifecycle ---------------------------------------------------------

    async def aopen(self, *, broker_wait_s: float = 5.0) -> None:
        """Listen on the socket and connect to the broker (waiting up to ``broker_wait_s``
        for it; IoT Core operations fail with ServiceError while it is unreachable)."""
        if self._loop is not None:
            raise NucleusError("the nucleus is already running")
        loop = asyncio.get_running_loop()
        Path(self.socket_path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)  # left by a nucleus that did not stop cleanly
        self.token_exchange.open()
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=self.socket_path)
        except OSError as err:
            self.token_exchange.close()
            raise NucleusError(f"cannot listen on {self.socket_path}: {err}") from err
        self._loop = loop
        self.link.start(self._iotcore.deliver)
        if isinstance(self.link, (MqttBridge, TransportBridge)):
            bridge = self.link
            if not await loop.run_in_executor(None, bridge.wait_connected, broker_wait_s):
                log.warning("no broker at %s:%s yet; IoT Core operations fail until it is up",
                            bridge.host, bridge.port)

    async def aclose(self) -> None:
        if self._loop is None:
            return
        assert self._server is not None
        if self._deployment is not None:  # while they can still talk to the nucleus
            await asyncio.get_running_loop().run_in_executor(None, self.stop_components)
        await asyncio.get_running_loop().run_in_executor(None, self.token_exchange.close)
        self._server.close()
        for connection in list(self._connections):
            await connection.close()
        await self._server.wait_closed()
        await self._lifecycle.cancel_all()
        await self._iotcore.settle()
        await self.link.stop()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self._server = None
        self._loop = None

    async def __aenter__(self) -> EmulatedNucleus:
        await self.aopen()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
        self.remove_root()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(reader=reader, writer=writer, authenticate=self._authenticate,
                                operations=self._operations)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    # ---- internals -----------------------------------------------------------------

    def _policy(self, component: str) -> AccessPolicy:
        cached = self._policies.get(component)
        if cached is None or cached[0] != self._store.version:
            policy = AccessPolicy.from_configuration(
                component=component, configuration=self._store.get(component),
                thing_name=self.thing_name)
            cached = self._policies[component] = (self._store.version, policy)
        return cached[1]

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` where the nucleus state lives: on its loop, if it is running."""
        return call_in_loop(self._loop, fn)
