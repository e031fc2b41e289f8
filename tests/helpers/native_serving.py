"""The local inference API's parts assembled in-process for tests (no tests here): a loop
over a real backend, the variants router, the inference thread, the service and the
native server on a Unix socket in a short temporary folder.

``NativeStack`` is a context manager; ``stack.client()`` opens a connection.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model_dirs import HOST_ARTIFACT

from agent.client import InferenceClient
from agent.core.model_layout import read_model_info
from agent.device.app.inference import InferenceWorker
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import make_source_factory
from agent.device.runtime import DlrBackend, OnnxBackend
from agent.device.runtime.base import Backend
from agent.device.serving.config import ServerConfig
from agent.device.serving.native_server import NativeServer
from agent.device.serving.regions import RegionRegistry
from agent.device.serving.service import InferenceService, ServedModel


def host_artifact(model_dir: Path) -> Path:
    """The model directory's DLR build for this host's generic target."""
    return model_dir / "dlr" / HOST_ARTIFACT


def load(model_dir: Path, backend: str = "dlr") -> Backend:
    if backend == "onnx":
        return OnnxBackend(artifact_dir=model_dir / "onnx")
    return DlrBackend(artifact_dir=host_artifact(model_dir))


@dataclass
class NativeStack:
    loop: InferenceLoop
    router: VariantRouter
    worker: InferenceWorker
    service: InferenceService
    registry: RegionRegistry
    server: NativeServer

    @property
    def socket_path(self) -> Path:
        return self.server.socket_path

    def client(self, **kwargs: object) -> InferenceClient:
        return InferenceClient(self.socket_path, **kwargs)  # type: ignore[arg-type]


@contextmanager
def native_stack(model_dir: Path, *, backend: str = "dlr", queue_size: int = 8,
                 source: str = "api", version: str | None = None, timeout_s: float = 5.0,
                 max_body_bytes: int = 64 * 1024 * 1024, max_connections: int = 32,
                 rate_hz: float = 200.0) -> Iterator[NativeStack]:
    """The served model of ``model_dir`` behind a started :class:`NativeServer`."""
    info = read_model_info(model_dir)
    runtime = load(model_dir, backend)
    testset = model_dir / "testset.npz"
    loop = InferenceLoop(backend=runtime, rate_hz=rate_hz, requests=RequestQueue(queue_size),
                         make_source=make_source_factory(
                             source, runtime, testset if testset.is_file() else None, rate_hz))
    router = VariantRouter(loop=loop, blue_version=version or f"{info.name}-v{info.version}")
    worker = InferenceWorker(loop=loop)
    worker.start()
    service = InferenceService(
        router=router, queue=loop.requests, ready=worker.is_alive,  # type: ignore[arg-type]
        timeout_s=timeout_s,
        model=ServedModel(name=info.name, platform=runtime.name, inputs=runtime.inputs,
                          outputs=runtime.outputs, metadata=info.metadata))
    registry = RegionRegistry()
    work = Path(tempfile.mkdtemp(prefix="nat-", dir="/tmp"))
    config = ServerConfig(native_socket=Path("inference.sock"), queue_size=queue_size,
                          timeout_seconds=timeout_s, max_body_bytes=max_body_bytes,
                          max_connections=max_connections)
    server = NativeServer(service, registry, config, work)
    server.start()
    try:
        yield NativeStack(loop=loop, router=router, worker=worker, service=service,
                          registry=registry, server=server)
    finally:
        server.stop()
        worker.stop()
        registry.close()
        shutil.rmtree(work, ignore_errors=True)
