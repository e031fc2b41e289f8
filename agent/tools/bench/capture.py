"""``edge-agent bench capture``: what capture costs the inference loop, and how fast the
capture store writes on this disk.

**Loop throughput, capture on vs off.** One inference loop on digits v1 (DLR, batch 1,
unpaced, the test set replayed with labels, top-1 checked every 16th) runs four plans,
interleaved round by round (the order flips every round), each for the same time slice:

- ``off``: the plain serve plan;
- ``on``: the same plan with the capture hooks of the default rules (``sampleRate`` 0.001,
  errors, disagreement, requests) feeding a real
  :class:`~agent.device.capture.writer.CaptureWriter` and
  :class:`~agent.device.capture.store.CaptureStore` (temporary folder, default budget and
  per-hour cap), timed once the cap is used up (at this loop's rate, within seconds): the
  steady state, where the tap's own mirror of the cap refuses a pick before anything is
  copied, as in the agent;
- ``writing``: the default rules with the cap lifted, so that every pick is written
  (encoded, tmp file, fsync, rename, fsync of the folder);
- ``low_confidence``: a ``lowConfidence`` rule as well, the rule that looks at every
  inference (its threshold is so low that it rarely fires: the look is measured, not writes).

``ratio`` (and ``writing_ratio``, ``low_confidence_ratio``) is the median of the per-round
``plan / off`` throughputs (the goal for ``ratio`` is >= 0.97); ``cpu_ratio`` (and the
others ``cpu_*``) the same per CPU second of the whole process (every thread: the writer's
work on the round's picks included), which a machine shared with other work disturbs far
less than the wall clock.

**Store write rate**: captures/s and MB/s of :func:`~agent.tools.bench.capture_store.
measure_store` for a digits capture and a 224x224x3 float32 image capture.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.errors import AgentError
from agent.device.capture.config import CaptureConfig, CaptureRules
from agent.device.inference import plans
from agent.device.inference.plans import Plan
from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import ReplaySource, load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime.dlr.backend import DlrBackend
from agent.tools.bench.report import emit

CHECK_EVERY = 16
CHUNK = 256  # inferences between clock reads
LOW_CONFIDENCE = 0.05  # a top-1 probability this low is rare on the test set


def _timed(step: Callable[[], None], seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(CHUNK):
            step()
        done += CHUNK
    return done


class _CapturedLoop:
    """One loop and, beside its plain plan, plans with the capture hooks of given rules,
    each tap with a writer and a store of its own."""

    def __init__(self, models: Path, root: Path) -> None:
        resolved = resolve_model(models / "digits-v1", backend="dlr", profile=detect_profile())
        assert resolved.testset is not None
        x, y = load_testset(resolved.testset)
        self.backend = DlrBackend(artifact_dir=resolved.load_dir)
        self.loop = InferenceLoop(
            backend=self.backend, check_every=CHECK_EVERY,
            make_source=lambda buffers: ReplaySource(buffer=buffers[0], x=x, y=y))
        self.root = root
        self.taps: dict[str, Any] = {}
        self.writers: dict[str, Any] = {}
        self.stores: dict[str, Any] = {}
        self.plans: dict[str, Plan] = {
            "off": plans.serve(self.loop.source.fill, self.loop.lane, check_every=CHECK_EVERY)}

    def add(self, name: str, rules: CaptureRules, *, max_per_hour: int | None = None) -> None:
        """A plan ``name`` capturing by ``rules`` into a store with the default limits
        (``max_per_hour`` instead of the default cap, when given)."""
        from agent.device.capture.store import CaptureStore
        from agent.device.capture.tap import CaptureTap
        from agent.device.capture.writer import CaptureWriter

        config = CaptureConfig(enabled=True)
        store = CaptureStore(self.root / name, thing="bench", model="digits-v1",
                             budget_bytes=config.budget_bytes,
                             max_per_hour=config.max_per_hour if max_per_hour is None
                             else max_per_hour,
                             max_capture_bytes=config.max_capture_bytes, batch=config.batch)
        writer = CaptureWriter(store, queue_size=config.queue_size)
        loop, lane = self.loop, self.loop.lane
        inputs = [(spec.name, buffer) for spec, buffer in zip(self.backend.inputs, loop.inputs,
                                                              strict=True)]
        # The loop's own run() counts its steps; this harness steps the plans itself, so
        # each capture gets a frame id of its own from a counter read only when one is made.
        made_frames = itertools.count(1)

        def frame_info() -> tuple[int, float]:
            return next(made_frames), time.time()

        tap = CaptureTap(rules, thing="bench", model="digits-v1", inputs=inputs,
                         output_names=[spec.name for spec in self.backend.outputs],
                         source_name="testset", frame_info=frame_info,
                         roles=lambda: {lane: ("blue", "digits-v1")}, offer=writer.offer,
                         seed=1, max_per_hour=store.max_per_hour)
        self.taps[name], self.writers[name], self.stores[name] = tap, writer, store
        self.plans[name] = plans.serve(loop.source.fill, lane, check_every=CHECK_EVERY,
                                       capture=tap.hooks())
        writer.start()

    def run(self, name: str, seconds: float) -> tuple[float, float]:
        """Inferences per wall-clock second and per CPU second of this process (every
        thread: the writer's work on the captures picked included) of plan ``name`` over
        ``seconds``. Its writer's queue is then drained (outside the wall-clock time, inside
        the CPU time), so that no plan's writes land in another plan's round."""
        self.loop.use(self.plans[name])
        cpu = time.process_time()
        done = _timed(self.loop.step, seconds)
        writer = self.writers.get(name)
        if writer is not None:
            writer.flush()
        return done / seconds, done / max(time.process_time() - cpu, 1e-9)

    def stop(self) -> None:
        for writer in self.writers.values():
            writer.stop()

    def counts(self, name: str) -> dict[str, Any]:
        tap, store = self.taps[name], self.stores[name]
        stored = store.counts().to_dict()
        return {"fired": {k: v for k, v in tap.fired.items() if v}, "offered": tap.offered,
                "refused_queue_full": tap.refused,
                **{k: stored[k] for k in ("stored", "dropped_rate", "dropped_queue",
                                          "bytes_on_disk", "sealed_batches")}}


def measure_loop(models: Path, *, rounds: int, seconds: float,
                 fill_timeout_s: float = 30.0) -> dict[str, Any]:
    """Interleaved rounds of the loop with capture off and on: ``on`` (the default rules
    and limits, measured once this loop's rate has used up the per-hour cap, as it does
    within seconds: its steady state), ``writing`` (the default rules with the cap lifted:
    every pick is written) and ``low_confidence``; the median ratios and throughputs."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-capture-") as tmp:
        bench = _CapturedLoop(models, Path(tmp))
        try:
            bench.add("on", CaptureRules())
            bench.add("writing", CaptureRules(), max_per_hour=10**12)
            bench.add("low_confidence", CaptureRules(low_confidence=LOW_CONFIDENCE))
            filled = time.monotonic()
            while bench.stores["on"].counts().dropped_rate == 0 and \
                    time.monotonic() - filled < fill_timeout_s:
                bench.run("on", 0.2)
            fill_s = time.monotonic() - filled
            names = list(bench.plans)
            for name in names:  # warm every plan up once
                bench.run(name, min(0.1, seconds))
            before = {name: bench.counts(name) for name in names if name != "off"}
            per_round: dict[str, list[float]] = {name: [] for name in names}
            per_cpu: dict[str, list[float]] = {name: [] for name in names}
            for r in range(rounds):
                for name in names if r % 2 == 0 else list(reversed(names)):
                    wall, cpu = bench.run(name, seconds)
                    per_round[name].append(wall)
                    per_cpu[name].append(cpu)
        finally:
            bench.stop()
        counts = {name: bench.counts(name) for name in names if name != "off"}

    def ratio(a: str, b: str = "off", rates: dict[str, list[float]] = per_round) -> float:
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b],
                                                               strict=True)), 3)

    timed_s = rounds * seconds
    written = counts["writing"]["stored"] - before["writing"]["stored"]
    off, writing = statistics.median(per_round["off"]), statistics.median(per_round["writing"])
    lost_us = (1e6 * timed_s * (1.0 - writing / off) / written) if written else None
    return {"ratio": ratio("on"), "writing_ratio": ratio("writing"),
            "low_confidence_ratio": ratio("low_confidence"),
            "cpu_ratio": ratio("on", rates=per_cpu),
            "cpu_writing_ratio": ratio("writing", rates=per_cpu),
            "cpu_low_confidence_ratio": ratio("low_confidence", rates=per_cpu),
            "per_cpu_s": {k: round(statistics.median(v)) for k, v in per_cpu.items()},
            "throughput_per_s": {k: round(statistics.median(v)) for k, v in per_round.items()},
            "rounds_per_s": {k: [round(x) for x in v] for k, v in per_round.items()},
            "writing_captures_per_s": round(written / timed_s, 1),
            "loop_us_lost_per_capture_written": round(lost_us, 1) if lost_us else None,
            "cap_reached_after_s": round(fill_s, 2),
            "cap_reached": counts["on"]["dropped_rate"] > 0,
            "default_rules": CaptureRules().model_dump(by_alias=True),
            "default_max_per_hour": CaptureConfig().max_per_hour,
            "low_confidence_threshold": LOW_CONFIDENCE, "captures": counts}


# Tensor bytes per capture for the store's write rate: a digits capture (64 input and 10
# output floats) and a 224x224x3 float32 image (the vision model's input).
STORE_SIZES = {"digits": (64 + 10) * 4, "image_224": 224 * 224 * 3 * 4}


def run_bench(models: Path, *, rounds: int, seconds: float, store_seconds: float,
              disk: Path | None = None, fill_timeout_s: float = 30.0) -> dict[str, Any]:
    from agent.tools.bench.capture_store import measure_store

    loop = measure_loop(models, rounds=rounds, seconds=seconds, fill_timeout_s=fill_timeout_s)
    store: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-bench-store-", dir=disk) as tmp:
        for name, size in STORE_SIZES.items():
            store[name] = measure_store(Path(tmp), seconds=store_seconds, capture_bytes=size)
    return {"loop_ratio": loop["ratio"], "goal_ratio": 0.97,
            "loop_cpu_ratio": loop["cpu_ratio"],
            "loop_writing_ratio": loop["writing_ratio"],
            "loop_cpu_writing_ratio": loop["cpu_writing_ratio"],
            "loop_low_confidence_ratio": loop["low_confidence_ratio"],
            "store_captures_per_s": store["digits"]["captures_per_s"],
            "store_mb_per_s": store["image_224"]["mb_per_s"],
            "loop": loop, "store": store, "rounds": rounds, "seconds_per_loop": seconds,
            "disk": str(disk) if disk else tempfile.gettempdir(),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python "
                       f"{platform.python_version()}"}


def bench_capture_main(args: argparse.Namespace) -> int:
    if args.rounds < 3:
        raise AgentError("--rounds must be at least 3 for a meaningful median")
    result = run_bench(args.models, rounds=args.rounds, seconds=args.seconds,
                       store_seconds=args.store_seconds, disk=args.disk,
                       fill_timeout_s=args.fill_timeout)
    emit(result, as_json=args.json)
    return 0
