"""The probe's own health: CPU temperature, load, memory and free disk.

A Pi in a roadside cabinet in the northern summer throttles at 80 °C and an SD card
that fills up stops the outbox, so these travel with the radio readings. The outbox
fields of :class:`SystemReading` are filled by the agent core, not here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sensors._system import read_text, within
from agent.sensors.base import Sensor, SensorContext, SensorPlugin, Stamp, register
from coverwatch.protocol import Reading, SystemReading

# Thermal zone types that are the SoC/CPU: Raspberry Pi, generic ARM, x86 ACPI.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp")
# psutil.sensors_temperatures() keys in order of preference.
_PSUTIL_CPU_SENSORS = ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "soc_thermal")


@dataclass(frozen=True)
class Settings:
    disk_path: str = field(
        default="/var/lib/coverwatch",
        metadata={
            "help": "Report the free bytes of the filesystem holding this path (where the "
            "outbox lives)."
        },
    )


TemperatureSource = Callable[[], Mapping[str, Sequence[Any]]]


def psutil_temperatures() -> Mapping[str, Sequence[Any]]:
    import psutil

    if not hasattr(psutil, "sensors_temperatures"):
        return {}
    return psutil.sensors_temperatures()


def thermal_zone_celsius(sysfs: Path) -> float | None:
    """The CPU zone's temperature (millidegrees in sysfs), else the first readable zone."""
    zones = sorted((sysfs / "class" / "thermal").glob("thermal_zone*"))
    ordered = sorted(zones, key=lambda zone: read_text(zone / "type") not in _CPU_ZONE_TYPES)
    for zone in ordered:
        text = read_text(zone / "temp")
        try:
            return int(text or "") / 1000
        except ValueError:
            continue
    return None


def memory_used_pct(proc: Path) -> float | None:
    """(MemTotal - MemAvailable) / MemTotal from /proc/meminfo, as ``free`` counts it."""
    text = read_text(proc / "meminfo")
    if text is None:
        return None
    kib: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[name] = int(parts[0])
    total, available = kib.get("MemTotal"), kib.get("MemAvailable")
    if not total or available is None:
        return None
    return 100.0 * (total - available) / total


def load_1m(proc: Path) -> float | None:
    text = read_text(proc / "loadavg")
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


class SystemSensor:
    name = "system"

    def __init__(
        self,
        settings: Settings,
        *,
        sysfs: Path = Path("/sys"),
        proc: Path = Path("/proc"),
        temperatures: TemperatureSource = psutil_temperatures,
        disk_usage: Callable[[str], Any] = shutil.disk_usage,
    ) -> None:
        self.settings = settings
        self._sysfs = sysfs
        self._proc = proc
        self._temperatures = temperatures
        self._disk_usage = disk_usage

    def read(self, stamp: Stamp) -> list[Reading]:
        return [
            SystemReading(
                **stamp.base(),
                cpu_temp_c=within(self._cpu_temp_c(), -60, 150),
                load_1m=within(load_1m(self._proc), 0, float("inf")),
                memory_used_pct=within(memory_used_pct(self._proc), 0, 100),
                disk_free_bytes=self._disk_free_bytes(),
            )
        ]

    def _cpu_temp_c(self) -> float | None:
        celsius = thermal_zone_celsius(self._sysfs)
        if celsius is not None:
            return celsius
        try:
            sensors = self._temperatures()
        except (OSError, RuntimeError):
            return None
        for name in (*_PSUTIL_CPU_SENSORS, *sensors):
            entries = sensors.get(name) or []
            if entries:
                return float(entries[0].current)
        return None

    def _disk_free_bytes(self) -> int | None:
        # The outbox directory may not exist yet on a fresh probe: measure its parent.
        path = Path(self.settings.disk_path)
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return max(0, int(self._disk_usage(str(path)).free))
        except OSError:
            return None


def create(settings: Settings, context: SensorContext) -> Sensor:
    return SystemSensor(settings)


register(
    SensorPlugin(name="system", settings_type=Settings, create=create, enabled_by_default=True)
)
