"""The spool through a long outage at a high metrics rate: its byte budget holds on disk,
database, write-ahead log and WAL index together, measured file by file.

The in-process runs put 50,000 messages on tmpfs (``/dev/shm``): there an fsync costs
nothing, so the outage is accelerated while SQLite lays out its files exactly as on a
disk. The agent run is the real ``edge-agent serve`` with its broker down, on the test's
own folder.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess

from agent.device.uplink import spool_disk
from agent.device.uplink.spool import Priority, Spool

TMPFS = Path("/dev/shm")
MiB = 1024 * 1024


@pytest.fixture()
def fast_dir() -> Iterator[Path]:
    if not TMPFS.is_dir():
        pytest.skip("no /dev/shm tmpfs to accelerate the outage on")
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="spool-exhaustion-") as name:
        yield Path(name)


def _files(path: Path) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        os.stat(f"{path}{s}").st_size if os.path.exists(f"{path}{s}") else 0
        for s in ("", "-wal", "-shm"))


def _outage(spool: Spool, puts: int, *, seed: int = 7,
            every: int = 25) -> tuple[int, tuple[int, int, int]]:
    """``puts`` metrics reports of 200 B to 3 KB with a heartbeat among every 100; the
    largest total of the three files seen (sampled every ``every`` puts), and its split."""
    rng = random.Random(seed)
    peak, split = 0, (0, 0, 0)
    for i in range(puts):
        if i % 100 == 0:
            spool.put("edge/t/heartbeat", b'{"type": "heartbeat", "seq": %d}' % i)
        else:
            spool.put("edge/t/metrics", rng.randbytes(rng.randint(200, 3000)),
                      priority=Priority.METRICS)
        if i % every == 0:
            files = _files(spool.path)
            if sum(files) > peak:
                peak, split = sum(files), files
    return peak, split


def test_a_long_outage_holds_the_budget_on_disk_wal_included(fast_dir: Path) -> None:
    budget = 2 * MiB
    started = time.monotonic()
    with Spool(path=fast_dir / "spool.db", budget_bytes=budget) as spool:
        peak, (db, wal, shm) = _outage(spool, 50_000)
        stats = spool.stats()
        limit = spool.disk_limit_bytes
        final = spool.disk_bytes()
    elapsed = time.monotonic() - started
    print(f"50,000 puts in {elapsed:.1f} s; budget {budget}, limit {limit} (budget + "
          f"{limit - budget} slack); peak on disk {peak} = db {db} + wal {wal} + shm {shm}; "
          f"at the end {final}; kept {stats.count} messages of {stats.bytes} bytes; "
          f"{stats.dropped_metrics} metrics dropped")
    assert limit == budget + spool_disk.DB_SLACK_BYTES + MiB + spool_disk.SHM_SLACK_BYTES
    assert peak <= limit, f"{peak} bytes on disk, over the {limit}-byte bound"
    assert db <= budget + spool_disk.DB_SLACK_BYTES + 16 * 1024 and wal <= MiB
    assert stats.dropped_metrics > 40_000 and not stats.over_budget
    assert stats.critical_bytes > 0 and stats.count > 300  # the newest still kept
    assert elapsed < 120
    db_conn = sqlite3.connect(fast_dir / "spool.db")
    try:
        assert db_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        heartbeats = db_conn.execute(
            "SELECT COUNT(*) FROM messages WHERE priority = 'critical'").fetchone()[0]
    finally:
        db_conn.close()
    assert heartbeats == 500  # critical messages are never dropped


def test_without_the_bounds_the_same_outage_overruns_the_budget(fast_dir: Path) -> None:
    # The test can fail: SQLite's defaults (a 4 MiB WAL limit, no page cap) overrun it.
    path = fast_dir / "plain.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, payload BLOB)")
    rng = random.Random(7)
    kept = 0
    for _ in range(5_000):
        size = rng.randint(200, 3000)
        db.execute("INSERT INTO m (payload) VALUES (?)", (rng.randbytes(size),))
        kept += size
        while kept > 2 * MiB:  # the same payload budget, counted on payload bytes only
            (first, length), = db.execute("SELECT id, length(payload) FROM m ORDER BY id "
                                          "LIMIT 1").fetchall()
            db.execute("DELETE FROM m WHERE id = ?", (first,))
            kept -= length
    on_disk = sum(_files(path))
    db.close()
    assert on_disk > spool_disk.disk_limit(2 * MiB, MiB), on_disk


def test_a_reader_holding_the_wal_is_warned_about_and_then_truncated(
        fast_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = fast_dir / "spool.db"
    with Spool(path=path, budget_bytes=MiB, wal_max_bytes=256 * 1024) as spool:
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM messages").fetchone()  # holds a snapshot
        with caplog.at_level(logging.WARNING, logger="agent.device.uplink.spool"):
            _outage(spool, 2_000)
        held = _files(path)[1]
        assert held > 256 * 1024, "a reader's snapshot keeps the WAL from being reset"
        warnings = [r.getMessage() for r in caplog.records if "WAL" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once a minute, not once a put
        assert "another process holds the spool open for reading" in warnings[0]
        reader.rollback()
        reader.close()
        spool.put("edge/t/metrics", b"x" * 100, priority=Priority.METRICS)
        wal = _files(path)[1]
        assert wal <= 256 * 1024, f"the WAL stayed at {wal} bytes once the reader left"
        assert spool.disk_bytes() <= spool.disk_limit_bytes
        print(f"WAL {held} bytes while a reader held it, {wal} after the next put")


def test_a_delivered_backlog_gives_its_pages_back(fast_dir: Path) -> None:
    path = fast_dir / "spool.db"
    with Spool(path=path, budget_bytes=MiB) as spool:
        for i in range(3_000):  # critical messages are never dropped: 3 MB of them
            spool.put("edge/t/events", b"%d:" % i + b"e" * 1000)
        stats = spool.stats()
        assert stats.over_budget and spool.disk_bytes() > 3 * MiB
        peak = spool.disk_bytes()
        while entries := spool.peek(100):
            spool.ack_many(e.id for e in entries)
        after = spool.disk_bytes()
        assert after <= spool.disk_limit_bytes, after
        assert _files(path)[0] <= MiB, "the freed pages went back to the file system"
        print(f"over budget with critical messages: {peak} bytes on disk; {after} once "
              "they were delivered")


def test_a_spool_made_before_auto_vacuum_is_converted_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path=path) as spool:
        ids = [spool.put("edge/t/state", b"%d" % i) for i in range(20)]
    old = sqlite3.connect(path, isolation_level=None)  # as the spool was made before
    old.execute("PRAGMA auto_vacuum=NONE")
    old.execute("VACUUM")
    assert old.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    old.close()
    with Spool(path=path) as spool:
        assert [e.id for e in spool.peek(100)] == ids
        assert spool._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_agent_with_its_broker_down_keeps_its_spool_on_budget(
        tmp_path: Path, built_models: Path) -> None:
    """The real agent, metrics every 10 ms and no broker for 6 s: hundreds of metrics reports
    of 1-2 KB go into a 96 KiB budget, and the spool's files stay within the bound."""
    budget = 96 * 1024
    config = tmp_path / "agent.yaml"
    config.write_text(f"spoolMaxBytes: {budget}\nshutdownFlushSeconds: 0\n")
    state = tmp_path / "state"
    agent = AgentProcess(thing="spool-outage-1", model=built_models / "digits-v1",
                         state_dir=state, broker_port=_closed_port(),
                         log_path=tmp_path / "agent.log", metrics_interval=0.01,
                         extra=["--config", str(config)]).start()
    limit = spool_disk.disk_limit(budget, spool_disk.WAL_MAX_BYTES)
    peak, split = 0, (0, 0, 0)
    try:
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            assert agent.process is not None and agent.process.poll() is None, agent.log()
            files = _files(state / "spool.db")
            if sum(files) > peak:
                peak, split = sum(files), files
            time.sleep(0.02)
    finally:
        assert agent.stop() == 0, agent.log()
    db = sqlite3.connect(state / "spool.db")
    try:
        dropped = db.execute("SELECT value FROM counters WHERE name = 'dropped_metrics'"
                             ).fetchone()[0]
        events, critical = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE topic LIKE '%/events'"
        ).fetchone()
        reports = [bytes(row[0]) for row in db.execute(
            "SELECT payload FROM messages WHERE topic LIKE '%/events'")
            if b'"spool_dropped"' in bytes(row[0])]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    print(f"agent spool: peak {peak} bytes on disk (db {split[0]}, wal {split[1]}, shm "
          f"{split[2]}) for a {budget}-byte budget, bound {limit}; dropped {dropped} "
          f"metrics since the last report; {events} event(s) of {critical} bytes spooled")
    assert peak <= limit, f"{peak} bytes on disk, over the {limit}-byte bound"
    assert dropped + events > 0, "the outage should have forced the budget to drop metrics"
    # While one drop report waits undelivered, later drops add up in the spool's counter
    # rather than as one critical event per tick (which would fill the budget in turn).
    assert len(reports) <= 1, f"{len(reports)} spool_dropped events spooled during one outage"
