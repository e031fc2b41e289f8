"""Model directories of user models (no tests here): the Neo outputs of ``foreign_neo``
laid out as the project's model directory, with ``model.json`` and ``artifact.info``.

``colour_model_dir`` is an image classifier with labels and image pre-processing metadata;
``fusion_model_dir`` the two-input, two-output model with an int32 tensor, in any set of
builds, with or without golden vectors, an ONNX twin and a test set.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from foreign_neo import (
    COLOUR_LABELS,
    FUSION_INPUTS,
    FUSION_OUTPUTS,
    fusion_reference,
    neo_output_files,
    write_onnx_fusion_like,
)

from agent.core.model_layout import ArtifactInfo
from agent.device.platform.boards import generic_target
from agent.device.platform.elf import host_arch
from agent.device.platform.targets import NEO_TARGETS

HOST_TARGET = generic_target(host_arch())
HOST_ARTIFACT = f"{HOST_TARGET}-{host_arch()}"
COLOUR_METADATA = {
    "labels": list(COLOUR_LABELS),
    "preprocess": {"layout": "NCHW", "scale": 1 / 255, "channel_order": "RGB"},
    "postprocess": {"top_k": 3},
}


def _specs(specs: tuple[tuple[str, str, tuple[int, ...]], ...]) -> list[dict[str, object]]:
    return [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in specs]


def write_model_dir(dest: Path, model: str, info: dict[str, object]) -> Path:
    """``dest`` with ``model.json`` (``info``) and the host artifact of Neo model ``model``."""
    artifact = dest / "dlr" / f"{HOST_TARGET}-{host_arch()}"
    artifact.mkdir(parents=True)
    for name, data in neo_output_files(model).items():
        (artifact / name).write_bytes(data)
    (artifact / "artifact.info").write_text(
        ArtifactInfo(target=HOST_TARGET, arch=host_arch()).model_dump_json())
    (dest / "model.json").write_text(json.dumps(info, indent=1))
    return dest


def colour_model_dir(dest: Path, *, metadata: dict[str, object] | None = None,
                     onnx: bool = False) -> Path:
    """The colour classifier (``pixels`` [1,3,8,8] -> ``probs`` [1,3]), labels red/green/blue;
    ``onnx`` adds an ONNX twin and a small test set (for ONNX golden vectors)."""
    info = {"name": "colour", "version": "1",
            "inputs": _specs((("pixels", "float32", (1, 3, 8, 8)),)),
            "outputs": _specs((("probs", "float32", (1, 3)),)),
            "metadata": COLOUR_METADATA if metadata is None else metadata}
    write_model_dir(dest, "colour", info)
    if onnx:
        write_onnx_colour(dest / "onnx" / "model.onnx")
        rng = np.random.default_rng(3)
        np.savez(dest / "testset.npz", x=rng.random((4, 3, 8, 8), dtype=np.float32),
                 y=np.arange(4, dtype=np.int64) % 3)
    return dest


def fusion_inputs(count: int, seed: int = 7) -> dict[str, np.ndarray]:
    """``count`` cases of the fusion model's inputs, by input name, each ``[count, 1, n]``."""
    rng = np.random.default_rng(seed)
    return {"sensor_frame": rng.standard_normal((count, 1, 6)).astype(np.float32),
            "event_counts": rng.integers(0, 9, size=(count, 1, 3)).astype(np.int32)}


def fusion_model_dir(dest: Path, *, name: str = "fusion", version: int | str = 1,
                     builds: Sequence[str] = (HOST_ARTIFACT,), emulated: Collection[str] = (),
                     neo: bool = True, onnx: bool = False, golden: bool = True,
                     testset: bool = False, metadata: dict[str, Any] | None = None) -> Path:
    """The fusion model (two inputs, one int32; two outputs) as ``edge-agent models import``
    leaves a model directory: ``model.json``; with ``neo``, one real Neo artifact per
    ``builds`` entry (``<target>-<arch>``; those in ``emulated`` are host code standing in
    for that board); with ``onnx``, its ONNX twin; with ``golden``, ``golden.npz`` holding
    numpy's outputs for three cases (source ``user``); with ``testset``, an unlabelled
    two-input test set of 16 cases."""
    dest.mkdir(parents=True)
    info: dict[str, Any] = {"name": name, "version": str(version),
                            "inputs": _specs(FUSION_INPUTS), "outputs": _specs(FUSION_OUTPUTS)}
    if metadata is not None:
        info["metadata"] = metadata
    if golden:
        inputs = fusion_inputs(3)
        outs = [fusion_reference(f, c)
                for f, c in zip(inputs["sensor_frame"], inputs["event_counts"], strict=True)]
        np.savez(dest / "golden.npz", **{f"in/{key}": value for key, value in inputs.items()},
                 **{f"out/{out}": np.stack([o[out] for o in outs]) for out, _, _ in FUSION_OUTPUTS})
        info["golden"] = {"source": "user", "reference": "numpy", "tolerance": 1e-5}
    (dest / "model.json").write_text(json.dumps(info, indent=2))
    for build in builds if neo else ():
        target, arch = build.split("-", 1)
        artifact = dest / "dlr" / build
        artifact.mkdir(parents=True)
        for file_name, data in neo_output_files("fusion", arch=arch,
                                                target_device=target).items():
            (artifact / file_name).write_bytes(data)
        (artifact / "artifact.info").write_text(ArtifactInfo(
            target=target, arch=arch, emulated=build in emulated,
            jetpack=NEO_TARGETS[target].jetpack, neo_target=target).model_dump_json(indent=2))
    if onnx:
        write_onnx_fusion_like(dest / "onnx" / "model.onnx")
    if testset:
        np.savez(dest / "testset.npz", **fusion_inputs(16, seed=11))  # type: ignore[arg-type]
    return dest


def write_onnx_colour(dest: Path) -> Path:
    """An ONNX twin of the colour model: softmax(4 * mean over each channel's pixels)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["means", "four"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "colour",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(np.array(4.0, np.float32), "four")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, dest)
    return dest
