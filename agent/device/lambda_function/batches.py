"""One loaded model serving Lambda events: event checks, preallocated buffers, batch runs.

The reference models take one sample per run (batch 1), so the N rows of an
event run one after another through the backend's bound input buffer.
Everything the row loop touches is made once per loaded model: the bound input
and output buffers, a staging array of ``max_rows`` input rows, one of output
rows, and a (staged input, staged output) view pair per row. Per row the loop
copies the staged input into the bound buffer, runs, and copies the output into
its staged row, so it allocates no array; the only per-row objects are those of
the result lists handed back to the caller.

An event is checked completely before any row runs, and a bad one raises a
typed error (:class:`EventError`, :class:`TooManyRowsError` or
:class:`~agent.core.errors.InputSpecError`) while changing nothing.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.errors import ConfigError, InputSpecError
from agent.device.runtime.base import Backend, allocate_inputs

_FLOAT_ITEMS = frozenset({int, float})  # bool is refused: type(True) is bool, not int
_INT_ITEMS = frozenset({int})


class EventError(InputSpecError):
    """The event is not a request the handler understands (no rows, wrong containers)."""


class TooManyRowsError(EventError):
    """The event holds more rows than one invocation accepts."""


@dataclass(frozen=True)
class Request:
    """What one event asks for: the rows to classify and an optional caller's id."""

    rows: list[Any]
    request_id: str | int | None = None


def parse_event(event: object) -> Request:
    """The request in ``event``: ``{"inputs": [row, ...]}`` or ``{"input": row}``.

    An optional ``"id"`` (string or integer) is echoed in the result. A JSON text
    (``str`` or ``bytes``, as a Lambda with binary payload encoding receives it) is
    decoded first. Rows themselves are checked by :meth:`InferenceCore.stage`.
    """
    if isinstance(event, str | bytes | bytearray):
        try:
            event = json.loads(event)
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise EventError(f"the event is not JSON: {err}") from err
    if not isinstance(event, dict):
        raise EventError("the event must be a JSON object with 'inputs' or 'input', got "
                         f"{_kind(event)}")
    has_batch, has_single = "inputs" in event, "input" in event
    if has_batch == has_single:
        raise EventError("give exactly one of 'inputs' (a list of rows) and 'input' (one row)")
    request_id = event.get("id")
    if request_id is not None and (isinstance(request_id, bool)
                                   or not isinstance(request_id, str | int)):
        raise EventError(f"'id' must be a string or an integer, got {_kind(request_id)}")
    if has_single:
        return Request(rows=[event["input"]], request_id=request_id)
    rows = event["inputs"]
    if not isinstance(rows, list):
        raise EventError(f"'inputs' must be a list of rows, got {_kind(rows)}")
    if not rows:
        raise EventError("'inputs' holds no rows")
    return Request(rows=rows, request_id=request_id)


def _kind(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


class InferenceCore:
    """A loaded single-input, single-output model with everything a batch needs, made once.

    A row is the model's whole input flattened in C order (64 numbers for the digits
    models' ``[1, 64]``); its result is the whole output flattened, and ``top1`` is the
    index of its largest value. Not thread-safe: the handler runs one event at a time.
    """

    def __init__(self, backend: Backend, *, label: str, version: str | None,
                 max_rows: int) -> None:
        if len(backend.inputs) != 1 or len(backend.outputs) != 1:
            raise ConfigError(f"{label}: the Lambda handler serves models with one input and "
                              f"one output; this one has {len(backend.inputs)} and "
                              f"{len(backend.outputs)}")
        if max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
        self.backend, self.label, self.version, self.max_rows = backend, label, version, max_rows
        self.input_spec, self.output_spec = backend.inputs[0], backend.outputs[0]
        self.row_size = math.prod(self.input_spec.shape)
        self.output_size = math.prod(self.output_spec.shape)
        self._dtype = np.dtype(self.input_spec.dtype)
        self._item_types = _FLOAT_ITEMS if self._dtype.kind == "f" else _INT_ITEMS
        inputs = allocate_inputs(backend.inputs)
        self._input = inputs[0]
        self._output = backend.bind(inputs)[0]
        self._run = backend.runner()
        self._staged_in = np.zeros((max_rows, self.row_size), dtype=self._dtype)
        self._staged_out = np.zeros((max_rows, self.output_size), dtype=self.output_spec.dtype)
        self._pairs = [(self._staged_in[i].reshape(self.input_spec.shape),
                        self._staged_out[i].reshape(self.output_spec.shape))
                       for i in range(max_rows)]

    def infer(self, rows: Sequence[object]) -> dict[str, Any]:
        """Check and run ``rows``; the result the handler returns."""
        count = self.stage(rows)
        elapsed_ns = self.run_staged(count)
        outputs = self._staged_out[:count]
        return {"model": self.label, "version": self.version, "rows": count,
                "outputs": outputs.tolist(), "top1": outputs.argmax(axis=1).tolist(),
                "latency_us": round(elapsed_ns / 1000, 1)}

    def stage(self, rows: Sequence[object]) -> int:
        """Check every row against the input spec and write them into the staging rows;
        the row count. Raises a typed error on the first problem, before any row runs."""
        count = len(rows)
        if count > self.max_rows:
            raise TooManyRowsError(f"{count} rows in one event; at most {self.max_rows}")
        size, types = self.row_size, self._item_types
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise InputSpecError(f"row {i}: expected a list of {size} numbers, got "
                                     f"{_kind(row)}")
            if len(row) != size:
                raise InputSpecError(f"row {i}: expected {size} numbers (input "
                                     f"{self.input_spec.name!r} {list(self.input_spec.shape)}),"
                                     f" got {len(row)}")
            if not types.issuperset(map(type, row)):  # C-speed scan, no per-item bytecode
                raise InputSpecError(self._bad_item(i, row))
        staged = self._staged_in[:count]
        if self._dtype.kind == "f":
            self._stage_floats(rows, staged)
        else:
            self._stage_ints(rows, staged)
        return count

    def _bad_item(self, i: int, row: list[Any]) -> str:
        wanted = "a number" if self._dtype.kind == "f" else "an integer"
        for j, value in enumerate(row):
            if type(value) not in self._item_types:
                return f"row {i}, item {j}: {_short(value)} is not {wanted}"
        return f"row {i}: not all items are {wanted}"

    def _stage_floats(self, rows: Sequence[object], staged: np.ndarray) -> None:
        try:
            values = np.array(rows, dtype=np.float64)
        except OverflowError as err:  # a JSON integer beyond float64
            raise InputSpecError(f"an integer in the event is too large: {err}") from err
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            np.copyto(staged, values, casting="same_kind")
        finite = np.isfinite(staged)
        if not finite.all():
            i, j = (int(k) for k in np.argwhere(~finite)[0])
            original = float(values[i, j])
            why = ("is not finite: NaN and infinities are refused" if not math.isfinite(original)
                   else f"overflows the model's {self._dtype}")
            raise InputSpecError(f"row {i}, item {j}: {original!r} {why}")

    def _stage_ints(self, rows: Sequence[object], staged: np.ndarray) -> None:
        info = np.iinfo(self._dtype)
        try:
            values = np.array(rows, dtype=np.int64)
        except OverflowError as err:
            raise InputSpecError(f"an integer in the event is too large: {err}") from err
        outside = (values < info.min) | (values > info.max)
        if outside.any():
            i, j = (int(k) for k in np.argwhere(outside)[0])
            raise InputSpecError(f"row {i}, item {j}: {int(values[i, j])} is outside the "
                                 f"model's {self._dtype} range [{info.min}, {info.max}]")
        np.copyto(staged, values, casting="unsafe")  # in range: checked above

    def run_staged(self, count: int) -> int:
        """Run the first ``count`` staged rows; the nanoseconds the loop took.

        The loop allocates nothing per row: the pairs, buffers and runner exist already.
        """
        buffer, output, run = self._input, self._output, self._run
        start = time.perf_counter_ns()
        try:
            for staged_in, staged_out in itertools.islice(self._pairs, count):
                buffer[...] = staged_in
                run()
                staged_out[...] = output
        except Exception as err:  # the backend's raw runner: translated here
            raise self.backend.translate(err) from err
        return time.perf_counter_ns() - start

    def close(self) -> None:
        """Free the model; the core cannot run afterwards."""
        self._pairs = []
        self.backend.close()


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
