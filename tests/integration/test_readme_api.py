"""The README's "Applications get predictions" examples, executed: a real ``edge-agent
serve`` with no loop (``--source api``) serves digits v1, and the section's ``python``
blocks run in order, as one script, against it (the unchanged tritonclient with JSON,
binary and shared-memory tensors, then ``agent.client``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from paths import REPO_ROOT

SECTION = "## Applications get predictions"


def examples() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    assert len(blocks) >= 2, "the section lost its examples"
    return "\n".join(blocks)


def test_the_readme_api_examples_run(tmp_path: Path, built_models: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--thing", "readme-api",
         "--model", str((built_models / "digits-v1").resolve()), "--source", "api",
         "--api-port", "0",
         "--state-dir", "state"], cwd=tmp_path, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        endpoints = tmp_path / "state" / "endpoints.json"
        deadline = time.monotonic() + 60
        while not endpoints.exists() and time.monotonic() < deadline:
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            time.sleep(0.1)
        assert {"http", "native"} <= set(json.loads(endpoints.read_text()))
        script = tmp_path / "examples.py"
        script.write_text(examples())
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
        lines = out.stdout.splitlines()
        assert lines[0].split()[:2] == ["digits-v1", "blue"], out.stdout
        assert lines[1].startswith("blue digits-v1 "), out.stdout
    finally:
        agent.terminate()
        agent.wait(30)
        log.close()
    assert not endpoints.exists()
