"""Reference artifacts through the real libdlr 1.6.0, against ONNX Runtime.

Good and merely wrong or slow builds run in this process; builds that crash,
fault or hang run in a child (``python -m models.verify --once``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from paths import REPO_ROOT

from agent.core.model_layout import ONNX_FILE, TESTSET, list_artifacts
from agent.device.platform.elf import host_arch
from agent.device.runtime.dlr.neo_format import read_params_index
from models.files import load_npz
from models.verify import DLRArtifact, dlr_predict, find_libdlr, host_artifact, onnx_predict

REPO = REPO_ROOT

pytestmark = pytest.mark.skipif(find_libdlr() is None, reason="libdlr.so (dlr==1.6.0) not found")


def _once(artifact: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "models.verify", "--once", str(artifact)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["digits-v1", "digits-v2"])
def test_every_host_artifact_matches_onnx_on_the_whole_test_split(built_models: Path,
                                                                  name: str) -> None:
    model_dir = built_models / name
    test = load_npz(model_dir / TESTSET)
    reference = onnx_predict(model_dir / ONNX_FILE, test["x"])
    host = [artifact for artifact, info in list_artifacts(model_dir) if info.arch == host_arch()]
    # the native build plus one emulated build per foreign-architecture target
    assert len(host) >= 4
    for artifact in host:
        out = dlr_predict(artifact, test["x"])
        assert out.shape == reference.shape
        np.testing.assert_array_equal(out.argmax(1), reference.argmax(1))
        assert np.abs(out - reference).max() <= 1e-5, artifact.name
        assert (out.argmax(1) == test["y"]).mean() >= 0.95


def test_libdlr_reports_names_from_compiled_meta(built_models: Path) -> None:
    artifact = host_artifact(built_models / "digits-v1")
    with DLRArtifact(artifact) as model:
        assert model.backend() == "tvm"
        assert model.input_name() == "input"
        assert model.output_name() == "probabilities"
    assert sorted(read_params_index(artifact / "compiled.params")) == [
        "dense0_bias", "dense0_weight", "dense1_bias", "dense1_weight", "dense2_bias",
        "dense2_weight"]


def test_wrong_build_runs_but_answers_differently(built_models: Path) -> None:
    test = load_npz(built_models / "digits-v1-wrong" / TESTSET)
    good = dlr_predict(host_artifact(built_models / "digits-v1"), test["x"])
    wrong = dlr_predict(host_artifact(built_models / "digits-v1-wrong"), test["x"])
    assert (wrong.argmax(1) != good.argmax(1)).all()
    # its ONNX export carries the same fault, so the backends agree with each other
    wrong_onnx = onnx_predict(built_models / "digits-v1-wrong" / ONNX_FILE, test["x"])
    np.testing.assert_array_equal(wrong.argmax(1), wrong_onnx.argmax(1))


def test_slow_build_sleeps_20ms_per_run_and_answers_right(built_models: Path) -> None:
    x = load_npz(built_models / "digits-v1-slow" / TESTSET)["x"][:3]
    with DLRArtifact(host_artifact(built_models / "digits-v1-slow")) as slow:
        for row in x:
            start = time.perf_counter()
            slow.run(row)
            assert time.perf_counter() - start >= 0.020
        cpu_start = time.process_time()
        slow.run(x[0])
        assert time.process_time() - cpu_start < 0.015  # it sleeps; it does not burn CPU
        out = slow.predict(x)
    np.testing.assert_array_equal(out, dlr_predict(host_artifact(built_models / "digits-v1"), x))


def test_crash_build_fails_the_run_with_libdlr_error(built_models: Path) -> None:
    result = _once(host_artifact(built_models / "digits-v1-crash"))
    assert result.returncode == 3, result.stderr
    # libdlr 1.6.0 exports no TVMAPISetLastError: its message is TVM's generic check,
    # and the kernel's own reason reaches stderr.
    assert "RunDLRModel failed for" in result.stderr
    assert "TVMError: Check failed: ret == 0" in result.stderr
    assert "deliberate kernel failure" in result.stderr


def test_segfault_build_dies_with_sigsegv(built_models: Path) -> None:
    result = _once(host_artifact(built_models / "digits-v1-segfault"))
    assert result.returncode == -signal.SIGSEGV


def test_hang_build_never_returns(built_models: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        _once(host_artifact(built_models / "digits-v1-hang"), timeout=3)


def test_good_build_passes_the_child_check(built_models: Path) -> None:
    result = _once(host_artifact(built_models / "digits-v1"))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 10
