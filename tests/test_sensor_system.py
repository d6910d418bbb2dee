"""The system sensor against a fake /proc and /sys from tests/data and a real disk."""

from __future__ import annotations

import shutil
from collections import namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.sensors import registered
from agent.sensors.base import SensorContext
from agent.sensors.system import Settings, SystemSensor
from coverwatch.protocol import SystemReading
from tests.sensor_fakes import DATA, stamp

PROC = DATA / "proc" / "pi4"
SYS = DATA / "sys"
# The shape psutil.sensors_temperatures() returns (psutil's shwtemp named tuple).
Shwtemp = namedtuple("Shwtemp", ["label", "current", "high", "critical"])


def read(sensor: SystemSensor) -> SystemReading:
    [reading] = sensor.read(stamp())
    assert isinstance(reading, SystemReading)
    return reading


def no_temperatures() -> Mapping[str, Sequence[Any]]:
    return {}


def test_pi_thermal_zone_load_memory_and_disk(tmp_path: Path) -> None:
    sensor = SystemSensor(
        Settings(disk_path=str(tmp_path)), sysfs=SYS / "pi4-undervoltage", proc=PROC
    )
    reading = read(sensor)
    assert reading.cpu_temp_c == 48.686
    assert reading.load_1m == 0.42
    assert reading.memory_used_pct == (3884084 - 3398128) / 3884084 * 100
    free = reading.disk_free_bytes
    assert free is not None
    assert abs(free - shutil.disk_usage(tmp_path).free) < 64 * 1024 * 1024
    assert reading.outbox_pending is None  # filled by the agent core
    assert reading.outbox_dropped_total is None


def test_psutil_temperatures_when_sysfs_has_no_zone(tmp_path: Path) -> None:
    def temperatures() -> Mapping[str, Sequence[Any]]:
        return {
            "acpitz": [Shwtemp("", 27.8, None, None)],
            "coretemp": [Shwtemp("Package id 0", 55.0, 80.0, 100.0)],
        }

    sensor = SystemSensor(
        Settings(disk_path=str(tmp_path)), sysfs=SYS / "empty", proc=PROC, temperatures=temperatures
    )
    assert read(sensor).cpu_temp_c == 55.0  # the CPU sensor, not the first one listed


def test_nothing_known_is_none_not_an_error(tmp_path: Path) -> None:
    sensor = SystemSensor(
        Settings(disk_path=str(tmp_path)),
        sysfs=SYS / "empty",
        proc=tmp_path / "no-proc",
        temperatures=no_temperatures,
    )
    reading = read(sensor)
    assert (reading.cpu_temp_c, reading.load_1m, reading.memory_used_pct) == (None, None, None)


def test_missing_outbox_directory_measures_its_parent(tmp_path: Path) -> None:
    sensor = SystemSensor(
        Settings(disk_path=str(tmp_path / "not" / "yet")),
        sysfs=SYS / "empty",
        proc=PROC,
        temperatures=no_temperatures,
    )
    assert read(sensor).disk_free_bytes is not None


def test_impossible_temperature_is_dropped(tmp_path: Path) -> None:
    zone = tmp_path / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("-273000\n")  # a broken sensor's reading
    sensor = SystemSensor(Settings(disk_path=str(tmp_path)), sysfs=tmp_path / "sys", proc=PROC)
    assert read(sensor).cpu_temp_c is None


def test_registered_as_a_plugin(tmp_path: Path) -> None:
    plugin = registered()["system"]
    assert plugin.enabled_by_default
    assert plugin.create(plugin.settings_type(), SensorContext(tmp_path)).name == "system"
