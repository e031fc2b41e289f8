"""``edge-agent bench swap``: what model changes cost a loop that keeps serving.

One process, real DLR backends, digits v1 serving at a steady paced load
(a camera-like source, 2,000 inferences/s by default). Every inference's start
time is recorded, so the measures are inter-inference intervals:

- ``failed_inferences``: errors on any lane over the whole run (goal 0);
- ``swap_gap_vs_p99``: the longest interval that straddles one of 100
  promote/rollback flips / the steady-state p99 interval (goal <= 3);
- ``stage_p99_vs_steady``: p99 interval while a signed package of v2 is
  fetched, verified (golden vectors in a child process) and loaded / steady
  p99 (goal <= 2);
- ``shadow_overhead``: unpaced blue throughput with green shadowing every
  input / without, interleaved rounds, median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.device.app.config import AgentConfig
from agent.device.inference.router import VariantRouter
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.packages.staging import stage
from agent.device.platform.elf import host_arch
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrConfig, load_backend
from agent.device.runtime.base import Backend
from agent.device.store.stored_package import package_artifact
from agent.tools.bench.report import emit
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer, TrustStore


class StampedSource(ReplaySource):
    """The replay source, also recording when each inference started (bench only)."""

    def __init__(self, *, capacity: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stamps = np.zeros(capacity, dtype=np.int64)
        self.n = 0

    def fill(self) -> int:
        if self.n < len(self.stamps):
            self.stamps[self.n] = time.perf_counter_ns()
            self.n += 1
        return super().fill()


def _backend(models: Path, name: str, profile: DeviceProfile) -> Backend:
    res = resolve_model(models / name, backend="dlr", profile=profile)
    return load_backend(res.load_dir, DlrConfig())


def _intervals(stamps: np.ndarray, start_ns: int, end_ns: int) -> np.ndarray:
    window = stamps[(stamps >= start_ns) & (stamps <= end_ns)]
    return np.diff(window)


def _gap_straddling(stamps: np.ndarray, at_ns: int) -> int:
    i = int(np.searchsorted(stamps, at_ns))
    if i == 0 or i >= len(stamps):
        return 0
    return int(stamps[i] - stamps[i - 1])


def run_bench(models: Path, *, rate_hz: float, flips: int, shadow_rounds: int,
              shadow_seconds: float) -> dict[str, Any]:
    # The agent's own setting (AgentConfig.gil_switch_interval_seconds): background Python
    # work hands the interpreter back to the serving thread within half a millisecond.
    sys.setswitchinterval(AgentConfig.model_fields["gil_switch_interval_seconds"].default)
    profile = detect_profile()
    x, y = load_testset(models / "digits-v1" / "testset.npz")
    capacity = int(rate_hz * 120) + 1000
    loop = InferenceLoop(backend=_backend(models, "digits-v1", profile), rate_hz=rate_hz,
                         make_source=lambda b: StampedSource(capacity=capacity, buffer=b[0],
                                                             x=x, y=y))
    source: StampedSource = loop.source  # type: ignore[assignment]
    router = VariantRouter(loop=loop, blue_version="digits-v1")
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    lanes = [loop.lane]
    try:
        time.sleep(2.0)  # steady state
        steady_from, steady_to = time.perf_counter_ns() - 1_800_000_000, time.perf_counter_ns()

        with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
            work = Path(tmp)
            keys = keys_generate(work, "bench")
            signer = Signer.from_file(keys.private, key_id="bench")
            target = f"linux_{host_arch()}-{host_arch()}"
            package = build_package(models / "digits-v2", target, signer=signer,
                                    out_dir=work, version=2)
            trust = TrustStore.from_files({"bench": keys.public})
            stage_from = time.perf_counter_ns()
            staged = stage(package, trust=trust, min_version=0, profile=profile,
                           work_dir=work / "staging")
            stored = package_artifact(staged.dir)
            artifact, label = stored.path, stored.label
            router.load_green(load_backend(artifact, DlrConfig()), label)
            stage_to = time.perf_counter_ns()

            flip_times = []
            for i in range(flips):
                if router.green is None and router.previous is None:
                    router.load_green(load_backend(artifact, DlrConfig()), label)
                time.sleep(0.01)  # keep loading apart from the flip: it is measured above
                flip_times.append(time.perf_counter_ns())
                if i % 2 == 0:
                    router.promote()
                else:
                    router.rollback()
                time.sleep(0.01)
                lanes.extend(r.lane for r in (router.blue, router.green, router.previous)
                             if r is not None and r.lane not in lanes)
            time.sleep(0.05)
        stamps = source.stamps[:source.n].copy()
    finally:
        stop.set()
        thread.join(10)
    steady = _intervals(stamps, steady_from, steady_to)
    steady_p99 = float(np.percentile(steady, 99))
    staging = _intervals(stamps, stage_from, stage_to)
    gaps = [_gap_straddling(stamps, t) for t in flip_times]
    failed = sum(lane.stats.errors for lane in lanes)

    shadow_ratio = _shadow_overhead(models, profile, x, y, rounds=shadow_rounds,
                                    seconds=shadow_seconds)
    loop.close()
    return {
        "failed_inferences": failed,
        "swap_gap_vs_p99": round(max(gaps) / steady_p99, 3),
        "stage_p99_vs_steady": round(float(np.percentile(staging, 99)) / steady_p99, 3),
        "shadow_overhead": round(shadow_ratio, 3),
        "flips": flips,
        "rate_hz": rate_hz,
        "steady_p99_interval_us": round(steady_p99 / 1000, 1),
        "max_flip_gap_us": round(max(gaps) / 1000, 1),
        "staging_ms": round((stage_to - stage_from) / 1e6, 1),
    }


def _shadow_overhead(models: Path, profile: DeviceProfile, x: np.ndarray, y: np.ndarray, *,
                     rounds: int, seconds: float) -> float:
    loop = InferenceLoop(backend=_backend(models, "digits-v1", profile),
                         make_source=lambda b: ReplaySource(buffer=b[0], x=x, y=y))
    router = VariantRouter(loop=loop, blue_version="digits-v1")
    router.load_green(_backend(models, "digits-v2", profile), "digits-v2")
    ratios = []
    for r in range(rounds):
        results = {}
        for mode in (("shadow", "serve") if r % 2 == 0 else ("serve", "shadow")):
            if mode == "shadow":
                router.shadow(1.0)
            else:
                router.set_weights(100, 0)
            before = router.blue.lane.stats.inferences
            started = time.perf_counter()
            loop.run(duration_s=seconds)
            results[mode] = (router.blue.lane.stats.inferences - before) / (
                time.perf_counter() - started)
        ratios.append(results["shadow"] / results["serve"])
    loop.close()
    return statistics.median(ratios)


def bench_swap_main(args: argparse.Namespace) -> int:
    emit(run_bench(args.models, rate_hz=args.rate, flips=args.flips,
                   shadow_rounds=args.rounds, shadow_seconds=args.seconds), as_json=args.json)
    return 0
