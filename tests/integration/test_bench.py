"""``edge-agent bench loop`` runs end to end and reports every key (figures are not asserted:
ratios on a shared machine are for the README, not for a pass/fail test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KEYS = {"ort_vs_naive", "ort_vs_iobinding", "dlr_vs_dlrmodel", "dlr_vs_bare", "dlr_vs_ort",
        "alloc_onnx", "alloc_dlr", "alloc_naive", "alloc_dlrmodel", "alloc_control_extra",
        "rss_mb_dlr", "rss_mb_onnx", "verified"}


def test_bench_loop_json(built_models: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "loop", "--json", "--models",
         str(built_models), "--rounds", "5", "--seconds", "0.05", "--rss-inferences", "500"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON line"
    result = json.loads(lines[0])
    assert set(result) >= KEYS
    assert result["verified"] > 0
    assert all(result[k] > 0 for k in ("ort_vs_naive", "dlr_vs_dlrmodel", "rss_mb_dlr"))
    # The allocation measure is deterministic enough to hold to its budgets.
    assert result["alloc_dlrmodel"] > result["alloc_dlr"]
    assert result["alloc_control_extra"] >= 100


def test_bench_swap_json(built_models: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "swap", "--json", "--models",
         str(built_models), "--flips", "10", "--rounds", "1", "--seconds", "0.2"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"failed_inferences", "swap_gap_vs_p99", "stage_p99_vs_steady",
            "shadow_overhead"} <= set(result)
    assert result["failed_inferences"] == 0, "no inference may fail across the flips"
    assert result["flips"] == 10
