"""DLR (real libdlr.so) and ONNX Runtime agree on the reference models, through bound buffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.device.inference.sources import load_testset
from agent.device.platform.profile import detect_profile
from agent.device.platform.resolve import resolve_model
from agent.device.runtime import DlrBackend, DlrConfig, OnnxBackend, OnnxConfig, load_backend


def _backends(model_dir: Path) -> tuple[DlrBackend, OnnxBackend]:
    profile = detect_profile()
    dlr = resolve_model(model_dir, backend="dlr", profile=profile)
    onnx = resolve_model(model_dir, backend="onnx", profile=profile)
    d = load_backend(dlr.load_dir, DlrConfig())
    o = load_backend(onnx.load_dir, OnnxConfig())
    assert isinstance(d, DlrBackend) and isinstance(o, OnnxBackend)
    return d, o


@pytest.mark.parametrize("name", ["digits-v1", "digits-v2"])
def test_dlr_and_onnx_agree_on_the_whole_test_split(built_models: Path, name: str) -> None:
    dlr, onnx = _backends(built_models / name)
    assert dlr.backend == "tvm" and dlr.library.version == "1.6.0"
    assert dlr.inputs == onnx.inputs
    x, y = load_testset(built_models / name / "testset.npz")
    d_in, o_in = np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32)
    (d_out,), (o_out,) = dlr.bind([d_in]), onnx.bind([o_in])
    same = correct = 0
    worst = 0.0
    for sample, label in zip(x, y, strict=True):
        d_in[0] = sample
        o_in[0] = sample
        dlr.run()
        onnx.run()
        worst = max(worst, float(np.abs(d_out - o_out).max()))
        same += int(d_out.argmax() == o_out.argmax())
        correct += int(d_out.argmax() == label)
    assert same == len(x), f"{len(x) - same} samples differ in predicted class"
    assert worst <= 1e-4, f"outputs differ by {worst}"
    assert correct / len(x) >= 0.95
    dlr.close()
    onnx.close()


def test_outputs_are_views_that_update_in_place(built_models: Path) -> None:
    dlr, onnx = _backends(built_models / "digits-v1")
    x, _ = load_testset(built_models / "digits-v1" / "testset.npz")
    for backend in (dlr, onnx):
        buf = np.zeros((1, 64), np.float32)
        (out,) = backend.bind([buf])
        address = out.ctypes.data
        buf[0] = x[0]
        backend.run()
        first = out.copy()
        buf[0] = x[1]
        backend.run()
        assert out.ctypes.data == address
        assert not np.array_equal(first, out), f"{backend.name}: output did not change"
        if backend is dlr:
            with pytest.raises(ValueError):
                out[0, 0] = 1.0  # the runtime's own memory is read-only to callers
        backend.close()


def test_describe_names_library_and_providers(built_models: Path) -> None:
    dlr, onnx = _backends(built_models / "digits-v1")
    assert dlr.describe()["library"].endswith("libdlr.so")
    assert "CPUExecutionProvider" in onnx.describe()["providers"]
