"""The server side of ``edge-agent bench api``: the agent's local inference API for two
models, and bare echo servers on the same transports, in one child process.

The benchmark's clients run in the parent, so client and server are two processes with a
core each (on two cores) and never share an interpreter lock, as an application and the
agent never do. The API is the agent's own composition (:class:`~agent.device.app.api.
LocalApi` over an ``api``-source loop, its router and the inference thread), one per
model: ``digits`` (256 B input) and ``vision`` (602 KB input). The echo servers answer
with the request's own bytes: the HTTP one is the agent's
:class:`~agent.device.serving.http_transport.HttpServer` with an app that returns the
body, the native one the agent's frame server with a handler that returns the frame.

Protocol (``python -m agent.tools.bench.api_server --work DIR --digits D --vision V``):
the first line on stdout is JSON naming every endpoint; then each line on stdin is one
command, answered by one JSON line:

- ``counters``: each listener's counters (``copied_bytes``, requests) per model;
- ``trace``: start tracemalloc; ``mark``: remember the traced size and reset the peak;
  ``peak``: bytes allocated since ``mark`` at the peak (one request's Python allocation);
  ``untrace``: stop tracemalloc;
- ``quit`` (or end of input): stop everything and exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import AgentError
from agent.core.model_layout import read_model_info
from agent.device.app.api import LocalApi
from agent.device.app.config import AgentConfig
from agent.device.app.inference import InferenceWorker
from agent.device.inference.requests import RequestQueue
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ApiSource
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend
from agent.device.serving.config import ServerConfig
from agent.device.serving.http_transport import HttpRequest, HttpResponse, HttpServer
from agent.device.serving.native_transport import FrameServer
from agent.wire.inference_frames import Frame

QUEUE_SIZE = 16


@dataclass
class Served:
    """One model behind the agent's API: its loop, inference thread and listeners."""

    name: str
    loop: InferenceLoop
    worker: InferenceWorker
    api: LocalApi

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()
        self.loop.close()


def serve_model(model_dir: Path, work: Path, *, backend: str = "dlr") -> Served:
    """``model_dir`` served as the agent serves it with ``source: api``: HTTP on a free
    loopback port, the native protocol on ``work/<name>.sock``."""
    info = read_model_info(model_dir)
    resolved = resolve_model(model_dir, backend=backend, profile=detect_profile())
    runtime = load_backend(resolved.load_dir, DlrConfig() if backend == "dlr" else OnnxConfig())
    loop = InferenceLoop(backend=runtime, make_source=lambda _buffers: ApiSource(),
                         requests=RequestQueue(QUEUE_SIZE))
    router = VariantRouter(loop=loop, blue_version=f"{info.name}-v{info.version}")
    worker = InferenceWorker(loop=loop)
    worker.start()
    config = ServerConfig(host="127.0.0.1", port=0, http_socket=None,
                          native_socket=Path(f"{info.name}.sock"), queue_size=QUEUE_SIZE)
    api = LocalApi(config=config, router=router, name=info.name, metadata=info.metadata,
                   ready=worker.is_alive, work_dir=work)
    failures: list[str] = []
    api.start(on_failure=failures.append)
    if failures:
        api.stop()
        worker.stop()
        loop.close()
        raise AgentError("; ".join(failures))
    return Served(name=info.name, loop=loop, worker=worker, api=api)


def echo_app(request: HttpRequest) -> HttpResponse:
    """The bare HTTP echo: the request's body is the response's."""
    return HttpResponse(200, [memoryview(request.body)],
                        {"Content-Type": "application/octet-stream"})


def echo_frame(frame: Frame) -> Frame:
    """The bare native echo: the request's frame, header and payload, sent back."""
    return Frame(frame.kind, frame.request_id, frame.header, frame.payload)


def start_echo_servers(work: Path) -> tuple[list[Any], dict[str, str]]:
    """The HTTP echo on a free loopback port and the native echo on ``work/echo.sock``."""
    http = HttpServer(echo_app, host="127.0.0.1", port=0, name="echo")
    http.start()
    servers: list[Any] = [http]
    endpoints = {"http": f"127.0.0.1:{http.port}"}
    path = work / "echo.sock"
    native = FrameServer(echo_frame, path, name="echo-native")
    native.start()
    servers.append(native)
    endpoints["native"] = str(path)
    return servers, endpoints


def listener_counters(api: LocalApi) -> dict[str, dict[str, int]]:
    """Each listener's ``copied_bytes`` (and ``requests`` where it counts them), by kind:
    an HTTP server's counters are its Open Inference Protocol app's."""
    out: dict[str, dict[str, int]] = {}
    for listener in api.listeners:
        app = getattr(listener, "app", None)
        owner = listener if app is None else app
        counters = {key: int(getattr(owner, key)) for key in ("copied_bytes", "requests")
                    if isinstance(getattr(owner, key, None), int)}
        kind = "native" if app is None else "http"
        out[f"{kind}{len([k for k in out if k.startswith(kind)]) or ''}"] = counters
    return out


class Control:
    """The command loop on stdin (see the module docstring)."""

    def __init__(self, served: list[Served]) -> None:
        self.served = served
        self._mark = 0
        self.commands: dict[str, Callable[[], object]] = {
            "counters": lambda: {s.name: listener_counters(s.api) for s in self.served},
            "trace": self._trace, "mark": self._set_mark, "peak": self._peak,
            "untrace": self._untrace,
        }

    def _trace(self) -> bool:
        tracemalloc.start()
        return True

    def _untrace(self) -> bool:
        tracemalloc.stop()
        return True

    def _set_mark(self) -> int:
        self._mark = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self._mark

    def _peak(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self._mark

    def run(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                return
            handler = self.commands.get(command)
            answer = handler() if handler is not None else {"error": f"unknown {command!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.tools.bench.api_server")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--digits", type=Path, required=True)
    parser.add_argument("--vision", type=Path, required=True)
    parser.add_argument("--backend", choices=("dlr", "onnx"), default="dlr")
    args = parser.parse_args(argv)
    sys.setswitchinterval(AgentConfig.model_fields["gil_switch_interval_seconds"].default)
    served: list[Served] = []
    echoes: list[Any] = []
    try:
        for model_dir in (args.digits, args.vision):
            served.append(serve_model(model_dir, args.work, backend=args.backend))
        echoes, echo_endpoints = start_echo_servers(args.work)
        endpoints = {s.name: s.api.endpoints for s in served}
        endpoints["echo"] = echo_endpoints
        sys.stdout.write(json.dumps({"endpoints": endpoints,
                                     "backend": served[0].loop.backend.describe()}) + "\n")
        sys.stdout.flush()
        Control(served).run()
    finally:
        for echo in echoes:
            echo.stop()
        for one in served:
            one.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
