"""The tensor specs of an imported artifact, and the checks that they mean one model.

A Neo artifact's specs are what :func:`~agent.device.runtime.dlr.neo_format.validate_artifact`
reads (graph and params agree, every kernel is exported): the free inputs are the graph's
``arg_nodes`` minus the weights in the params file, the outputs its ``heads``, with their
``attrs.shape``/``dltype``; ``compiled.meta``, when present, names them and must agree with
the graph (names, dtypes; a ``-1`` dimension there means "as the graph says"). Shapes are
static: DLR's graph executor allocates every tensor once. An ONNX source's specs are ONNX
Runtime's (CPU provider); a symbolic batch dimension is served at 1, any other symbolic
dimension is refused. Every source of one import must have the same specs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.core.errors import AgentError, ArtifactError
from agent.core.model_layout import TensorSpec
from agent.device.runtime.dlr.neo_format import validate_artifact
from agent.tools.importing.errors import ImportLayoutError
from agent.tools.importing.neo_files import GRAPH, META, NeoFiles

Specs = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]


def artifact_specs(artifact_dir: Path, files: NeoFiles, source: str) -> Specs:
    """Validate the artifact assembled in ``artifact_dir`` (project file names) from
    ``files``; its (inputs, outputs). Errors name ``source`` and the file as it calls it."""
    try:
        summary = validate_artifact(artifact_dir)
    except ArtifactError as err:
        raise ImportLayoutError(f"{source}: {_name_back(str(err), files)}") from err
    inputs, outputs = summary.inputs, summary.outputs
    graph_name = files.original_name(GRAPH)
    for spec in (*inputs, *outputs):
        if any(dim < 0 for dim in spec.shape):
            raise ImportLayoutError(f"{source}: {graph_name}: tensor {spec.name!r} has shape "
                                    f"{list(spec.shape)}; DLR's graph executor needs static "
                                    "shapes (compile with a fixed input shape)")
    if files.meta is not None:
        _check_meta(artifact_dir / META, files, source, inputs, outputs)
    return inputs, outputs


def onnx_specs(path: Path, source: str) -> Specs:
    """The (inputs, outputs) ONNX Runtime reports for the ``.onnx`` file ``path``."""
    from agent.device.runtime.onnx import OnnxBackend, OnnxConfig

    try:
        backend = OnnxBackend(artifact_dir=path,
                              config=OnnxConfig(providers=["CPUExecutionProvider"]))
    except AgentError as err:
        raise ImportLayoutError(f"{source}: {err}") from err
    try:
        for arg in (*backend.session.get_inputs(), *backend.session.get_outputs()):
            symbolic = [d for d in list(arg.shape)[1:] if not (isinstance(d, int) and d > 0)]
            if symbolic:
                raise ImportLayoutError(f"{source}: tensor {arg.name!r} has shape "
                                        f"{list(arg.shape)}; only the first (batch) dimension "
                                        "may be symbolic (it is served at 1)")
        return backend.inputs, backend.outputs
    finally:
        backend.close()


def check_same_specs(first: str, ours: Specs, other: str, theirs: Specs) -> None:
    """Refuse two sources whose tensors differ, naming both and the difference."""
    for kind, mine, yours in (("inputs", ours[0], theirs[0]), ("outputs", ours[1], theirs[1])):
        if list(mine) != list(yours):
            raise ImportLayoutError(f"{other} and {first} are not the same model: {other}'s "
                                    f"{kind} are {describe(yours)}, {first}'s {describe(mine)}")


def describe(specs: Sequence[TensorSpec]) -> str:
    """``sensor_frame float32 [1, 6], event_counts int32 [1, 3]``."""
    return ", ".join(f"{s.name} {s.dtype} {list(s.shape)}" for s in specs) or "none"


def _name_back(message: str, files: NeoFiles) -> str:
    """An artifact error's message, naming the file as the source called it."""
    head, sep, rest = message.partition(": ")
    name = Path(head).name
    original = files.original_name(name)
    if sep and original != name:
        return f"{original}{sep}{rest}"
    return message


def _check_meta(meta_path: Path, files: NeoFiles, source: str,
                inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    where = f"{source}: {files.original_name(META)}"
    try:
        model = json.loads(meta_path.read_text())["Model"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImportLayoutError(f"{where}: no readable Model section ({err})") from err
    declared = {spec.name: spec for spec in inputs}
    for index, item in enumerate(_entries(model, "Inputs", where)):
        field = f"Model.Inputs[{index}]"
        spec = declared.get(str(item.get("name")))
        if spec is None:
            raise ImportLayoutError(f"{where}: {field}.name {item.get('name')!r} is not an "
                                    f"input of the graph ({describe(inputs)})")
        _agree(item, spec, where, field)
    listed = _entries(model, "Outputs", where) if "Outputs" in model else None
    if listed is None:
        return
    if len(listed) != len(outputs):
        raise ImportLayoutError(f"{where}: Model.Outputs lists {len(listed)} output(s), the "
                                f"graph has {len(outputs)} heads ({describe(outputs)})")
    for index, (item, spec) in enumerate(zip(listed, outputs, strict=True)):
        _agree(item, spec, where, f"Model.Outputs[{index}]")


def _entries(model: Any, key: str, where: str) -> list[dict[str, Any]]:
    items = model.get(key) if isinstance(model, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ImportLayoutError(f"{where}: Model.{key} is not a list of objects")
    return items


def _agree(item: dict[str, Any], spec: TensorSpec, where: str, field: str) -> None:
    dtype = item.get("dtype")
    if dtype is not None and str(dtype) != spec.dtype:
        raise ImportLayoutError(f"{where}: {field}.dtype {dtype!r}, but the graph's "
                                f"{spec.name!r} is {spec.dtype}")
    shape = item.get("shape")
    if shape is None:
        return
    if not isinstance(shape, list) or len(shape) != len(spec.shape) or any(
            not (dim is None or dim == -1 or dim == want)
            for dim, want in zip(shape, spec.shape, strict=True)):
        raise ImportLayoutError(f"{where}: {field}.shape {shape}, but the graph's "
                                f"{spec.name!r} is {list(spec.shape)}")
