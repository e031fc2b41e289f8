"""The three data files of a TVM graph-executor artifact, as SageMaker Neo writes them.

``compiled_model.json`` (the graph), ``compiled.params`` (the weights, TVM's
NDArray-list binary) and ``compiled.meta`` (input/output names that DLR
reports). libdlr 1.6.0 reads them with TVM's own loaders, so the layouts here
are those loaders' layouts to the byte; the graph is described once, as a
:class:`Graph`, and both the JSON and the C runner are generated from it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PARAMS_MAGIC = 0xF7E58D4F05049CB7
TENSOR_MAGIC = 0xDD5E40F096B4A13F
_DEVICE_CPU = 1
# DLPack (code, bits) per numpy dtype.
_DL_DTYPES: dict[str, tuple[int, int]] = {
    "float32": (2, 32),
    "float16": (2, 16),
    "int8": (0, 8),
    "int32": (0, 32),
    "int64": (0, 64),
    "uint8": (1, 8),
}


@dataclass(frozen=True)
class Entry:
    """One tensor of the graph: a graph input, a weight, or a kernel's output."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class Kernel:
    """One fused operator: a function in ``compiled.so`` taking inputs then its output."""

    func_name: str
    inputs: tuple[str, ...]  # entry names, in argument order
    output: Entry


@dataclass(frozen=True)
class Graph:
    """A single-input, single-output chain of kernels over named weights."""

    input: Entry
    params: tuple[Entry, ...]
    kernels: tuple[Kernel, ...]
    output_name: str  # the name DLR reports for the last kernel's output

    def entries(self) -> list[Entry]:
        """Every tensor in node order: the input, the weights, then kernel outputs."""
        return [self.input, *self.params, *(kernel.output for kernel in self.kernels)]

    def index(self, name: str) -> int:
        for position, entry in enumerate(self.entries()):
            if entry.name == name:
                return position
        raise KeyError(name)


def graph_json(graph: Graph) -> str:
    """``compiled_model.json``: TVM graph-executor JSON (one output per node)."""
    nodes: list[dict[str, object]] = [{"op": "null", "name": graph.input.name, "inputs": []}]
    nodes += [{"op": "null", "name": param.name, "inputs": []} for param in graph.params]
    for kernel in graph.kernels:
        nodes.append(
            {
                "op": "tvm_op",
                "name": kernel.output.name,
                "attrs": {
                    "func_name": kernel.func_name,
                    "num_inputs": str(len(kernel.inputs)),
                    "num_outputs": "1",
                    "flatten_data": "0",
                },
                "inputs": [[graph.index(name), 0, 0] for name in kernel.inputs],
            }
        )
    entries = graph.entries()
    document = {
        "nodes": nodes,
        "arg_nodes": list(range(1 + len(graph.params))),
        "heads": [[len(entries) - 1, 0, 0]],
        "attrs": {
            "dltype": ["list_str", [entry.dtype for entry in entries]],
            # Every tensor gets its own storage: the graph is tiny and aliasing buys nothing.
            "storage_id": ["list_int", list(range(len(entries)))],
            "shape": ["list_shape", [list(entry.shape) for entry in entries]],
        },
        "node_row_ptr": list(range(len(entries) + 1)),
    }
    return json.dumps(document, indent=2) + "\n"


def meta_json(graph: Graph) -> str:
    """``compiled.meta``: what DLR's ``get_input_names``/``get_output_names`` report."""
    last = graph.kernels[-1].output

    def spec(name: str, entry: Entry) -> dict[str, object]:
        return {"name": name, "dtype": entry.dtype, "shape": list(entry.shape)}

    document = {
        "Model": {
            "Inputs": [spec(graph.input.name, graph.input)],
            "Outputs": [spec(graph.output_name, last)],
        }
    }
    return json.dumps(document, indent=2) + "\n"


def params_bytes(arrays: Mapping[str, np.ndarray], order: Sequence[str]) -> bytes:
    """``compiled.params``: TVM's ``SaveParams`` layout, little-endian, arrays in ``order``."""
    out = bytearray(struct.pack("<QQQ", PARAMS_MAGIC, 0, len(order)))
    for name in order:
        encoded = name.encode()
        out += struct.pack("<Q", len(encoded)) + encoded
    out += struct.pack("<Q", len(order))
    for name in order:
        array = np.ascontiguousarray(arrays[name])
        code, bits = _DL_DTYPES[str(array.dtype)]
        out += struct.pack("<QQiiiBBH", TENSOR_MAGIC, 0, _DEVICE_CPU, 0, array.ndim, code, bits, 1)
        out += struct.pack(f"<{array.ndim}q", *array.shape)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        out += struct.pack("<q", len(data)) + data
    return bytes(out)


def read_params(data: bytes) -> dict[str, np.ndarray]:
    """Parse ``compiled.params`` back into arrays (for checks and tests)."""
    by_code = {value: np.dtype(key) for key, value in _DL_DTYPES.items()}
    magic, _, count = struct.unpack_from("<QQQ", data, 0)
    if magic != PARAMS_MAGIC:
        raise ValueError("not a TVM params file")
    offset = 24
    names = []
    for _ in range(count):
        (length,) = struct.unpack_from("<Q", data, offset)
        names.append(data[offset + 8 : offset + 8 + length].decode())
        offset += 8 + length
    (arrays_count,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    if arrays_count != count:
        raise ValueError("params file has different numbers of names and arrays")
    result: dict[str, np.ndarray] = {}
    for name in names:
        magic, _, _, _, ndim, code, bits, _ = struct.unpack_from("<QQiiiBBH", data, offset)
        if magic != TENSOR_MAGIC:
            raise ValueError(f"bad tensor magic for {name}")
        offset += 32
        shape = struct.unpack_from(f"<{ndim}q", data, offset)
        offset += 8 * ndim
        (nbytes,) = struct.unpack_from("<q", data, offset)
        offset += 8
        dtype = by_code[(code, bits)].newbyteorder("<")
        result[name] = np.frombuffer(data, dtype, nbytes // dtype.itemsize, offset).reshape(shape)
        offset += nbytes
    return result
