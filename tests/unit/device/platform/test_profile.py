"""Device profiles read from fixture trees of real boards, and the board tables."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from agent.core.errors import DeviceProfileError
from agent.device.platform.boards import (
    identify_board,
    jetpack_line,
    normalize_jetpack,
    parse_l4t_release,
)
from agent.device.platform.profile import (
    DeviceProfile,
    detect_profile,
    emulated_profile,
    process_arch,
)
from agent.tools.boards import BOARDS_DIR

FIXTURES = BOARDS_DIR
KIB = 1024

# fixture -> (machine, board, family, target, l4t, jetpack, accelerator, cpus, total KiB, avail KiB)
EXPECTED = {
    "rpi4_64": ("aarch64", "Raspberry Pi 4 Model B Rev 1.4", "raspberry_pi", "rasp4b",
                None, None, None, 4, 3884324, 3410580),
    "rpi4_32": ("armv7l", "Raspberry Pi 4 Model B Rev 1.5", "raspberry_pi", "rasp3b",
                None, None, None, 4, 1867864, 1530124),
    "rpi3": ("armv7l", "Raspberry Pi 3 Model B Rev 1.2", "raspberry_pi", "rasp3b",
             None, None, None, 4, 948304, 760412),
    "jetson_nano_r32": ("aarch64", "NVIDIA Jetson Nano Developer Kit", "jetson", "jetson_nano",
                        "R32.7.1", "4.6", "nvidia", 4, 4059712, 3118600),
    "jetson_xavier_nx_r35": ("aarch64", "NVIDIA Jetson Xavier NX Developer Kit", "jetson",
                             "jetson_xavier", "R35.4.1", "5.1", "nvidia", 6, 7605472, 6210876),
    "x86_laptop": ("x86_64", "generic x86_64", "generic", "linux_x86_64",
                   None, None, "nvidia", 8, 16067664, 12874312),
}  # fmt: skip


def copy_fixture(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_profiles_as_the_real_board(name: str) -> None:
    machine, board, family, target, l4t, jetpack, accel, cpus, total, avail = EXPECTED[name]
    profile = detect_profile(root=FIXTURES / name, machine=machine)
    assert profile.board == board
    assert profile.board_family == family
    assert profile.neo_target == target
    assert (profile.l4t_release, profile.jetpack, profile.accelerator) == (l4t, jetpack, accel)
    assert profile.cpu_count == cpus
    assert profile.mem_total_bytes == total * KIB
    assert profile.mem_available_bytes == avail * KIB
    assert profile.arch == profile.reported_arch == machine
    assert profile.os_bits == (32 if machine == "armv7l" else 64)
    assert not profile.emulated


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_emulated_profile_reports_the_board_but_keeps_the_real_arch(name: str) -> None:
    machine, board, _, target, *_ = EXPECTED[name]
    profile = emulated_profile(fixture_root=FIXTURES / name)
    assert profile.emulated
    assert profile.arch == process_arch()
    assert profile.reported_arch == machine
    assert (profile.board, profile.neo_target) == (board, target)


def test_emulated_pi_on_x86_64() -> None:
    profile = detect_profile(root=FIXTURES / "rpi4_64", machine="x86_64", emulate=True)
    assert (profile.arch, profile.reported_arch, profile.neo_target) == (
        "x86_64",
        "aarch64",
        "rasp4b",
    )
    assert str(profile).endswith("emulated on x86_64")


def test_this_host_has_a_profile() -> None:
    profile = detect_profile()
    assert profile.arch == profile.reported_arch == process_arch()
    assert profile.cpu_count >= 1
    assert 0 < profile.mem_available_bytes <= profile.mem_total_bytes


def test_to_dict_is_json_and_round_trips() -> None:
    profile = emulated_profile(fixture_root=FIXTURES / "jetson_nano_r32", machine="x86_64")
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["neo_target"] == "jetson_nano"
    assert data["jetpack"] == "4.6"
    assert DeviceProfile(**data) == profile


def test_str_is_one_line() -> None:
    text = str(detect_profile(root=FIXTURES / "jetson_nano_r32", machine="aarch64"))
    assert "\n" not in text
    assert text.startswith("NVIDIA Jetson Nano Developer Kit (aarch64) -> jetson_nano")
    assert "L4T R32.7.1 / JetPack 4.6" in text
    assert "4 CPUs, 3.9 GiB RAM" in text


def test_profile_is_keyword_only_and_checks_its_target() -> None:
    with pytest.raises(TypeError):
        DeviceProfile("Raspberry Pi 4 Model B Rev 1.4")  # type: ignore[misc]
    profile = detect_profile(root=FIXTURES / "rpi4_64", machine="aarch64")
    with pytest.raises(DeviceProfileError, match="rasp4b is aarch64 code"):
        dataclasses.replace(profile, reported_arch="armv7l", arch="armv7l")
    with pytest.raises(DeviceProfileError, match="unknown Neo target"):
        dataclasses.replace(profile, neo_target="ml_c5")


def test_board_from_cpuinfo_model_line_without_device_tree(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    shutil.rmtree(root / "proc" / "device-tree")
    profile = detect_profile(root=root, machine="aarch64")
    assert (profile.board, profile.neo_target) == ("Raspberry Pi 4 Model B Rev 1.4", "rasp4b")


def test_meminfo_without_memavailable_sums_free_buffers_cached(tmp_path: Path) -> None:
    root = copy_fixture("rpi3", tmp_path)
    meminfo = root / "proc" / "meminfo"
    lines = meminfo.read_text().splitlines(keepends=True)
    meminfo.write_text("".join(line for line in lines if not line.startswith("MemAvailable")))
    profile = detect_profile(root=root, machine="armv7l")
    assert profile.mem_available_bytes == (610220 + 20344 + 180276) * KIB


def test_x86_without_nvidia_driver_has_no_accelerator(tmp_path: Path) -> None:
    root = copy_fixture("x86_laptop", tmp_path)
    shutil.rmtree(root / "proc" / "driver")
    assert detect_profile(root=root, machine="x86_64").accelerator is None


def test_missing_meminfo(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    (root / "proc" / "meminfo").unlink()
    with pytest.raises(DeviceProfileError, match=r"proc/meminfo: no such file"):
        detect_profile(root=root, machine="aarch64")


def test_meminfo_without_memtotal(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    (root / "proc" / "meminfo").write_text("MemFree: 100 kB\n")
    with pytest.raises(DeviceProfileError, match="no MemTotal line"):
        detect_profile(root=root, machine="aarch64")


def test_cpuinfo_without_processors(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    (root / "proc" / "cpuinfo").write_text("Hardware\t: BCM2835\n")
    with pytest.raises(DeviceProfileError, match="no 'processor : N' entries"):
        detect_profile(root=root, machine="aarch64")


@pytest.mark.parametrize("machine", ["mips", "ppc64le", "i686"])
def test_unsupported_machine(machine: str) -> None:
    with pytest.raises(DeviceProfileError, match=rf"unsupported architecture '{machine}'.*x86_64"):
        detect_profile(root=FIXTURES / "x86_laptop", machine=machine)


def test_unsupported_reported_arch_when_emulating(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    (root / "proc" / "sys" / "kernel" / "arch").write_text("mips\n")
    with pytest.raises(DeviceProfileError, match=r"kernel/arch: unsupported architecture 'mips'"):
        emulated_profile(fixture_root=root, machine="x86_64")


def test_emulation_needs_the_fixture_arch(tmp_path: Path) -> None:
    root = copy_fixture("rpi4_64", tmp_path)
    (root / "proc" / "sys" / "kernel" / "arch").unlink()
    with pytest.raises(DeviceProfileError, match=r"proc/sys/kernel/arch: no such file"):
        emulated_profile(fixture_root=root, machine="x86_64")


def test_armv6_is_refused_although_elf_folds_it_into_armv7l() -> None:
    with pytest.raises(DeviceProfileError, match="ARMv6"):
        detect_profile(root=FIXTURES / "rpi3", machine="armv6l")


def test_pi_cannot_report_x86_64() -> None:
    with pytest.raises(DeviceProfileError, match=r"reports x86_64, but this board runs aarch64"):
        detect_profile(root=FIXTURES / "rpi4_64", machine="x86_64")


def test_jetson_without_nv_tegra_release(tmp_path: Path) -> None:
    root = copy_fixture("jetson_nano_r32", tmp_path)
    (root / "etc" / "nv_tegra_release").unlink()
    with pytest.raises(DeviceProfileError, match="L4T release and JetPack are unknown"):
        detect_profile(root=root, machine="aarch64")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("garbage\n", "cannot read the L4T release from 'garbage'"),
        ("# R34 (release), REVISION: 1.1, GCID: 1\n", "L4T R34.1.1 is not in the JetPack table"),
    ],
)
def test_bad_nv_tegra_release(tmp_path: Path, content: str, match: str) -> None:
    root = copy_fixture("jetson_nano_r32", tmp_path)
    (root / "etc" / "nv_tegra_release").write_text(content)
    with pytest.raises(DeviceProfileError, match=match):
        detect_profile(root=root, machine="aarch64")


@pytest.mark.parametrize(
    ("release", "line"),
    [
        ("R32.4.4", "4.4"),
        ("R32.5.1", "4.5"),
        ("R32.6.1", "4.6"),
        ("R32.7.4", "4.6"),
        ("R35.1.0", "5.0"),
        ("R35.4.1", "5.1"),
        ("R36.3.0", "6.0"),
        ("R36.4.3", "6.1"),
    ],
)
def test_jetpack_table(release: str, line: str) -> None:
    assert jetpack_line(release) == line


def test_parse_l4t_release_without_patch_level() -> None:
    assert parse_l4t_release("# R36 (release), REVISION: 3, GCID: 1") == "R36.3.0"


def test_normalize_jetpack() -> None:
    assert normalize_jetpack("4.6.1") == "4.6"
    assert normalize_jetpack("5") == "5.0"
    assert normalize_jetpack("five") is None


@pytest.mark.parametrize(
    ("model", "compatible", "target"),
    [
        ("Jetson-AGX", ("nvidia,p2972-0000", "nvidia,tegra194"), "jetson_xavier"),
        ("quill", ("nvidia,quill", "nvidia,tegra186"), "jetson_tx2"),
        ("NVIDIA Jetson Orin Nano Developer Kit", ("nvidia,tegra234",), "jetson_orin"),
        ("jetson_tx1", ("nvidia,p2371-2180", "nvidia,tegra210"), "linux_arm64"),
    ],
)
def test_jetson_modules(model: str, compatible: tuple[str, ...], target: str) -> None:
    board = identify_board(
        arch="aarch64", model=model, compatible=compatible, has_tegra_release=True
    )
    assert (board.family, board.neo_target) == ("jetson", target)


@pytest.mark.parametrize(
    ("model", "arch", "target"),
    [
        ("Raspberry Pi 400 Rev 1.0", "aarch64", "rasp4b"),
        ("Raspberry Pi Compute Module 4 Rev 1.0", "armv7l", "rasp3b"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "aarch64", "linux_arm64"),
        ("Raspberry Pi Zero 2 W Rev 1.0", "armv7l", "rasp3b"),
        ("Raspberry Pi 5 Model B Rev 1.0", "aarch64", "linux_arm64"),
        ("Raspberry Pi 2 Model B Rev 1.1", "armv7l", "linux_arm_eabihf"),
    ],
)
def test_pi_models(model: str, arch: str, target: str) -> None:
    board = identify_board(arch=arch, model=model, compatible=(), has_tegra_release=False)
    assert (board.family, board.neo_target) == ("raspberry_pi", target)


def test_pi_zero_is_armv6() -> None:
    with pytest.raises(DeviceProfileError, match="ARMv6 board"):
        identify_board(
            arch="armv7l",
            model="Raspberry Pi Zero W Rev 1.1",
            compatible=("raspberrypi,model-zero-w", "brcm,bcm2835"),
            has_tegra_release=False,
        )


def test_other_device_tree_board_is_generic() -> None:
    board = identify_board(
        arch="aarch64", model="Pine64 RockPro64 v2.1", compatible=(), has_tegra_release=False
    )
    assert (board.name, board.family, board.neo_target) == (
        "Pine64 RockPro64 v2.1",
        "generic",
        "linux_arm64",
    )
