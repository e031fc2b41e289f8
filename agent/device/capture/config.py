"""Capture settings: the agent's ``capture`` block (camelCase keys in Greengrass).

Capture is off by default. Turned on, it keeps on the device copies of the inputs
(and the outputs of every variant that ran) of the inferences its rules pick, inside a
byte budget and a per-hour cap, and, when ``upload`` names a destination, sends them
off the device in batches: that is the only data that leaves the device because of
capture (see the README's capture section). ::

    capture:
      enabled: false
      rules:                       # which inferences are kept (any rule may pick one)
        sampleRate: 0.001          # a random share of all inferences
        lowConfidence: null        # top-1 score below this (e.g. 0.6)
        disagreement: true         # shadow test: green's top-1 differs from blue's
        driftAbove: null           # shadow test: mean |blue - green| above this
        errors: true               # a failed inference's input
        requests: true             # an API request that asks for it (capture=true)
        seed: null                 # the sampler's seed (null: from the OS)
      budgetBytes: 67108864        # on disk, oldest dropped first
      maxBudgetBytes: 268435456    # the most a capture command may set
      maxPerHour: 600              # captures stored per hour (the rest counted, dropped)
      maxPerHourLimit: 3600        # the most a capture command may set
      maxCaptureBytes: 4194304     # one capture's tensors; bigger ones are not kept
      queueSize: 64                # captures waiting for the writer thread
      batch: {maxCaptures: 64, maxBytes: 4194304, maxAgeSeconds: 300}
      upload:
        kind: none                 # none | s3 | folder
        bucket: null               # s3
        prefix: captures           # s3 key prefix / folder sub-path
        region: null
        endpointUrl: null          # an S3-compatible endpoint (default: AWS)
        folder: null               # folder: an air-gapped site's export folder
        bandwidthBytesPerSecond: 262144   # 0: unlimited
        retryInitialSeconds: 1
        retryMaxSeconds: 300
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from typing_extensions import Self

MIB = 1024**2
RULE_NAMES = ("sample", "low_confidence", "disagreement", "drift", "error", "request")

_CONFIG = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                     frozen=True)


class CaptureRules(BaseModel):
    """Which inferences are captured. An inference any rule picks is kept once, under the
    rule that picked it first: an application's ask (``request``); on a shadowed inference,
    ``disagreement`` then ``drift`` (the comparison is judged before the rest); then
    ``sample``, then ``low_confidence``. A failed inference can only be an ``error``."""

    model_config = _CONFIG

    sample_rate: float = Field(default=0.001, ge=0.0, le=1.0,
                               description="a random share of all inferences")
    low_confidence: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="keep inferences whose top-1 score is below this")
    disagreement: bool = Field(default=True, description="shadow test: keep inputs where "
                                                         "green's top-1 differs from blue's")
    drift_above: float | None = Field(
        default=None, ge=0.0, description="shadow test: keep inputs where mean |blue - "
                                          "green| over the scores is above this")
    errors: bool = Field(default=True, description="keep the input of a failed inference")
    requests: bool = Field(default=True, description="keep API requests that ask for it")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                             description="the random sampler's seed (null: from the OS)")


class BatchConfig(BaseModel):
    """When open captures are sealed into a batch (whichever limit comes first)."""

    model_config = _CONFIG

    max_captures: int = Field(default=64, ge=1, le=100_000)
    max_bytes: int = Field(default=4 * MIB, ge=1024)
    max_age_seconds: float = Field(default=300.0, gt=0)


class UploadConfig(BaseModel):
    """Where sealed batches go: nowhere (they stay on the device), S3, or a folder."""

    model_config = _CONFIG

    kind: Literal["none", "s3", "folder"] = "none"
    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    prefix: str = Field(default="captures", pattern=r"^[A-Za-z0-9_.\-/]{0,256}$")
    region: str | None = None
    endpoint_url: str | None = Field(
        default=None, pattern=r"^https?://\S+$",
        description="an S3-compatible endpoint instead of AWS's")
    folder: Path | None = None
    bandwidth_bytes_per_second: int = Field(default=256 * 1024, ge=0,
                                            description="0: unlimited")
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _destination(self) -> Self:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("upload kind s3 needs a bucket")
        if self.kind == "folder" and self.folder is None:
            raise ValueError("upload kind folder needs a folder")
        if self.prefix.startswith("/") or ".." in self.prefix.split("/"):
            raise ValueError("prefix must be relative and must not contain '..'")
        return self


class CaptureConfig(BaseModel):
    """The ``capture`` block (see the module's documentation)."""

    model_config = _CONFIG

    enabled: bool = False
    rules: CaptureRules = Field(default_factory=CaptureRules)
    budget_bytes: int = Field(default=64 * MIB, ge=64 * 1024)
    max_budget_bytes: int = Field(default=256 * MIB, ge=64 * 1024)
    max_per_hour: int = Field(default=600, ge=0)
    max_per_hour_limit: int = Field(default=3600, ge=0)
    max_capture_bytes: int = Field(default=4 * MIB, ge=1024)
    queue_size: int = Field(default=64, ge=1, le=65536)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    upload: UploadConfig = Field(default_factory=UploadConfig)

    @model_validator(mode="after")
    def _within_caps(self) -> Self:
        if self.budget_bytes > self.max_budget_bytes:
            raise ValueError(f"budgetBytes {self.budget_bytes} is over maxBudgetBytes "
                             f"{self.max_budget_bytes}")
        if self.max_per_hour > self.max_per_hour_limit:
            raise ValueError(f"maxPerHour {self.max_per_hour} is over maxPerHourLimit "
                             f"{self.max_per_hour_limit}")
        return self
