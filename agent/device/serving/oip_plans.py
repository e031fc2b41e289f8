"""Prepared shared-memory infer requests: what a client sends again and again, checked once.

An application that uses system shared memory sends the same infer request every time:
the same JSON naming the same regions, offsets and sizes. The first such request is
parsed and checked in full; what it resolves to is kept as a :class:`ShmPlan` (the
regions and places of every input and output, the deadline, and the response header as
a template in which only the variant, the version and the timings change), found again
by the request's path and body bytes. A plan is used only while the region registry is
at the generation it was made in, so a register or an unregister anywhere sends the
next request through the full checks again; it holds the regions it names for each
request (:meth:`~agent.device.serving.regions.RegionRegistry.hold`), as the full path
does, and it keeps no view itself: the views are the regions' own, dropped when a region
is unregistered.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.model_layout import TensorSpec
from agent.device.serving import oip_codec as codec
from agent.device.serving.regions import Region, RegionRegistry
from agent.device.serving.service import InferenceResult

PLAN_CACHE = 256  # plans kept per application; past this they are forgotten and remade
MAX_PLAN_BODY = 16 * 1024  # a longer request body is checked in full every time

_MARK = "\x00{}\x00"  # placeholders in the template (JSON writes them as \u0000...)
_FIELDS = {"version": "%s", "variant": "%s", "queue_us": "%.1f", "model_us": "%.1f",
           "total_us": "%.1f"}
"""What the template has in place of each field: a JSON string, a time in microseconds
(``%.1f`` writes what JSON writes for a time rounded to 0.1 us: its ``repr``)."""


@dataclass(frozen=True)
class Placed:
    """One tensor of a plan: where in which region, in the model's dtype and shape."""

    name: str
    region: Region
    offset: int
    byte_size: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    what: str

    def view(self) -> np.ndarray:
        """The region's view on this tensor (the same array every time while cached)."""
        return self.region.view(self.offset, self.byte_size, self.dtype, self.shape,
                                what=self.what)


@dataclass(frozen=True)
class ShmPlan:
    """A checked infer request whose every input and output is in a region."""

    generation: int  # the registry's generation when the regions were looked up
    version: str | None  # the version the path names: checked again on every request
    inputs: tuple[Placed, ...]
    outputs: tuple[Placed, ...]
    regions: tuple[Region, ...]  # each region once
    timeout_s: float | None
    template: str  # the response header, ``%`` placeholders for what changes

    def header(self, result: InferenceResult) -> bytes:
        """The response's JSON header for ``result``: exactly what
        :func:`~agent.device.serving.oip_codec.encode_infer_response` writes."""
        return (self.template % (
            _json_string(result.version), _json_string(result.variant),
            result.queue_us, result.model_us, result.total_us)).encode()


def response_head(model_name: str, request_id: str | None, *, version: Any, variant: Any,
                  queue_us: Any, model_us: Any, total_us: Any,
                  capture_id: str = "") -> dict[str, Any]:
    """The fields of an infer response's header before its outputs, in their order
    (``parameters.capture_id`` only for a request whose input was captured)."""
    head: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        head["id"] = request_id
    head["parameters"] = {"variant": variant, "queue_us": queue_us, "model_us": model_us,
                          "total_us": total_us}
    if capture_id:
        head["parameters"]["capture_id"] = capture_id
    return head


def response_template(model_name: str, request_id: str | None,
                      outputs: Sequence[codec.EncodedOutput]) -> str:
    """The response header of a request whose outputs are all in regions, as a ``%``
    template of the version and variant (JSON strings) and the three timings (in
    microseconds, below 1e16)."""
    marks = {name: _MARK.format(name) for name in _FIELDS}
    head = response_head(model_name, request_id, **marks)
    text, _buffers, _copied = codec.encode_infer_response(head, outputs)
    template = text.decode().replace("%", "%%")
    for name, placeholder in _FIELDS.items():
        quoted = codec.compact_json(marks[name]).decode()
        if template.count(quoted) != 1:
            raise AssertionError(f"response template: {name} placed {template.count(quoted)}"
                                 " times")
        template = template.replace(quoted, placeholder)
    return template


@functools.lru_cache(maxsize=64)
def _json_string(value: str) -> str:
    return codec.compact_json(value).decode()


class PlanCache:
    """Plans by (path, body bytes), at most :data:`PLAN_CACHE` of them."""

    def __init__(self, size: int = PLAN_CACHE) -> None:
        self.size = size
        self._plans: dict[tuple[str, bytes], ShmPlan] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bytes]) -> ShmPlan | None:
        return self._plans.get(key)

    def put(self, key: tuple[str, bytes], plan: ShmPlan) -> None:
        with self._lock:
            if len(self._plans) >= self.size and key not in self._plans:
                self._plans.clear()
            self._plans[key] = plan

    def drop(self, key: tuple[str, bytes], plan: ShmPlan) -> None:
        """Forget ``plan`` (unless another thread has replaced it meanwhile)."""
        with self._lock:
            if self._plans.get(key) is plan:
                del self._plans[key]

    def __len__(self) -> int:
        return len(self._plans)


class RequestRegions:
    """The regions one request uses, each held (``registry.using``) until it is answered,
    and the places it viewed in them (for its plan)."""

    def __init__(self, registry: RegionRegistry, stack: contextlib.ExitStack) -> None:
        self._registry = registry
        self._stack = stack
        self._held: dict[str, Region] = {}
        self._inputs: list[Placed] = []
        self._outputs: list[Placed] = []

    def view(self, name: str, ref: codec.ShmRef, dtype: np.dtype[Any], spec: TensorSpec, *,
             what: str, output: bool = False) -> np.ndarray:
        region = self._held.get(ref.region)
        if region is None:
            region = self._held[ref.region] = self._stack.enter_context(
                self._registry.using(ref.region))
        place = Placed(name, region, ref.offset, ref.byte_size, dtype,
                             tuple(spec.shape), what)
        (self._outputs if output else self._inputs).append(place)
        return place.view()

    def plan(self, generation: int, version: str | None, parsed: codec.InferRequest,
             encoded: list[codec.EncodedOutput], model_name: str) -> ShmPlan | None:
        """The plan of this request: None unless every input and output is in a region
        and it does not ask for a capture (its answer names the capture)."""
        if parsed.capture is not None or len(self._inputs) != len(parsed.inputs) or \
                any(out.shm is None for out in encoded):
            return None
        return ShmPlan(
            generation=generation, version=version, inputs=tuple(self._inputs),
            outputs=tuple(self._outputs), regions=tuple(self._held.values()),
            timeout_s=parsed.timeout_s,
            template=response_template(model_name, parsed.id, encoded))
