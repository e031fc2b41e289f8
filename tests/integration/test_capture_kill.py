"""SIGKILL during capture writes, seals and deletes, 20 times: after each kill the store
opens clean: no temp file left, every file a whole capture, every batch verifies, and
every capture a killed writer reported as stored is there exactly once.

Each writer is a fresh process forked from a small parent that imported the store once
(so a round starts in milliseconds), writing to the same store on disk through the real
:class:`~agent.device.capture.store.CaptureStore`: it reports each capture id on stdout
right after ``put`` returned True; batches of 5 are sealed as it goes (inline in ``put``,
by age, and by ``seal()``), and now and then the oldest batch is deleted as uploaded
(announced before the delete: its captures may then be gone, never half there).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.device.capture.batches import BATCH_FILE, verify_batch
from agent.device.capture.config import BatchConfig
from agent.device.capture.record import decode
from agent.device.capture.store import CaptureStore

BATCH = {"max_captures": 5, "max_bytes": 1 << 20, "max_age_seconds": 0.05}

WRITERS = f"""
import os, sys, time
from pathlib import Path
import numpy as np
from agent.device.capture.batches import read_batch
from agent.device.capture.config import BatchConfig
from agent.device.capture.record import Capture
from agent.device.capture.store import CaptureStore

root = Path(sys.argv[1])
for line in sys.stdin:
    first = int(line)
    pid = os.fork()
    if pid == 0:
        store = CaptureStore(root, thing="dev-1", model="digits", budget_bytes=1 << 30,
                             max_per_hour=10**9, max_capture_bytes=1 << 20,
                             batch=BatchConfig(**{BATCH!r}))
        for n in range(first, first + 1_000_000):
            capture = Capture(thing="dev-1", model="digits", rule="sample",
                              inputs={{"x": np.full((16, 16), n % 251, np.float32)}},
                              outputs={{"blue": {{"y": np.ones(10, np.float32)}}}},
                              variants={{"blue": "v1"}}, served_by="blue", frame_id=n,
                              time=time.time())
            if store.put(capture):
                os.write(1, b"stored %s\\n" % capture.capture_id.encode())
            if n % 3 == 0:
                store.seal_due()
            if n % 13 == 0:
                store.seal()
            if n % 29 == 0 and store.batches():
                oldest = store.batches()[0].batch_id
                _info, lines = read_batch(store.batch_dir(oldest))
                ids = " ".join(line["capture_id"] for line in lines)
                os.write(1, b"uploading %s\\n" % ids.encode())
                store.mark_uploaded(oldest)
        os._exit(0)
    os.write(1, b"pid %d\\n" % pid)
    os.waitpid(pid, 0)
    os.write(1, b"reaped\\n")
"""


def open_store(root: Path) -> CaptureStore:
    return CaptureStore(root, thing="dev-1", model="digits", budget_bytes=1 << 30,
                        max_per_hour=10**9, max_capture_bytes=1 << 20,
                        batch=BatchConfig(**BATCH))  # type: ignore[arg-type]


def leftovers(root: Path) -> tuple[int, int]:
    """(temp or trash files and dirs, batch dirs without batch.json) a kill left."""
    temps = sum(1 for p in root.rglob("*") if p.name.endswith((".tmp", ".trash")))
    unsealed = sum(1 for p in (root / "batches").iterdir()
                   if p.is_dir() and not p.name.startswith(".")
                   and not (p / BATCH_FILE).exists()) if (root / "batches").is_dir() else 0
    return temps, unsealed


def captures_on_disk(root: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in [*(root / "open").glob("*.npz"), *(root / "batches").glob("*/*.npz")]:
        found[decode(path.read_bytes()).capture_id] += 1  # raises if not whole
    return found


def _kill_loop(tmp_path: Path, kills: int, seed: int) -> None:
    root = tmp_path / "capture"
    rng = random.Random(seed)
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITERS), str(root)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)
    assert parent.stdin is not None and parent.stdout is not None
    reported: list[str] = []
    maybe_gone: set[str] = set()
    started = time.monotonic()
    repaired = {"temps": 0, "unsealed": 0}
    verified: set[str] = set()
    try:
        for round_ in range(kills):
            parent.stdin.write(f"{round_ * 1_000_000}\n")
            parent.stdin.flush()
            line = parent.stdout.readline()
            assert line.startswith("pid "), line
            time.sleep(rng.uniform(0.05, 0.3))  # opening, a put, a seal, a delete
            os.kill(int(line.split()[1]), signal.SIGKILL)
            while (line := parent.stdout.readline()) != "reaped\n":
                kind, _, rest = line.partition(" ")
                if kind == "stored":
                    reported.append(rest.strip())
                else:
                    assert kind == "uploading", line
                    maybe_gone.update(rest.split())
            temps, unsealed = leftovers(root)
            repaired["temps"] += temps
            repaired["unsealed"] += unsealed
            store = open_store(root)  # the agent's own open: repairs
            assert leftovers(root) == (0, 0), f"kill {round_ + 1}: left after open"
            assert not any((root / "quarantine").iterdir()), "a kill made a corrupt file"
            found = captures_on_disk(root)
            twice = [i for i, n in found.items() if n > 1]
            assert not twice, f"kill {round_ + 1}: stored twice: {twice}"
            missing = [i for i in reported if i not in found and i not in maybe_gone]
            assert not missing, f"kill {round_ + 1}: reported as stored, then lost: {missing}"
            unreported = set(found) - set(reported)
            assert len(unreported) <= round_ + 1, "at most one unreported put per kill"
            for info in store.batches():  # a sealed batch never changes: verify it once
                if info.batch_id not in verified:
                    assert verify_batch(store.batch_dir(info.batch_id)) == info
                    verified.add(info.batch_id)
            counts = store.counts()
            assert counts.open_captures + sum(b.count for b in store.batches()) == len(found)
            assert counts.bytes_on_disk == sum(p.stat().st_size for p in root.rglob("*")
                                               if p.is_file())
    finally:
        parent.stdin.close()
        parent.kill()
        parent.wait(10)
    store = open_store(root)
    for info in store.batches():
        assert verify_batch(store.batch_dir(info.batch_id)) == info
    elapsed = time.monotonic() - started
    print(f"{kills} SIGKILLs in {elapsed:.1f} s: {len(reported)} captures reported stored, "
          f"all there once ({len(maybe_gone)} in uploaded batches); the opens removed "
          f"{repaired['temps']} temp files and completed {repaired['unsealed']} seals")
    assert len(reported) > 3 * kills, "the kills should land after some puts returned"
    assert elapsed < 6 * kills, f"{kills} rounds took {elapsed:.0f} s"


def test_twenty_sigkills_during_capture_writes_lose_nothing(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 20, seed=14)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_hundred_sigkills_during_capture_writes_lose_nothing(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 200, seed=15)
