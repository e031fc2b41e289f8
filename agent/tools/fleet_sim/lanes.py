"""What every simulated device shares (:class:`SimContext`) and what each keeps per variant
it serves (:class:`Lane`), with the messages a device hands its fleet (:data:`Out`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.histogram import BUCKET_EDGES_US
from agent.tools.fleet_sim.model import BreachSpec, BucketModel, ModelBehaviour
from agent.wire.messages import Outcome
from agent.wire.signing import TrustStore

Out = tuple[str, bytes]  # (channel, payload)
Answer = tuple[Outcome, str, dict[str, Any]]  # an ack's outcome, reason and data
BUCKETS = len(BUCKET_EDGES_US) + 1


@dataclass(kw_only=True)
class SimContext:
    """What every device shares: randomness, the behaviour tables, the trust store."""

    rng: np.random.Generator
    ids: random.Random
    buckets: BucketModel
    blue: ModelBehaviour
    green: Mapping[str, ModelBehaviour]
    breach: BreachSpec | None
    blue_accuracy: float
    inference_rate_hz: float
    trial_s: float
    trust: TrustStore
    agent_version: str
    wall_clock: Callable[[], float] = time.time

    def new_id(self) -> str:
        return f"{self.ids.getrandbits(128):032x}"


@dataclass(kw_only=True)
class Lane:
    """One variant's cumulative counters within a series."""

    label: str
    series: int
    counts: np.ndarray
    errors: int = 0
    checked: int = 0
    correct: int = 0
    reported_counts: np.ndarray | None = None  # at the previous report of this series
    reported_errors: int = 0
    reported_at: float = 0.0


def new_lane(label: str, series: int, now: float) -> Lane:
    return Lane(label=label, series=series, counts=np.zeros(BUCKETS, dtype=np.int64),
                reported_at=now)


def carried_lane(lane: Lane, series: int) -> Lane:
    """``lane``'s counters under a new series, for a model that changes role (promoted, or
    back to blue after a rollback): the counts carry over, and with no previous report in
    the new series its next report's window is everything counted so far."""
    return Lane(label=lane.label, series=series, counts=lane.counts, errors=lane.errors,
                checked=lane.checked, correct=lane.correct, reported_at=lane.reported_at)
