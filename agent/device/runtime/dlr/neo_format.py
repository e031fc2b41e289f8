"""Validation of Neo-format (TVM graph executor) artifacts before native code sees them.

libdlr trusts its files: a truncated ``compiled.params`` or a graph that does
not match its weights fails deep inside the runtime with a terse message, or
worse. Everything here is pure Python and reads only what the formats declare,
so a corrupt artifact becomes an :class:`~agent.core.errors.ArtifactError` naming
the file and the fault.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import ArtifactCorruptError, ArtifactMissingError
from agent.core.model_layout import DLR_FILES, TensorSpec, as_dtype
from agent.device.platform.elf import exported_symbols

PARAMS_MAGIC = 0xF7E58D4F05049CB7
TENSOR_MAGIC = 0xDD5E40F096B4A13F

# DLPack type codes: 0 int, 1 uint, 2 float.
_DTYPES = {(2, 32): "float32", (2, 16): "float16", (0, 8): "int8", (1, 8): "uint8",
           (0, 32): "int32", (0, 64): "int64"}
_MAX_NDIM = 16


@dataclass(frozen=True)
class GraphSummary:
    """What the graph JSON says about the model's interface and kernels."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: dict[str, TensorSpec]
    kernels: tuple[str, ...]


def check_files(artifact_dir: Path) -> None:
    if not artifact_dir.is_dir():
        raise ArtifactMissingError(f"{artifact_dir}: artifact directory does not exist")
    for name in DLR_FILES:
        if not (artifact_dir / name).is_file():
            raise ArtifactMissingError(f"{artifact_dir}: missing {name}")


def _corrupt(path: Path, what: str) -> ArtifactCorruptError:
    return ArtifactCorruptError(f"{path.name}: {what}")


def read_graph(path: Path, meta_path: Path | None = None) -> GraphSummary:
    """Parse ``compiled_model.json`` (and ``compiled.meta`` for names) into a summary."""
    try:
        graph = json.loads(path.read_text())
        nodes: list[dict[str, Any]] = graph["nodes"]
        arg_nodes: list[int] = graph["arg_nodes"]
        heads: list[list[int]] = graph["heads"]
        row_ptr: list[int] = graph["node_row_ptr"]
        attrs = graph["attrs"]
        dltypes: list[str] = attrs["dltype"][1]
        shapes: list[list[int]] = attrs["shape"][1]
        storage: list[int] = attrs["storage_id"][1]
    except FileNotFoundError as err:
        raise ArtifactMissingError(f"{path}: no such file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _corrupt(path, f"not valid JSON ({err})") from err
    except (KeyError, IndexError, TypeError) as err:
        raise _corrupt(path, f"not a TVM graph: missing or malformed {err}") from err

    entries = row_ptr[-1] if row_ptr else 0
    if len(row_ptr) != len(nodes) + 1 or not (len(dltypes) == len(shapes) == len(storage)
                                               == entries):
        raise _corrupt(path, "node_row_ptr, dltype, shape and storage_id lengths disagree")

    def spec(node_id: int, index: int, name: str) -> TensorSpec:
        if not 0 <= node_id < len(nodes):
            raise _corrupt(path, f"node index {node_id} out of range")
        entry = row_ptr[node_id] + index
        dtype = dltypes[entry]
        if dtype not in _DTYPES.values():
            raise _corrupt(path, f"unsupported dtype {dtype!r} for {name!r}")
        shape = tuple(int(d) for d in shapes[entry])
        return TensorSpec(name=name, dtype=as_dtype(dtype), shape=shape)

    kernels = tuple(
        str(node["attrs"]["func_name"]) for node in nodes if node.get("op") == "tvm_op"
    )
    arg_specs = [spec(i, 0, str(nodes[i]["name"])) for i in arg_nodes]
    output_specs = [spec(h[0], h[1], str(nodes[h[0]]["name"])) for h in heads]
    meta = _read_meta(meta_path) if meta_path is not None and meta_path.is_file() else None
    input_names = {str(item["name"]) for item in meta["Inputs"]} if meta else None
    if meta and "Outputs" in meta and len(meta["Outputs"]) == len(output_specs):
        output_specs = [
            s.model_copy(update={"name": str(o.get("name", s.name))})
            for s, o in zip(output_specs, meta["Outputs"], strict=True)
        ]
    params = {s.name: s for s in arg_specs if input_names is not None and s.name not in input_names}
    inputs = tuple(s for s in arg_specs if s.name not in params)
    return GraphSummary(inputs=inputs, outputs=tuple(output_specs), params=params,
                        kernels=kernels)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text())["Model"]
        if not isinstance(model, dict) or not isinstance(model.get("Inputs"), list):
            raise TypeError("Model.Inputs must be a list")
        return model
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise _corrupt(path, f"malformed metadata ({err})") from err


def read_params_index(path: Path) -> dict[str, TensorSpec]:
    """Walk ``compiled.params`` and return each array's spec, checking every length."""
    data = path.read_bytes()
    view = memoryview(data)
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise _corrupt(path, f"truncated at byte {pos} (file is {len(data)} bytes)")
        values = struct.unpack_from(fmt, view, pos)
        pos += size
        return values

    magic, _reserved, n_names = take("<QQQ")
    if magic != PARAMS_MAGIC:
        raise _corrupt(path, f"bad magic 0x{magic:016x}, expected 0x{PARAMS_MAGIC:016X}")
    if n_names > len(data) // 8:
        raise _corrupt(path, f"claims {n_names} names in {len(data)} bytes")
    names = []
    for _ in range(n_names):
        (length,) = take("<Q")
        if pos + length > len(data):
            raise _corrupt(path, "truncated inside a parameter name")
        names.append(bytes(view[pos:pos + length]).decode("utf-8", errors="replace"))
        pos += length
    (n_arrays,) = take("<Q")
    if n_arrays != n_names:
        raise _corrupt(path, f"{n_names} names but {n_arrays} arrays")
    specs: dict[str, TensorSpec] = {}
    for name in names:
        tmagic, _r, _dev_type, _dev_id, ndim, code, bits, lanes = take("<QQiiiBBH")
        if tmagic != TENSOR_MAGIC:
            raise _corrupt(path, f"array {name!r}: bad tensor magic 0x{tmagic:016x}")
        if not 0 <= ndim <= _MAX_NDIM:
            raise _corrupt(path, f"array {name!r}: ndim {ndim}")
        shape = take(f"<{ndim}q") if ndim else ()
        (nbytes,) = take("<q")
        dtype = _DTYPES.get((code, bits))
        if dtype is None or lanes != 1:
            raise _corrupt(path, f"array {name!r}: unsupported dtype code={code} bits={bits}")
        count = 1
        for dim in shape:
            if dim < 0:
                raise _corrupt(path, f"array {name!r}: negative dimension")
            count *= dim
        if nbytes != count * bits // 8:
            raise _corrupt(path, f"array {name!r}: {nbytes} bytes for shape {shape} {dtype}")
        if pos + nbytes > len(data):
            raise _corrupt(path, f"array {name!r}: truncated ({len(data) - pos} of {nbytes} "
                                 "bytes present)")
        pos += nbytes
        specs[name] = TensorSpec(name=name, dtype=as_dtype(dtype), shape=tuple(shape))
    if pos != len(data):
        raise _corrupt(path, f"{len(data) - pos} trailing bytes after the last array")
    return specs


def validate_artifact(artifact_dir: Path) -> GraphSummary:
    """Check files, graph and params agree; return the graph summary."""
    check_files(artifact_dir)
    graph_path = artifact_dir / "compiled_model.json"
    params_path = artifact_dir / "compiled.params"
    graph = read_graph(graph_path, artifact_dir / "compiled.meta")
    params = read_params_index(params_path)
    # Without compiled.meta the graph cannot tell weights from inputs, so every array is
    # compared with the graph entry of its name, whichever side the graph put it on.
    args = {s.name: s for s in graph.inputs} | graph.params
    for name, spec in params.items():
        want = args.get(name)
        if want is None:
            raise _corrupt(params_path, f"array {name!r} is not an input of the graph")
        if (want.shape, want.dtype) != (spec.shape, spec.dtype):
            raise _corrupt(params_path, f"array {name!r} is {spec.dtype}{list(spec.shape)}, "
                                        f"the graph expects {want.dtype}{list(want.shape)}")
    missing = [name for name in graph.params if name not in params]
    if missing:
        raise _corrupt(params_path, f"no weights for graph inputs {missing}")
    exported = exported_symbols(artifact_dir / "compiled.so")
    absent = sorted({k for k in graph.kernels if k not in exported})
    if absent:
        raise _corrupt(graph_path, f"names kernel(s) {', '.join(absent)} that compiled.so "
                                   "does not export")
    inputs = tuple(s for s in graph.inputs if s.name not in params)
    if not inputs:
        raise _corrupt(graph_path, "graph has no free input")
    return GraphSummary(inputs=inputs, outputs=graph.outputs,
                        params=params, kernels=graph.kernels)
