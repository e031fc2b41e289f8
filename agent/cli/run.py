"""``edge-agent run``: load a model for this device and run the loop, printing live stats.

``--source auto`` (the default) replays the model's test set when it has one and feeds
random inputs otherwise, saying so; accuracy is reported only for a labelled test set.
``--source images|video|camera --source-path P`` runs on outside frames, pre-processed from
the model's metadata (with ``--source-once`` the run ends with them); ``--source shm
--shm-name N`` creates ring ``N`` for an external producer (``agent.producer``), and
without ``--shm-name`` a built-in producer feeds a fresh ring.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from agent.core.errors import ConfigError
from agent.core.model_layout import MODEL_INFO, read_model_info
from agent.device.inference.runner import InferenceLoop, LoopStats
from agent.device.inference.sources import SourceOptions, choose_source, make_source_factory
from agent.device.platform.profile import DeviceProfile
from agent.device.platform.resolve import ResolvedModel, default_backend, resolve_model
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend


def backend_config(args: argparse.Namespace) -> DlrConfig | OnnxConfig:
    if args.backend == "dlr":
        return DlrConfig(library=args.dlr_library, library_path=args.libdlr,
                         num_threads=args.threads)
    return OnnxConfig(intra_op_threads=args.threads)


def add_frame_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the sources of outside frames (``run`` and ``serve``)."""
    parser.add_argument("--source-path", metavar="PATH",
                        help="images: a folder, glob or image file; video: a file or stream "
                             "URL; camera: a V4L2 device index or /dev/videoN; testset: an "
                             ".npz to replay instead of the model's test set")
    parser.add_argument("--source-once", action="store_true", default=None,
                        help="images and video files: stop at the end instead of starting "
                             "over")
    parser.add_argument("--shm-name", metavar="NAME",
                        help="shm: the ring to create for an external producer "
                             "(agent.producer); serve's default is edge-agent-<thing>, run's "
                             "a fresh ring fed by the built-in demo producer")
    parser.add_argument("--shm-slots", type=int, metavar="N", help="shm: ring slots (8)")


def _source_options(args: argparse.Namespace, resolved: ResolvedModel) -> SourceOptions:
    model_dir = resolved.model_dir
    metadata = (read_model_info(model_dir).metadata
                if model_dir is not None and (model_dir / MODEL_INFO).is_file() else None)
    return SourceOptions(path=args.source_path, loop=not args.source_once,
                         shm_name=args.shm_name, shm_slots=args.shm_slots or 8,
                         metadata=metadata)


def _stop_when_ended(loop: InferenceLoop) -> threading.Event:
    """An event set once the loop's source has ended (a source read once, to its end)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            if getattr(loop.source, "ended", False):
                stop.set()

    threading.Thread(target=watch, daemon=True, name="source-end").start()
    return stop


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
                                                             args.rate,
                                                             _source_options(args, resolved)),
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
    stop = _stop_when_ended(loop)
    try:
        stats = loop.run(duration_s=args.duration, max_inferences=args.count, stop=stop,
                         on_tick=None if args.json else _tick)
    finally:
        stop.set()
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
