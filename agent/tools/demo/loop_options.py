"""What the loop demo runs: devices, capture rules, timing, and the v3 rollout's spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_ID = "loop-controller"
GROUP = "field"
BOARD = "x86_laptop"  # every device reports this bundled board (Neo target linux_x86_64)
TARGET = "linux_x86_64"
V1_LABEL, V3_LABEL = "digits-v1", "digits-v3"
BUCKET = "field-captures"
PREFIX = "loop"
# A latency breach needs green's p99 this far above blue's (devices and controller alike):
# a microsecond model's p99 on a busy two-core machine moves by milliseconds on its own; a
# slow build adds tens of milliseconds.
P99_EXCESS_US = 20_000.0


@dataclass
class LoopOptions:
    """Defaults fit three agents, the S3 server and the controller on 2 cores in well
    under two minutes."""

    out: Path
    models: Path
    devices: int = 3
    rate_hz: float = 60.0  # each device's paced inference rate
    metrics_interval_s: float = 0.5
    heartbeat_interval_s: float = 1.0
    low_confidence: float = 0.9  # capture rule: top-1 score below this
    sample_rate: float = 0.02  # capture rule: a random share of every inference
    batch_age_s: float = 1.0  # a batch is sealed (and uploaded) this soon
    min_captures: int = 300  # uploaded captures to wait for before retraining
    capture_timeout_s: float = 60.0
    shadow_s: float = 4.0
    bake_s: float = 3.0
    min_samples: int = 60  # green inferences per scope before a verdict
    min_agreement: float = 0.8  # green's agreement with the labels
    min_accuracy_gain: float = 0.1  # over blue, on the devices' labelled checks
    margin: float = 0.2  # v3 must beat v1 on the held-out shifted set by this much
    check_determinism: bool = True  # train v3 twice: the same weights both times
    broker: str | None = None  # mqtt://HOST:PORT; default: an embedded broker of its own
    thing_prefix: str = "field"
    step_timeout_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)  # more agent settings

    def things(self) -> list[str]:
        return [f"{self.thing_prefix}-{i + 1}" for i in range(self.devices)]


def capture_block(options: LoopOptions, endpoint_url: str) -> dict[str, Any]:
    """The devices' ``capture`` settings: low-confidence and sampled captures, sealed in
    seconds and uploaded to the local S3 server."""
    return {
        "enabled": True,
        "rules": {"sampleRate": options.sample_rate, "lowConfidence": options.low_confidence,
                  "disagreement": False, "errors": True, "requests": True, "seed": 7},
        "maxPerHour": 3600, "maxPerHourLimit": 3600,
        "batch": {"maxCaptures": 64, "maxAgeSeconds": options.batch_age_s},
        "upload": {"kind": "s3", "bucket": BUCKET, "prefix": PREFIX,
                   "endpointUrl": endpoint_url, "region": "us-east-1",
                   "bandwidthBytesPerSecond": 0, "retryInitialSeconds": 0.5,
                   "retryMaxSeconds": 2.0},
    }


def rollout_spec(options: LoopOptions, packages: dict[str, Any]) -> dict[str, Any]:
    """v3 by a shadow phase, then a canary of one device, then every device; promoted
    only because it agrees with the labels and beats v1's labelled accuracy."""
    return {
        "name": "loop-digits-v3", "model": V3_LABEL, "packages": packages,
        "groups": [GROUP],
        "shadow": {"duration_s": options.shadow_s, "sample_rate": 1.0},
        "strategy": {"type": "canary", "percent": 100.0 / options.devices,
                     "bake_s": options.bake_s},
        # Latency is judged too: green's p99 must stay under 3x blue's unless within
        # P99_EXCESS_US of it.
        "guardrails": {"min_samples": options.min_samples, "min_devices": 1,
                       "max_p99_ratio": 3.0, "min_p99_excess_us": P99_EXCESS_US,
                       "max_error_rate": 0.01,
                       "agreement_with": "labels", "min_agreement": options.min_agreement,
                       "min_accuracy_gain": options.min_accuracy_gain,
                       "install_failure_pct": 50},
        "timing": {"step_timeout_s": options.step_timeout_s, "stale_after_s": 30.0},
    }
