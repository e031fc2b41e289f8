"""The README's "Bringing your own model" walk-through, executed: its ``bash`` blocks run in
order, as one script, in a folder holding SageMaker Neo outputs of a model of the shape the
section describes, against a real mosquitto. So the commands a user copies cannot rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from paths import REPO_ROOT

from agent.tools.brokers.mosquitto import MosquittoBroker

SECTION = "## Bringing your own model"
README_BROKER = "mqtt://127.0.0.1:1883"


def walkthrough() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end], flags=re.S)
    assert len(blocks) >= 6, "the walk-through lost its commands"
    return "\n".join(blocks)


def test_the_readme_walkthrough_runs(tmp_path: Path, neo_outputs: Path,
                                     shared_broker: MosquittoBroker) -> None:
    for name in ("model-ml_c5.tar.gz", "model-rasp4b.tar.gz"):
        shutil.copy(neo_outputs / "v1" / name, tmp_path / name)
    agent_cli = f"{shlex.quote(sys.executable)} -m agent.cli"
    script = walkthrough().replace(".venv/bin/edge-agent", agent_cli) \
        .replace("python3 ", f"{shlex.quote(sys.executable)} ") \
        .replace(README_BROKER, f"mqtt://127.0.0.1:{shared_broker.port}")
    assert "edge-agent" not in script.replace("-m agent.cli", ""), script
    prologue = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(["bash", "-c", prologue + script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=400)
    log = (tmp_path / "pi-1.log").read_text() if (tmp_path / "pi-1.log").exists() else ""
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n--- pi-1.log\n{log[-3000:]}"
    assert "sensor-v2-canary: succeeded" in out.stdout, out.stdout
    store = tmp_path / "state" / "pi-1" / "models"
    version_id = json.loads((store / "current").read_text())["version_id"]
    manifest = json.loads((store / "versions" / version_id / "manifest.json").read_text())
    assert manifest["label"] == "sensor-v2" and manifest["target"] == "rasp4b"
    components = tmp_path / "components"
    assert (components / "com.edgeinference.Model.sensor").is_dir(), \
        sorted(p.name for p in components.iterdir())
