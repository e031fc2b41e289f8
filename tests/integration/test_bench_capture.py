"""``edge-agent bench capture`` runs end to end (a real loop on libdlr, a real capture
store and writer in a temporary folder) and reports every key with sane values; the
ratios are not held to their goal here (a shared two-core machine is too noisy), only to
being measured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

TOP_KEYS = {"loop_ratio", "goal_ratio", "loop_writing_ratio", "loop_low_confidence_ratio",
            "store_captures_per_s", "store_mb_per_s", "loop", "store", "rounds",
            "seconds_per_loop", "disk", "machine"}
PLANS = {"off", "on", "writing", "low_confidence"}


def test_bench_capture_json(built_models: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "capture", "--json", "--models",
         str(built_models), "--rounds", "3", "--seconds", "0.15", "--store-seconds", "0.3",
         "--fill-timeout", "1", "--disk", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON line"
    result = json.loads(lines[0])
    assert set(result) >= TOP_KEYS, sorted(TOP_KEYS - set(result))
    for key in ("loop_ratio", "loop_writing_ratio", "loop_low_confidence_ratio"):
        assert math.isfinite(result[key]) and 0.05 < result[key] < 5, (key, result[key])
    loop = result["loop"]
    assert set(loop["throughput_per_s"]) == PLANS
    assert all(rate > 1000 for rate in loop["throughput_per_s"].values()), loop
    assert loop["default_rules"]["sampleRate"] == 0.001 and loop["default_max_per_hour"] == 600
    captures = loop["captures"]
    # the default rules sample the loop: captures were made and written to disk
    assert captures["on"]["fired"].get("sample", 0) > 0 and captures["on"]["stored"] > 0
    assert captures["writing"]["stored"] > 0 and captures["writing"]["dropped_rate"] == 0
    assert loop["writing_captures_per_s"] > 0
    for name in ("digits", "image_224"):
        store = result["store"][name]
        assert store["captures"] > 0 and store["captures_per_s"] > 0, store
        assert store["file_bytes"] > store["capture_bytes"] > 0
    assert result["store_mb_per_s"] > result["store"]["digits"]["mb_per_s"]
    assert result["disk"] == str(tmp_path)
    assert not any(tmp_path.iterdir()), "the bench leaves nothing behind"
