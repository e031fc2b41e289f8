"""What the spool stores and reports: priorities, entries, stats, its config and errors.

Errors::

    AgentError
    └── SpoolError           the spool database failed
        └── SpoolFullError   the disk (or the configured page cap) is full
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.core.errors import AgentError


class SpoolError(AgentError):
    """The spool database could not be read or written."""


class SpoolFullError(SpoolError):
    """No space left for the spool (disk full, or the configured page cap reached)."""


class Priority(str, Enum):
    CRITICAL = "critical"  # acks, state, register, events, heartbeats: never dropped
    METRICS = "metrics"  # periodic reports: the oldest go first when over budget
    RESULTS = "results"  # prediction results: a cap of their own, and dropped before metrics


class SpoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sqlite"] = "sqlite"
    path: Path
    budget_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_db_bytes: int | None = Field(default=None, gt=0)
    results_budget_bytes: int | None = Field(default=None, gt=0)
    wal_max_bytes: int = Field(
        default=1024 * 1024, gt=0,
        description="the write-ahead log's cap: checkpointed at half, truncated past it")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: int
    topic: str
    payload: bytes
    qos: int
    priority: Priority
    size: int
    enqueued_at: float  # unix time, informative only (a Pi's clock may be wrong)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    count: int
    bytes: int
    critical_bytes: int
    metrics_bytes: int
    budget_bytes: int
    dropped_metrics: int
    results_bytes: int = 0
    dropped_results: int = 0

    @property
    def over_budget(self) -> bool:
        return self.bytes > self.budget_bytes
