"""Golden vectors reproduced on the device, in a child process, before a package may serve.

The deliberately bad builds of digits-v1 are packaged with digits-v1's ONNX export
as the reference: a wrong answer, a kernel error, a segfault and a hang are each
refused with their own error, and only the child process suffers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from package_support import Keys, build, leftovers, make_keys

from agent.device.packages.errors import (
    GoldenCrashError,
    GoldenError,
    GoldenMismatchError,
    GoldenRuntimeError,
    GoldenTimeoutError,
)
from agent.device.packages.staging import StagedPackage, stage
from agent.device.platform.profile import DeviceProfile, detect_profile


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def host() -> DeviceProfile:
    return detect_profile()


def _stage(built_models: Path, name: str, keys: Keys, host: DeviceProfile, tmp_path: Path,
           *, timeout_s: float = 10.0) -> StagedPackage:
    package = build(built_models, name, keys, tmp_path / "pkg", reference="digits-v1")
    return stage(package, trust=keys.trust, min_version=0, profile=host,
                 work_dir=tmp_path / "work", golden_timeout_s=timeout_s)


def test_the_slow_build_passes(built_models: Path, keys: Keys, host: DeviceProfile,
                               tmp_path: Path) -> None:
    staged = _stage(built_models, "digits-v1-slow", keys, host, tmp_path)
    assert staged.manifest.variant == "slow"


def test_wrong_answers_are_a_mismatch(built_models: Path, keys: Keys, host: DeviceProfile,
                                      tmp_path: Path) -> None:
    with pytest.raises(GoldenMismatchError, match=r"output probabilities: max \|diff\|"):
        _stage(built_models, "digits-v1-wrong", keys, host, tmp_path)
    assert leftovers(tmp_path / "work") == []


def test_a_kernel_error_is_a_runtime_error(built_models: Path, keys: Keys,
                                           host: DeviceProfile, tmp_path: Path) -> None:
    with pytest.raises(GoldenRuntimeError, match="InferenceError"):
        _stage(built_models, "digits-v1-crash", keys, host, tmp_path)
    assert leftovers(tmp_path / "work") == []


def test_a_segfault_kills_only_the_child(built_models: Path, keys: Keys, host: DeviceProfile,
                                         tmp_path: Path) -> None:
    with pytest.raises(GoldenCrashError, match="SIGSEGV") as err:
        _stage(built_models, "digits-v1-segfault", keys, host, tmp_path)
    assert err.value.signal_name == "SIGSEGV"
    assert leftovers(tmp_path / "work") == []


def test_a_hang_is_killed_at_the_timeout(built_models: Path, keys: Keys, host: DeviceProfile,
                                         tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GoldenTimeoutError, match="did not finish in 3 s") as err:
        _stage(built_models, "digits-v1-hang", keys, host, tmp_path, timeout_s=3.0)
    elapsed = time.monotonic() - started
    assert 3.0 <= elapsed < 10.0
    assert isinstance(err.value, GoldenError)
    assert leftovers(tmp_path / "work") == []


def test_golden_check_exit_codes(built_models: Path, keys: Keys, host: DeviceProfile,
                                 tmp_path: Path) -> None:
    """The child's contract: 0 match, 3 mismatch, 4 runtime error."""
    import subprocess
    import sys

    good = _stage(built_models, "digits-v1", keys, host, tmp_path)
    check = [sys.executable, "-m", "agent.device.packages.golden_check", str(good.dir)]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
    manifest = good.dir / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["golden"]["outputs"][-1]["probabilities"][0] += 0.01
    manifest.write_text(json.dumps(doc))
    mismatch = subprocess.run(check, capture_output=True, timeout=60, text=True)
    assert mismatch.returncode == 3 and "golden case 7" in mismatch.stdout
    os.remove(good.artifact_dir / "compiled.so")
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 4
