"""What every front end of the local inference API calls: the served model's description
and :meth:`InferenceService.infer`.

The HTTP server (Open Inference Protocol) and the native socket both turn a request
into named numpy arrays (views on a registered shared-memory region, or arrays decoded
from the body) and call :meth:`InferenceService.infer` from their own thread; it checks
them against the model, queues the request for the inference thread and waits for the
answer, which names the variant and version that gave it, and the capture that kept
its input when the application asked for one (``capture``) and the capture rules kept it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from agent.core.errors import InputSpecError, ModelNotFoundError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata
from agent.device.inference.capture_hooks import CaptureAsk
from agent.device.inference.requests import InferenceRequest, RequestQueue
from agent.device.inference.router import VariantRouter

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServedModel:
    """The model the API serves: its name, runtime, tensors and description."""

    name: str
    platform: str  # the runtime: "dlr" or "onnx"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: ModelMetadata | None = None

    @property
    def labels(self) -> tuple[str, ...] | None:
        labels = self.metadata.labels if self.metadata is not None else None
        return tuple(labels) if labels else None


@dataclass(frozen=True)
class InferenceResult:
    """One answer: the output arrays (the destinations given, or new ones), who gave it,
    and the id of the capture that kept its input ("" when none did)."""

    outputs: tuple[np.ndarray, ...]
    variant: str
    version: str
    queue_us: float
    model_us: float
    total_us: float
    capture_id: str = ""


class InferenceService:
    """The served model behind every front end."""

    def __init__(self, *, router: VariantRouter, queue: RequestQueue, model: ServedModel,
                 ready: Callable[[], bool] = lambda: True,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.router = router
        self.queue = queue
        self.model = model
        self.timeout_s = timeout_s
        self._ready = ready
        self._input_index = {spec.name: i for i, spec in enumerate(model.inputs)}
        self._output_index = {spec.name: i for i, spec in enumerate(model.outputs)}

    # ---- description ------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        """variant -> model version of what is loaded now (blue, and green on trial)."""
        return self.router.models()

    def ready(self) -> bool:
        """A verified model serves and the inference thread runs."""
        return self._ready()

    def check_model(self, name: str, version: str | None = None) -> None:
        """:class:`ModelNotFoundError` unless ``name`` (and ``version``, when given) is
        served here."""
        if name != self.model.name:
            raise ModelNotFoundError(f"unknown model {name!r}: this agent serves "
                                     f"{self.model.name!r}")
        if version and version not in self.versions().values():
            raise ModelNotFoundError(f"model {name!r} has no version {version!r} loaded "
                                     f"(loaded: {sorted(set(self.versions().values()))})")

    def input_spec(self, name: str) -> TensorSpec:
        index = self._input_index.get(name)
        if index is None:
            raise InputSpecError(f"model {self.model.name!r} has no input {name!r} "
                                 f"(inputs: {list(self._input_index)})")
        return self.model.inputs[index]

    def output_spec(self, name: str) -> TensorSpec:
        index = self._output_index.get(name)
        if index is None:
            raise InputSpecError(f"model {self.model.name!r} has no output {name!r} "
                                 f"(outputs: {list(self._output_index)})")
        return self.model.outputs[index]

    # ---- inference --------------------------------------------------------------------

    def _name_problem(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`InputSpecError` naming the missing or unknown inputs."""
        for name in inputs:
            self.input_spec(name)
        missing = [s.name for s in self.model.inputs if s.name not in inputs]
        raise InputSpecError(f"missing input(s) {missing} of model {self.model.name!r}")

    def infer(self, inputs: Mapping[str, np.ndarray],
              outputs: Mapping[str, np.ndarray] | None = None, *,
              timeout_s: float | None = None, shared: bool = False,
              capture: CaptureAsk | None = None) -> InferenceResult:
        """Run the model on ``inputs`` (every input, by name) and answer.

        ``outputs`` gives destinations for some or all outputs (views on a client's
        region); the others are allocated here. ``shared`` says the inputs are in memory
        the client reuses after the answer. ``capture`` is the application's ask to keep
        the input (the result's ``capture_id`` names the capture when it was). Raises
        :class:`InputSpecError` for a missing, unknown or mis-shaped tensor,
        :class:`~agent.core.errors.ServerBusyError` when the queue is full,
        :class:`~agent.core.errors.DeadlineExceededError` when no answer comes within
        ``timeout_s``, and the runtime's error when the run failed.
        """
        specs = self.model.inputs
        try:
            if len(inputs) != len(specs):
                raise KeyError
            ordered = tuple(inputs[spec.name] for spec in specs)
        except KeyError:
            self._name_problem(inputs)
            raise
        if outputs:
            for name in outputs:
                self.output_spec(name)
            dests = tuple(outputs[spec.name] if spec.name in outputs
                          else np.empty(spec.shape, dtype=spec.dtype)
                          for spec in self.model.outputs)
        else:
            dests = tuple(np.empty(spec.shape, dtype=spec.dtype)
                          for spec in self.model.outputs)
        # The runtime checks dtypes, shapes and layout (once per buffer it has not seen).
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        request = InferenceRequest(inputs=ordered, outputs=dests, shared=shared,
                                   deadline_ns=time.perf_counter_ns() + int(wait_s * 1e9),
                                   capture=capture)
        self.router.loop.answer(request, wait_s)
        if request.error is not None:
            raise request.error
        return InferenceResult(outputs=dests, variant=request.variant,
                               version=request.version,
                               queue_us=request.queue_ns / 1000,
                               model_us=request.model_ns / 1000,
                               total_us=(request.finished_ns - request.enqueued_ns) / 1000,
                               capture_id=request.capture_id)
