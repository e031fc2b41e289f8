"""Device health, read through a root directory so a fixture tree stands in for a board::

    <root>/proc/stat                              system CPU time (busy share between reads)
    <root>/proc/loadavg                           1, 5 and 15 minute load averages
    <root>/sys/class/thermal/thermal_zone*/temp   millidegrees Celsius (the SoC: the hottest)
    <root>/sys/class/thermal/thermal_zone*/type   the zone's name (cpu-thermal, CPU-therm, ...)

The agent's own RSS and CPU come from psutil (they are this process's, real even
when the board is emulated); free disk is that of ``disk_path`` (the model store).
Every reading is optional: a file that is absent or unreadable gives ``None``,
never an error, because health must not stop a metrics report.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agent.wire.messages import HealthReport

PROC_STAT = Path("proc/stat")
PROC_LOADAVG = Path("proc/loadavg")
THERMAL_DIR = Path("sys/class/thermal")

# Zones that are not SoC temperatures: a Jetson's PMIC-Die zone reads a fixed
# 100 C (it is a trip threshold, not a sensor) and would always be the maximum.
IGNORED_ZONE_TYPES = frozenset({"PMIC-Die"})
_PLAUSIBLE_C = (-40.0, 150.0)
_ZONE = re.compile(r"^thermal_zone(\d+)$")


@dataclass(frozen=True, kw_only=True)
class ThermalReading:
    zone: str  # e.g. thermal_zone1
    type: str  # e.g. CPU-therm
    temp_c: float


@dataclass(frozen=True, kw_only=True)
class HealthSnapshot:
    cpu_percent: float | None = None
    process_cpu_percent: float | None = None
    rss_bytes: int | None = None
    load_avg: tuple[float, float, float] | None = None
    disk_free_bytes: int | None = None
    soc_temp_c: float | None = None
    soc_temp_zone: str | None = None  # the zone type the SoC temperature came from
    zones: tuple[ThermalReading, ...] = field(default=())

    def to_report(self) -> HealthReport:
        return HealthReport(
            cpu_percent=self.cpu_percent,
            process_cpu_percent=self.process_cpu_percent,
            rss_bytes=self.rss_bytes,
            load_avg=list(self.load_avg) if self.load_avg is not None else None,
            disk_free_bytes=self.disk_free_bytes,
            soc_temp_c=self.soc_temp_c,
            soc_temp_zone=self.soc_temp_zone[:128] if self.soc_temp_zone else None,
        )


class HealthProbe:
    """Reads health; CPU shares cover the time since the previous read (or construction)."""

    def __init__(self, *, root: Path = Path("/"), disk_path: Path | None = None,
                 pid: int | None = None) -> None:
        self.root = root
        self.disk_path = disk_path if disk_path is not None else root
        self._cpu_times = read_cpu_times(root)
        try:
            self._process: psutil.Process | None = psutil.Process(
                pid if pid is not None else os.getpid())
            self._process.cpu_percent(interval=None)  # primes the next call
        except psutil.Error:
            self._process = None

    def read(self) -> HealthSnapshot:
        zones = read_thermal_zones(self.root)
        soc = soc_temperature(zones)
        return HealthSnapshot(
            cpu_percent=self._system_cpu_percent(),
            process_cpu_percent=self._process_cpu_percent(),
            rss_bytes=self._rss_bytes(),
            load_avg=read_loadavg(self.root),
            disk_free_bytes=disk_free_bytes(self.disk_path),
            soc_temp_c=soc.temp_c if soc is not None else None,
            soc_temp_zone=soc.type if soc is not None else None,
            zones=tuple(zones),
        )

    def _system_cpu_percent(self) -> float | None:
        current = read_cpu_times(self.root)
        previous, self._cpu_times = self._cpu_times, current
        if current is None or previous is None:
            return None
        busy = current[0] - previous[0]
        total = current[1] - previous[1]
        if total <= 0 or busy < 0:
            return None
        return round(min(100.0, 100.0 * busy / total), 1)

    def _process_cpu_percent(self) -> float | None:
        if self._process is None:
            return None
        try:
            return round(float(self._process.cpu_percent(interval=None)), 1)
        except psutil.Error:
            return None

    def _rss_bytes(self) -> int | None:
        if self._process is None:
            return None
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return None


def read_cpu_times(root: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies from the aggregate ``cpu`` line of ``<root>/proc/stat``."""
    text = _read(root / PROC_STAT)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:]]
            except ValueError:
                return None
            if len(values) < 4:
                return None
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time
            # is already counted in user/nice, so only the first eight add up to the total.
            total = sum(values[:8])
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return total - idle, total
    return None


def read_loadavg(root: Path) -> tuple[float, float, float] | None:
    text = _read(root / PROC_LOADAVG)
    if text is None:
        return None
    parts = text.split()
    try:
        one, five, fifteen = (float(p) for p in parts[:3])
    except ValueError:
        return None
    return one, five, fifteen


def read_thermal_zones(root: Path) -> list[ThermalReading]:
    """Every readable zone, in zone order; unreadable or implausible ones are left out."""
    base = root / THERMAL_DIR
    try:
        names = [p.name for p in base.iterdir() if _ZONE.match(p.name)]
    except OSError:
        return []
    readings: list[ThermalReading] = []
    for name in sorted(names, key=lambda n: int(n.removeprefix("thermal_zone"))):
        raw = _read(base / name / "temp")
        if raw is None:
            continue
        try:
            temp_c = int(raw.strip()) / 1000.0
        except ValueError:
            continue
        if not _PLAUSIBLE_C[0] <= temp_c <= _PLAUSIBLE_C[1]:
            continue
        kind = (_read(base / name / "type") or name).strip() or name
        readings.append(ThermalReading(zone=name, type=kind, temp_c=temp_c))
    return readings


def soc_temperature(zones: list[ThermalReading]) -> ThermalReading | None:
    """The hottest zone that measures the SoC (see IGNORED_ZONE_TYPES)."""
    candidates = [z for z in zones if z.type not in IGNORED_ZONE_TYPES]
    return max(candidates, key=lambda z: z.temp_c) if candidates else None


def disk_free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
