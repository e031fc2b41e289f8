"""Stand-alone producer for :class:`~agent.device.inference.shm.ShmSource`.

It replays a test set or random data.

It stands in for a camera or sensor process on a real device; run as
``python -m agent.device.inference.shm_producer --shm NAME --dtype float32 --shape 1,64``.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import numpy as np

from agent.device.inference.pacing import Pacer
from agent.device.inference.shm import ShmRing
from agent.device.inference.sources import NO_LABEL, load_testset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shm", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--shape", required=True, help="comma-separated, e.g. 1,64")
    parser.add_argument("--testset", type=Path)
    parser.add_argument("--rate", type=float, default=0.0, help="samples/s, 0 = as fast as read")
    args = parser.parse_args(argv)
    shape = tuple(int(d) for d in args.shape.split(","))
    dtype = np.dtype(args.dtype)
    if args.testset:
        x, y = load_testset(args.testset)
        samples = [x[i].reshape(shape).astype(dtype) for i in range(len(x))]
        labels = [int(v) for v in y]
    else:
        rng = np.random.default_rng(0)
        samples = [rng.random(shape).astype(dtype) for _ in range(64)]
        labels = [NO_LABEL] * len(samples)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ring = ShmRing.attach(args.shm)
    pace = Pacer(args.rate).wait
    i = 0
    try:
        while not stop:
            if not ring.publish(samples[i % len(samples)], labels[i % len(samples)]):
                break
            i += 1
            pace()
    finally:
        ring.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
