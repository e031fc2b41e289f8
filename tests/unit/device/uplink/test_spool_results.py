"""The spool's ``results`` class: a cap of its own, dropped before metrics when the spool is
over budget, and never at the cost of a critical message."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.device.uplink.spool import Priority, Spool, SpoolConfig

TOPIC = "edge/t/results"


def put_results(spool: Spool, count: int, size: int = 100) -> list[int | None]:
    return [spool.put(TOPIC, str(i).encode().ljust(size, b"r"), priority=Priority.RESULTS)
            for i in range(count)]


def kinds(spool: Spool) -> list[str]:
    return [e.priority.value for e in spool.peek(1000)]


def test_results_past_their_cap_lose_their_oldest_and_nothing_else(tmp_path: Path) -> None:
    entry = 100 + len(TOPIC)
    with Spool(path=tmp_path / "s.db", budget_bytes=100_000,
               results_budget_bytes=3 * entry) as spool:
        spool.put("edge/t/metrics", b"m" * 100, priority=Priority.METRICS)
        spool.put("edge/t/ack", b"a" * 100)
        ids = put_results(spool, 5)
        assert all(i is not None for i in ids)
        entries = spool.peek(100)
        assert [e.priority for e in entries] == [Priority.METRICS, Priority.CRITICAL] + \
            [Priority.RESULTS] * 3
        assert [e.payload[:1] for e in entries[2:]] == [b"2", b"3", b"4"]  # the newest kept
        stats = spool.stats()
        assert stats.dropped_results == 2 and stats.dropped_metrics == 0
        assert stats.results_bytes == 3 * entry


def test_over_budget_results_go_before_metrics_and_critical_stays(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "s.db", budget_bytes=1000) as spool:
        put_results(spool, 4)  # 4 x 114 bytes
        for _ in range(3):
            spool.put("edge/t/metrics", b"m" * 100, priority=Priority.METRICS)
        assert spool.stats().dropped_results == 0
        for _ in range(3):  # critical messages push the spool over its budget
            spool.put("edge/t/event", b"e" * 100)
        found = kinds(spool)
        assert found.count("critical") == 3 and found.count("metrics") == 3
        assert found.count("results") == 2
        assert spool.stats().dropped_results == 2 and spool.stats().dropped_metrics == 0
        for _ in range(4):
            spool.put("edge/t/event", b"e" * 100)
        found = kinds(spool)
        assert "results" not in found and found.count("critical") == 7
        assert spool.stats().dropped_results == 4 and spool.stats().dropped_metrics == 2


def test_a_result_that_cannot_fit_is_refused_and_counted(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "s.db", results_budget_bytes=50) as spool:
        assert put_results(spool, 1) == [None]
        assert spool.count() == 0 and spool.stats().dropped_results == 1
        assert spool.put("edge/t/ack", b"a" * 100) is not None


def test_metrics_puts_keep_their_old_behaviour_with_results_present(tmp_path: Path) -> None:
    with Spool(path=tmp_path / "s.db", budget_bytes=600) as spool:
        put_results(spool, 2)
        for _ in range(6):
            spool.put("edge/t/metrics", b"m" * 100, priority=Priority.METRICS)
        found = kinds(spool)
        assert "results" not in found  # results went first
        assert spool.total_bytes <= 600 and spool.stats().dropped_results == 2


def test_the_results_cap_survives_reopen_and_comes_from_the_config(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path / "s.db", results_budget_bytes=500)
    with Spool.from_config(config) as spool:
        assert spool.results_budget_bytes == 500
        put_results(spool, 6)
        before = spool.stats()
    with Spool.from_config(config) as spool:
        assert spool.stats() == before and before.dropped_results == 2
    with pytest.raises(ValueError):
        Spool(path=tmp_path / "t.db", results_budget_bytes=0)
