"""A full disk under the outbox: the message is refused, nothing crashes, and the loss is
reported once the spool takes messages again."""

from __future__ import annotations

import json
from pathlib import Path

from agent.device.uplink.outbox import Outbox
from agent.device.uplink.spool import Spool
from agent.wire.codec import decode
from agent.wire.messages import Event, Heartbeat, Metrics, UpMessage
from agent.wire.sequence import SequenceCounter
from agent.wire.stamp import Stamper
from agent.wire.topics import Topics


def test_full_disk_is_survived_and_reported(tmp_path: Path) -> None:
    spool = Spool(path=tmp_path / "spool.db")
    outbox = Outbox(stamper=Stamper(thing="disk-1", counter=SequenceCounter(
        path=tmp_path / "sequence")), topics=Topics(thing="disk-1"), spool=spool)
    assert outbox.send(Heartbeat, uptime_s=1.0, boot_id=outbox.stamper.boot_id, models={})
    spool.set_max_db_bytes(spool.path.stat().st_size)  # the disk is now full
    refused = 0
    for i in range(200):
        sent = outbox.event("agent_error", "x" * 500, data={"i": i})
        refused += sent is None
    assert refused > 0 and outbox.spool_errors == refused
    spool.set_max_db_bytes(None)  # space again
    assert outbox.send(Heartbeat, uptime_s=2.0, boot_id=outbox.stamper.boot_id, models={})
    stored = [decode(e.payload, expect=UpMessage) for e in spool.peek(1000)]
    report = [m for m in stored if isinstance(m, Event) and m.data.get("code") == "spool_full"]
    assert len(report) == 1 and report[0].data["count"] == refused
    assert stored[-1].type == "event", "the report follows the message that got through"
    spool.close()


def test_emf_documents_go_out_as_metrics(tmp_path: Path) -> None:
    spool = Spool(path=tmp_path / "spool.db")
    outbox = Outbox(stamper=Stamper(thing="emf-1", counter=SequenceCounter(
        path=tmp_path / "sequence")), topics=Topics(thing="emf-1"), spool=spool)
    assert outbox.send_raw("emf", json.dumps({"_aws": {}}).encode())
    (entry,) = spool.peek(10)
    assert entry.topic == "edge/emf-1/emf" and entry.priority.value == "metrics"
    assert Metrics.channel == "metrics"
    spool.close()


def test_offline_agent_spools_metrics_and_emf(tmp_path: Path, built_models: Path) -> None:
    from agent.device.app.config import load_config
    from agent.device.app.service import AgentService
    from agent.tools.boards import board_root

    config = load_config({"thingName": "emf-2", "modelDir": str(built_models / "digits-v1"),
                          "stateDir": str(tmp_path / "state"), "rateHz": 500, "emitEmf": True,
                          "deviceRoot": str(board_root("jetson_nano_r32"))})
    service = AgentService(config=config, transport=None)
    service.start()
    try:
        import time

        time.sleep(0.3)
        service.report_metrics()
    finally:
        service.shutdown()
    spool = Spool(path=tmp_path / "state" / "spool.db")
    entries = spool.peek(100)
    spool.close()
    topics = [e.topic for e in entries]
    assert topics[0] == "edge/emf-2/register" and "edge/emf-2/metrics" in topics
    docs = [json.loads(e.payload) for e in entries if e.topic.endswith("/emf")]
    assert docs and all("_aws" in d and d["Thing"] == "emf-2" for d in docs)
    metrics = next(decode(e.payload, expect=UpMessage) for e in entries
                   if e.topic.endswith("/metrics"))
    assert isinstance(metrics, Metrics) and metrics.health is not None
    assert metrics.health.soc_temp_c is not None, "read from the emulated Jetson's thermal zones"
