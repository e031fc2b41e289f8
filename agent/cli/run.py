"""``edge-agent run``: load a model for this device and run the loop, printing live stats.

``--source auto`` (the default) replays the model's test set when it has one and feeds
random inputs otherwise, saying so; accuracy is reported only for a labelled test set.
"""

from __future__ import annotations

import argparse
import json
import sys

from agent.core.errors import ConfigError
from agent.device.inference.runner import InferenceLoop, LoopStats
from agent.device.inference.sources import choose_source, make_source_factory
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.resolve import ResolvedModel, default_backend, resolve_model
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend


def backend_config(args: argparse.Namespace) -> DlrConfig | OnnxConfig:
    if args.backend == "dlr":
        return DlrConfig(library=args.dlr_library, library_path=args.libdlr,
                         num_threads=args.threads)
    return OnnxConfig(intra_op_threads=args.threads)


def _tick(stats: LoopStats) -> None:
    s = stats.to_dict()
    acc = "" if s["accuracy"] is None else f"  acc {100 * s['accuracy']:.2f}%"
    print(f"  t={stats.elapsed_s:5.1f}s  n={s['inferences']:>9}  {s['throughput_per_s']:>9.0f}/s"
          f"  p50 {s['latency_p50_us']:8.1f}us  p99 {s['latency_p99_us']:8.1f}us{acc}"
          f"  errors {s['errors']}", flush=True)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.rate < 0:
        raise ConfigError(f"--rate must be >= 0 (0 = unpaced), got {args.rate}")
    if args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    if args.check_every < 1:
        raise ConfigError(f"--check-every must be >= 1, got {args.check_every}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")


def run_from_args(args: argparse.Namespace, profile: DeviceProfile) -> int:
    _check_numbers(args)
    args.backend = args.backend or default_backend(args.model)
    resolved: ResolvedModel = resolve_model(args.model, backend=args.backend, profile=profile)
    source, note = choose_source(args.source, resolved.testset)
    backend = load_backend(resolved.load_dir, backend_config(args))
    # The shm producer paces itself; the loop then waits on it rather than on a timer.
    loop_rate = 0.0 if source == "shm" else args.rate
    try:
        loop = InferenceLoop(backend=backend,
                             make_source=make_source_factory(source, backend, resolved.testset,
                                                             args.rate),
                             rate_hz=loop_rate, check_every=args.check_every)
    except BaseException:
        backend.close()
        raise
    if note is not None:
        print(f"edge-agent: note: {note}", file=sys.stderr)
    if not args.json:
        print(f"device: {profile}")
        print("model: " + ", ".join(f"{k}={v}" for k, v in backend.describe().items()))
        if resolved.artifact is not None:
            a = resolved.artifact
            print(f"artifact: target={a.target} arch={a.arch} emulated={a.emulated}")
        print(f"source: {source}  rate: {args.rate or 'unpaced'}  "
              f"duration: {args.duration}s")
    try:
        stats = loop.run(duration_s=args.duration, max_inferences=args.count,
                         on_tick=None if args.json else _tick)
    finally:
        loop.close()
    summary = {"model": str(args.model), "backend": args.backend, "source": source,
               **stats.to_dict()}
    if args.json:
        print(json.dumps(summary))
    else:
        _tick(stats)
        print("summary: " + json.dumps(summary))
    if stats.inferences == 0:
        print("edge-agent: no inference succeeded", file=sys.stderr)
        return 1
    return 0
