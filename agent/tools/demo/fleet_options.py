"""What the fleet demo runs: devices, timing, broker, and the three rollouts' specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("kitchen", "garage")
# Reported profiles, round-robin: each group gets a mix of hardware classes.
BOARDS = ("rpi4_64", "jetson_nano_r32", "x86_laptop")
BOARD_TARGETS = {"rpi4_64": "rasp4b", "jetson_nano_r32": "jetson_nano",
                 "x86_laptop": "linux_x86_64"}
AGENT = "com.edgeinference.Agent"
MODEL = "com.edgeinference.Model.digits"
KEY_ID = "demo-controller"
# The rollouts' candidates, by the label their packages carry (``<name>-v<package
# version>[-<variant>]``): the bad builds of v1 are packaged as versions 3 and 4.
GOOD_LABEL, SLOW_LABEL, WRONG_LABEL = "digits-v2", "digits-v3-slow", "digits-v4-wrong"


@dataclass(frozen=True)
class DemoDevice:
    thing: str
    group: str
    board: str

    @property
    def target(self) -> str:
        return BOARD_TARGETS[self.board]


@dataclass
class DemoOptions:
    """Defaults fit 8 agents and the controller on 2 cores in under 5 minutes."""

    out: Path
    models: Path
    devices: int = 8
    rate_hz: float = 40.0  # each agent's paced inference rate
    metrics_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    bake_s: float = 6.0  # canary bake and linear step watch
    shadow_s: float = 5.0
    min_samples: int = 60  # green inferences per class / group before a verdict
    broker: str | None = None  # mqtt://HOST:PORT; default: a broker the demo starts
    mosquitto: bool = False  # start mosquitto rather than the embedded broker
    endpoint: str | None = None  # AWS IoT Core, mutual TLS
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    thing_prefix: str = "demo"
    step_timeout_s: float = 90.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slow_min_samples(self) -> int:
        """Enough samples of the slow build that one canary device can go offline while
        it serves it (on trial: the trial is the rollout's until it confirms) first."""
        return int(2 * self.rate_hz * 4.0)

    def fleet(self) -> list[DemoDevice]:
        return [DemoDevice(thing=f"{self.thing_prefix}-{GROUPS[i % 2]}-{i // 2 + 1}",
                           group=GROUPS[i % 2], board=BOARDS[(i // 2 + i % 2) % len(BOARDS)])
                for i in range(self.devices)]


def _guardrails(options: DemoOptions, **changes: Any) -> dict[str, Any]:
    rails: dict[str, Any] = {"min_samples": options.min_samples, "min_devices": 1,
                             "max_p99_ratio": 3.0, "max_error_rate": 0.01,
                             "min_agreement": 0.9, "install_failure_pct": 50}
    rails.update(changes)
    return rails


def rollout_specs(options: DemoOptions, packages: dict[str, dict[str, Any]]) -> list[
        dict[str, Any]]:
    """The three rollouts, in order; ``packages`` maps a model label to its per-target
    package entries (url, sha256, version)."""
    timing = {"step_timeout_s": options.step_timeout_s, "stale_after_s": 30.0}
    groups = list(GROUPS)
    return [
        {"name": "r1-digits-v2", "model": GOOD_LABEL, "packages": packages[GOOD_LABEL],
         "groups": groups,
         "strategy": {"type": "canary", "percent": 25, "bake_s": options.bake_s,
                      "then": "linear", "linear_steps": 2},
         "guardrails": _guardrails(options), "timing": timing},
        {"name": "r2-digits-slow", "model": SLOW_LABEL,
         "packages": packages[SLOW_LABEL], "groups": groups,
         "strategy": {"type": "canary", "percent": 25, "bake_s": options.bake_s * 3},
         "guardrails": _guardrails(options, min_samples=options.slow_min_samples),
         "timing": timing},
        {"name": "r3-digits-wrong", "model": WRONG_LABEL,
         "packages": packages[WRONG_LABEL], "groups": groups,
         "shadow": {"duration_s": options.shadow_s, "sample_rate": 1.0},
         "strategy": {"type": "canary", "percent": 25, "bake_s": options.bake_s},
         "guardrails": _guardrails(options), "timing": timing},
    ]
