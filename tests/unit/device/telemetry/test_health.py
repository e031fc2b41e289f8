"""Device health read through a root directory, from board fixture trees."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.device.telemetry.health import (
    HealthProbe,
    ThermalReading,
    read_loadavg,
    read_thermal_zones,
    soc_temperature,
)
from agent.tools.boards import board_root
from agent.wire.messages import HealthReport

STAT_LINE = "cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"


def test_raspberry_pi_4() -> None:
    probe = HealthProbe(root=board_root("rpi4_64"))
    health = probe.read()
    assert health.soc_temp_c == 48.3 and health.soc_temp_zone == "cpu-thermal"
    assert health.zones == (ThermalReading(zone="thermal_zone0", type="cpu-thermal",
                                           temp_c=48.3),)
    assert health.load_avg == (0.52, 0.48, 0.40)
    assert health.cpu_percent is None  # the tree has no proc/stat: nothing to invent


def test_jetson_nano_takes_the_hottest_real_sensor() -> None:
    zones = read_thermal_zones(board_root("jetson_nano_r32"))
    assert [z.type for z in zones] == ["AO-therm", "CPU-therm", "GPU-therm", "PLL-therm",
                                       "PMIC-Die", "thermal-fan-est"]
    soc = soc_temperature(zones)
    assert soc is not None and (soc.type, soc.temp_c) == ("CPU-therm", 52.5)  # not PMIC 100 C
    assert read_loadavg(board_root("jetson_nano_r32")) == (1.37, 1.12, 0.95)


def test_a_board_without_thermal_zones() -> None:
    health = HealthProbe(root=board_root("rpi3")).read()
    assert (health.soc_temp_c, health.soc_temp_zone, health.zones) == (None, None, ())
    assert health.load_avg is None


def test_odd_zone_files_are_skipped(tmp_path: Path) -> None:
    base = tmp_path / "sys/class/thermal"
    for name, kind, temp in [("thermal_zone10", "hot", "61000"), ("thermal_zone2", "", "40000"),
                             ("thermal_zone3", "broken", "n/a"),
                             ("thermal_zone4", "absent", "-273000"), ("cooling_device0", "x", "1")]:
        (base / name).mkdir(parents=True)
        (base / name / "type").write_text(kind + "\n")
        (base / name / "temp").write_text(temp + "\n")
    zones = read_thermal_zones(tmp_path)
    assert [(z.zone, z.type, z.temp_c) for z in zones] == [
        ("thermal_zone2", "thermal_zone2", 40.0), ("thermal_zone10", "hot", 61.0)]


def test_system_cpu_from_proc_stat_deltas(tmp_path: Path) -> None:
    root = tmp_path / "board"
    shutil.copytree(board_root("rpi4_64"), root)
    stat = root / "proc/stat"
    stat.write_text(STAT_LINE.format(user=100, system=50, idle=800, iowait=50))
    probe = HealthProbe(root=root, disk_path=tmp_path)
    stat.write_text(STAT_LINE.format(user=160, system=70, idle=900, iowait=70))
    assert probe.read().cpu_percent == 40.0  # busy 80 of 200 jiffies
    assert probe.read().cpu_percent is None  # no time passed
    stat.write_text(STAT_LINE.format(user=260, system=70, idle=900, iowait=70))
    assert probe.read().cpu_percent == 100.0


def test_process_readings_are_real(tmp_path: Path) -> None:
    health = HealthProbe(root=board_root("jetson_nano_r32"), disk_path=tmp_path).read()
    assert health.rss_bytes is not None and health.rss_bytes > 10 * 1024 * 1024
    assert health.disk_free_bytes is not None and health.disk_free_bytes > 0
    assert health.process_cpu_percent is not None and health.process_cpu_percent >= 0.0
    report = health.to_report()
    assert report.soc_temp_c == 52.5 and report.load_avg == [1.37, 1.12, 0.95]
    assert HealthReport.model_validate(report.model_dump()) == report
