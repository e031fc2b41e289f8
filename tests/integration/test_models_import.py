"""``edge-agent models import`` as a user runs it on SageMaker Neo's S3 outputs, then
``edge-agent run`` on the result: real subprocesses, the real libdlr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from foreign_neo import neo_tarball


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_import_neo_outputs_then_run_on_an_emulated_board(tmp_path: Path) -> None:
    host = neo_tarball(tmp_path / "s3", "fusion", "ml_c5")
    board = neo_tarball(tmp_path / "s3", "fusion", "rasp4b", arch="aarch64")
    out = _cli("models", "import", str(host), str(board), "--out", str(tmp_path / "fusion"),
               "--name", "fusion", "--emulate", "rasp4b", "--emulate", "jetson_nano", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted(a["path"] for a in doc["artifacts"]) == [
        "dlr/jetson_nano-x86_64", "dlr/linux_x86_64-x86_64", "dlr/rasp4b-aarch64",
        "dlr/rasp4b-x86_64"]
    assert doc["golden"]["source"] == "dlr-host"
    for board_name in ("rpi4_64", "jetson_nano_r32"):
        run = _cli("run", "--model", str(tmp_path / "fusion"), "--board", board_name,
                   "--source", "random", "--count", "100", "--json")
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert (summary["inferences"], summary["errors"]) == (100, 0)
    again = _cli("models", "import", str(host), "--out", str(tmp_path / "fusion"),
                 "--name", "fusion")
    assert again.returncode == 2 and "ImportOutputError" in again.stderr
