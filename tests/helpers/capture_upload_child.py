"""A child process that runs the capture uploader over a store directory, for the tests that
SIGKILL it mid-upload: ``python capture_upload_child.py SPEC_JSON``.

The spec names the store root, the destination (``{"kind": "s3", "bucket", "endpoint_url"}``
with credentials from the environment, or ``{"kind": "folder", "folder"}``), the bandwidth
and the mode: ``run`` connects, starts the uploader's thread, prints ``ready <pid>`` and
waits to be killed; ``zygote`` forks a ``run`` for each line on stdin (see :func:`zygote`);
``finish`` uploads until the store holds no batch and prints the uploader's counts as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.device.capture.config import BatchConfig, UploadConfig
from agent.device.capture.destinations import make_destination
from agent.device.capture.store import CaptureStore
from agent.device.capture.upload import BatchUploader

THING = "cam-1"
MODEL = "digits"


def open_store(root: Path) -> CaptureStore:
    """The store the upload tests fill and the child uploads from (limits out of the way:
    the budget and the caps are the store's tests' business)."""
    return CaptureStore(root, thing=THING, model=MODEL, budget_bytes=1 << 30,
                        max_per_hour=1_000_000, max_capture_bytes=4 << 20,
                        batch=BatchConfig(max_captures=100_000, max_bytes=1 << 30,
                                          max_age_seconds=10_000))


def zygote(spec: dict[str, object]) -> int:
    """Fork an uploader (mode ``run``) for each line read from stdin; each prints
    ``ready <pid>`` and runs until killed; the zygote then prints ``reaped <pid>``. Forking
    an interpreter that has imported everything makes each start take milliseconds."""
    print("zygote", flush=True)
    for _line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                main({**spec, "mode": "run"})
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        print(f"reaped {pid}", flush=True)
    return 0


def main(spec: dict[str, object]) -> int:
    if spec["mode"] == "zygote":
        return zygote(spec)
    store = open_store(Path(str(spec["root"])))
    destination_spec = dict(spec["destination"])  # type: ignore[call-overload]
    config = UploadConfig.model_validate({**destination_spec, "prefix": spec["prefix"]})
    destination = make_destination(config, THING)
    assert destination is not None
    bandwidth = int(str(spec["bandwidth"]))
    uploader = BatchUploader(store, destination, thing=THING,
                             bandwidth_bytes_per_second=bandwidth, retry_initial_s=0.05,
                             retry_max_s=0.2)
    if spec["mode"] == "run":
        if batches := store.batches():  # connect first (boto3 takes a moment to set up)
            destination.has_batch(batches[0].batch_id)
        uploader.start()
        print(f"ready {os.getpid()}", flush=True)
        while True:
            time.sleep(60)
    deadline = time.monotonic() + 60
    while store.batches() and time.monotonic() < deadline:
        if uploader.run_once() == 0:
            time.sleep(0.05)
    print(json.dumps(uploader.counts()), flush=True)
    return 0 if not store.batches() else 1


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
