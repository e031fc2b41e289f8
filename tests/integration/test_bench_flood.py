"""``edge-agent bench flood`` runs end to end (a real agent, a real broker, a real flood)
and reports every key; the figures are not held to their goals here (a shared two-core
machine is too noisy for that), only to being measured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

DEVICE_KEYS = {"inference_unloaded_per_s", "inference_flood_per_s", "throughput_ratio",
               "flood_rate_per_s", "flood_messages", "command_acked_s", "rss_growth_mib",
               "rejection_events", "summary_events", "suppressed", "rounds", "broker",
               "seconds_per_phase"}
INGEST_KEYS = {"legit_sent", "legit_ingested", "flood_sent", "flood_rejected"}


def test_bench_flood_json(built_models: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "flood", "--json", "--models",
         str(built_models), "--seconds", "1", "--rounds", "1", "--legit-devices", "3"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON line"
    result = json.loads(lines[0])
    assert set(result) >= DEVICE_KEYS | {f"ingest_{key}" for key in INGEST_KEYS}
    ratio = result["throughput_ratio"]
    assert math.isfinite(ratio) and ratio > 0
    assert result["inference_unloaded_per_s"] > 0 and result["flood_messages"] > 500
    assert result["flood_rate_per_s"] > 1000, "the flood ran near its 2,000 msg/s"
    assert result["rejection_events"] <= 40, "rejections are rate limited in the uplink"
    assert result["ingest_legit_sent"] > 0 and 0 <= result["ingest_ratio"] <= 1


def test_the_controller_ingest_measure_reports_its_keys() -> None:
    from agent.tools.bench.flood_ingest import measure_ingest

    result = measure_ingest(seconds=0.5, legit_devices=2, flood_rate=200.0)
    assert set(result) >= INGEST_KEYS
    assert result["legit_sent"] > 0 and result["flood_sent"] > 0
