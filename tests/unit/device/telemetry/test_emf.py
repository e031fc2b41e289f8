"""CloudWatch Embedded Metric Format documents, checked against the EMF specification."""

from __future__ import annotations

from typing import Any

import pytest

from agent.device.inference.runner import LoopStats
from agent.device.telemetry.emf import emf_lines, render_emf
from agent.device.telemetry.health import HealthProbe
from agent.device.telemetry.metrics import MetricsReporter, VariantSource
from agent.tools.boards import board_root
from agent.wire.messages import Metrics

UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
         "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
         "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
         "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
         "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


def check_emf(doc: dict[str, Any]) -> None:
    """The EMF specification's rules for one document."""
    meta = doc["_aws"]
    assert set(meta) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 0
    for directive in meta["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for name in dimension_set:
                value = doc[name]
                assert isinstance(value, str) and value.strip() and value.isascii()
        assert len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert 0 < len(metric["Name"]) <= 255 and metric["Unit"] in UNITS
            value = doc[metric["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_message() -> Metrics:
    reporter = MetricsReporter(clock=lambda: 0.0)
    blue, green = LoopStats(), LoopStats()
    for value in (120_000, 150_000, 900_000):
        blue.histogram.record_ns(value)
    variants = reporter.report([
        VariantSource(variant="blue", model_version="digits-v1", stats=blue, rollout_id="r1"),
        VariantSource(variant="green", model_version="digits-v2", stats=green),
    ], now=10.0)
    health = HealthProbe(root=board_root("rpi4_64")).read().to_report()
    return Metrics(thing="pi-01", seq=4, sent_at=0, boot_id="b" * 32, variants=variants,
                   health=health)


def test_emf_documents_per_variant_and_for_health() -> None:
    docs = render_emf(_metrics_message(), namespace="Edge/Inference", timestamp_ms=1_717_000_000)
    assert [d.get("Variant") for d in docs] == ["blue", "green", None]
    for doc in docs:
        check_emf(doc)
    blue, green, health = docs
    assert blue["_aws"] == {"Timestamp": 1_717_000_000, "CloudWatchMetrics": [{
        "Namespace": "Edge/Inference",
        "Dimensions": [["Thing", "Variant"], ["ModelVersion"]],
        "Metrics": [{"Name": "Inferences", "Unit": "Count"},
                    {"Name": "Errors", "Unit": "Count"},
                    {"Name": "Throughput", "Unit": "Count/Second"},
                    {"Name": "LatencyP50", "Unit": "Microseconds"},
                    {"Name": "LatencyP90", "Unit": "Microseconds"},
                    {"Name": "LatencyP99", "Unit": "Microseconds"}]}]}
    assert (blue["Thing"], blue["ModelVersion"], blue["RolloutId"]) == ("pi-01", "digits-v1",
                                                                         "r1")
    assert blue["Inferences"] == 3 and blue["Throughput"] == 0.3
    assert "LatencyP50" not in green  # an empty window: no value, and no definition
    assert [m["Name"] for m in green["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == [
        "Inferences", "Errors", "Throughput"]
    assert health["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Thing"]]
    assert health["SocTemperature"] == 48.3 and health["LoadAverage1m"] == 0.52
    assert health["SocTemperatureZone"] == "cpu-thermal"
    assert "CpuPercent" not in health and health["RssBytes"] > 0


def test_emf_lines_and_bad_options() -> None:
    message = _metrics_message()
    lines = emf_lines(message, timestamp_ms=1)
    assert len(lines) == 3 and all(line.startswith("{") and "\n" not in line for line in lines)
    assert render_emf(message)[0]["_aws"]["Timestamp"] > 1_600_000_000_000
    with pytest.raises(ValueError, match="namespace"):
        render_emf(message, namespace="AWS/EC2")
    with pytest.raises(ValueError, match="unknown dimension"):
        render_emf(message, variant_dimensions=[["Thing", "Region"]])
    no_health = message.model_copy(update={"health": None})
    assert len(render_emf(no_health)) == 2
