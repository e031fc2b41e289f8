"""What the simulated fleet pretends to be: device profiles, how each model behaves, and
the injected breach. Latency is drawn per report window, not per inference: a window of
``n`` inferences is one multinomial draw over the real bucket edges (``log10x10-v1``),
so a report costs microseconds whatever the inference rate.
"""

from __future__ import annotations

import math
import platform
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.controller.errors import FleetError
from agent.core.histogram import BUCKET_EDGES_US
from agent.wire.messages import ProfileInfo
from agent.wire.topics import check_name


@dataclass(frozen=True, kw_only=True)
class FleetStats:
    devices: int
    online: int
    registers_sent: int
    heartbeats_sent: int
    reports_sent: int  # metrics messages
    acks_sent: int
    events_sent: int
    states_sent: int
    messages_sent: int  # all of the above
    commands_received: int  # command deliveries to online devices (accepted or not)
    commands_rejected: int  # answered with a rejected_message event
    commands_dropped_offline: int
    publish_confirmed: int
    publish_errors: int
    inflight: int
    max_lag_s: float  # how late the latest-running scheduled message went out


@dataclass(frozen=True, kw_only=True)
class BreachReport:
    """When the injected breach began serving and when the controller removed it."""

    devices_breached: int
    devices_cleared: int
    first_breach_at: float | None  # time.monotonic()
    last_cleared_at: float | None

    @property
    def breach_to_rollback_s(self) -> float | None:
        if self.first_breach_at is None or self.last_cleared_at is None \
                or self.devices_cleared < self.devices_breached:
            return None
        return self.last_cleared_at - self.first_breach_at


@dataclass(frozen=True, kw_only=True)
class DeviceView:
    thing: str
    groups: tuple[str, ...]
    online: bool
    boot_id: str
    seq: int
    state: dict[str, Any]


def assign_groups(things: Sequence[str], groups: Mapping[str, float] | Sequence[str],
                  rng: random.Random) -> list[tuple[str, ...]]:
    """A dict splits the fleet by share (exact counts, seeded order); a list puts every
    device in every group."""
    if not isinstance(groups, Mapping):
        names = tuple(check_name("group", g) for g in groups)
        return [names for _ in things]
    shares = {check_name("group", g): float(s) for g, s in groups.items()}
    if not shares or any(s < 0 for s in shares.values()) or sum(shares.values()) <= 0:
        raise SimulationError("group shares must be >= 0 with a positive sum")
    total = sum(shares.values())
    exact = {g: s / total * len(things) for g, s in shares.items()}
    counts = {g: int(v) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: exact[g] - counts[g], reverse=True):
        if sum(counts.values()) >= len(things):
            break
        counts[g] += 1
    order = list(range(len(things)))
    rng.shuffle(order)
    out: list[tuple[str, ...]] = [() for _ in things]
    it = iter(order)
    for g, n in counts.items():
        for _ in range(n):
            out[next(it)] = (g,)
    return out


class SimulationError(FleetError):
    """The simulated fleet was set up wrongly or could not reach its broker."""


@dataclass(frozen=True, kw_only=True)
class ModelBehaviour:
    """One model's figures on a reference device (speed factor 1.0).

    ``agreement`` scales blue's accuracy: green's ``correct_total / checked_total`` is
    ``blue_accuracy * agreement``, so 1.0 means "as good as blue"."""

    median_ms: float = 2.0
    sigma: float = 0.25  # lognormal shape: p99 is ~1.8x the median at 0.25
    error_rate: float = 0.0
    agreement: float = 1.0

    def __post_init__(self) -> None:
        if self.median_ms <= 0 or self.sigma <= 0:
            raise SimulationError("median_ms and sigma must be > 0")
        if not 0.0 <= self.error_rate <= 1.0 or not 0.0 <= self.agreement <= 1.0:
            raise SimulationError("error_rate and agreement must lie in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class BreachSpec:
    """Green ``label`` misbehaves as ``behaviour`` on the ``cohort``: a group name (e.g.
    ``"canary"``) or a set of thing names. Elsewhere it behaves as configured."""

    label: str
    cohort: str | frozenset[str] = "canary"
    behaviour: ModelBehaviour = field(default_factory=lambda: ModelBehaviour(
        median_ms=40.0, sigma=0.4, error_rate=0.05, agreement=0.6))

    def covers(self, thing: str, groups: tuple[str, ...]) -> bool:
        if isinstance(self.cohort, str):
            return self.cohort in groups
        return thing in self.cohort


@dataclass(frozen=True, kw_only=True)
class ProfileSpec:
    info: ProfileInfo
    speed: float  # latency multiplier against the reference device


def _profile(speed: float, **fields: object) -> ProfileSpec:
    machine = platform.machine() or "x86_64"
    return ProfileSpec(info=ProfileInfo.model_validate({"arch": machine, "emulated": True,
                                                       **fields}), speed=speed)


def known_profiles() -> Mapping[str, ProfileSpec]:
    """Synthetic profiles by Neo target (fields as ``edge-agent device --board`` gives)."""
    gib = 2**30
    return {
        "rasp4b": _profile(
            1.6, board="Raspberry Pi 4 Model B Rev 1.4", board_family="raspberry_pi",
            neo_target="rasp4b", reported_arch="aarch64", os_bits=64, cpu_count=4,
            mem_total_bytes=4 * gib, mem_available_bytes=3 * gib),
        "jetson_nano": _profile(
            1.0, board="NVIDIA Jetson Nano Developer Kit", board_family="jetson",
            neo_target="jetson_nano", reported_arch="aarch64", os_bits=64, cpu_count=4,
            mem_total_bytes=4 * gib, mem_available_bytes=3 * gib, l4t_release="R32.7.1",
            jetpack="4.6", accelerator="nvidia"),
        "linux_x86_64": _profile(
            0.5, board="generic x86_64", board_family="generic", neo_target="linux_x86_64",
            reported_arch="x86_64", os_bits=64, cpu_count=8, mem_total_bytes=16 * gib,
            mem_available_bytes=12 * gib),
    }


def resolve_profiles(names: tuple[str, ...]) -> tuple[ProfileSpec, ...]:
    known = known_profiles()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SimulationError(f"profiles must be among {', '.join(known)}; got {list(names)}")
    return tuple(known[n] for n in names)


class BucketModel:
    """Per-bucket probabilities of a behaviour at a device speed, cached by both."""

    _SPEED_STEPS = 64  # device speeds are rounded to 1/64 so the cache stays small

    def __init__(self) -> None:
        self._cache: dict[tuple[ModelBehaviour, int], np.ndarray] = {}
        self._log_edges = np.log(np.asarray(BUCKET_EDGES_US, dtype=np.float64))

    def probabilities(self, behaviour: ModelBehaviour, speed: float) -> np.ndarray:
        key = (behaviour, round(speed * self._SPEED_STEPS))
        probs = self._cache.get(key)
        if probs is None:
            mu = math.log(behaviour.median_ms * 1000.0 * key[1] / self._SPEED_STEPS)
            z = (self._log_edges - mu) / (behaviour.sigma * math.sqrt(2.0))
            cdf = 0.5 * (1.0 + np.array([math.erf(v) for v in z]))
            probs = np.diff(np.concatenate(([0.0], cdf, [1.0])))
            probs = np.clip(probs, 0.0, None)
            probs /= probs.sum()
            self._cache[key] = probs
        return probs
