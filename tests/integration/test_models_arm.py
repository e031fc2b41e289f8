"""Cross-compiled ARM artifacts: right ELF machine, and the same answers under qemu-user.

Each ARM artifact's own ``runner`` dlopen()s the shipped ``compiled.so`` under
qemu and must reproduce what the host artifact gives through the real libdlr.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.core.model_layout import TESTSET, list_artifacts
from agent.device.platform.elf import elf_arch, host_arch
from agent.device.platform.targets import NEO_TARGETS
from models.export.neo import CROSS_COMPILERS
from models.files import load_npz
from models.verify import QEMU, dlr_predict, find_libdlr, host_artifact, runner_predict

FOREIGN = sorted(arch for arch in ("aarch64", "armv7l") if arch != host_arch())


def _missing_tools(arch: str) -> str | None:
    for tool in (CROSS_COMPILERS[arch], QEMU[arch][0]):
        if shutil.which(tool) is None:
            return tool
    return None


def _host_reference(model_dir: Path, x: np.ndarray) -> np.ndarray:
    artifact = host_artifact(model_dir)
    if find_libdlr() is not None:
        return dlr_predict(artifact, x)
    return runner_predict(artifact, x)


@pytest.mark.parametrize("name", ["digits-v1", "digits-v2"])
@pytest.mark.parametrize("arch", FOREIGN)
def test_arm_artifacts_reproduce_host_outputs_under_qemu(built_models: Path, name: str,
                                                         arch: str) -> None:
    missing = _missing_tools(arch)
    if missing:
        pytest.skip(f"{missing} is not installed")
    model_dir = built_models / name
    artifacts = [path for path, info in list_artifacts(model_dir) if info.arch == arch]
    assert artifacts, f"no {arch} artifact was built"
    x = load_npz(model_dir / TESTSET)["x"][:20]
    reference = _host_reference(model_dir, x)
    for artifact in artifacts:
        assert elf_arch(artifact / "compiled.so") == arch
        assert elf_arch(artifact / "runner") == arch
        out = runner_predict(artifact, x)
        assert np.abs(out - reference).max() <= 1e-5, artifact.name
        np.testing.assert_array_equal(out.argmax(1), reference.argmax(1))


def test_every_artifact_is_built_for_the_architecture_it_claims(built_models: Path) -> None:
    for model_dir in sorted(built_models.glob("digits-*")):
        for artifact, info in list_artifacts(model_dir):
            assert elf_arch(artifact / "compiled.so") == info.arch, artifact
            # emulated builds are exactly those not for the board's own architecture
            assert info.emulated == (info.arch != NEO_TARGETS[info.target].arch), artifact


@pytest.mark.skipif(find_libdlr() is None, reason="libdlr.so (dlr==1.6.0) not found")
def test_host_runner_gives_libdlr_bit_for_bit(built_models: Path) -> None:
    model_dir = built_models / "digits-v1"
    artifact = host_artifact(model_dir)
    x = load_npz(model_dir / TESTSET)["x"][:20]
    np.testing.assert_array_equal(runner_predict(artifact, x), dlr_predict(artifact, x))
