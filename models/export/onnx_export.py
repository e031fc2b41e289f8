"""ONNX export of an MLP weight set (the agent's second backend, and the DLR reference).

The graph is Gemm (+Relu) per layer and a final Softmax: the operators every
ONNX Runtime since 1.x runs on every CPU. Opset 17 with IR version 8 keeps the
file loadable by the older runtimes that ship on Jetson and Raspberry Pi images.
Serialisation of a protobuf built in a fixed order is byte-stable, so the same
weights give the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
OPSET = 17
IR_VERSION = 8


def onnx_model_bytes(params: Mapping[str, np.ndarray], *, graph_name: str = "digits_mlp") -> bytes:
    """Serialise an MLP (``w0, b0, w1, b1, ...`` with ``w`` as [in, out]) to ONNX bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = sum(1 for name in params if name.startswith("w"))
    n_in = int(params["w0"].shape[0])
    n_out = int(params[f"w{layers - 1}"].shape[1])
    initializers = []
    nodes = []
    current = INPUT_NAME
    for layer in range(layers):
        weight, bias = f"w{layer}", f"b{layer}"
        initializers.append(numpy_helper.from_array(params[weight].astype(np.float32), weight))
        initializers.append(numpy_helper.from_array(params[bias].astype(np.float32), bias))
        dense = f"dense{layer}"
        nodes.append(
            helper.make_node("Gemm", [current, weight, bias], [dense], name=f"gemm{layer}")
        )
        if layer < layers - 1:
            current = f"relu{layer}"
            nodes.append(helper.make_node("Relu", [dense], [current], name=current))
        else:
            nodes.append(
                helper.make_node("Softmax", [dense], [OUTPUT_NAME], name="softmax", axis=-1)
            )
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, n_out])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="edge-inference-agent models",
    )
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def export_onnx(params: Mapping[str, np.ndarray], path: Path) -> None:
    atomic_write(path, onnx_model_bytes(params))
