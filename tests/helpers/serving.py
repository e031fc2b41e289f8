"""The local inference API in-process over a real runtime (no tests here): an ``api``-source
inference loop, its variants router and service, the shared-memory registry and the
Open Inference Protocol listeners (TCP on a free loopback port and a Unix socket), as the
agent wires them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.device.app.inference import InferenceWorker
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import make_source_factory
from agent.device.runtime.base import Backend
from agent.device.serving.config import ServerConfig
from agent.device.serving.http_transport import HttpServer
from agent.device.serving.oip_app import OipApp, start_http_servers
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceService, ServedModel


@dataclass
class Served:
    """One served model and its listeners; :meth:`close` stops everything."""

    backend: Backend
    router: VariantRouter
    worker: InferenceWorker
    service: InferenceService
    registry: RegionRegistry
    servers: list[HttpServer] = field(default_factory=list)

    @property
    def tcp(self) -> HttpServer:
        return next(s for s in self.servers if s.port is not None)

    @property
    def unix(self) -> HttpServer:
        return next(s for s in self.servers if s.socket_path is not None)

    @property
    def url(self) -> str:
        """``host:port`` as tritonclient takes it."""
        return f"127.0.0.1:{self.tcp.port}"

    @property
    def app(self) -> OipApp:
        app = self.tcp.app
        assert isinstance(app, OipApp)
        return app

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.worker.stop()
        self.registry.close()
        self.router.loop.close()


def serve_model(backend: Backend, work_dir: Path, *, name: str = "digits",
                version: str = "digits-v1", queue_size: int = 8, timeout_s: float = 5.0,
                max_body_bytes: int = 64 * 1024 * 1024, max_connections: int = 32) -> Served:
    """Serve ``backend`` as model ``name`` (blue ``version``) with no continuous source."""
    loop = InferenceLoop(backend=backend, requests=RequestQueue(queue_size),
                         make_source=make_source_factory("api", backend, None, 0.0))
    router = VariantRouter(loop=loop, blue_version=version)
    worker = InferenceWorker(loop=loop)
    worker.start()
    service = InferenceService(router=router, queue=loop.requests, timeout_s=timeout_s,
                               model=ServedModel(name, backend.name, backend.inputs,
                                                 backend.outputs))
    registry = RegionRegistry()
    config = ServerConfig(host="127.0.0.1", port=0, http_socket=Path("oip.sock"),
                          native_socket=None, queue_size=queue_size,
                          timeout_seconds=timeout_s, max_body_bytes=max_body_bytes,
                          max_connections=max_connections)
    served = Served(backend=backend, router=router, worker=worker, service=service,
                    registry=registry)
    served.servers = start_http_servers(service, registry, config, work_dir)
    return served
