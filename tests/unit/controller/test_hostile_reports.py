"""The controller against forged, absurd, replayed and flooding device reports: each
attack is refused (and counted under its reason) before it can reach a verdict, and a
single device's word can never roll a rollout back fleet-wide."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_rig import CANDIDATE, OTHER_BOOT, Rig, controller_rig, counts, variant

from agent.controller.errors import ReportRejectedError
from agent.controller.ingest_limits import IngestLimits, TokenBuckets
from agent.controller.report_checks import MAX_COUNT, MetricsHistory
from agent.core.histogram import BUCKETS_VERSION
from agent.wire.codec import decode, encode
from agent.wire.errors import DecodeError, MalformedMessageError, SchemaError
from agent.wire.messages import Buckets, Metrics, UpMessage
from agent.wire.topics import device_topic_parts


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with controller_rig(tmp_path) as r:
        yield r


def _json(message: UpMessage) -> dict[str, Any]:
    return json.loads(encode(message))


# ---- identity is bound to the topic ----------------------------------------------------------


def test_a_report_naming_another_thing_than_its_topic_is_refused(rig: Rig) -> None:
    mallory, victim = rig.device("mallory"), rig.device("victim")
    victim.register()
    forged = victim.metrics(1000)
    mallory.publish(forged, topic_thing="mallory")  # the body says victim
    mallory.publish(victim.breach(), topic_thing="mallory")
    c = rig.controller
    assert c.rejected["thing_mismatch"] == 2
    assert c.metrics_ingested == 0
    state = c.tracker.state("victim")
    assert state is not None and state.seq == 1, "the forged seq did not advance victim's"
    # A register on mallory's topic claiming to be a new thing does not create it.
    rig.device("ghost").register(topic_thing="mallory")
    assert c.registry.get("ghost") is None and c.rejected["thing_mismatch"] == 3
    assert c.ingested == 1 and rig.accounted() == c.received == 4


def test_a_message_on_another_channel_and_bad_topics_are_refused(rig: Rig) -> None:
    device = rig.device("dev-a")
    rig.publish("edge/dev-a/metrics", encode(device.breach()))  # an event on metrics
    rig.publish("edge/dev-a/firmware", encode(device.metrics()))
    rig.publish("other/dev-a/metrics", encode(device.metrics()))
    rig.publish("edge/dev-a/metrics/extra", encode(device.metrics()))
    rig.publish("edge/dev-a/commands", b"anything")  # the controller's own: not a report
    rig.publish("edge/dev-a/emf", b"{}")
    c = rig.controller
    assert (c.rejected["channel_mismatch"], c.rejected["bad_topic"], c.ignored) == (1, 3, 2)
    assert c.ingested == 0 and rig.accounted() == c.received == 6


def test_topic_parts() -> None:
    assert device_topic_parts("edge", "edge/pi-1/metrics") == ("pi-1", "metrics")
    assert device_topic_parts("a/b", "a/b/pi-1/ack") == ("pi-1", "ack")
    for topic in ("edge/pi-1", "edge//metrics", "edge/pi-1/", "edgy/pi-1/metrics",
                  "edge/groups/g/commands", "pi-1/metrics"):
        assert device_topic_parts("edge", topic) is None, topic


# ---- absurd histograms and metrics -------------------------------------------------------


def _mutated(rig: Rig, change: Any) -> bytes:
    data = _json(rig.device("dev-a").metrics(100))
    change(data["variants"]["green"])
    return json.dumps(data, separators=(",", ":")).encode()


@pytest.mark.parametrize(("change", "error", "match"), [
    (lambda v: v["buckets"]["counts"].__setitem__(3, -1), SchemaError,
     "greater than or equal to 0"),
    (lambda v: v["buckets"]["counts"].__setitem__(3, 2**63), SchemaError,
     "less than or equal to"),
    (lambda v: v.__setitem__("errors_total", 2**64), SchemaError, "less than or equal to"),
    (lambda v: v["buckets"]["counts"].append(0), SchemaError, "needs 80 counts, got 81"),
    (lambda v: v["buckets"].__setitem__("version", "linear-v9"), SchemaError,
     "unknown histogram bucket version"),
    (lambda v: v.__setitem__("inferences_total", 5), SchemaError,
     "inferences_total must equal the sum"),
    (lambda v: v.__setitem__("throughput_per_s", float("nan")), MalformedMessageError,
     "NaN is not a JSON number"),
    (lambda v: v.__setitem__("window_s", float("inf")), MalformedMessageError,
     "Infinity is not a JSON number"),
    (lambda v: v.__setitem__("window_s", "1e400"), SchemaError, "finite number"),
])
def test_what_the_schema_refuses_never_decodes(rig: Rig, change: Any,
                                                error: type[DecodeError], match: str) -> None:
    raw = _mutated(rig, change).replace(b'"1e400"', b"1e400")  # parses as an infinite float
    with pytest.raises(error, match=match):
        decode(raw)
    rig.publish("edge/dev-a/metrics", raw)
    assert rig.controller.rejected["undecodable"] == 1
    assert rig.controller.metrics_ingested == 0


def test_counts_near_2_63_decode_but_are_refused_at_ingest(rig: Rig) -> None:
    device = rig.device("dev-a")
    huge = device.metrics(2**63 - 1)
    device.publish(huge)
    assert rig.controller.rejected["count_out_of_range"] == 1
    with pytest.raises(ReportRejectedError, match="count_out_of_range: green: a count above"):
        MetricsHistory().check(huge)
    device.publish(device.metrics(MAX_COUNT))  # the limit itself is still true
    assert rig.controller.metrics_ingested == 1


def test_counts_that_go_down_in_one_series_are_refused(rig: Rig) -> None:
    device = rig.device("dev-a")
    device.publish(device.metrics(500))
    device.publish(device.metrics(400))  # same boot, same series, fewer inferences
    device.publish(device.metrics(600, errors=3))
    device.publish(device.metrics(700, errors=1))  # errors went down
    device.publish(device.metrics(50, series=1))  # a new series starts anywhere
    device.publish(device.metrics(60, series=0))  # but never goes back
    device.boot_id = OTHER_BOOT
    device.publish(device.metrics(5))  # a reboot starts afresh
    c = rig.controller
    assert (c.rejected["counts_decreased"], c.rejected["totals_decreased"],
            c.rejected["series_went_back"]) == (1, 1, 1)
    assert c.metrics_ingested == 4


def test_a_count_moved_to_another_bucket_is_a_decrease(rig: Rig) -> None:
    device = rig.device("dev-a")
    device.publish(device.metrics(500, bucket=30))
    device.publish(device.metrics(500, bucket=31))
    assert rig.controller.rejected["counts_decreased"] == 1


def test_history_messages_name_what_is_wrong() -> None:
    history = MetricsHistory()
    base = Metrics(thing="t", seq=1, sent_at=0, boot_id=OTHER_BOOT,
                   variants={"blue": variant(10)})
    history.check(base)
    with pytest.raises(ReportRejectedError, match="bucket 30 went from 10 to 9") as info:
        history.check(base.model_copy(update={"variants": {"blue": variant(9)}}))
    assert info.value.reason == "counts_decreased"
    other = variant(10).model_copy(update={"buckets": Buckets.model_construct(
        version="log2-v2", counts=counts(10))})
    with pytest.raises(ReportRejectedError, match="buckets 'log2-v2' after 'log10x10-v1'"):
        history.check(base.model_copy(update={"variants": {"blue": other}}))
    correct = variant(10).model_copy(update={"checked_total": 3, "correct_total": 4})
    with pytest.raises(ReportRejectedError,
                       match="totals_inconsistent: blue: correct_total 4 above checked_total 3"):
        history.check(base.model_copy(update={"variants": {"blue": correct}}))
    assert BUCKETS_VERSION == "log10x10-v1" and len(history) == 1


def test_an_absurd_report_never_reaches_the_guardrails(rig: Rig) -> None:
    devices = rig.fleet(3)
    rig.start()
    for device in devices:
        device.publish(device.step_metrics(100, rollout="r-1"))
    devices[0].publish(devices[0].step_metrics(2**62, rollout="r-1"))
    devices[1].publish(devices[1].step_metrics(10, rollout="r-1"))
    run = rig.controller.running["r-1"]
    step = run.steps[0]
    kept = run.reports.for_step(step, lambda _thing: True)
    assert len(kept) == 3 and max(r.variants["green"].inferences_total for r in kept) == 100


# ---- replays -------------------------------------------------------------------------------


def test_replays_of_old_reports_are_dropped_as_stale(rig: Rig) -> None:
    device = rig.device("dev-a")
    first = device.metrics(10)
    second = device.metrics(20)
    device.publish(first)
    device.publish(second)
    device.publish(second)  # the same seq again (a QoS 1 redelivery, or a replay)
    assert rig.controller.rejected["stale"] == 1
    device.publish(first)  # an older seq
    assert rig.controller.rejected["stale"] == 2
    device.boot_id = OTHER_BOOT
    device.publish(device.metrics(5))  # rebooted: seq goes on increasing
    device.boot_id = first.boot_id
    device.publish(second.model_copy(update={"id": "a" * 32}))  # an older boot's, re-sent
    assert rig.controller.rejected["stale"] == 3
    assert rig.controller.metrics_ingested == 3


# ---- floods --------------------------------------------------------------------------------


def test_a_flooding_device_is_rate_limited_before_decoding_and_starves_no_one(
        tmp_path: Path) -> None:
    limits = IngestLimits(report_rate_per_s=10.0, report_burst=50)
    with controller_rig(tmp_path, limits=limits) as rig:
        flooder, others = rig.device("flooder"), [rig.device(f"d-{i}") for i in range(20)]
        for round_ in range(5):
            for _ in range(400):
                flooder.publish(flooder.metrics(10))
            rig.publish("edge/flooder/metrics", b"\xff" * 100)  # never even decoded
            for device in others:
                device.publish(device.metrics(10 + round_))
            rig.clock.now += 1.0
        c = rig.controller
        flood_ingested = 50 + 4 * 10  # the burst, then 10 a second for 4 more seconds
        assert c.metrics_ingested == 5 * 20 + flood_ingested, "every legit report counted"
        assert c.rejected["rate_limited"] == 5 * 401 - flood_ingested
        assert c.rejected["undecodable"] == 0
        assert rig.accounted() == c.received


def test_rate_buckets_stay_bounded_whatever_thing_names_arrive() -> None:
    buckets = TokenBuckets(IngestLimits(max_tracked_devices=100), clock=lambda: 0.0)
    for i in range(10_000):
        assert buckets.take(f"thing-{i}")
    assert len(buckets) == 100


def test_rejections_are_logged_at_a_bounded_rate_and_quoted(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.fleet")
    victim = rig.device("victim")
    for _ in range(500):
        rig.publish("edge/evil\nFAKE LOG LINE/metrics", encode(victim.metrics()))
    lines = [r.getMessage() for r in caplog.records if "thing_mismatch" in r.getMessage()]
    assert rig.controller.rejected["thing_mismatch"] == 500
    assert len(lines) == 1 and "\n" not in lines[0] and "evil\\nFAKE" in lines[0]
    assert lines[0].startswith("refused 1 report(s) (thing_mismatch)")
    rig.clock.now += 11
    rig.publish("edge/x/metrics", encode(victim.metrics()))
    lines = [r.getMessage() for r in caplog.records if "thing_mismatch" in r.getMessage()]
    assert len(lines) == 2 and lines[1].startswith("refused 500 report(s)")


# ---- a device changing hardware class mid-rollout ------------------------------------------


def test_a_device_re_registering_as_another_class_is_excluded_from_the_rollout(
        rig: Rig) -> None:
    devices = rig.fleet(3)
    rig.start()
    turncoat = devices[0]
    turncoat.register("jetson_nano")
    c = rig.controller
    run = c.running["r-1"]
    assert c.class_changes == 1
    assert c.registry.get(turncoat.thing).hardware_class == "jetson_nano"  # type: ignore[union-attr]
    assert run.steps[0].hardware_class[turncoat.thing] == "rasp4b", "keeps its planned class"
    [excluded] = rig.decisions("device_excluded")
    assert excluded["thing"] == turncoat.thing and "'jetson_nano'" in excluded["reason"]
    turncoat.publish(turncoat.step_metrics(100, rollout="r-1"))
    turncoat.publish(turncoat.breach())
    turncoat.publish(turncoat.breach())
    assert c.rollouts.excluded_reports == 3
    assert turncoat.thing not in run.breaching
    kept = run.reports.for_step(run.steps[0], lambda _thing: True)
    assert all(r.thing != turncoat.thing for r in kept)
    devices[1].register("rasp4b")  # the same class again: nothing changes
    assert c.class_changes == 1 and len(rig.decisions("device_excluded")) == 1


# ---- a single device's breaches ------------------------------------------------------------


def _pass_step(rig: Rig, devices: list[Any]) -> None:
    """Every device reports a healthy window of the step."""
    for total in (100, 400):
        for device in devices:
            device.publish(device.step_metrics(total, rollout="r-1"))


def test_one_device_breaching_over_and_over_cannot_roll_back_the_fleet(rig: Rig) -> None:
    devices = rig.fleet(4)
    rig.start()
    for _ in range(50):
        devices[0].publish(devices[0].breach())
        rig.controller.tick()
    assert rig.status()[0] == "running"
    [held] = rig.decisions("breach_held")
    assert held["thing"] == devices[0].thing and (held["devices"], held["quorum"]) == (1, 2)
    # The step passes its fleet guardrails but does not advance on its own.
    _pass_step(rig, devices)
    rig.clock.now += 6
    rig.controller.tick()
    status, reason = rig.status()
    assert status == "paused"
    assert "breach held, not corroborated (1 of 2 devices" in reason
    assert devices[0].thing in reason and "promote r-1" in reason


def test_a_second_device_corroborates_and_the_fleet_rolls_back(rig: Rig) -> None:
    devices = rig.fleet(4)
    rig.start()
    devices[0].publish(devices[0].breach())
    rig.controller.tick()
    devices[1].publish(devices[1].breach(kind="local_rollback"))
    rig.controller.tick()
    status, reason = rig.status()
    assert status == "rolled_back"
    assert reason.startswith("2 devices breached (quorum 2): guardrail_breach (p99) on dev-00")


def test_breach_quorum_1_keeps_the_single_device_rollback(rig: Rig) -> None:
    devices = rig.fleet(4)
    rig.start(guardrails={"min_samples": 1, "breach_quorum": 1})
    devices[2].publish(devices[2].breach())
    rig.controller.tick()
    assert rig.status() == ("rolled_back", "guardrail_breach (p99) on dev-02: p99 12000 us "
                                           "over 5000 us")


def test_a_rollout_smaller_than_the_quorum_rolls_back_on_its_devices_word(rig: Rig) -> None:
    [device] = rig.fleet(1)
    rig.start(guardrails={"min_samples": 1, "breach_quorum": 5})
    device.publish(device.breach())
    rig.controller.tick()
    assert rig.status()[0] == "rolled_back"


def test_breaches_of_another_model_or_an_unreached_device_do_not_count(rig: Rig) -> None:
    devices = rig.fleet(10)
    rig.start(strategy={"type": "canary", "percent": 10, "bake_s": 5})
    run = rig.controller.running["r-1"]
    later = [d for d in devices if d.thing not in run.steps[0].things]
    for device in later[:3]:
        device.publish(device.breach())  # no command of this rollout reached it yet
    devices[0].publish(devices[0].breach(version="digits-v1"))
    rig.controller.tick()
    assert rig.status()[0] == "running" and run.breaching == {}


def test_one_device_s_own_health_is_held_two_roll_back(rig: Rig) -> None:
    devices = rig.fleet(4)
    rig.start(guardrails={"min_samples": 1, "max_soc_temp_c": 80.0})
    hot = {"soc_temp_c": 299.0}
    devices[0].publish(devices[0].step_metrics(100, rollout="r-1", health=hot))
    rig.controller.tick()
    assert rig.status()[0] == "running"
    assert rig.decisions("breach_held")[0]["breach"].startswith("soc_temperature on dev-00")
    devices[3].publish(devices[3].step_metrics(100, rollout="r-1", health=hot))
    rig.controller.tick()
    status, reason = rig.status()
    assert status == "rolled_back" and "2 devices breached" in reason and "dev-03" in reason


def test_a_fleet_guardrail_from_merged_metrics_still_rolls_back_at_once(rig: Rig) -> None:
    devices = rig.fleet(2)
    rig.start(guardrails={"min_samples": 1, "max_error_rate": 0.01})
    for total, errors in ((100, 0), (200, 50)):
        for device in devices:
            device.publish(device.step_metrics(total, rollout="r-1", errors=errors))
    rig.controller.tick()
    status, reason = rig.status()
    assert status == "rolled_back" and reason.startswith("error_rate in class:rasp4b")


def test_held_breaches_survive_a_controller_restart(tmp_path: Path) -> None:
    with controller_rig(tmp_path) as rig:
        devices = rig.fleet(4)
        rig.start()
        devices[0].publish(devices[0].breach())
        rig.controller.tick()
        devices[1].register("jetson_nano")
    with controller_rig(tmp_path) as again:
        run = again.controller.running["r-1"]
        assert set(run.breaching) == {"dev-00"} and set(run.excluded) == {"dev-01"}
        assert again.status()[0] == "running"
        assert run.spec.model == CANDIDATE
