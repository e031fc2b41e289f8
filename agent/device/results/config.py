"""Settings of the result streams (the agent's ``results`` block).

Greengrass configuration writes them camelCase::

    results:
      enabled: true
      local: true                          # Greengrass local pub/sub (PublishToTopic)
      localTopic: edge/{iot:thingName}/results
      iot: false                           # AWS IoT Core, through the spool
      iotTopic: null                       # default: <topicPrefix>/<thing>/results
      shmRing: null                        # a name: a shared-memory ring /dev/shm/<name>
      shmSlots: 64
      requests: false                      # API requests' answers are published too
      topK: null                           # default: the model's postprocess.top_k, else 5
      rawOutputsMaxBytes: 256              # raw outputs ride along up to this size; 0: never
      spoolMaxBytes: 1048576               # results' own share of the spool
      handoffSlots: 64                     # inferences waiting for the publisher
      policy:
        everyN: 1                          # only every Nth inference
        onChange: false                    # only when the top-1 class changed
        minScore: null                     # only when the top-1 score is at least this
        maxPerSecond: 5                    # at most this many per second (null: no cap)

``{iot:thingName}`` (or ``{thing}``) in a topic stands for the device's thing name; the
agent recipe's ``accessControl`` grants ``aws.greengrass#PublishToTopic`` on exactly the
default local topic, so a topic set here needs its grant changed with it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from agent.wire.topics import is_valid_topic

THING_MARKS = ("{iot:thingName}", "{thing}")
DEFAULT_LOCAL_TOPIC = "edge/{iot:thingName}/results"


def resolve_topic(template: str, thing: str) -> str:
    """``template`` with its thing-name placeholders replaced by ``thing``."""
    for mark in THING_MARKS:
        template = template.replace(mark, thing)
    return template


def _check_topic(topic: str | None) -> str | None:
    if topic is None:
        return None
    resolved = resolve_topic(topic, "thing")
    if not is_valid_topic(resolved) or resolved.startswith("$") or "{" in resolved:
        raise ValueError(f"{topic!r} is not a topic one can publish to (no wildcards, no "
                         "leading '$', placeholders only {iot:thingName} or {thing})")
    return topic


class PolicyConfig(BaseModel):
    """Which inferences become published results: every rule set must let it through."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              frozen=True)

    every_n: int = Field(default=1, ge=1, description="only every Nth inference")
    on_change: bool = Field(default=False, description="only when the top-1 class changed "
                                                       "since the last published result")
    min_score: float | None = Field(default=None, description="only when the top-1 score "
                                                              "is at least this")
    max_per_second: float | None = Field(default=5.0, gt=0,
                                         description="at most this many results per second")


class ResultsConfig(BaseModel):
    """Where results go and which ones (see the module's documentation)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              frozen=True)

    enabled: bool = Field(default=True, description="false: no result stream at all")
    local: bool = Field(default=True, description="publish on Greengrass local pub/sub "
                                                  "(under a nucleus)")
    local_topic: str = DEFAULT_LOCAL_TOPIC
    iot: bool = Field(default=False, description="publish to AWS IoT Core through the spool")
    iot_topic: str | None = Field(default=None,
                                  description="default: <topicPrefix>/<thing>/results")
    shm_ring: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                                 description="a shared-memory result ring of this name")
    shm_slots: int = Field(default=64, ge=2, le=65536)
    requests: bool = Field(default=False,
                           description="also publish the answers to API requests")
    top_k: int | None = Field(default=None, ge=1)
    raw_outputs_max_bytes: int = Field(default=256, ge=0, le=16 * 1024)
    spool_max_bytes: int = Field(default=1024 * 1024, gt=0)
    handoff_slots: int = Field(default=64, ge=2, le=65536)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @field_validator("local_topic", "iot_topic")
    @classmethod
    def _topics(cls, topic: str | None) -> str | None:
        return _check_topic(topic)

    @property
    def active(self) -> bool:
        """Whether anything would be published."""
        return self.enabled and (self.local or self.iot or self.shm_ring is not None)
