"""The vision reference model: its layout and metadata, the real libdlr and ONNX Runtime
agreeing with the numpy reference on every test image, and reproducible builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import InputSpecError
from agent.core.model_layout import ONNX_FILE, TESTSET, list_artifacts, read_model_info
from agent.device.platform.elf import host_arch
from agent.device.runtime.dlr.backend import DlrBackend
from agent.device.runtime.onnx import OnnxBackend
from models import vision
from models.files import load_npz
from models.vision import DIR_NAME, LABELS, build_vision, reference


def test_layout_and_metadata(vision_model: Path) -> None:
    assert vision_model.name == DIR_NAME
    info = read_model_info(vision_model)
    assert (info.name, info.version) == ("vision", "1")
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == \
        [("image", "float32", (1, 224, 224, 3))]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == \
        [("probabilities", "float32", (1, 10))]
    assert info.inputs[0].shape[1] * 224 * 3 * 4 == 602_112, "602 KB per input"
    assert info.metadata is not None and info.metadata.labels == LABELS
    pre = info.metadata.preprocess
    assert pre is not None and (pre.layout, pre.size, pre.channel_order) == \
        ("NHWC", (224, 224), "RGB")
    assert info.accuracy == 1.0
    (_, artifact_info), = list_artifacts(vision_model)
    assert artifact_info.arch == host_arch() and not artifact_info.emulated
    assert (vision_model / ONNX_FILE).is_file()
    data = load_npz(vision_model / TESTSET)
    assert data["x"].shape == (10, 224, 224, 3) and list(data["y"]) == list(range(10))


def test_both_runtimes_match_the_reference(vision_model: Path) -> None:
    (artifact, _), = list_artifacts(vision_model)
    data = vision.testset()
    expected = reference(data["x"])
    for backend in (DlrBackend(artifact_dir=artifact),
                    OnnxBackend(artifact_dir=vision_model / ONNX_FILE)):
        image = np.zeros((1, 224, 224, 3), np.float32)
        (scores,) = backend.bind([image])
        for i, x in enumerate(data["x"]):
            image[0] = x
            backend.run()
            assert int(scores.argmax()) == i, (backend.name, LABELS[i])
            np.testing.assert_allclose(scores[0], expected[i], atol=5e-4)
        backend.close()


def test_every_pixel_counts(vision_model: Path) -> None:
    """A kernel that skipped part of the image would miss a change in its last row."""
    (artifact, _), = list_artifacts(vision_model)
    backend = DlrBackend(artifact_dir=artifact)
    image = np.zeros((1, 224, 224, 3), np.float32)
    (scores,) = backend.bind([image])
    backend.run()
    black = scores.copy()
    image[0, -1, :, 0] = 1.0  # the last row turns red
    backend.run()
    assert not np.array_equal(black, scores)
    np.testing.assert_allclose(scores, reference(image), atol=1e-6)
    with pytest.raises(InputSpecError):
        backend.bind([np.zeros((1, 3, 224, 224), np.float32)])
    backend.close()


def test_rebuild_is_a_no_op_and_reproducible(vision_model: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    build_vision(vision_model.parent, log=messages.append)
    assert messages == [f"{DIR_NAME}: up to date"]
    again = build_vision(tmp_path, log=lambda _message: None)
    for name in ("model.json", TESTSET, "onnx/model.onnx"):
        assert (again / name).read_bytes() == (vision_model / name).read_bytes(), name
    (first, _), = list_artifacts(vision_model)
    (second, _), = list_artifacts(again)
    for name in ("compiled.so", "compiled.params", "compiled_model.json", "compiled.meta"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    graph = json.loads((first / "compiled_model.json").read_text())
    assert [n["attrs"]["func_name"] for n in graph["nodes"] if n["op"] == "tvm_op"] == \
        ["fused_mean_pool", "fused_nn_dense_add_nn_softmax"]
