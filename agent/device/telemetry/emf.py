"""CloudWatch Embedded Metric Format (EMF) documents from a ``metrics`` message.

One document per variant (dimensions ``[Thing, Variant]`` and ``[ModelVersion]``
by default, so one device's variant and one model version across the fleet
each get a metric) and one for device health (dimension ``[Thing]``: CPU or
temperature split by variant would only repeat itself). The structure follows
the EMF specification::

    {"_aws": {"Timestamp": <Unix ms>,
              "CloudWatchMetrics": [{"Namespace": "...",
                                     "Dimensions": [["Thing", "Variant"], ...],
                                     "Metrics": [{"Name": "...", "Unit": "..."}]}]},
     "Thing": "...", "Variant": "...", "<metric name>": <number>, ...}

Every dimension named is a string member of the root and every metric a
number member; a value the device did not have (no inference in the window,
no thermal zone) is left out of both, since a metric directive must not name
an absent member. ``Timestamp`` is the renderer's clock unless given: the
device clock of a board without an RTC could be years off, and CloudWatch
drops events more than two weeks old.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from agent.wire.messages import HealthReport, Metrics, VariantMetrics

DEFAULT_NAMESPACE = "EdgeInference"
VARIANT_DIMENSIONS: tuple[tuple[str, ...], ...] = (("Thing", "Variant"), ("ModelVersion",))
HEALTH_DIMENSIONS: tuple[tuple[str, ...], ...] = (("Thing",),)
MAX_DIMENSIONS_PER_SET = 30  # EMF limits
MAX_METRICS_PER_DOCUMENT = 100
_NAMESPACE = re.compile(r"^[A-Za-z0-9._#:/\-]{1,255}$")

# (metric name, CloudWatch unit, field of the variant body)
VARIANT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Inferences", "Count", "inferences"),
    ("Errors", "Count", "errors"),
    ("Throughput", "Count/Second", "throughput_per_s"),
    ("LatencyP50", "Microseconds", "p50_us"),
    ("LatencyP90", "Microseconds", "p90_us"),
    ("LatencyP99", "Microseconds", "p99_us"),
)
HEALTH_METRICS: tuple[tuple[str, str, str], ...] = (
    ("CpuPercent", "Percent", "cpu_percent"),
    ("ProcessCpuPercent", "Percent", "process_cpu_percent"),
    ("RssBytes", "Bytes", "rss_bytes"),
    ("DiskFreeBytes", "Bytes", "disk_free_bytes"),
    ("SocTemperature", "None", "soc_temp_c"),  # CloudWatch has no unit for degrees
)


def render_emf(message: Metrics, *, namespace: str = DEFAULT_NAMESPACE,
               timestamp_ms: int | None = None,
               variant_dimensions: Sequence[Sequence[str]] = VARIANT_DIMENSIONS
               ) -> list[dict[str, Any]]:
    """The EMF documents of one metrics message: one per variant, then one for health."""
    if not _NAMESPACE.match(namespace) or namespace.startswith("AWS/"):
        raise ValueError(f"{namespace!r} is not a valid custom CloudWatch namespace")
    for dimension_set in variant_dimensions:
        if not 0 < len(dimension_set) <= MAX_DIMENSIONS_PER_SET:
            raise ValueError("a dimension set names 1 to 30 dimensions")
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    documents = [
        _variant_document(message.thing, variant, body, namespace, stamp, variant_dimensions)
        for variant, body in sorted(message.variants.items())
    ]
    if message.health is not None:
        health = _health_document(message.thing, message.health, namespace, stamp)
        if health is not None:
            documents.append(health)
    return documents


def emf_lines(message: Metrics, **options: Any) -> list[str]:
    """The documents as compact JSON lines, ready for a log that CloudWatch ingests."""
    return [json.dumps(doc, separators=(",", ":")) for doc in render_emf(message, **options)]


def _variant_document(thing: str, variant: str, body: VariantMetrics, namespace: str,
                      stamp: int, dimensions: Sequence[Sequence[str]]) -> dict[str, Any]:
    root: dict[str, Any] = {"Thing": thing, "Variant": variant,
                            "ModelVersion": body.model_version}
    if body.rollout_id is not None:
        root["RolloutId"] = body.rollout_id  # a property: searchable, not a dimension
    missing = {name for dims in dimensions for name in dims} - set(root)
    if missing:
        raise ValueError(f"unknown dimension(s): {', '.join(sorted(missing))}")
    values = {name: (unit, getattr(body, attr)) for name, unit, attr in VARIANT_METRICS}
    return _document(root, values, namespace, stamp, dimensions)


def _health_document(thing: str, health: HealthReport, namespace: str,
                     stamp: int) -> dict[str, Any] | None:
    values = {name: (unit, getattr(health, attr)) for name, unit, attr in HEALTH_METRICS}
    if health.load_avg is not None:
        values["LoadAverage1m"] = ("None", health.load_avg[0])
    if all(value is None for _, value in values.values()):
        return None
    root: dict[str, Any] = {"Thing": thing}
    if health.soc_temp_zone is not None:
        root["SocTemperatureZone"] = health.soc_temp_zone
    return _document(root, values, namespace, stamp, HEALTH_DIMENSIONS)


def _document(root: dict[str, Any], values: dict[str, tuple[str, float | int | None]],
              namespace: str, stamp: int,
              dimensions: Sequence[Sequence[str]]) -> dict[str, Any]:
    definitions = []
    for name, (unit, value) in values.items():
        if value is None:
            continue
        root[name] = value
        definitions.append({"Name": name, "Unit": unit})
    if len(definitions) > MAX_METRICS_PER_DOCUMENT:
        raise ValueError("an EMF document holds at most 100 metrics")
    root["_aws"] = {
        "Timestamp": stamp,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [list(dims) for dims in dimensions],
            "Metrics": definitions,
        }],
    }
    return root
