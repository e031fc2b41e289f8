"""The agent's local inference API: its service, its shared-memory regions and its
listeners, started with the agent and stopped before the model is closed.

Where each listener ended up (the HTTP port may be chosen by the system) is written to
``endpoints.json`` in the state folder, for applications and scripts to find::

    {"model": "digits", "http": "http://127.0.0.1:8000",
     "http+unix": "state/inference-http.sock", "native": "state/inference.sock"}

A listener that cannot start (a port taken by another program, a socket folder that is
not writable) does not stop the agent: the loop keeps serving, the failure is logged
and reported as a ``server_unavailable`` event, and the other listeners still start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent.core.durable import atomic_write_text
from agent.core.errors import AgentError
from agent.core.model_metadata import ModelMetadata
from agent.device.inference.router import VariantRouter
from agent.device.serving.config import ServerConfig
from agent.device.serving.native_server import NativeServer
from agent.device.serving.oip_app import start_http_servers
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceService, ServedModel

log = logging.getLogger("edge_agent.api")
ENDPOINTS_FILE = "endpoints.json"


class Listener(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class LocalApi:
    """The model's service, the regions clients registered, and the running listeners."""

    def __init__(self, *, config: ServerConfig, router: VariantRouter, name: str,
                 metadata: ModelMetadata | None, ready: Callable[[], bool],
                 work_dir: Path = Path(".")) -> None:
        loop = router.loop
        if loop.requests is None:
            raise ValueError("the loop takes no requests")
        backend = loop.backend
        self.config = config
        self.work_dir = work_dir
        self.registry = RegionRegistry()
        self.service = InferenceService(
            router=router, queue=loop.requests, ready=ready,
            timeout_s=config.timeout_seconds,
            model=ServedModel(name=name, platform=backend.name, inputs=backend.inputs,
                              outputs=backend.outputs, metadata=metadata))
        self.listeners: list[Listener] = []
        self.endpoints: dict[str, str] = {}  # what listens where, for logs and state

    def start(self, on_failure: Callable[[str], object]) -> None:
        """Start every configured listener; each one that fails is reported, not raised."""
        if not self.config.enabled:
            log.info("local inference API disabled (server.enabled is false)")
            return
        try:
            for server in start_http_servers(self.service, self.registry, self.config,
                                             self.work_dir):
                self.listeners.append(server)
                self.endpoints.update(_endpoints_of(server))
        except (AgentError, OSError) as err:
            self._failed("HTTP", err, on_failure)
        if self.config.native_socket is not None:
            native = NativeServer(self.service, self.registry, self.config, self.work_dir)
            try:
                native.start()
            except (AgentError, OSError) as err:
                self._failed("native", err, on_failure)
            else:
                self.listeners.append(native)
                self.endpoints["native"] = str(self.work_dir / self.config.native_socket)
        for kind, where in self.endpoints.items():
            log.info("local inference API (%s) on %s: model %r", kind, where,
                     self.service.model.name)
        try:
            atomic_write_text(self.work_dir / ENDPOINTS_FILE, json.dumps(
                {"model": self.service.model.name, **self.endpoints}, indent=2) + "\n")
        except OSError as err:
            log.warning("cannot write %s: %s", self.work_dir / ENDPOINTS_FILE, err)

    def _failed(self, kind: str, err: BaseException,
                on_failure: Callable[[str], object]) -> None:
        message = f"the local inference API's {kind} listener did not start: {err}"
        log.error("%s", message)
        on_failure(message)

    def stop(self) -> None:
        for listener in reversed(self.listeners):
            try:
                listener.stop()
            except Exception:
                log.exception("stopping a listener failed")
        self.listeners.clear()
        self.registry.close()
        try:
            (self.work_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
        except OSError as err:  # a read-only state directory: stale, and rewritten on start
            log.warning("cannot remove %s: %s", ENDPOINTS_FILE, err)


def _endpoints_of(server: object) -> dict[str, str]:
    port = getattr(server, "port", None)
    socket_path = getattr(server, "socket_path", None)
    host = getattr(server, "host", None)
    if port is not None and host is not None:
        return {"http": f"http://{host}:{port}"}
    if socket_path is not None:
        return {"http+unix": str(socket_path)}
    return {}
