"""The result schema (v 1) applications read, and the result counts in metrics reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.wire.codec import decode
from agent.wire.errors import SchemaError
from agent.wire.examples import example_up_messages
from agent.wire.messages import Metrics
from agent.wire.results import ResultCounts, parse_result


def result(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1, "type": "result", "thing": "cam-1", "run": "0" * 32, "seq": 3,
        "model": "colour", "version": "colour-v1", "variant": "blue", "source": "video",
        "frame": {"id": 120, "time": 1718000000.5},
        "top_k": [{"index": 0, "label": "red", "score": 0.97},
                  {"index": 2, "label": None, "score": 0.01}],
        "outputs": {"probs": {"dtype": "float32", "shape": [1, 3], "data": [0.97, 0.02, 0.01]}}}
    base.update(changes)
    return base


def test_a_result_round_trips_through_json() -> None:
    parsed = parse_result(json.dumps(result()).encode())
    assert parsed.top_k[0].label == "red" and parsed.frame.id == 120
    assert parsed.outputs is not None and parsed.outputs["probs"].shape == [1, 3]
    assert parse_result(parsed.model_dump(mode="json")) == parsed
    assert parse_result(result(outputs=None, top_k=[])).outputs is None


@pytest.mark.parametrize(("changes", "where"), [
    ({"v": 2}, "v"), ({"type": "metrics"}, "type"), ({"seq": 0}, "seq"),
    ({"variant": "red"}, "variant"), ({"run": "xyz"}, "run"), ({"thing": ""}, "thing"),
    ({"frame": {"id": -1, "time": 1.0}}, "frame.id"), ({"seq": "3"}, "seq"),
    ({"top_k": [{"index": 0, "label": "red"}]}, "top_k.0.score"),
    ({"extra": 1}, "extra")])
def test_each_bad_field_is_named(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError, match=f"not a result: {where}"):
        parse_result(result(**changes))


def test_text_that_is_no_json_is_refused() -> None:
    with pytest.raises(SchemaError, match="a result is a JSON object"):
        parse_result(b"{not json")
    with pytest.raises(SchemaError, match="not a result"):
        parse_result(b"[1, 2]")


def test_metrics_carry_the_result_counts() -> None:
    metrics = next(m for m in example_up_messages() if isinstance(m, Metrics))
    counts = ResultCounts(seen=100, published=7,
                          suppressed={"every_n": 50, "rate": 40, "unchanged": 2,
                                      "below_score": 1},
                          dropped=0, failed={"local": 0, "iot": 1, "shm": 0})
    with_counts = metrics.model_copy(update={"results": counts})
    raw = json.dumps(with_counts.model_dump(mode="json")).encode()
    decoded = decode(raw, expect=Metrics)
    assert decoded.results == counts
    with pytest.raises(SchemaError, match=r"results\.suppressed\.late"):
        decode(raw.replace(b'"unchanged"', b'"late"'), expect=Metrics)
