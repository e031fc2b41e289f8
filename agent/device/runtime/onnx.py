"""ONNX Runtime backend with IOBinding on caller-owned buffers.

Execution providers are chosen from what the device's onnxruntime build offers,
best first (TensorRT, CUDA, CPU), unless configured. Inputs and outputs are
bound once by address, so each :meth:`OnnxBackend.run` is a single
``run_with_iobinding`` call that allocates no numpy array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent.core.errors import (
    AgentError,
    ArtifactCorruptError,
    BackendUnavailableError,
    InferenceError,
    ModelLoadError,
)
from agent.core.model_layout import TensorSpec, as_dtype
from agent.device.platform.resolve import model_file
from agent.device.runtime.base import check_input_buffers, check_output_buffers

PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
}


class OnnxConfig(BaseModel):
    """Settings of the ONNX Runtime backend (keys in either case style, like the agent's
    settings)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    type: Literal["onnx"] = "onnx"
    providers: list[str] | None = Field(
        default=None, description="execution providers in order; default: best available"
    )
    intra_op_threads: int | None = Field(default=None, ge=1)
    inter_op_threads: int | None = Field(default=None, ge=1)


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailableError(
            "onnxruntime is not installed (no wheel exists for 32-bit ARM; use the dlr backend)"
        ) from err
    return onnxruntime


def _static_shape(raw: Sequence[Any]) -> tuple[int, ...]:
    # A symbolic batch dimension is served at batch 1: the loop runs one sample at a time.
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in raw) or (1,)


class OnnxBackend:
    """One ONNX Runtime session with bound buffers. Not thread-safe."""

    name = "onnx"

    def __init__(self, *, artifact_dir: Path, config: OnnxConfig | None = None) -> None:
        self.config = config or OnnxConfig()
        self.model_path = model_file(artifact_dir)
        ort = self._ort = _import_ort()
        available = list(ort.get_available_providers())
        wanted = self.config.providers or [p for p in PREFERRED_PROVIDERS if p in available]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"providers {missing} are not in this onnxruntime build (has {available})"
            )
        options = ort.SessionOptions()
        if self.config.intra_op_threads:
            options.intra_op_num_threads = self.config.intra_op_threads
        if self.config.inter_op_threads:
            options.inter_op_num_threads = self.config.inter_op_threads
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                                providers=wanted)
        except Exception as err:  # onnxruntime raises its own pybind error types
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ArtifactCorruptError(f"{self.model_path}: onnxruntime refused it: {text}") \
                from err
        self.providers = tuple(self.session.get_providers())
        self.inputs = tuple(self._spec(arg) for arg in self.session.get_inputs())
        self.outputs = tuple(self._spec(arg) for arg in self.session.get_outputs())
        self._binding: Any = None
        self._run: Callable[[], object] | None = None
        self._bound: tuple[np.ndarray, ...] = ()
        self._request_binding: Any = None
        self._request_run: Callable[[], object] | None = None
        self._request_arrays: tuple[int, ...] = ()  # ids of the arrays bound last
        self._request_refs: tuple[np.ndarray, ...] = ()

    def _spec(self, arg: Any) -> TensorSpec:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadError(f"{self.model_path.name}: unsupported tensor type {arg.type}")
        return TensorSpec(name=arg.name, dtype=as_dtype(dtype),
                          shape=_static_shape(arg.shape))

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        check_input_buffers(self.inputs, inputs)
        outputs = tuple(np.zeros(spec.shape, dtype=spec.dtype) for spec in self.outputs)
        binding = self.session.io_binding()
        for spec, array in zip(self.inputs, inputs, strict=True):
            binding.bind_input(spec.name, "cpu", 0, array.dtype, list(array.shape),
                               array.ctypes.data)
        for spec, array in zip(self.outputs, outputs, strict=True):
            binding.bind_output(spec.name, "cpu", 0, array.dtype, list(array.shape),
                                array.ctypes.data)
        self._bound = tuple(inputs) + outputs
        self._binding = binding
        self._run = self._fast_run(binding)
        return outputs

    def _fast_run(self, binding: Any) -> Callable[[], object]:
        """The bound call the public ``run_with_iobinding`` makes, minus its wrapper.

        The Python wrapper costs a few hundred bytes of temporaries and about a
        microsecond per call; the C++ session method it forwards to, given a
        prebuilt RunOptions, costs neither. Builds without those internals get
        the public method.
        """
        inner, raw = getattr(self.session, "_sess", None), getattr(binding, "_iobinding", None)
        if inner is None or raw is None or not hasattr(inner, "run_with_iobinding"):
            return functools.partial(self.session.run_with_iobinding, binding)
        return functools.partial(inner.run_with_iobinding, raw, self._ort.RunOptions())

    def run(self) -> None:
        if self._run is None:
            raise InferenceError(f"{self.model_path.name}: run() before bind()")
        try:
            self._run()
        except Exception as err:  # onnxruntime's pybind error types share no base
            raise self.translate(err) from err

    def run_with(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """Run on request buffers with a second IOBinding pointed at them: ONNX Runtime
        reads the inputs and writes the outputs in place, so nothing is copied."""
        arrays = (*inputs, *outputs)
        ids = tuple(id(a) for a in arrays)
        run = self._request_run
        if run is None or ids != self._request_arrays or any(
                a is not b for a, b in zip(arrays, self._request_refs, strict=True)):
            check_input_buffers(self.inputs, inputs)
            check_output_buffers(self.outputs, outputs)
            binding = self._request_binding
            if binding is None:
                binding = self._request_binding = self.session.io_binding()
            for spec, array in zip(self.inputs, inputs, strict=True):
                binding.bind_input(spec.name, "cpu", 0, array.dtype, spec.shape,
                                   array.ctypes.data)
            for spec, array in zip(self.outputs, outputs, strict=True):
                binding.bind_output(spec.name, "cpu", 0, array.dtype, spec.shape,
                                    array.ctypes.data)
            # The same buffers next time (a client's shared-memory views) need no rebinding.
            run = self._request_run = self._fast_run(binding)
            self._request_arrays, self._request_refs = ids, arrays
        try:
            run()
        except Exception as err:  # onnxruntime's pybind error types share no base
            raise self.translate(err) from err

    def runner(self) -> Callable[[], object]:
        if self._run is None:
            raise InferenceError(f"{self.model_path.name}: runner() before bind()")
        return self._run

    def translate(self, err: Exception) -> AgentError:
        if isinstance(err, AgentError):
            return err
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return InferenceError(f"{self.model_path.name}: {text}")

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "library": f"onnxruntime {self._ort.__version__}",
                "providers": ",".join(self.providers), "artifact": str(self.model_path)}

    def close(self) -> None:
        self._binding = None
        self._request_binding = None
        self._request_run = None
        self._request_refs = ()
        self._run = None
