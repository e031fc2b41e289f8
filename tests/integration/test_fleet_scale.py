"""`edge-agent fleet simulate` with 500 devices: the real controller through a real broker
ingests every report, and rolls a canary with a latency breach back fleet-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.tools.brokers.mosquitto import find_mosquitto


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed "
                    "(apt-get install mosquitto); the embedded broker is too slow for this")
def test_simulated_fleet_canary_breach_is_rolled_back() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fleet", "simulate", "--embedded", "--devices", "500",
         "--report-interval", "2", "--eval-interval", "2", "--bake", "10", "--json"],
        capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stdout + out.stderr
    assert result["status"] == "rolled_back"
    assert result["reports_ingested"] == result["reports_sent"] > 0
    assert result["rolled_back_devices"] >= 25  # the 5 % canary of 500
    assert result["breach_to_rollback_s"] is not None
