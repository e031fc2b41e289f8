"""Versioned schemas of every message between a device and the fleet controller.

Every message is a JSON object with ``v`` (schema version, now 1) and ``type``
(which schema). Messages a device sends (up) share an envelope::

    id       uuid4 hex, unique per message (replays are recognised by it)
    thing    the sender's IoT thing name
    seq      per-device sequence, increasing across restarts (see sequence.py)
    sent_at  Unix ms by the device's clock: informational only (a Pi has no RTC)

    register   groups, device profile, agent version, boot id, model per variant, the
               runtime it serves with (``backend``: dlr or onnx; absent from older agents,
               which run dlr): the controller sends an onnx device the spec's ONNX package
    heartbeat  uptime, boot id, model per variant, groups, profile and backend (IPC has no
               MQTT last will; a controller that missed the register learns the device here)
    metrics    per-variant counts and latency buckets (cumulative per boot), health,
               and the result stream's published/suppressed counts (ResultCounts)
    event      guardrail breach, local rollback, rejected message, spool drop, ...
    state      models, variant mode, weights, rollout, trial; answers ``status``
    ack        the outcome of a command, with machine-readable ``data`` (see Ack)

Commands (down) are in :mod:`agent.wire.commands`. Latency travels as
cumulative counts on the loop's fixed, versioned bucket edges, so the
controller diffs consecutive reports and merges devices exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from agent.core.histogram import edges_for
from agent.wire.commands import Command, Weights
from agent.wire.fields import (
    Count,
    GroupName,
    MessageId,
    Name,
    Schema,
    Seq,
    Text,
    ThingName,
    UnixMillis,
    Variant,
    VariantMode,
    new_message_id,
)
from agent.wire.results import ResultCounts

ModelVersions = dict[Variant, Name]  # variant -> loaded model version (absent: none loaded)
NonNegative = Annotated[float, Field(ge=0.0)]
ShortText = Annotated[str, Field(min_length=1, max_length=128)]
DataKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
Scalar = Text | int | float | bool | None

EventKind = Literal[
    "guardrail_breach",  # a local guardrail broke (data: metric, value, threshold)
    "local_rollback",  # the device went back to blue on its own, no cloud round trip
    "rejected_message",  # a message failed to decode, verify or pass the replay guard
    "spool_dropped",  # the offline spool was full and dropped messages (data: count)
    "stage_failed",  # a package could not be fetched, verified or loaded
    "model_activated",  # a model version started serving
    "update_deferred",  # a Greengrass deployment waits for a rollout (data: deployment_id)
    "model_component_unused",  # a newer first-model package than the model served: roll it out
    "server_unavailable",  # a listener of the local inference API did not start
    "agent_error",  # anything else the operator should see
    "capture_rules_rejected",  # a capture command refused (data: code, reason)
]
Outcome = Literal["ok", "rejected", "failed"]


class UpMessage(Schema):
    """The envelope of every message a device sends."""

    channel: ClassVar[str]  # the topic channel (``Topics.up(channel)``)

    v: Literal[1] = 1
    type: str
    id: MessageId = Field(default_factory=new_message_id)
    thing: ThingName
    seq: Seq
    sent_at: UnixMillis


class ProfileInfo(Schema):
    """``DeviceProfile.to_dict()``: what the cloud knows of the device's hardware."""

    board: ShortText
    board_family: Literal["raspberry_pi", "jetson", "generic"]
    neo_target: Name
    arch: Name  # the machine the agent runs on
    reported_arch: Name  # the board's architecture (differs from arch only when emulated)
    emulated: bool
    os_bits: Literal[32, 64]
    cpu_count: Annotated[int, Field(ge=1, le=4096)]
    mem_total_bytes: Count
    mem_available_bytes: Count
    l4t_release: Name | None = None
    jetpack: Name | None = None
    accelerator: Name | None = None


class Register(UpMessage):
    channel = "register"
    type: Literal["register"] = "register"
    groups: Annotated[list[GroupName], Field(max_length=64)]
    profile: ProfileInfo
    agent_version: ShortText
    boot_id: MessageId
    models: ModelVersions
    backend: Name | None = None  # optional for older agents (they run dlr)


class Heartbeat(UpMessage):
    channel = "heartbeat"
    type: Literal["heartbeat"] = "heartbeat"
    uptime_s: NonNegative  # by the monotonic clock since this boot_id began
    boot_id: MessageId
    models: ModelVersions
    # Optional for older agents; the agent always fills them.
    groups: Annotated[list[GroupName], Field(max_length=64)] | None = None
    profile: ProfileInfo | None = None
    backend: Name | None = None


class Buckets(Schema):
    """Latency counts on the fixed bucket edges named by ``version``; one count per
    edge plus the overflow bucket."""

    version: ShortText
    counts: Annotated[list[Count], Field(max_length=1024)]

    @model_validator(mode="after")
    def _counts_fit_edges(self) -> Self:
        edges = edges_for(self.version)  # ValueError names an unknown version
        if len(self.counts) != len(edges) + 1:
            raise ValueError(
                f"{self.version} needs {len(edges) + 1} counts, got {len(self.counts)}")
        return self


class VariantMetrics(Schema):
    """One variant's figures. ``*_total`` and ``buckets`` are cumulative since the
    series began (counts never decrease within one ``(boot_id, variant, series)``);
    the window fields cover the time since the previous report."""

    model_version: Name
    rollout_id: Name | None = None
    rollout_seq: Seq | None = None  # the last applied command's rollout_seq: the step
    series: Count = 0  # bumped when the variant's counters restart within a boot
    inferences_total: Count
    errors_total: Count
    checked_total: Count = 0  # labelled inferences whose top-1 was checked
    correct_total: Count = 0
    buckets: Buckets
    window_s: NonNegative
    inferences: Count
    errors: Count
    throughput_per_s: NonNegative
    p50_us: NonNegative | None = None  # None when the window holds no inference
    p90_us: NonNegative | None = None
    p99_us: NonNegative | None = None

    @model_validator(mode="after")
    def _totals_match_buckets(self) -> Self:
        if sum(self.buckets.counts) != self.inferences_total:
            raise ValueError("inferences_total must equal the sum of the bucket counts")
        return self


class RequestMetrics(Schema):
    """The local inference API's traffic, cumulative since boot. ``latency`` is what
    clients see inside the agent (queue wait included); the model time of each answer is
    in its variant's own buckets, with the loop's inferences."""

    served_total: Count
    failed_total: Count  # answered with the runtime's error
    busy_total: Count  # refused: the queue was full
    expired_total: Count  # the deadline passed before the request ran
    abandoned_total: Count = 0  # the client went away before the request ran
    by_variant: dict[Variant, Count] = Field(default_factory=dict)
    latency: Buckets
    p50_us: NonNegative | None = None
    p99_us: NonNegative | None = None
    queue_p99_us: NonNegative | None = None


class HealthReport(Schema):
    cpu_percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None  # whole system
    process_cpu_percent: NonNegative | None = None  # the agent (over 100 on several cores)
    rss_bytes: Count | None = None
    load_avg: Annotated[list[NonNegative], Field(min_length=3, max_length=3)] | None = None
    disk_free_bytes: Count | None = None
    soc_temp_c: Annotated[float, Field(ge=-273.15, le=300.0)] | None = None
    soc_temp_zone: ShortText | None = None


class CaptureMetrics(Schema):
    """The capture store's, uploader's and rules' counters, cumulative since the agent
    started (``bytes_on_disk``, ``open_captures`` and ``sealed_batches``: now)."""

    stored: Count = 0
    dropped_rate: Count = 0  # over the per-hour cap
    dropped_budget: Count = 0  # evicted, oldest first, to stay within the byte budget
    dropped_queue: Count = 0  # the writer was behind
    too_large: Count = 0
    quarantined: Count = 0
    uploaded_batches: Count = 0
    uploaded_captures: Count = 0
    bytes_on_disk: Count = 0
    open_captures: Count = 0
    sealed_batches: Count = 0
    write_errors: Count = 0  # failed writes and seals (disk full, I/O error)
    last_write_error: Text | None = None
    batches_uploaded: Count = 0
    captures_uploaded: Count = 0
    upload_failures: Count = 0
    last_upload_error: Text | None = None
    bytes_uploaded: Count = 0
    paused: bool = False  # uploads wait: offline
    backoff_s: NonNegative = 0.0  # the wait before the next upload try (0: none failing)
    enabled: bool = True  # the rules in force capture (a command may have stopped them)
    rules_from: Literal["configuration", "command"] = "configuration"
    fired: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], Count] = \
        Field(default_factory=dict)  # picks per rule


class Metrics(UpMessage):
    channel = "metrics"
    type: Literal["metrics"] = "metrics"
    boot_id: MessageId
    variants: dict[Variant, VariantMetrics]
    health: HealthReport | None = None
    requests: RequestMetrics | None = None  # only when the local API has had traffic
    results: ResultCounts | None = None  # only when a result stream runs
    capture: CaptureMetrics | None = None  # only when capture is configured


class Event(UpMessage):
    channel = "events"
    type: Literal["event"] = "event"
    kind: EventKind
    detail: Text
    related_id: Name | None = None  # the message or command this is about
    data: Annotated[dict[DataKey, Scalar], Field(max_length=32)] = Field(default_factory=dict)


class Trial(Schema):
    """A candidate under evaluation: green in shadow, or green taking weighted traffic."""

    candidate: Name  # green's model version
    kind: Literal["shadow", "weighted"]
    elapsed_s: NonNegative  # by the device's monotonic clock


class State(UpMessage):
    channel = "state"
    type: Literal["state"] = "state"
    models: ModelVersions
    mode: VariantMode
    weights: Weights
    rollout_id: Name | None = None
    rollout_seq: Seq | None = None  # the last applied command's
    trial: Trial | None = None
    in_reply_to: Name | None = None  # the command_id of the status request answered


class Ack(UpMessage):
    """The outcome of one command. ``reason`` is for people; ``data`` for the controller:

        code              why, machine-readable (absent when there is nothing to add):
                          on_trial              stage refused: another promotion's trial runs
                          label_mismatch        stage refused: the package is another build
                          version_mismatch      stage refused: another package version
                          other_rollout         confirm refused: another rollout's trial
                          nothing_to_confirm    confirm refused: nothing of this rollout
                          no_previous           rollback refused: nothing to go back to
                          nothing_to_roll_back  rollback ok, a no-op: nothing of this rollout
        model             stage: the package's label; otherwise the model serving after
                          the command (promote, confirm, rollback) or on trial
        package_version   the staged package's integer manifest version
        expected          what the command expected (a label or a package version)
        trial_rollout_id  the rollout whose promoted model is on trial
    """

    channel = "ack"
    type: Literal["ack"] = "ack"
    command_id: Name
    rollout_id: Name
    rollout_seq: Seq
    outcome: Outcome
    reason: Text = ""
    data: Annotated[dict[DataKey, Scalar], Field(max_length=32)] = Field(default_factory=dict)


Message = Register | Heartbeat | Metrics | Event | State | Ack | Command

UP_MESSAGES: Mapping[str, type[UpMessage]] = MappingProxyType({
    cls.model_fields["type"].default: cls
    for cls in (Register, Heartbeat, Metrics, Event, State, Ack)
})
