"""The contract every runtime backend honours, and helpers they share.

A backend loads one artifact directory, reports its tensor specs, binds
caller-owned input buffers once and then runs with no per-call allocation.
Output arrays are created once at :meth:`Backend.bind`; after each
:meth:`Backend.run` they hold the newest result (for DLR they are views on the
runtime's own output memory, for ONNX Runtime buffers bound through IOBinding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from agent.core.errors import AgentError, InputSpecError
from agent.core.model_layout import TensorSpec


class Backend(Protocol):
    """What the inference loop needs from a runtime."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Bind input buffers (one per input spec) and return the output arrays."""
        ...

    def run(self) -> None:
        """Run once on the bound inputs; the output arrays then hold the result.

        Failures raise :class:`~agent.core.errors.InferenceError`.
        """
        ...

    def runner(self) -> Callable[[], object]:
        """The cheapest zero-argument call that does what :meth:`run` does.

        For the inference loop's hot path: it may raise the runtime's own
        exception types, which :meth:`translate` turns into agent errors.
        """
        ...

    def translate(self, err: Exception) -> AgentError:
        """The agent error for an exception raised by :meth:`runner`'s callable."""
        ...

    def run_with(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """Run once on ``inputs`` and leave the result in ``outputs`` (caller-owned arrays,
        one per input and output spec, exact dtype and shape, C-contiguous).

        The request path: the arrays may be views on a client's shared memory, so the
        backend reads and writes them where they are. It leaves the buffers bound by
        :meth:`bind` as they were, so the loop's next :meth:`run` is unaffected.
        Failures raise :class:`~agent.core.errors.InferenceError`; arrays that do not fit
        raise :class:`~agent.core.errors.InputSpecError` before anything runs.
        """
        ...

    def describe(self) -> dict[str, str]:
        """Library, version and device facts for logs and reports."""
        ...

    def close(self) -> None: ...


def check_input_buffers(specs: Sequence[TensorSpec], arrays: Sequence[np.ndarray]) -> None:
    """Raise :class:`InputSpecError` unless each array fits its spec and is C-contiguous."""
    if len(arrays) != len(specs):
        raise InputSpecError(f"model takes {len(specs)} input(s), got {len(arrays)}")
    for spec, array in zip(specs, arrays, strict=True):
        if not isinstance(array, np.ndarray):
            raise InputSpecError(f"input {spec.name!r}: expected a numpy array, got {type(array)}")
        if array.dtype != np.dtype(spec.dtype):
            raise InputSpecError(
                f"input {spec.name!r}: dtype {array.dtype} does not match the model's {spec.dtype}"
            )
        if tuple(array.shape) != tuple(spec.shape):
            raise InputSpecError(
                f"input {spec.name!r}: shape {tuple(array.shape)} does not match the model's "
                f"{tuple(spec.shape)}"
            )
        if not array.flags.c_contiguous:
            raise InputSpecError(f"input {spec.name!r}: buffer must be C-contiguous")


def check_output_buffers(specs: Sequence[TensorSpec], arrays: Sequence[np.ndarray]) -> None:
    """Raise :class:`InputSpecError` unless each destination fits its output spec and is a
    writeable, C-contiguous array."""
    if len(arrays) != len(specs):
        raise InputSpecError(f"model has {len(specs)} output(s), got {len(arrays)} buffer(s)")
    for spec, array in zip(specs, arrays, strict=True):
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec.dtype) \
                or tuple(array.shape) != tuple(spec.shape):
            raise InputSpecError(
                f"output {spec.name!r}: buffer must be {spec.dtype} {list(spec.shape)}")
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise InputSpecError(f"output {spec.name!r}: buffer must be writeable and "
                                 "C-contiguous")


def allocate_inputs(specs: Sequence[TensorSpec]) -> tuple[np.ndarray, ...]:
    """Zero-filled, C-contiguous buffers matching ``specs``, allocated once."""
    return tuple(np.zeros(spec.shape, dtype=spec.dtype) for spec in specs)
