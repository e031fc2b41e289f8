"""Choosing a model directory's artifact for a device profile, and verifying it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.core.errors import (
    ArchitectureMismatchError,
    ArtifactCorruptError,
    ArtifactMissingError,
    TargetMismatchError,
)
from agent.core.model_layout import ARTIFACT_INFO, ArtifactInfo, read_artifact_info
from agent.device.platform.elf import elf_arch
from agent.device.platform.profile import DeviceProfile, detect_profile, emulated_profile
from agent.device.platform.selection import select_artifact, verify_artifact
from agent.tools.boards import BOARDS_DIR

FIXTURES = BOARDS_DIR
E_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7, "armv7l": 0x28}


def write_elf_header(path: Path, arch: str) -> None:
    """The 64-byte ELF header of a shared object for ``arch``: all elf.py reads."""
    elf_class = 1 if arch == "armv7l" else 2
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    header = ident + (3).to_bytes(2, "little") + E_MACHINE[arch].to_bytes(2, "little")
    path.write_bytes(header + (1).to_bytes(4, "little") + bytes(40))


def add_artifact(
    model_dir: Path,
    target: str,
    arch: str,
    *,
    emulated: bool = False,
    jetpack: str | None = None,
    so_arch: str | None = None,
) -> Path:
    artifact = model_dir / "dlr" / f"{target}-{arch}"
    artifact.mkdir(parents=True)
    info = ArtifactInfo(target=target, arch=arch, emulated=emulated, jetpack=jetpack)
    (artifact / ARTIFACT_INFO).write_text(info.model_dump_json())
    write_elf_header(artifact / "compiled.so", so_arch or arch)
    (artifact / "compiled.params").write_bytes(b"")
    (artifact / "compiled_model.json").write_text("{}")
    return artifact


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """What `models build` makes by default: every target for itself and for the x86_64 host."""
    root = tmp_path / "digits-v1"
    add_artifact(root, "linux_x86_64", "x86_64")
    add_artifact(root, "rasp4b", "aarch64")
    add_artifact(root, "rasp4b", "x86_64", emulated=True)
    add_artifact(root, "rasp3b", "armv7l")
    add_artifact(root, "rasp3b", "x86_64", emulated=True)
    add_artifact(root, "jetson_nano", "aarch64", jetpack="4.6")
    add_artifact(root, "jetson_nano", "x86_64", emulated=True, jetpack="4.6")
    return root


def real(name: str, machine: str) -> DeviceProfile:
    return detect_profile(root=FIXTURES / name, machine=machine)


def emulated(name: str) -> DeviceProfile:
    return emulated_profile(fixture_root=FIXTURES / name, machine="x86_64")


@pytest.mark.parametrize(
    ("fixture", "machine", "chosen"),
    [
        ("rpi4_64", "aarch64", "rasp4b-aarch64"),
        ("rpi4_64", None, "rasp4b-x86_64"),
        ("rpi4_32", "armv7l", "rasp3b-armv7l"),
        ("rpi3", "armv7l", "rasp3b-armv7l"),
        ("rpi3", None, "rasp3b-x86_64"),
        ("jetson_nano_r32", "aarch64", "jetson_nano-aarch64"),
        ("jetson_nano_r32", None, "jetson_nano-x86_64"),
        ("x86_laptop", "x86_64", "linux_x86_64-x86_64"),
    ],
)
def test_select_and_verify(model_dir: Path, fixture: str, machine: str | None, chosen: str) -> None:
    """machine None: the board emulated on an x86_64 host."""
    profile = emulated(fixture) if machine is None else real(fixture, machine)
    path, info = select_artifact(model_dir, profile)
    assert path == model_dir / "dlr" / chosen
    assert info == read_artifact_info(path)
    assert info.emulated == profile.emulated
    verify_artifact(path, info, profile)


def test_nothing_fits_lists_needs_and_available(model_dir: Path) -> None:
    with pytest.raises(TargetMismatchError) as caught:
        select_artifact(model_dir, real("jetson_xavier_nx_r35", "aarch64"))
    message = str(caught.value)
    assert "needs Neo target jetson_xavier (or generic linux_arm64) built for aarch64" in message
    assert "for JetPack 5.1" in message
    assert "rasp4b-x86_64: compiled for Neo target rasp4b" in message
    assert "jetson_nano-aarch64: compiled for Neo target jetson_nano" in message


def test_emulated_pi_never_takes_the_host_generic_artifact(tmp_path: Path) -> None:
    add_artifact(tmp_path, "linux_x86_64", "x86_64")
    add_artifact(tmp_path, "rasp4b", "aarch64")
    with pytest.raises(TargetMismatchError) as caught:
        select_artifact(tmp_path, emulated("rpi4_64"))
    message = str(caught.value)
    assert "emulating a rasp4b board, aarch64" in message
    assert "rasp4b-aarch64: built for aarch64, but this machine is x86_64" in message


def test_jetpack_5_artifact_is_refused_on_jetpack_4_6(tmp_path: Path) -> None:
    add_artifact(tmp_path, "jetson_nano", "aarch64", jetpack="5.1")
    with pytest.raises(TargetMismatchError, match=r"JetPack 5\.1, but this device runs JetPack 4"):
        select_artifact(tmp_path, real("jetson_nano_r32", "aarch64"))


def test_jetpack_point_release_matches_its_line(tmp_path: Path) -> None:
    add_artifact(tmp_path, "jetson_xavier", "aarch64", jetpack="4.6")
    add_artifact(tmp_path, "jetson_xavier", "x86_64", emulated=True, jetpack="5.1.2")
    profile = real("jetson_xavier_nx_r35", "aarch64")
    with pytest.raises(
        TargetMismatchError, match=r"JetPack 4\.6, but this device runs JetPack 5\.1"
    ):
        select_artifact(tmp_path, profile)
    path, _ = select_artifact(tmp_path, emulated("jetson_xavier_nx_r35"))
    assert path.name == "jetson_xavier-x86_64"


def test_jetson_artifact_without_jetpack_is_refused(tmp_path: Path) -> None:
    add_artifact(tmp_path, "jetson_nano", "aarch64")
    with pytest.raises(TargetMismatchError, match="names no JetPack line"):
        select_artifact(tmp_path, real("jetson_nano_r32", "aarch64"))


def test_generic_fallback_and_exact_preference(tmp_path: Path) -> None:
    add_artifact(tmp_path, "linux_arm64", "aarch64")
    pi = real("rpi4_64", "aarch64")
    assert select_artifact(tmp_path, pi)[0].name == "linux_arm64-aarch64"
    assert select_artifact(tmp_path, real("jetson_nano_r32", "aarch64"))[1].target == "linux_arm64"
    add_artifact(tmp_path, "rasp4b", "aarch64")
    assert select_artifact(tmp_path, pi)[0].name == "rasp4b-aarch64"
    generic = tmp_path / "dlr" / "linux_arm64-aarch64"
    verify_artifact(generic, read_artifact_info(generic), pi)


def test_no_artifacts_at_all(tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissingError, match="no DLR artifacts"):
        select_artifact(tmp_path, real("x86_laptop", "x86_64"))


def test_verify_rejects_aarch64_code_on_x86_64(model_dir: Path) -> None:
    artifact = model_dir / "dlr" / "rasp4b-aarch64"
    with pytest.raises(ArchitectureMismatchError) as caught:
        verify_artifact(artifact, read_artifact_info(artifact), emulated("rpi4_64"))
    message = str(caught.value)
    assert "compiled.so is built for aarch64, but this machine is x86_64" in message


def test_verify_rejects_a_lying_compiled_so(tmp_path: Path) -> None:
    artifact = add_artifact(tmp_path, "linux_x86_64", "x86_64", so_arch="aarch64")
    with pytest.raises(ArchitectureMismatchError, match=r"built for aarch64.*machine is x86_64"):
        verify_artifact(artifact, read_artifact_info(artifact), real("x86_laptop", "x86_64"))


def test_verify_rejects_a_lying_artifact_json(tmp_path: Path) -> None:
    artifact = add_artifact(tmp_path, "rasp4b", "aarch64", so_arch="x86_64")
    info = read_artifact_info(artifact)
    profile = real("x86_laptop", "x86_64")
    with pytest.raises(TargetMismatchError):
        verify_artifact(artifact, info, profile)
    with pytest.raises(ArtifactCorruptError, match=r"built for x86_64, but artifact\.info says"):
        verify_artifact(artifact, info, emulated("rpi4_64"))


def test_verify_rejects_foreign_arch_without_emulated_flag(tmp_path: Path) -> None:
    artifact = add_artifact(tmp_path, "rasp4b", "x86_64", emulated=False)
    with pytest.raises(
        ArtifactCorruptError, match=r"rasp4b code is aarch64.*without emulated=true"
    ):
        verify_artifact(artifact, read_artifact_info(artifact), emulated("rpi4_64"))


def test_verify_rejects_other_target_and_jetpack(model_dir: Path) -> None:
    nano = model_dir / "dlr" / "jetson_nano-x86_64"
    with pytest.raises(TargetMismatchError, match="jetson_nano, but this device is rasp4b"):
        verify_artifact(nano, read_artifact_info(nano), emulated("rpi4_64"))
    info = read_artifact_info(nano).model_copy(update={"jetpack": "5.1"})
    with pytest.raises(
        TargetMismatchError, match=r"JetPack 5\.1, but this device runs JetPack 4\.6"
    ):
        verify_artifact(nano, info, emulated("jetson_nano_r32"))


def test_verify_needs_compiled_so(model_dir: Path) -> None:
    artifact = model_dir / "dlr" / "rasp4b-x86_64"
    (artifact / "compiled.so").unlink()
    with pytest.raises(ArtifactMissingError, match=r"compiled\.so: no such file"):
        verify_artifact(artifact, read_artifact_info(artifact), emulated("rpi4_64"))


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="no aarch64 cross gcc")
def test_verify_rejects_a_real_cross_compiled_library(tmp_path: Path) -> None:
    artifact = add_artifact(tmp_path, "rasp4b", "aarch64")
    source = tmp_path / "kernel.c"
    source.write_text("int add_one(int x) { return x + 1; }\n")
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-O2", "-o", str(artifact / "compiled.so"),
         str(source)],
        check=True,
    )  # fmt: skip
    assert elf_arch(artifact / "compiled.so") == "aarch64"
    info = read_artifact_info(artifact)
    verify_artifact(artifact, info, real("rpi4_64", "aarch64"))
    with pytest.raises(ArchitectureMismatchError, match="aarch64, but this machine is x86_64"):
        verify_artifact(artifact, info, emulated("rpi4_64"))
