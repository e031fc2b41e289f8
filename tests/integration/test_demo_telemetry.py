"""The README's demo segment for telemetry, shortened: it must end with every report
delivered exactly once and exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_telemetry(built_models: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "telemetry", "--models",
                          str(built_models), "--board", "rpi4_64", "--seconds", "4"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "every sequence number exactly once: True" in out.stdout
    assert "ack" in out.stdout and " ok" in out.stdout
    assert "Raspberry Pi 4" in out.stdout and "rasp4b" in out.stdout
