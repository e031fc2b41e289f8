"""The loop demo's field devices: one ``edge-agent serve`` process each, on one broker.

Each is a real agent process (direct MQTT, as a device without a nucleus runs it) that
installs the signed v1 package through staging, replays its slice of the field's
capture stream with labels, captures by its rules and uploads batches to the S3 server
with the credentials in its environment (what the Token Exchange Service hands a
component under Greengrass).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from agent.tools.demo.loop_options import BOARD, GROUP, KEY_ID, P99_EXCESS_US, LoopOptions
from agent.wire.messages import CaptureMetrics, Metrics, UpMessage


class FieldDevice:
    """``start`` runs the agent; ``stop`` ends it with SIGTERM (SIGKILL after a grace)."""

    def __init__(self, thing: str, *, root: Path, config: Mapping[str, Any],
                 broker: str, env: Mapping[str, str]) -> None:
        self.thing, self.root, self.broker = thing, root, broker
        self.config = dict(config)
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "agent.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.json"
        config.write_text(json.dumps(self.config, indent=2))
        argv = [sys.executable, "-m", "agent.cli", "serve", "--config", str(config),
                "--thing", self.thing, "--broker", self.broker,
                "--state-dir", str(self.root / "state")]
        env = {k: v for k, v in os.environ.items()
               if k not in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID")}
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=self.root)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return self.exit_code
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            self.exit_code = process.wait(10)
        return self.exit_code

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def device_config(options: LoopOptions, *, stream: Path, package: Path, public_key: str,
                  capture: Mapping[str, Any]) -> dict[str, Any]:
    return {"thingGroups": [GROUP], "board": BOARD, "rateHz": options.rate_hz,
            "source": "testset", "sourcePath": str(stream.resolve()),
            "initialPackage": str(package.resolve()),
            "metricsIntervalSeconds": options.metrics_interval_s,
            "heartbeatIntervalSeconds": options.heartbeat_interval_s,
            "trustedKeys": {KEY_ID: public_key},
            # The device's own shadow guardrail compares green's top-1 with blue's, which a
            # better model fails on purpose: here the controller judges against the labels.
            # Its latency guardrail counts only a real slowdown (as the rollout's does: a
            # microsecond model's p99 on a busy machine moves by milliseconds on its own).
            "guardrails": {"minSamples": options.min_samples, "minAgreement": None,
                           "minP99ExcessUs": P99_EXCESS_US},
            "packageDirs": [str(package.parent.resolve())],
            "server": {"enabled": False}, "results": {"enabled": False},
            "capture": dict(capture), **options.extra}


@contextlib.contextmanager
def field_devices(options: LoopOptions, *, streams: list[Path], package: Path,
                  public_key: str, capture: Mapping[str, Any], broker: str,
                  env: Mapping[str, str]) -> Iterator[dict[str, FieldDevice]]:
    """Start one device per stream slice; every one is stopped on the way out."""
    devices = {thing: FieldDevice(thing, root=options.out / "devices" / thing, broker=broker,
                                  env=env, config=device_config(
                                      options, stream=stream, package=package,
                                      public_key=public_key, capture=capture))
               for thing, stream in zip(options.things(), streams, strict=True)}
    try:
        for device in devices.values():
            device.start()
        yield devices
    finally:
        for device in devices.values():
            with contextlib.suppress(Exception):
                device.stop()


class FieldWatch:
    """What the devices report, as the controller takes it in (its ``on_ingest`` hook):
    every variant's inferences and the latest capture counters of each device."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inferences: dict[tuple[str, str, str, str, int], int] = {}
        self.capture: dict[str, CaptureMetrics] = {}

    def observe(self, message: UpMessage) -> None:
        if not isinstance(message, Metrics):
            return
        with self._lock:
            for variant, vm in message.variants.items():
                key = (message.thing, message.boot_id, variant, vm.model_version, vm.series)
                self._inferences[key] = max(self._inferences.get(key, 0), vm.inferences_total)
            if message.capture is not None:
                self.capture[message.thing] = message.capture

    def inferences(self, model: str | None = None) -> int:
        """Inferences run on every device (of ``model`` only, when given)."""
        with self._lock:
            return sum(n for key, n in self._inferences.items()
                       if model is None or key[3] == model)

    def capture_totals(self) -> dict[str, int]:
        """The capture counters summed over the devices, and picks by rule."""
        with self._lock:
            reports = list(self.capture.values())
        totals: dict[str, int] = {}
        for name in ("stored", "dropped_rate", "dropped_budget", "dropped_queue",
                     "batches_uploaded", "uploaded_captures", "upload_failures",
                     "bytes_uploaded"):
            totals[name] = sum(int(getattr(r, name)) for r in reports)
        for report in reports:
            for rule, count in report.fired.items():
                totals[f"fired_{rule}"] = totals.get(f"fired_{rule}", 0) + count
        return totals


def child_pids() -> set[int]:
    """This process's live descendants (empty where psutil is missing)."""
    try:
        import psutil
    except ImportError:
        return set()
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
    return found


def check_stopped(pids: list[int], before: set[int]) -> dict[str, Any]:
    """Whether every process the demo started (``pids``) is gone, and no child of this
    process is left that was not there before it started (``before``)."""
    alive = []
    for pid in pids:
        if not pid:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    children = sorted(child_pids() - before)
    return {"all_stopped": not alive and not children, "alive": alive, "children": children}
