"""Peak RSS of a fresh process that loads one model and runs N inferences (for ``bench loop``).

Run as ``python -m agent.tools.bench.rss --backend dlr --model DIR --inferences 10000``;
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from agent.device.inference.runner import InferenceLoop
from agent.device.inference.sources import RandomSource
from agent.device.runtime import DlrConfig, OnnxConfig, load_backend


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM).

    Not ``ru_maxrss``: Linux carries that across ``execve``, so a child started
    by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("dlr", "onnx"), required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--inferences", type=int, default=10_000)
    args = parser.parse_args(argv)
    config = DlrConfig() if args.backend == "dlr" else OnnxConfig()
    backend = load_backend(args.model, config)
    loop = InferenceLoop(backend=backend,
                         make_source=lambda b: RandomSource(buffers=b, specs=backend.inputs))
    stats = loop.run(max_inferences=args.inferences)
    loop.close()
    peak_kb = peak_rss_kb()
    print(json.dumps({"backend": args.backend, "inferences": stats.inferences,
                      "errors": stats.errors, "peak_rss_mb": round(peak_kb / 1024, 1)}))
    return 0 if stats.inferences == args.inferences else 1


if __name__ == "__main__":
    raise SystemExit(main())
