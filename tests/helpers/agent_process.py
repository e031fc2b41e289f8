"""Start ``edge-agent serve`` as a real process for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class AgentProcess:
    def __init__(self, *, thing: str, model: Path, state_dir: Path, broker_port: int | None,
                 log_path: Path, extra: list[str] | None = None,
                 metrics_interval: float = 0.2, heartbeat_interval: float = 0.5,
                 rate: float = 200) -> None:
        self.argv = [sys.executable, "-m", "agent.cli", "serve", "--thing", thing,
                     "--model", str(model), "--state-dir", str(state_dir),
                     "--metrics-interval", str(metrics_interval),
                     "--heartbeat-interval", str(heartbeat_interval), "--rate", str(rate),
                     "--api-port", "0",
                     *(["--broker", f"mqtt://127.0.0.1:{broker_port}"] if broker_port else []),
                     *(extra or [])]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
        return self

    def stop(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
