"""``edge-agent bench loop``: our inference loops against the runtimes' plain APIs.

All loops run on digits v1 at batch 1 in one process, interleaved round by
round (the order flips every round), each for the same time slice. Every loop
writes a new test sample into its input each iteration and, every 16th
iteration, checks the predicted class against a reference computed up front;
the JSON reports how many checks passed as ``verified``. Each ratio is the
median of the per-round ratios, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import AgentError, BackendUnavailableError
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import ResolvedModel, resolve_model
from agent.device.runtime.dlr.backend import DlrBackend
from agent.device.runtime.onnx import OnnxBackend
from agent.tools.bench.alloc import bytes_per_call
from agent.tools.bench.report import emit

CHECK_EVERY = 16  # iterations between reference checks, the same in every loop
CHUNK = 256  # iterations between clock reads, the same in every loop


class VerificationError(AgentError):
    """A benchmarked loop produced a wrong class: its timing would be meaningless."""


@dataclass
class Workload:
    rows: list[np.ndarray]  # one [1, 64] view per test sample
    reference: list[int]  # predicted class per sample, from a plain ORT run

    def check(self, scores: np.ndarray, index: int, name: str) -> None:
        if int(scores.argmax()) != self.reference[index]:
            raise VerificationError(f"{name}: wrong class for sample {index}")


LoopFn = Callable[[float], tuple[int, int]]  # seconds -> (iterations, verified)


def _timed(body: Callable[[], object], check: Callable[[int], None], n: int,
           seconds: float) -> tuple[int, int]:
    """Run ``body()`` in chunks until ``seconds`` pass; ``check(i)`` every 16th.

    Every body writes sample ``i`` (cycling through ``n``) into its own input and
    runs once; ``check(i)`` compares what it produced with the reference.
    """
    done = verified = 0
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        for _ in range(CHUNK):
            body()
            if not done & (CHECK_EVERY - 1):
                check(i)
                verified += 1
            done += 1
            i = i + 1 if i + 1 < n else 0
    return done, verified


def opt_out_of_dlr_phone_home() -> None:
    """Write dlr's opt-out file before the package is imported (the import calls home)."""
    spec = importlib.util.find_spec("dlr")
    if spec is None or not spec.origin:
        raise BackendUnavailableError("the dlr package is not installed: no DLRModel baseline")
    config = Path(spec.origin).parent / "counter" / "ccm_config.json"
    if not config.is_file():
        config.write_text(json.dumps({"enable_phone_home": False}))


def build_loops(dlr_res: ResolvedModel, onnx_res: ResolvedModel
                ) -> tuple[dict[str, LoopFn], dict[str, Callable[[], object]], dict[str, str]]:
    """The six loops, one-iteration bodies of four of them for the allocation measure."""
    assert dlr_res.testset is not None
    x, y = load_testset(dlr_res.testset)
    rows = [x[i:i + 1] for i in range(len(x))]
    n = len(rows)

    onnx = OnnxBackend(artifact_dir=onnx_res.load_dir)
    session = onnx.session
    in_name = session.get_inputs()[0].name
    reference = [int(session.run(None, {in_name: r})[0].argmax()) for r in rows]
    work = Workload(rows=rows, reference=reference)

    def replay(buffers: tuple[np.ndarray, ...]) -> ReplaySource:
        return ReplaySource(buffer=buffers[0], x=x, y=y)

    # Our loops check their own top-1 on the same 1-in-16 sample the harness checks.
    ours_ort = InferenceLoop(backend=onnx, make_source=replay, check_every=CHECK_EVERY)
    dlr_backend = DlrBackend(artifact_dir=dlr_res.load_dir)
    ours_dlr = InferenceLoop(backend=dlr_backend, make_source=replay, check_every=CHECK_EVERY)

    # Each baseline body takes its next sample from a fresh cycle over the rows, the
    # way our loops' replay source does, so every timed loop starts at sample 0.
    def cycle() -> Callable[[], np.ndarray]:
        return itertools.cycle(rows).__next__

    # Baseline: session.run with a preallocated input refilled in place.
    naive_x = np.zeros((1, 64), np.float32)
    naive_out: list[Any] = [None]

    def naive() -> Callable[[], None]:
        sample = cycle()

        def body() -> None:
            naive_x[...] = sample()
            naive_out[0] = session.run(None, {in_name: naive_x})

        return body

    # Baseline: bare run_with_iobinding on our loop's own bound buffers.
    iob_in, iob_out = ours_ort.inputs[0], ours_ort.outputs[0]
    binding = onnx._binding

    def iobinding() -> Callable[[], None]:
        sample = cycle()

        def body() -> None:
            iob_in[...] = sample()
            session.run_with_iobinding(binding)

        return body

    # Baseline: dlr.DLRModel.run(), the package's own API (opted out of phone-home first).
    opt_out_of_dlr_phone_home()
    import dlr

    dlr_model = dlr.DLRModel(str(dlr_res.load_dir), "cpu", 0)
    dm_x = np.zeros((1, 64), np.float32)
    dm_out: list[Any] = [None]

    def dlrmodel() -> Callable[[], None]:
        sample = cycle()

        def body() -> None:
            dm_x[...] = sample()
            dm_out[0] = dlr_model.run(dm_x)

        return body

    # Baseline: the three C calls with arguments prebuilt, on a handle of its own.
    lib = dlr_backend.library.cdll
    handle = ctypes.c_void_p()
    href = ctypes.byref(handle)
    if lib.CreateDLRModel(href, str(dlr_res.load_dir).encode(), 1, 0):
        raise BackendUnavailableError("bare DLR baseline could not load the model")
    bare_x = np.zeros((1, 64), np.float32)
    bare_out = np.zeros((1, 10), np.float32)
    args = (href, ctypes.c_char_p(b"input"), (ctypes.c_int64 * 2)(1, 64),
            ctypes.c_void_p(bare_x.ctypes.data), ctypes.c_int(2))
    out_args = (href, ctypes.c_int(0), ctypes.c_void_p(bare_out.ctypes.data))
    set_input, run, get_output = lib.SetDLRInput, lib.RunDLRModel, lib.GetDLROutput

    def bare() -> Callable[[], None]:
        sample = cycle()

        def body() -> None:
            bare_x[...] = sample()
            set_input(*args)
            run(href)
            get_output(*out_args)

        return body

    def ours(loop: InferenceLoop) -> Callable[[], Callable[[], None]]:
        source: Any = loop.source

        def fresh() -> Callable[[], None]:
            source._index = 0  # our replay source walks the rows itself: start at sample 0
            return loop.step

        return fresh

    def timed(make: Callable[[], Callable[[], None]], scores: Callable[[], np.ndarray],
              name: str) -> LoopFn:
        return lambda seconds: _timed(make(), lambda i: work.check(scores(), i, name), n,
                                      seconds)

    ort_scores, dlr_scores = ours_ort.outputs[0], ours_dlr.outputs[0]
    loops: dict[str, LoopFn] = {
        "ours_onnx": timed(ours(ours_ort), lambda: ort_scores, "ours_onnx"),
        "naive_onnx": timed(naive, lambda: naive_out[0][0], "naive_onnx"),
        "iobinding": timed(iobinding, lambda: iob_out, "iobinding"),
        "ours_dlr": timed(ours(ours_dlr), lambda: dlr_scores, "ours_dlr"),
        "dlrmodel": timed(dlrmodel, lambda: dm_out[0][0], "dlrmodel"),
        "bare_dlr": timed(bare, lambda: bare_out, "bare_dlr"),
    }
    extra: list[Any] = []

    def control_body() -> None:
        extra.append(np.empty(10, np.float32))  # alive across the step, as a result array is
        ours_dlr.step()
        extra.pop()

    bodies: dict[str, Callable[[], object]] = {
        "alloc_onnx": ours_ort.step,
        "alloc_dlr": ours_dlr.step,
        "alloc_naive": naive(),
        "alloc_dlrmodel": dlrmodel(),
        "control": control_body,
    }
    dlr_info = dlr_backend.describe()
    info = {"onnxruntime": onnx.describe()["library"], "libdlr": dlr_info["library"],
            "dlr_version": dlr_info["version"]}
    return loops, bodies, info


def measure_rss(backend: str, path: Path, inferences: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "agent.tools.bench.rss", "--backend", backend, "--model", str(path),
         "--inferences", str(inferences)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def run_bench(models: Path, *, rounds: int, seconds: float,
              rss_inferences: int) -> dict[str, Any]:
    profile = detect_profile()
    dlr_res = resolve_model(models / "digits-v1", backend="dlr", profile=profile)
    onnx_res = resolve_model(models / "digits-v1", backend="onnx", profile=profile)
    loops, bodies, info = build_loops(dlr_res, onnx_res)
    names = list(loops)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    verified = 0
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            iterations, checks = loops[name](seconds)
            per_round[name].append(iterations / seconds)
            verified += checks

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(per_round[a], per_round[b],
                                                               strict=True)), 3)

    alloc = {key: round(bytes_per_call(body), 1) for key, body in bodies.items()}
    return {
        "ort_vs_naive": ratio("ours_onnx", "naive_onnx"),
        "ort_vs_iobinding": ratio("ours_onnx", "iobinding"),
        "dlr_vs_dlrmodel": ratio("ours_dlr", "dlrmodel"),
        "dlr_vs_bare": ratio("ours_dlr", "bare_dlr"),
        "dlr_vs_ort": ratio("ours_dlr", "ours_onnx"),
        "alloc_onnx": alloc["alloc_onnx"],
        "alloc_dlr": alloc["alloc_dlr"],
        "alloc_naive": alloc["alloc_naive"],
        "alloc_dlrmodel": alloc["alloc_dlrmodel"],
        "alloc_control_extra": round(alloc["control"] - alloc["alloc_dlr"], 1),
        "rss_mb_dlr": measure_rss("dlr", dlr_res.load_dir, rss_inferences),
        "rss_mb_onnx": measure_rss("onnx", onnx_res.load_dir, rss_inferences),
        "verified": verified,
        "rounds": rounds,
        "seconds_per_loop": seconds,
        "throughput_per_s": {k: round(statistics.median(v)) for k, v in per_round.items()},
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        **info,
    }


def bench_loop_main(args: argparse.Namespace) -> int:
    if args.rounds < 5:
        raise AgentError("--rounds must be at least 5 for a meaningful median")
    result = run_bench(args.models, rounds=args.rounds, seconds=args.seconds,
                       rss_inferences=args.rss_inferences)
    emit(result, as_json=args.json)
    return 0
