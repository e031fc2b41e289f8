"""The DLR path never touches the network, even where dlr's phone-home opt-out is missing.

The control shows what the ``dlr`` package itself does in the same situation. In
1.6.0 its import already opts the installation in (it writes
``{"enable_phone_home": true}``) and builds the client, and each
``DLRModel(...)`` then posts to api.neo-dlr.amazonaws.com (the import's own
"runtime loaded" message is skipped by an inverted check in that release).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model

PROBE = r"""
import json, sys
events = []

def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        events.append([event, repr(args)[:120]])

sys.addaudithook(hook)
mode, artifact = sys.argv[1], sys.argv[2]
if mode == "agent":
    from pathlib import Path
    import numpy as np
    from agent.device.runtime.dlr.backend import DlrBackend
    backend = DlrBackend(artifact_dir=Path(artifact))
    x = np.zeros((1, 64), np.float32)
    (scores,) = backend.bind([x])
    for i in range(100):
        x[0, i % 64] = 1.0
        backend.run()
    assert scores.shape == (1, 10) and abs(float(scores.sum()) - 1.0) < 1e-4
else:
    try:
        import dlr  # the control: the package's own load path

        dlr.DLRModel(artifact, "cpu", 0)
    except Exception as err:  # the network is absent here; the attempt is what counts
        events.append(["error", repr(err)[:120]])
print(json.dumps({"events": events, "dlr_imported": "dlr" in sys.modules}))
"""


def _dlr_copy_without_optout(root: Path) -> Path:
    spec = importlib.util.find_spec("dlr")
    if spec is None or spec.origin is None:
        pytest.skip("the dlr package is not installed (its wheel ships libdlr for x86_64 only)")
    pkgs = root / "pkgs"
    shutil.copytree(Path(spec.origin).parent, pkgs / "dlr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkgs / "dlr" / "counter" / "ccm_config.json").unlink(missing_ok=True)
    return pkgs


def _probe(pkgs: Path, mode: str, artifact: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkgs), os.getcwd()])}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(artifact)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _network(events: object) -> list[list[str]]:
    assert isinstance(events, list)
    return [e for e in events if e[0] in ("socket.getaddrinfo", "socket.connect")]


def test_dlr_load_and_100_runs_make_no_network_call(tmp_path: Path, built_models: Path) -> None:
    artifact = resolve_model(built_models / "digits-v1", backend="dlr",
                             profile=detect_profile()).load_dir

    control_pkgs = _dlr_copy_without_optout(tmp_path / "control")
    control = _probe(control_pkgs, "control", artifact)
    assert _network(control["events"]), f"the control saw no network attempt: {control}"
    written = json.loads((control_pkgs / "dlr" / "counter" / "ccm_config.json").read_text())
    assert written.get("enable_phone_home") is True

    agent_pkgs = _dlr_copy_without_optout(tmp_path / "agent")
    result = _probe(agent_pkgs, "agent", artifact)
    assert _network(result["events"]) == [], f"the agent's DLR path touched the network: {result}"
    assert result["dlr_imported"] is False
    assert not (agent_pkgs / "dlr" / "counter" / "ccm_config.json").exists()
