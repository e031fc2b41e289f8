"""Stand-alone producer for :class:`~agent.device.inference.shm.ShmSource`.

It replays a test set or random data.

It stands in for a camera or sensor process in the self-fed demo (``edge-agent run
--source shm``); run as ``python -m agent.device.inference.shm_producer --shm NAME``. The
ring says the input's dtype and shape. A real producer uses :mod:`agent.producer`.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import numpy as np

from agent.device.inference.pacing import Pacer
from agent.device.inference.sources import NO_LABEL, load_testset
from agent.wire.shm_ring import ShmRing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shm", required=True)
    parser.add_argument("--testset", type=Path)
    parser.add_argument("--rate", type=float, default=0.0, help="samples/s, 0 = as fast as read")
    args = parser.parse_args(argv)
    ring = ShmRing.attach(args.shm)
    spec = ring.inputs[0]
    if args.testset:
        x, y = load_testset(args.testset)
        samples = [x[i].reshape(spec.shape).astype(spec.dtype) for i in range(len(x))]
        labels = [int(v) for v in y]
    else:
        rng = np.random.default_rng(0)
        samples = [rng.random(spec.shape).astype(spec.dtype) for _ in range(64)]
        labels = [NO_LABEL] * len(samples)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
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
