"""The SQLite spool: order, durability across SIGKILL, the byte budget, a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from paths import REPO_ROOT

from agent.core.errors import AgentError
from agent.device.uplink.spool import Priority, Spool, SpoolConfig, SpoolFullError

ROOT = REPO_ROOT


def test_peek_returns_entries_in_put_order_and_ack_deletes(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "spool.db") as spool:
        ids = [spool.put(f"edge/t/{i % 3}", f"m{i}".encode()) for i in range(10)]
        assert ids == sorted(ids)
        entries = spool.peek(4)
        assert [e.payload for e in entries] == [b"m0", b"m1", b"m2", b"m3"]
        assert entries[0].topic == "edge/t/0" and entries[0].qos == 1
        assert entries[0].priority is Priority.CRITICAL
        assert [e.payload for e in spool.peek(2, after_id=entries[1].id)] == [b"m2", b"m3"]
        spool.ack(entries[0].id)
        spool.ack_many([entries[1].id, entries[2].id])
        spool.ack(entries[2].id)  # acking twice is harmless
        assert spool.count() == 7
        assert spool.peek(1)[0].payload == b"m3"


def test_entries_and_counters_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path=path, budget_bytes=200) as spool:
        for _ in range(10):
            spool.put("m", b"x" * 50, priority=Priority.METRICS)
        spool.put("c", b"critical")
        before = spool.stats()
    with Spool(path=path, budget_bytes=200) as spool:
        after = spool.stats()
        assert after == before
        assert after.dropped_metrics > 0
        assert spool.peek(100)[-1].payload == b"critical"


def test_a_writer_killed_with_sigkill_loses_nothing_it_put(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    count = 300
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from agent.device.uplink.spool import Priority, Spool
        spool = Spool(path=Path({str(path)!r}))
        for i in range({count}):
            priority = Priority.METRICS if i % 2 else Priority.CRITICAL
            spool.put("edge/t/metrics", str(i).encode(), priority=priority)
        sys.stdout.write("done\\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no atexit
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == "done\n"
    assert (tmp_path / "spool.db-wal").exists(), "the puts are still only in the WAL"
    with Spool(path=path) as spool:
        assert spool.count() == count
        assert [int(e.payload) for e in spool.peek(count)] == list(range(count))


def test_budget_drops_oldest_metrics_only_and_counts_them(tmp_path: Path) -> None:
    # A long outage with a tiny budget: 1500 bytes, 100-byte messages, 1 in 6 critical.
    with Spool(path=tmp_path / "spool.db", budget_bytes=1500) as spool:
        topic = "t"  # 1 byte of topic + 99 of payload = 100 bytes per message
        critical = []
        for i in range(60):
            if i % 6 == 0:
                critical.append(spool.put(topic, f"c{i}".encode().ljust(99, b".")))
            else:
                spool.put(topic, f"m{i}".encode().ljust(99, b"."), priority=Priority.METRICS)
        stats = spool.stats()
        assert stats.bytes == 1500 and not stats.over_budget
        entries = spool.peek(100)
        kept_critical = [e.id for e in entries if e.priority is Priority.CRITICAL]
        assert kept_critical == critical  # every critical message kept
        kept_metrics = [int(e.payload[1:].rstrip(b".")) for e in entries
                        if e.priority is Priority.METRICS]
        assert kept_metrics == [55, 56, 57, 58, 59]  # the newest five
        expected_dropped = 50 - len(kept_metrics)
        assert spool.dropped_metrics() == expected_dropped
        assert spool.take_dropped_metrics() == expected_dropped
        assert spool.dropped_metrics() == 0


def test_critical_messages_alone_over_budget_are_all_kept(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "spool.db", budget_bytes=500) as spool:
        spool.put("t", b"m" * 99, priority=Priority.METRICS)
        ids = [spool.put("t", b"c" * 99) for _ in range(8)]
        assert [e.id for e in spool.peek(100)] == ids  # the metric went, criticals stay
        stats = spool.stats()
        assert stats.over_budget and stats.critical_bytes == 800
        # A new metric cannot fit at all: it is dropped (and counted) at once.
        assert spool.put("t", b"m", priority=Priority.METRICS) is None
        assert spool.dropped_metrics() == 2


def test_dropped_count_becomes_one_critical_event_atomically(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "spool.db", budget_bytes=300) as spool:
        for _ in range(10):
            spool.put("t", b"x" * 99, priority=Priority.METRICS)
        assert spool.dropped_metrics() == 7
        reported = spool.report_dropped_metrics(
            topic="edge/t/events", encode=lambda n: f'{{"dropped_metrics": {n}}}'.encode())
        assert reported == 7 and spool.dropped_metrics() == 0
        event = spool.peek(100)[-1]
        assert event.topic == "edge/t/events" and event.priority is Priority.CRITICAL
        assert event.payload == b'{"dropped_metrics": 7}'
        assert spool.report_dropped_metrics(topic="e", encode=lambda n: b"") == 0


def test_full_disk_raises_spool_full_error_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    # max_page_count takes SQLite down the same SQLITE_FULL path as ENOSPC.
    with Spool(path=path, budget_bytes=10**9, max_db_bytes=64 * 1024) as spool:
        stored = 0
        with pytest.raises(SpoolFullError) as excinfo:
            for _ in range(1000):
                spool.put("edge/t/state", os.urandom(1000))
                stored += 1
        assert isinstance(excinfo.value, AgentError)
        assert 0 < stored < 1000
        assert spool.count() == stored  # the failed put left nothing behind
        # Acks free pages, which later puts reuse.
        spool.ack_many(e.id for e in spool.peek(10))
        spool.put("edge/t/state", os.urandom(1000))
        assert spool.count() == stored - 9
        # So does more room.
        spool.set_max_db_bytes(None)
        for _ in range(20):
            spool.put("edge/t/state", os.urandom(1000))
    with Spool(path=path) as spool:
        assert spool.count() == stored + 11
        assert spool._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_concurrent_puts_from_many_threads(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "spool.db") as spool:
        def writer(n: int) -> None:
            for i in range(50):
                spool.put(f"t/{n}", f"{n}:{i}".encode())

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        entries = spool.peek(1000)
        assert len(entries) == 200
        for n in range(4):  # each writer's own messages stay in its order
            mine = [int(e.payload.split(b":")[1]) for e in entries if e.topic == f"t/{n}"]
            assert mine == list(range(50))


def test_wait_for_entries_wakes_on_put(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "spool.db") as spool:
        assert not spool.wait_for_entries(0.01)
        timer = threading.Timer(0.05, lambda: spool.put("t", b"x"))
        timer.start()
        assert spool.wait_for_entries(5.0)
        timer.join()


def test_config_is_strict(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "s.db", budget_bytes=1024)
    with Spool.from_config(config) as spool:
        assert spool.budget_bytes == 1024
    with pytest.raises(ValueError):
        SpoolConfig.model_validate({"path": "s.db", "budget": 1})
