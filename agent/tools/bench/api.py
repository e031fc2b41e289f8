"""``edge-agent bench api``: the local inference API against its baselines, in one run.

The agent's API (two models, DLR backend by default) and two bare echo servers run in a
child process (:mod:`agent.tools.bench.api_server`); the clients run here, one request
at a time. On a machine with two or more cores the child is pinned to the last core and
the clients to the others, so client and server never take each other's core (an
application and the agent are two processes too) and the echo servers, measured the
same way, see the same conditions; ``--no-pin`` leaves the placement to the kernel.

Every path runs for the same time slice in every round, rounds interleaved (the order
flips every round); each ratio is the median of the per-round ratios:

- ``native_vs_inproc``, ``http_shm_vs_inproc``: requests per second on digits v1
  (``agent.client`` with regions; ``tritonclient.http`` with system shared memory) over
  inferences per second of the in-process loop on the same model and runtime;
- ``native_vs_echo``, ``http_vs_echo``: the same request paths over a bare echo server of
  the same transport, client stack and message size (goals >= 0.6 and >= 0.5);
- ``copied_bytes_per_request``: tensor bytes the servers' code copied on the
  shared-memory paths (their ``copied_bytes`` counters) per request (goal 0);
- ``large_vs_small_overhead``: the request path's cost beyond model time (client-observed
  latency minus the model time the response reports), medians, 602 KB input (vision-v1)
  over 256 B (digits v1), HTTP with shared memory (goal <= 1.2);
  ``large_vs_small_overhead_native`` is the same on the native path;
- ``json_vs_shm``: JSON-tensor HTTP over shared-memory HTTP, requests per second;
- ``results_stream_overhead``: loop throughput with the result stream on over off (goal
  >= 0.95).

Also reported: µs per request of every path, the overhead and model time of each, bytes
per message, Python allocation per request in the server (tracemalloc, both sizes, both
transports), and the backend and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.core.errors import AgentError
from agent.core.model_layout import MODEL_INFO
from agent.tools.bench.api_cases import inproc_loop, load_case, stream_overhead
from agent.tools.bench.api_paths import (
    ApiPath,
    HttpEchoPath,
    HttpJsonPath,
    HttpShmPath,
    NativeEchoPath,
    NativePath,
)
from agent.tools.bench.api_report import markdown_table, summarise
from agent.tools.bench.report import emit

SHM_PATHS = ("native_small", "native_large", "http_shm_small", "http_shm_large")
START_TIMEOUT_S = 120.0


@dataclass
class Sample:
    """One path in one round."""

    per_s: float
    latency_us: float = 0.0  # medians over the round's requests
    overhead_us: float = 0.0
    model_us: float = 0.0


@dataclass
class Child:
    """The server process and its command channel."""

    process: subprocess.Popen[str]
    endpoints: dict[str, dict[str, str]]
    backend: dict[str, str]
    stderr: IO[str]

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AgentError(f"the benchmark's server process died: {self._stderr_tail()}")
        return json.loads(line)

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return "\n".join(self.stderr.read().strip().splitlines()[-12:])

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def start_child(work: Path, digits: Path, vision: Path, *, backend: str,
                cores: set[int] | None) -> Child:
    stderr = open(work / "server.log", "w+")  # noqa: SIM115 - closed with the run's folder
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.tools.bench.api_server", "--work", str(work),
         "--digits", str(digits), "--vision", str(vision), "--backend", backend],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if cores:
        os.sched_setaffinity(process.pid, cores)  # before it starts any thread
    assert process.stdout is not None
    child = Child(process=process, endpoints={}, backend={}, stderr=stderr)
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line:
        if ready:  # end of its output: it exited
            why = f"exited with status {process.wait(timeout=30)}"
        else:
            process.kill()
            process.wait()
            why = f"did not start within {START_TIMEOUT_S:.0f} s"
        raise AgentError(f"the benchmark's server {why}: {child._stderr_tail()}")
    hello = json.loads(line)
    child.endpoints, child.backend = hello["endpoints"], hello["backend"]
    return child


def measure(path: ApiPath, seconds: float) -> Sample:
    """Requests one after the other for ``seconds``; throughput and per-request medians."""
    latencies: list[int] = []
    overheads: list[float] = []
    models: list[float] = []
    clock = time.perf_counter_ns
    started = clock()
    deadline = started + int(seconds * 1e9)
    now = started
    while now < deadline:
        before = clock()
        model_us = path.one()
        now = clock()
        took = now - before
        latencies.append(took)
        overheads.append(took / 1000 - model_us)
        models.append(model_us)
    elapsed = (now - started) / 1e9
    return Sample(per_s=len(latencies) / elapsed,
                  latency_us=statistics.median(latencies) / 1000,
                  overhead_us=statistics.median(overheads), model_us=statistics.median(models))


def alloc_per_request(child: Child, path: ApiPath, requests: int) -> float:
    """Mean Python allocation (tracemalloc peak) in the server per request of ``path``."""
    child.ask("trace")
    try:
        for _ in range(20):
            path.one()  # first requests under tracing fill caches, not the request path
        samples = []
        for _ in range(requests):
            child.ask("mark")
            path.one()
            samples.append(int(child.ask("peak")))
    finally:
        child.ask("untrace")
    return statistics.fmean(samples)


def copied_bytes(child: Child) -> int:
    counters = child.ask("counters")
    return sum(int(kind.get("copied_bytes", 0)) for model in counters.values()
               for kind in model.values())


@dataclass
class Run:
    """Everything measured: per path, one sample per round."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    shm_copied: int = 0
    shm_requests: int = 0

    def add(self, name: str, sample: Sample) -> None:
        self.samples.setdefault(name, []).append(sample)


def build_paths(child: Child, models: Path, vision: Path, backend: str
                ) -> tuple[dict[str, ApiPath], Callable[[float], float]]:
    """Every request path, and the in-process loop (seconds -> inferences per second)."""
    small, large = load_case(models / "digits-v1"), load_case(vision)
    ep = child.endpoints
    paths: dict[str, ApiPath] = {}
    paths["native_small"] = NativePath("native_small", ep["digits"]["native"], small)
    paths["native_large"] = NativePath("native_large", ep["vision"]["native"], large)
    http_small, http_large = (ep["digits"]["http"], ep["vision"]["http"])
    paths["http_shm_small"] = HttpShmPath("http_shm_small", _hostport(http_small), small)
    paths["http_shm_large"] = HttpShmPath("http_shm_large", _hostport(http_large), large)
    paths["http_json_small"] = HttpJsonPath("http_json_small", _hostport(http_small), small)
    real_http, real_native = paths["http_shm_small"], paths["native_small"]
    paths["http_echo"] = HttpEchoPath("http_echo", ep["echo"]["http"], real_http.request_bytes)
    paths["native_echo"] = NativeEchoPath("native_echo", ep["echo"]["native"],
                                          real_native.request_bytes)
    return paths, inproc_loop(models / "digits-v1", backend)


def _hostport(url: str) -> str:
    return url.removeprefix("http://")


def _cores(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores), or (None, None) when not pinning."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return {available[-1]}, set(available[:-1])


def ensure_vision(vision: Path) -> Path:
    """``vision`` (a vision-v1 model directory), built there first when it is missing."""
    if (vision / MODEL_INFO).is_file():
        return vision
    from models.vision import DIR_NAME, build_vision

    if vision.name != DIR_NAME:
        raise AgentError(f"--vision {vision}: no {MODEL_INFO} there (build it with "
                         f"`python -m models.build`, which writes build/vision/{DIR_NAME})")
    return build_vision(vision.parent, log=lambda _message: None)


def run_bench(models: Path, vision: Path, *, rounds: int, seconds: float, alloc_requests: int,
              stream_seconds: float, backend: str = "dlr", pin: bool = True) -> dict[str, Any]:
    if not (models / "digits-v1" / MODEL_INFO).is_file():
        raise AgentError(f"--models {models}: no digits-v1/{MODEL_INFO} (build the reference "
                         "models with `edge-agent models build`)")
    vision = ensure_vision(vision)
    server_cores, client_cores = _cores(pin)
    own_cores = os.sched_getaffinity(0)
    run = Run()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        child = start_child(Path(tmp), models / "digits-v1", vision, backend=backend,
                            cores=server_cores)
        paths: dict[str, ApiPath] = {}
        try:
            if client_cores:
                os.sched_setaffinity(0, client_cores)
            paths, inproc = build_paths(child, models, vision, backend)
            names = ["inproc", *paths]
            for r in range(rounds):
                for name in names if r % 2 == 0 else list(reversed(names)):
                    if name == "inproc":
                        run.add(name, Sample(per_s=inproc(seconds)))
                        continue
                    before = copied_bytes(child) if name in SHM_PATHS else 0
                    done = getattr(paths[name], "done", 0)
                    run.add(name, measure(paths[name], seconds))
                    if name in SHM_PATHS:
                        run.shm_copied += copied_bytes(child) - before
                        run.shm_requests += getattr(paths[name], "done", 0) - done
            alloc = {name: round(alloc_per_request(child, paths[name], alloc_requests), 1)
                     for name in SHM_PATHS}
            stream, published = stream_overhead(models / "digits-v1", rounds=rounds,
                                                seconds=stream_seconds, backend=backend)
            verified = sum(int(getattr(p, "verified", 0)) for p in paths.values())
            sizes = {name: [p.request_bytes, p.response_bytes] for name, p in paths.items()}
        finally:
            for path in paths.values():
                path.close()
            child.stop()
            child.stderr.close()
            os.sched_setaffinity(0, own_cores)
    result = summarise(run.samples, shm_copied=run.shm_copied, shm_requests=run.shm_requests,
                       alloc=alloc, stream=stream)
    result.update({
        "results_published": published,
        "verified": verified, "rounds": rounds, "seconds_per_path": seconds,
        "message_bytes": sizes, "backend": child.backend.get("backend", backend),
        "runtime": (f"libdlr {child.backend.get('version', '')}" if backend == "dlr"
                    else child.backend.get("library", "")),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
                   f"{platform.python_version()}",
        "cpu_pinning": (f"server on cpu {sorted(server_cores)}, clients on "
                        f"{sorted(client_cores)}" if server_cores and client_cores else "none"),
    })
    return result


def bench_api_main(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.alloc_requests < 1:
        raise AgentError("--rounds and --alloc-requests must be at least 1")
    if args.seconds <= 0 or args.stream_seconds <= 0:
        raise AgentError("--seconds and --stream-seconds must be positive")
    result = run_bench(args.models, args.vision, rounds=args.rounds, seconds=args.seconds,
                       alloc_requests=args.alloc_requests, stream_seconds=args.stream_seconds,
                       backend=args.backend, pin=args.pin)
    if args.markdown:
        print(markdown_table(result))
    else:
        emit(result, as_json=args.json)
    return 0
