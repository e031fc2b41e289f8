"""What a model path resolves to for the ONNX backend: the owning model directory (for its
model.json and test set) whether the path names the folder, its onnx/ folder or the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_dirs import fusion_model_dir

from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model


@pytest.mark.parametrize("where", [".", "onnx", "onnx/model.onnx"])
def test_an_onnx_path_inside_a_model_directory_shares_its_test_set(tmp_path: Path,
                                                                   where: str) -> None:
    model = fusion_model_dir(tmp_path / "fusion", onnx=True)
    np.savez(model / "testset.npz", sensor_frame=np.zeros((2, 6)), event_counts=np.zeros((2, 3)))
    resolved = resolve_model(model / where, backend="onnx", profile=detect_profile())
    assert resolved.load_dir == model / "onnx" / "model.onnx"
    assert resolved.model_dir == model and resolved.testset == model / "testset.npz"


def test_a_lone_onnx_file_has_no_model_directory(tmp_path: Path) -> None:
    model = fusion_model_dir(tmp_path / "fusion", onnx=True)
    lone = tmp_path / "elsewhere" / "fusion.onnx"
    lone.parent.mkdir()
    lone.write_bytes((model / "onnx" / "model.onnx").read_bytes())
    resolved = resolve_model(lone, backend="onnx", profile=detect_profile())
    assert (resolved.load_dir, resolved.model_dir, resolved.testset) == (lone, None, None)


def test_the_default_backend_follows_what_the_model_has(tmp_path: Path) -> None:
    from agent.device.platform.resolve import default_backend

    both = fusion_model_dir(tmp_path / "both", onnx=True)
    onnx_only = fusion_model_dir(tmp_path / "onnx-only", neo=False, onnx=True)
    neo_only = fusion_model_dir(tmp_path / "neo-only")
    assert default_backend(both) == "dlr"  # Neo artifacts win where there are some
    assert default_backend(neo_only) == "dlr"
    assert default_backend(onnx_only) == "onnx"
    assert default_backend(onnx_only / "onnx" / "model.onnx") == "onnx"
    assert default_backend(next((both / "dlr").iterdir())) == "dlr"
