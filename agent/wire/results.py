"""Prediction results as applications and the cloud read them: a versioned JSON schema.

The agent publishes one JSON object per published inference of its continuous loop (and,
when configured, per answered API request) on Greengrass local pub/sub, on AWS IoT Core
and, as raw tensors, in a shared-memory ring::

    {"v": 1, "type": "result",
     "thing": "cam-1", "run": "9f0c...", "seq": 17,     # (run, seq) is unique: de-duplicate on it
     "model": "colour", "version": "colour-v1", "variant": "blue",
     "source": "testset",                              # testset, random, shm, video, api ...
     "frame": {"id": 1234, "time": 1718000000.125},    # the source's frame number, Unix s
     "top_k": [{"index": 0, "label": "red", "score": 0.97}, ...],   # best first
     "outputs": {"probs": {"dtype": "float32", "shape": [1, 3],   # only when small
                           "data": [0.97, 0.02, 0.01]}}}

``run`` is a random id drawn when the agent's result stream starts and ``seq`` counts
that stream's published results from 1, so a receiver that sees the same ``(run, seq)``
twice (IoT delivery is at least once) keeps one. ``top_k`` ranks the model's scores
output (its ``postprocess`` metadata says which output, how many classes and whether to
apply a softmax; ``labels`` name the classes, else ``label`` is null); it is empty when
the model has no scores output to rank. ``outputs`` holds every output tensor, flattened
in C order, when they are small enough (the stream's ``rawOutputsMaxBytes``).

:class:`ResultCounts` is what a metrics report says of the stream: how many results were
published, suppressed by the publishing policy (by rule), dropped because the publisher
fell behind, and refused by each destination.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from agent.wire.errors import SchemaError
from agent.wire.fields import Count, Schema, Variant

RESULT_TYPE = "result"
SuppressReason = Literal["every_n", "rate", "unchanged", "below_score"]
SUPPRESS_REASONS: tuple[SuppressReason, ...] = ("every_n", "rate", "unchanged", "below_score")
Destination = Literal["local", "iot", "shm"]
DESTINATIONS: tuple[Destination, ...] = ("local", "iot", "shm")
Short = Annotated[str, Field(min_length=1, max_length=256)]


class RankedClass(Schema):
    """One of the best classes: its index among the scores, its name, its score."""

    index: Annotated[int, Field(ge=0)]
    label: Short | None
    score: float


class Frame(Schema):
    """Which input this result is about: the source's frame number and its time."""

    id: Annotated[int, Field(ge=0)]
    time: Annotated[float, Field(ge=0.0)]  # Unix seconds (the device's clock)


class RawOutput(Schema):
    """One output tensor, flattened in C order."""

    dtype: Short
    shape: list[Annotated[int, Field(ge=0)]]
    data: list[float] | list[int]


class Result(Schema):
    """One published prediction (schema version 1)."""

    v: Literal[1] = 1
    type: Literal["result"] = "result"
    thing: Short
    run: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    seq: Annotated[int, Field(ge=1)]
    model: Short
    version: Short
    variant: Variant
    source: Short
    frame: Frame
    top_k: list[RankedClass]
    outputs: dict[str, RawOutput] | None = None


class ResultCounts(Schema):
    """The result stream's counters, cumulative since the agent started."""

    seen: Count  # inferences offered to the stream
    published: Count
    suppressed: dict[SuppressReason, Count]
    dropped: Count  # the publisher was behind: not even looked at
    failed: dict[Destination, Count]  # publishes a destination refused or could not take


def parse_result(raw: bytes | str | dict[str, Any]) -> Result:
    """A published result (its JSON text, or the object a JSON reader made of it),
    validated; :class:`~agent.wire.errors.SchemaError` when it is not one."""
    try:
        obj = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(f"a result is a JSON object: {err}") from err
    try:
        return Result.model_validate(obj)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise SchemaError(f"not a result: {where}: {first['msg']}") from err
