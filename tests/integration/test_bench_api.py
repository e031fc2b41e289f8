"""``edge-agent bench api`` runs end to end (a server process with the agent's API for
digits v1 and vision-v1, echo servers, the real tritonclient and agent.client) and reports
every ratio as a positive finite number. The goals are not asserted: ratios on a shared
machine are for the README; what is deterministic is (no tensor byte copied on the
shared-memory paths, every checked answer right)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

RATIOS = ("native_vs_inproc", "http_shm_vs_inproc", "native_vs_echo", "http_vs_echo",
          "large_vs_small_overhead", "large_vs_small_overhead_native", "json_vs_shm",
          "results_stream_overhead")
PATHS = ("inproc", "native_small", "native_large", "http_shm_small", "http_shm_large",
         "http_json_small", "http_echo", "native_echo")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_api_json(built_models: Path, vision_model: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "api", "--json", "--models",
         str(built_models), "--vision", str(vision_model), "--rounds", "1", "--seconds",
         "0.2", "--alloc-requests", "20", "--stream-seconds", "0.1"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON line"
    result = json.loads(lines[0])
    bad = {key: result.get(key) for key in RATIOS if not _positive(result.get(key))}
    assert not bad, f"ratios that are not positive finite numbers: {bad}"
    assert result["copied_bytes_per_request"] == 0, "the shared-memory paths copy nothing"
    assert result["shm_requests"] > 0 and result["verified"] > 0
    assert set(result["us_per_request"]) == set(PATHS)
    assert all(_positive(v) for v in result["us_per_request"].values())
    alloc = result["alloc_bytes_per_request"]
    assert set(alloc) == {"native_small", "native_large", "http_shm_small", "http_shm_large"}
    # The echoes carry as many bytes as the requests they stand for.
    sizes = result["message_bytes"]
    assert sizes["http_echo"][0] == sizes["http_shm_small"][0]
    assert sizes["native_echo"][0] == sizes["native_small"][0]
    assert result["backend"] == "dlr" and result["machine"]


def test_bench_api_bad_options(built_models: Path, vision_model: Path,
                               tmp_path: Path) -> None:
    base = [sys.executable, "-m", "agent.cli", "bench", "api", "--models", str(built_models)]
    refused = subprocess.run([*base, "--vision", str(vision_model), "--rounds", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--rounds" in refused.stderr
    missing = subprocess.run([*base, "--vision", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no model.json" in missing.stderr
    no_digits = subprocess.run([sys.executable, "-m", "agent.cli", "bench", "api", "--models",
                                str(tmp_path), "--vision", str(vision_model)],
                               capture_output=True, text=True, timeout=60)
    assert no_digits.returncode != 0 and "no digits-v1/model.json" in no_digits.stderr
