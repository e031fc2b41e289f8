"""SIGKILL during spool writes, again and again: after every kill the database opens clean
and holds every entry the killed writer reported as stored, exactly once.

Each writer is a fresh process (forked from a small parent that imported the spool once,
so that a hundred of them start in seconds) writing to the same spool file on disk: a
numbered critical entry, reported on its stdout once ``put`` returned, then a 64 KB
metrics report; the budget trims metrics, acks free pages and give them back, and the
WAL is checkpointed and truncated, all of it inside the window the kill lands in.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.device.uplink.spool import Priority, Spool

WRITERS = """
import os, sys
from pathlib import Path
from agent.device.uplink.spool import Priority, Spool

path = Path(sys.argv[1])
for line in sys.stdin:
    first = int(line)
    pid = os.fork()
    if pid == 0:
        spool = Spool(path=path, budget_bytes=1 << 20, wal_max_bytes=256 * 1024)
        filler, metrics = b"m" * 65536, []
        for n in range(first, first + 1_000_000):
            spool.put("edge/t/state", b"%d" % n)
            os.write(1, b"stored %d\\n" % n)  # one write(2) per line: atomic on a pipe
            metrics.append(spool.put("edge/t/metrics", filler, priority=Priority.METRICS))
            if len(metrics) == 24:
                spool.ack_many(i for i in metrics if i is not None)
                metrics = []
        os._exit(0)
    os.write(1, b"pid %d\\n" % pid)
    os.waitpid(pid, 0)
    os.write(1, b"reaped\\n")
"""


def _kill_loop(tmp_path: Path, kills: int, seed: int = 13) -> None:
    path = tmp_path / "spool.db"
    rng = random.Random(seed)
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITERS), str(path)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)
    assert parent.stdin is not None and parent.stdout is not None
    reported: list[int] = []
    started, opened_clean = time.monotonic(), 0
    try:
        for round_ in range(kills):
            parent.stdin.write(f"{round_ * 1_000_000}\n")
            parent.stdin.flush()
            line = parent.stdout.readline()
            assert line.startswith("pid "), line
            pid = int(line.split()[1])
            time.sleep(rng.uniform(0.0, 0.12))  # anywhere: opening, a put, an ack, a vacuum
            os.kill(pid, signal.SIGKILL)
            while (line := parent.stdout.readline()) != "reaped\n":
                assert line.startswith("stored "), line
                reported.append(int(line.split()[1]))
            db = sqlite3.connect(path)
            try:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
                stored = [int(p) for (p,) in db.execute(
                    "SELECT payload FROM messages WHERE priority = 'critical' ORDER BY id")
                ] if "messages" in tables else []
            finally:
                db.close()
            assert "messages" in tables or not reported, "killed before its schema, yet "\
                "it reported entries stored"
            assert len(stored) == len(set(stored)), "an entry is stored twice"
            missing = set(reported) - set(stored)
            assert not missing, f"kill {round_ + 1}: reported as stored, then lost: {missing}"
            assert stored == sorted(stored), "the delivery order changed"
            with Spool(path=path) as spool:  # the agent's own open: recovers and counts
                entries = spool.peek(100_000)
                assert spool.count() == len(entries)
                assert [int(e.payload) for e in entries
                        if e.priority is Priority.CRITICAL] == stored
            opened_clean += 1
    finally:
        parent.stdin.close()
        parent.kill()
        parent.wait(10)
    elapsed = time.monotonic() - started
    print(f"{kills} SIGKILLs in {elapsed:.1f} s: the spool opened clean {opened_clean} "
          f"times; {len(reported)} entries reported stored, all present once")
    assert opened_clean == kills
    assert len(reported) > kills, "the kills should land after some puts returned"


def test_a_hundred_sigkills_during_spool_writes_lose_nothing(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 100)


@pytest.mark.slow
def test_a_thousand_sigkills_during_spool_writes_lose_nothing(tmp_path: Path) -> None:
    _kill_loop(tmp_path, 1000, seed=14)
