"""One valid example of every message, for tests, documentation and the emulated fleet."""

from __future__ import annotations

from typing import Any

from agent.core.histogram import BUCKET_EDGES_US, BUCKETS_VERSION, quantile_us
from agent.wire.commands import (
    AnnounceCommand,
    CaptureArgs,
    CaptureCommand,
    CaptureRuleArgs,
    Command,
    ConfirmCommand,
    PromoteCommand,
    RollbackCommand,
    SetWeightsArgs,
    SetWeightsCommand,
    ShadowArgs,
    ShadowCommand,
    StageArgs,
    StageCommand,
    StatusCommand,
    Target,
    Weights,
)
from agent.wire.messages import (
    Ack,
    Buckets,
    Event,
    HealthReport,
    Heartbeat,
    Metrics,
    ProfileInfo,
    Register,
    State,
    Trial,
    UpMessage,
    VariantMetrics,
)

THING = "pi-kitchen-01"
BOOT_ID = "0f6c2b7e4d5a4c1b9e8f7a6b5c4d3e2f"
ISSUED_AT = 1_717_000_000_000


def example_up_messages() -> list[UpMessage]:
    counts = [0] * (len(BUCKET_EDGES_US) + 1)
    counts[36], counts[37], counts[38], counts[45] = 5200, 3100, 640, 3  # ~4-6 ms, one slow
    p50, p90, p99 = (round(quantile_us(counts, BUCKET_EDGES_US, q), 3) for q in (0.5, 0.9, 0.99))
    env: dict[str, Any] = {"thing": THING, "sent_at": ISSUED_AT + 5_000}
    profile = ProfileInfo(
        board="Raspberry Pi 4 Model B Rev 1.4", board_family="raspberry_pi",
        neo_target="rasp4b", arch="aarch64", reported_arch="aarch64", emulated=False,
        os_bits=64, cpu_count=4, mem_total_bytes=3977547776, mem_available_bytes=3492433920)
    return [
        Register(seq=1000, groups=["canary", "kitchen"], agent_version="0.1.0",
                 boot_id=BOOT_ID, models={"blue": "digits-v1"}, profile=profile, **env),
        Heartbeat(seq=1001, uptime_s=30.2, boot_id=BOOT_ID,
                  models={"blue": "digits-v1", "green": "digits-v2"},
                  groups=["canary", "kitchen"], profile=profile, **env),
        Metrics(seq=1002, boot_id=BOOT_ID, **env, variants={
            "blue": VariantMetrics(
                model_version="digits-v1", rollout_id="r-2024-06-01", rollout_seq=3,
                inferences_total=sum(counts), errors_total=2, checked_total=100,
                correct_total=97, buckets=Buckets(version=BUCKETS_VERSION, counts=counts),
                window_s=60.0, inferences=sum(counts), errors=2,
                throughput_per_s=round(sum(counts) / 60.0, 3), p50_us=p50, p90_us=p90,
                p99_us=p99)},
            health=HealthReport(cpu_percent=37.5, process_cpu_percent=24.0, rss_bytes=61_440_000,
                                load_avg=[0.52, 0.48, 0.4], disk_free_bytes=12_884_901_888,
                                soc_temp_c=48.3, soc_temp_zone="cpu-thermal")),
        Event(seq=1003, kind="rejected_message", detail="signed by untrusted key 'old-2023'",
              related_id="5b1e0c9a2f3d4e6b8a7c9d0e1f2a3b4c",
              data={"code": "unknown_key", "topic": "edge/pi-kitchen-01/commands"}, **env),
        State(seq=1004, models={"blue": "digits-v1", "green": "digits-v2"}, mode="weighted",
              weights=Weights(blue=90, green=10), rollout_id="r-2024-06-01", rollout_seq=3,
              trial=Trial(candidate="digits-v2", kind="weighted", elapsed_s=120.0),
              in_reply_to=None, **env),
        Ack(seq=1005, command_id="5b1e0c9a2f3d4e6b8a7c9d0e1f2a3b4c", rollout_id="r-2024-06-01",
            rollout_seq=3, outcome="ok", reason="digits-v2 staged",
            data={"model": "digits-v2", "package_version": 2}, **env),
        Ack(seq=1006, command_id="6c2f1d0b3a4e5f7c9b8d0e1f2a3b4c5d", rollout_id="r-2024-06-02",
            rollout_seq=1, outcome="rejected",
            reason="digits-v2 promoted by rollout r-2024-06-01 is on trial: rollout "
                   "r-2024-06-01 must confirm or roll it back first",
            data={"code": "on_trial", "trial_rollout_id": "r-2024-06-01",
                  "model": "digits-v2"}, **env),
    ]


def example_commands() -> list[Command]:
    """Unsigned: sign them with :meth:`agent.wire.signing.Signer.sign`."""
    common: dict[str, Any] = {"rollout_id": "r-2024-06-01", "issued_at": ISSUED_AT,
              "target": Target(kind="group", name="canary")}
    sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    return [
        StageCommand(rollout_seq=1, **common, args=StageArgs(
            url="https://models.example.com/digits-v2.tar.gz", sha256=sha, version="digits-v2",
            size_bytes=1_048_576, package_version=2)),
        ShadowCommand(rollout_seq=2, args=ShadowArgs(sample_rate=0.25), **common),
        SetWeightsCommand(rollout_seq=3, args=SetWeightsArgs(blue=90, green=10), **common),
        PromoteCommand(rollout_seq=4, **common),
        RollbackCommand(rollout_seq=5, **common),
        StatusCommand(rollout_seq=6, **common),
        ConfirmCommand(rollout_seq=7, **common),
        AnnounceCommand(rollout_seq=1, rollout_id="announce", issued_at=ISSUED_AT,
                        target=Target(kind="group", name="canary")),
        CaptureCommand(rollout_seq=8, **common, args=CaptureArgs(
            enabled=True, rules=CaptureRuleArgs(sample_rate=0.01, disagreement=True),
            budget_bytes=67_108_864, max_per_hour=600)),
    ]
