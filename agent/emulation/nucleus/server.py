"""The emulated nucleus: an IPC server on a Unix socket for the components of some recipes.

From asyncio code::

    async with EmulatedNucleus(recipes=[recipe], thing_name="demo-1", broker="127.0.0.1:1883"):
        ...

From threaded code (tests driving the real SDK client)::

    with EmulatedNucleus(recipes=[recipe], thing_name="demo-1") as nucleus:
        env = nucleus.component_env()   # socket path, SVCUID, thing name for the component

``start()``/``stop()`` run it on a background thread and may be repeated to emulate a
nucleus restart: the socket path and the SVCUIDs stay the same, connections drop.
The control methods (``update_configuration``, ``announce_component_update``...) may
be called from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from agent.emulation.nucleus.config import ConfigStore, KeyPath, config_operations
from agent.emulation.nucleus.connection import Connection
from agent.emulation.nucleus.env import MAX_SOCKET_PATH, component_env, ipc_env, run_step_argv
from agent.emulation.nucleus.errors import NucleusError, RecipeError
from agent.emulation.nucleus.iotcore import IoTCoreLink, IoTCoreProxy, LoopbackIoTCore, MqttBridge
from agent.emulation.nucleus.lifecycle import ComponentUpdate, Lifecycle, StateReport
from agent.emulation.nucleus.loop_thread import LoopThread, call_in_loop
from agent.emulation.nucleus.policy import AccessPolicy, check_policy_ids_unique
from agent.emulation.nucleus.pubsub import LocalPubSub
from agent.emulation.nucleus.recipe import Recipe, host_platform, interpolate_tree

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_broker(broker: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(broker, tuple):
        return broker
    host, sep, port = broker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NucleusError(f"broker {broker!r} must be host:port")
    return host, int(port)


class EmulatedNucleus:
    """A nucleus for the components of ``recipes`` on the device ``thing_name``.

    ``broker`` (``host:port``) is the MQTT broker that plays AWS IoT Core; without one,
    IoT Core publishes loop back. ``config_overrides`` maps a component name to the
    configuration merged over its recipe's ``DefaultConfiguration``, as a deployment's
    ``merge`` update does. ``{iot:thingName}`` is filled in throughout the configuration.
    """

    def __init__(self, *, recipes: Sequence[Recipe], thing_name: str,
                 broker: str | tuple[str, int] | None = None, socket_path: str | None = None,
                 root_dir: str | Path | None = None,
                 config_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 region: str = "us-east-1", ack_timeout_s: float = 10.0) -> None:
        if not recipes:
            raise NucleusError("the nucleus needs at least one component recipe")
        names = [r.component_name for r in recipes]
        if len(set(names)) != len(names):
            raise RecipeError(f"component names repeat: {names}")
        if socket_path is None and root_dir is not None:
            socket_path = str(Path(root_dir) / "ipc.socket")
        if socket_path is not None and len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise NucleusError(f"socket path {socket_path!r} is over {MAX_SOCKET_PATH} bytes; "
                               "a Unix socket cannot be bound there (use a short folder)")
        self.thing_name = thing_name
        self.region = region
        self.recipes = {r.component_name: r for r in recipes}
        self._tokens = {name: secrets.token_hex(16) for name in names}
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

    # ---- identity and environment -------------------------------------------------

    @property
    def main_component(self) -> str:
        return next(iter(self.recipes))

    @property
    def svcuid(self) -> str:
        return self._tokens[self.main_component]

    def svcuid_for(self, component: str) -> str:
        return self._tokens[self._name(component)]

    def ipc_env(self, component: str | None = None) -> dict[str, str]:
        return ipc_env(socket_path=self.socket_path, svcuid=self.svcuid_for(self._name(component)),
                       thing_name=self.thing_name, region=self.region)

    def component_env(self, component: str | None = None, *,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
        name = self._name(component)
        return component_env(socket_path=self.socket_path, svcuid=self._tokens[name],
                             thing_name=self.thing_name, region=self.region, base=base,
                             setenv=self._setenv(name))

    def _setenv(self, name: str) -> dict[str, str]:
        """The recipe's ``Setenv`` for this machine's manifest, if it has one."""
        os_name, arch = host_platform()
        try:
            step = self.recipes[name].run_step(os=os_name, architecture=arch)
        except RecipeError:
            return {}
        return dict(step.setenv) if step else {}

    def work_dir(self, component: str | None = None) -> Path:
        return self.root_dir / "work" / self._name(component)

    def launch(self, component: str | None = None, *, argv: Sequence[str] | None = None,
               cwd: str | Path | None = None, extra_env: Mapping[str, str] | None = None,
               **popen: Any) -> subprocess.Popen[bytes]:
        """Start a component process with the nucleus's environment, in its work folder.
        Without ``argv`` the recipe's lifecycle ``run`` script is run through ``sh -c``
        with its recipe variables filled in, as a nucleus runs it."""
        name = self._name(component)
        work = self.work_dir(name)
        work.mkdir(parents=True, exist_ok=True)
        if argv is None:
            argv = run_step_argv(self.recipes[name], root_dir=self.root_dir, work_dir=work,
                                 thing_name=self.thing_name)
        env = self.component_env(name)
        env.update(extra_env or {})
        return subprocess.Popen(list(argv), cwd=cwd or work, env=env, **popen)

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
    def component_updates(self) -> list[ComponentUpdate]:
        return self._call(lambda: list(self._lifecycle.updates))

    def connected_components(self) -> list[str]:
        return self._call(lambda: sorted(c.component for c in self._connections
                                         if c.component is not None and not c.closed))

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
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=self.socket_path)
        except OSError as err:
            raise NucleusError(f"cannot listen on {self.socket_path}: {err}") from err
        self._loop = loop
        self.link.start(self._iotcore.deliver)
        if isinstance(self.link, MqttBridge):
            bridge = self.link
            if not await loop.run_in_executor(None, bridge.wait_connected, broker_wait_s):
                log.warning("no broker at %s:%s yet; IoT Core operations fail until it is up",
                            bridge.host, bridge.port)

    async def aclose(self) -> None:
        if self._loop is None:
            return
        assert self._server is not None
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

    # ---- threaded lifecycle --------------------------------------------------------

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Serve on a background thread until :meth:`stop`."""
        if self._runner is not None:
            raise NucleusError("the nucleus is already running")
        runner = LoopThread(name="emulated-nucleus")
        try:
            runner.run(self.aopen(), timeout_s)
        except BaseException:
            runner.stop()
            raise
        self._runner = runner

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop serving: every component connection drops, as when a nucleus stops."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.run(self.aclose(), timeout_s)
        finally:
            runner.stop(timeout_s)
            self._loop = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove_root(self) -> None:
        """Remove the temporary root folder the nucleus made for itself, if it made one."""
        if self._owns_root and self._loop is None:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> EmulatedNucleus:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.remove_root()

    # ---- internals -----------------------------------------------------------------

    def _name(self, component: str | None) -> str:
        if component is None:
            return self.main_component
        if component not in self.recipes:
            raise NucleusError(f"no component {component!r} on this nucleus")
        return component

    def _authenticate(self, token: str) -> str | None:
        for name, known in self._tokens.items():
            if secrets.compare_digest(known, token):
                return name
        return None

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
