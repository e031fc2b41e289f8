"""DLR backend: Neo-compiled (TVM graph) artifacts through the real ``libdlr.so``.

The C API is bound with ctypes (see :mod:`agent.device.runtime.dlr.library` for why the
``dlr`` package is never imported). The hot path is two C calls with arguments
built once at :meth:`DlrBackend.bind`: ``SetDLRInputTensor`` from the caller's
buffer and ``RunDLRModel``. Outputs are numpy views on the runtime's own output
tensors (``GetDLROutputPtr``), which the TVM graph executor allocates once per
model, so reading a result copies nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent.core.errors import AgentError, InferenceError, ModelLoadError
from agent.core.model_layout import DLR_FILES, TensorSpec, as_dtype
from agent.device.platform.elf import check_elf_arch
from agent.device.runtime.base import check_input_buffers, check_output_buffers
from agent.device.runtime.dlr.library import LIBNAME, DlrLibrary, locate_installed, open_library
from agent.device.runtime.dlr.neo_format import validate_artifact

_DEVICE_TYPES = {"cpu": 1, "gpu": 2}  # DLPack kDLCPU, kDLCUDA


_DLPACK_CODES = {"i": 0, "u": 1, "f": 2}


class _DLTensor(ctypes.Structure):
    """DLPack's DLTensor (dlpack.h, as TVM 0.x and libdlr 1.6 lay it out)."""

    _fields_ = (
        ("data", ctypes.c_void_p),
        ("device_type", ctypes.c_int32),
        ("device_id", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("code", ctypes.c_uint8),
        ("bits", ctypes.c_uint8),
        ("lanes", ctypes.c_uint16),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.c_void_p),
        ("byte_offset", ctypes.c_uint64),
    )

    @classmethod
    def over(cls, array: np.ndarray) -> _DLTensor:
        """A DLTensor describing ``array`` in place (C-contiguous CPU memory)."""
        shape = (ctypes.c_int64 * array.ndim)(*array.shape)
        tensor = cls(array.ctypes.data, 1, 0, array.ndim, _DLPACK_CODES[array.dtype.kind],
                     array.dtype.itemsize * 8, 1, shape, None, 0)
        tensor._shape_keepalive = shape
        return tensor


def _untyped(lib: ctypes.CDLL, name: str) -> Any:
    func = lib[name]  # a fresh function object, unlike attribute access
    func.restype = ctypes.c_int
    return func


class DlrConfig(BaseModel):
    """Settings of the DLR backend (keys in either case style, like the agent's settings)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    type: Literal["dlr"] = "dlr"
    library: Literal["installed", "artifact"] = Field(
        default="installed",
        description="which libdlr.so wins when the artifact ships its own (see dlr_lib)",
    )
    library_path: Path | None = None
    num_threads: int | None = Field(default=None, ge=1)
    device: Literal["cpu", "gpu"] = "cpu"


class DlrBackend:
    """One loaded Neo artifact. Not thread-safe: one caller runs it."""

    name = "dlr"

    def __init__(self, *, artifact_dir: Path, config: DlrConfig | None = None) -> None:
        self.config = config or DlrConfig()
        self.artifact_dir = artifact_dir
        summary = validate_artifact(artifact_dir)
        check_elf_arch(artifact_dir / "compiled.so")
        self.library = self._choose_library(artifact_dir)
        self._lib = self.library.cdll
        self._handle = ctypes.c_void_p()
        self._handle_ref = ctypes.byref(self._handle)
        # libdlr is given the artifact's files, not the directory: pointed at a directory
        # it scans every file and refuses one that holds any unrelated second *.json.
        files = [artifact_dir / name for name in DLR_FILES]
        if (artifact_dir / "compiled.meta").is_file():
            files.append(artifact_dir / "compiled.meta")
        rc = self._lib.CreateDLRModel(
            self._handle_ref, ":".join(str(f) for f in files).encode(),
            _DEVICE_TYPES[self.config.device], 0,
        )
        if rc != 0:
            self._handle.value = None
            raise ModelLoadError(f"libdlr refused {artifact_dir}: {self._last_error()}")
        try:
            self.backend = self._query_str(self._lib.GetDLRBackend)
            if self.config.num_threads:
                self._check(self._lib.SetDLRNumThreads(self._handle_ref, self.config.num_threads),
                            ModelLoadError, "SetDLRNumThreads")
            self.inputs = self._query_inputs(summary.inputs)
            self.outputs = self._query_outputs(summary.outputs)
        except AgentError:
            self.close()
            raise
        # The hot path calls untyped twins of the C functions with arguments built once:
        # with argtypes declared, ctypes converts (and allocates for) every argument on
        # every call. SetDLRInputTensor copies from a DLTensor that points at the
        # caller's buffer, so refilling that buffer in place is all a new input takes.
        self._run = _untyped(self._lib, "RunDLRModel")
        self._set_input = _untyped(self._lib, "SetDLRInputTensor")
        self._get_output = _untyped(self._lib, "GetDLROutput")
        self._names = tuple(ctypes.c_char_p(spec.name.encode()) for spec in self.inputs)
        # run_with's arguments per request buffer, by the array's identity (a weak
        # reference tells a live array from a new one at a reused address): a client that
        # names the same shared-memory views again costs no conversion and no re-check.
        self._request_args: dict[int, tuple[weakref.ref[np.ndarray], object]] = {}
        self._tensors: tuple[_DLTensor, ...] = ()
        self._input_args: tuple[tuple[object, ...], ...] = ()
        self._bound: tuple[np.ndarray, ...] = ()

    def _choose_library(self, artifact_dir: Path) -> DlrLibrary:
        bundled = artifact_dir / LIBNAME
        if self.config.library == "artifact" and bundled.is_file():
            check_elf_arch(bundled)
            return open_library(bundled)
        return open_library(locate_installed(self.config.library_path))

    def _last_error(self) -> str:
        raw = self._lib.DLRGetLastError()
        text = raw.decode(errors="replace").strip() if raw else ""
        # TVM appends a native stack trace; the first line carries the reason.
        return text.splitlines()[0] if text else "libdlr gave no reason (its log on stderr may)"

    def _check(self, rc: int, error: type[AgentError], what: str) -> None:
        if rc != 0:
            raise error(f"{what} failed for {self.artifact_dir.name}: {self._last_error()}")

    def _query_str(self, func: Any, *args: object) -> str:
        out = ctypes.c_char_p()
        self._check(func(self._handle_ref, *args, ctypes.byref(out)), ModelLoadError,
                    func.__name__)
        return (out.value or b"").decode()

    def _query_shape(self, size_dim: Any, shape_fn: Any,
                     index: int) -> tuple[int, ...]:
        size, dim = ctypes.c_int64(), ctypes.c_int()
        self._check(size_dim(self._handle_ref, index, ctypes.byref(size), ctypes.byref(dim)),
                    ModelLoadError, size_dim.__name__)
        shape = (ctypes.c_int64 * max(dim.value, 1))()
        self._check(shape_fn(self._handle_ref, index, shape), ModelLoadError, shape_fn.__name__)
        return tuple(int(shape[i]) for i in range(dim.value))

    def _query_inputs(self, declared: Sequence[TensorSpec]) -> tuple[TensorSpec, ...]:
        """The inputs, in the graph's order, checked against what libdlr reports.

        libdlr 1.6 answers ``GetDLRInputName(i)`` from a sorted list of names but
        ``GetDLRInputType(i)``/``GetDLRInputShape(i)`` in graph order, so for a model with
        several inputs index ``i`` does not name one tensor. The names are compared as a
        set and the types and shapes as a sequence; inputs are set by name, so nothing
        depends on libdlr's order.
        """
        count = ctypes.c_int()
        self._check(self._lib.GetDLRNumInputs(self._handle_ref, ctypes.byref(count)),
                    ModelLoadError, "GetDLRNumInputs")
        names = {self._query_str(self._lib.GetDLRInputName, i) for i in range(count.value)}
        layouts = [(as_dtype(self._query_str(self._lib.GetDLRInputType, i)),
                    self._query_shape(self._lib.GetDLRInputSizeDim, self._lib.GetDLRInputShape,
                                      i))
                   for i in range(count.value)]
        if not declared:
            return tuple(TensorSpec(name=name, dtype=dtype, shape=shape)
                         for name, (dtype, shape) in zip(sorted(names), layouts, strict=True))
        if names != {spec.name for spec in declared} or \
                layouts != [(spec.dtype, spec.shape) for spec in declared]:
            raise ModelLoadError(
                f"libdlr reports inputs {sorted(names)} with dtypes and shapes {layouts}, the "
                f"graph declares {[(s.name, s.dtype, s.shape) for s in declared]}")
        return tuple(declared)

    def _query_outputs(self, declared: Sequence[TensorSpec]) -> tuple[TensorSpec, ...]:
        count = ctypes.c_int()
        self._check(self._lib.GetDLRNumOutputs(self._handle_ref, ctypes.byref(count)),
                    ModelLoadError, "GetDLRNumOutputs")
        specs = []
        for i in range(count.value):
            dtype = self._query_str(self._lib.GetDLROutputType, i)
            shape = self._query_shape(self._lib.GetDLROutputSizeDim, self._lib.GetDLROutputShape,
                                      i)
            name = declared[i].name if i < len(declared) else f"output_{i}"
            specs.append(TensorSpec(name=name, dtype=as_dtype(dtype), shape=shape))
        return tuple(specs)

    def bind(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        check_input_buffers(self.inputs, inputs)
        self._bound = tuple(inputs)  # keeps the buffers alive while their addresses are used
        self._tensors = tuple(_DLTensor.over(array) for array in inputs)
        self._input_args = tuple(
            (self._handle_ref, ctypes.c_char_p(spec.name.encode()), ctypes.byref(tensor))
            for spec, tensor in zip(self.inputs, self._tensors, strict=True)
        )
        return tuple(self._output_view(i, spec) for i, spec in enumerate(self.outputs))

    def _output_view(self, index: int, spec: TensorSpec) -> np.ndarray:
        ptr = ctypes.c_void_p()
        self._check(self._lib.GetDLROutputPtr(self._handle_ref, index, ctypes.byref(ptr)),
                    ModelLoadError, "GetDLROutputPtr")
        if not ptr.value:
            raise ModelLoadError(f"libdlr returned no output buffer for {spec.name!r}")
        dtype = np.dtype(spec.dtype)
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        raw = (ctypes.c_char * nbytes).from_address(ptr.value)
        view: np.ndarray = np.frombuffer(memoryview(raw), dtype=dtype).reshape(spec.shape)
        view.flags.writeable = False  # the runtime owns this memory
        return view

    def run(self) -> None:
        set_input = self._set_input
        if len(self._input_args) == 1:  # no iterator object for the common case
            if set_input(*self._input_args[0]):
                raise InferenceError(f"SetDLRInputTensor failed: {self._last_error()}")
        else:
            for args in self._input_args:
                if set_input(*args):
                    raise InferenceError(f"SetDLRInputTensor failed: {self._last_error()}")
        if self._run(self._handle_ref):
            raise InferenceError(f"RunDLRModel failed for {self.artifact_dir.name}: "
                                 f"{self._last_error()}")

    def runner(self) -> Callable[[], object]:
        return self.run

    def run_with(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """Run on request buffers. libdlr 1.6's C API has no zero-copy binding: its
        ``SetDLRInputTensor`` copies the input into the graph's own input tensor (as it does
        for every run of the loop) and ``GetDLROutput`` copies each result into ``outputs``.
        Those copies are the runtime's; nothing is copied on the agent's side."""
        cache = self._request_args
        args = [self._cached(cache, a) for a in inputs]
        dests = [self._cached(cache, a) for a in outputs]
        if None in args or None in dests:
            check_input_buffers(self.inputs, inputs)
            check_output_buffers(self.outputs, outputs)
            if len(cache) > 64:
                cache.clear()
            args = [self._remember(cache, a, (self._handle_ref, name,
                                              ctypes.byref(_DLTensor.over(a))))
                    for name, a in zip(self._names, inputs, strict=True)]
            dests = [self._remember(cache, a, ctypes.c_void_p(a.ctypes.data)) for a in outputs]
        set_input, handle = self._set_input, self._handle_ref
        for arg in args:
            if set_input(*arg):
                raise InferenceError(f"SetDLRInputTensor failed: {self._last_error()}")
        if self._run(handle):
            raise InferenceError(f"RunDLRModel failed for {self.artifact_dir.name}: "
                                 f"{self._last_error()}")
        get_output = self._get_output
        for index, dest in enumerate(dests):
            if get_output(handle, index, dest):
                raise InferenceError(f"GetDLROutput failed: {self._last_error()}")

    @staticmethod
    def _cached(cache: dict[int, tuple[weakref.ref[np.ndarray], Any]], array: np.ndarray) -> Any:
        hit = cache.get(id(array))
        return hit[1] if hit is not None and hit[0]() is array else None

    @staticmethod
    def _remember(cache: dict[int, tuple[weakref.ref[np.ndarray], Any]], array: np.ndarray,
                  value: Any) -> Any:
        cache[id(array)] = (weakref.ref(array), value)
        return value

    def translate(self, err: Exception) -> AgentError:
        if isinstance(err, AgentError):
            return err
        return InferenceError(f"{type(err).__name__}: {err}")

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "runtime": self.backend, "library": str(self.library.path),
                "version": self.library.version, "artifact": str(self.artifact_dir)}

    def close(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.DeleteDLRModel(self._handle_ref)
            handle.value = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()
