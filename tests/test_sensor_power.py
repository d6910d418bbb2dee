"""The power sensor: real files in a temporary state directory, fake /proc and /sys trees
from tests/data, and captured vcgencmd output."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.heartbeat import Heartbeat, HeartbeatFile
from agent.sensors import registered
from agent.sensors.base import SensorContext, SensorError
from agent.sensors.power import (
    CLEAN_STOP_FILE,
    HEARTBEAT_FILE,
    LEGACY_HEARTBEAT_FILE,
    BatteryFallback,
    PowerSensor,
    Settings,
    parse_throttled,
)
from coverwatch.protocol import OutageReading, PowerReading
from tests.sensor_fakes import BOOT_ID, DATA, OTHER_BOOT_ID, CapturedRunner, stamp

PROC = DATA / "proc" / "pi4"  # uptime 120.53 s
SYS = DATA / "sys"
VCGENCMD = DATA / "vcgencmd"
NOW = datetime(2026, 11, 22, 8, 15, tzinfo=UTC)


def vcgencmd(capture: str) -> CapturedRunner:
    return CapturedRunner({("vcgencmd", "get_throttled"): VCGENCMD / capture})


def no_vcgencmd() -> CapturedRunner:
    return CapturedRunner({}, missing=["vcgencmd"])


def sensor(
    state_dir: Path,
    *,
    run: CapturedRunner | None = None,
    sysfs: Path = SYS / "empty",
    battery: BatteryFallback | None = None,
    settings: Settings | None = None,
) -> PowerSensor:
    return PowerSensor(
        settings or Settings(),
        state_dir,
        proc=PROC,
        sysfs=sysfs,
        run=run or no_vcgencmd(),
        battery=lambda: battery,
    )


def write_heartbeat(state_dir: Path, boot_id: str, wall_time: datetime) -> None:
    HeartbeatFile(state_dir / HEARTBEAT_FILE).write(Heartbeat(boot_id, wall_time))


def stored_heartbeat(state_dir: Path) -> Heartbeat | None:
    return HeartbeatFile(state_dir / HEARTBEAT_FILE).load()


def power_reading(readings: Sequence[object]) -> PowerReading:
    found = [reading for reading in readings if isinstance(reading, PowerReading)]
    assert len(found) == 1
    return found[0]


def outages(readings: Sequence[object]) -> list[OutageReading]:
    return [reading for reading in readings if isinstance(reading, OutageReading)]


def test_first_read_writes_a_heartbeat_and_reports_uptime(tmp_path: Path) -> None:
    readings = list(sensor(tmp_path).read(stamp(NOW)))
    assert outages(readings) == []
    power = power_reading(readings)
    assert power.uptime_s == 120.53
    assert power.undervoltage_now is None  # not a Pi: no vcgencmd, no rpi_volt
    assert power.undervoltage_since_boot is None
    assert (power.on_mains, power.battery_pct, power.battery_charging) == (None, None, None)
    assert stored_heartbeat(tmp_path) == Heartbeat(BOOT_ID, NOW)
    assert [path.name for path in tmp_path.iterdir()] == [HEARTBEAT_FILE]  # no temp left


def test_reboot_without_clean_stop_is_an_outage(tmp_path: Path) -> None:
    last_heartbeat = NOW - timedelta(hours=3)
    write_heartbeat(tmp_path, OTHER_BOOT_ID, last_heartbeat)
    power = sensor(tmp_path)
    readings = list(power.read(stamp(NOW)))
    [outage] = outages(readings)
    assert outage.previous_boot_id == OTHER_BOOT_ID
    assert outage.outage_started_at == last_heartbeat
    assert outage.outage_ended_at == NOW - timedelta(seconds=120.53)
    assert outage.outage_duration_s == pytest.approx(3 * 3600 - 120.53)
    assert outage.boot_id == BOOT_ID
    # Reported once: the heartbeat now names this boot.
    assert stored_heartbeat(tmp_path) == Heartbeat(BOOT_ID, NOW)
    assert outages(list(power.read(stamp(NOW + timedelta(minutes=1))))) == []


def test_clean_stop_then_reboot_is_no_outage(tmp_path: Path) -> None:
    before = sensor(tmp_path)
    before.read(stamp(NOW - timedelta(hours=1), boot_id=OTHER_BOOT_ID))
    before.mark_clean_stop()
    assert json.loads((tmp_path / CLEAN_STOP_FILE).read_text()) == {"boot_id": OTHER_BOOT_ID}
    after = sensor(tmp_path)
    assert outages(list(after.read(stamp(NOW)))) == []
    # The marker is spent: a later crash of this boot must not pass for clean.
    assert not (tmp_path / CLEAN_STOP_FILE).exists()


def test_a_clean_stop_marker_of_another_boot_does_not_excuse_an_outage(tmp_path: Path) -> None:
    write_heartbeat(tmp_path, OTHER_BOOT_ID, NOW - timedelta(hours=2))
    (tmp_path / CLEAN_STOP_FILE).write_text(
        json.dumps({"boot_id": "11111111-2222-4333-8444-555555555555"})
    )
    assert len(outages(list(sensor(tmp_path).read(stamp(NOW))))) == 1


def test_outage_waits_for_ntp_then_reports(tmp_path: Path) -> None:
    last_heartbeat = NOW - timedelta(days=1)
    write_heartbeat(tmp_path, OTHER_BOOT_ID, last_heartbeat)
    power = sensor(tmp_path)
    assert outages(list(power.read(stamp(NOW, ntp_synced=False)))) == []
    # The previous boot's heartbeat is kept until the outage is reported.
    assert stored_heartbeat(tmp_path) == Heartbeat(OTHER_BOOT_ID, last_heartbeat)
    [outage] = outages(list(power.read(stamp(NOW + timedelta(seconds=30)))))
    assert outage.outage_started_at == last_heartbeat
    assert outage.ntp_synced


def test_outage_reported_unsynced_after_the_wait(tmp_path: Path) -> None:
    write_heartbeat(tmp_path, OTHER_BOOT_ID, NOW - timedelta(hours=1))
    power = sensor(tmp_path, settings=Settings(outage_ntp_wait_s=60))  # uptime is 120 s
    [outage] = outages(list(power.read(stamp(NOW, ntp_synced=False))))
    assert not outage.ntp_synced


@pytest.mark.parametrize(
    "content",
    [b"", b"\0" * 8192, b"CWHB" + b"\xff" * 8188, b'{"boot_id": "torn', bytes(range(256)) * 32],
)
def test_unreadable_heartbeat_claims_no_outage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / HEARTBEAT_FILE).write_bytes(content)
    assert outages(list(sensor(tmp_path).read(stamp(NOW)))) == []
    assert stored_heartbeat(tmp_path) == Heartbeat(BOOT_ID, NOW)  # and it heals


def test_unreadable_legacy_heartbeat_claims_no_outage(tmp_path: Path) -> None:
    (tmp_path / LEGACY_HEARTBEAT_FILE).write_text('{"boot_id": "torn')
    assert outages(list(sensor(tmp_path).read(stamp(NOW)))) == []


def test_a_heartbeat_of_the_version_before_is_honoured_once_then_removed(
    tmp_path: Path,
) -> None:
    last_heartbeat = NOW - timedelta(hours=5)
    (tmp_path / LEGACY_HEARTBEAT_FILE).write_text(
        json.dumps({"boot_id": OTHER_BOOT_ID, "wall_time": last_heartbeat.isoformat()})
    )
    power = sensor(tmp_path)
    [outage] = outages(list(power.read(stamp(NOW))))
    assert outage.outage_started_at == last_heartbeat
    assert not (tmp_path / LEGACY_HEARTBEAT_FILE).exists()
    assert outages(list(power.read(stamp(NOW + timedelta(minutes=1))))) == []


def test_each_heartbeat_rewrites_one_slot_in_place(tmp_path: Path) -> None:
    """No new file, no growth: the heartbeat costs the card one sector, not a new inode,
    a data block and a directory entry every round."""
    power = sensor(tmp_path)
    power.read(stamp(NOW))
    path = tmp_path / HEARTBEAT_FILE
    before = path.stat()
    for minute in range(1, 4):
        power.read(stamp(NOW + timedelta(minutes=minute)))
    after = path.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size) == (after.st_ino, 8192)
    assert [p.name for p in tmp_path.iterdir()] == [HEARTBEAT_FILE]
    assert stored_heartbeat(tmp_path) == Heartbeat(BOOT_ID, NOW + timedelta(minutes=3))


def test_a_torn_heartbeat_leaves_the_one_before(tmp_path: Path) -> None:
    """A power cut in the middle of a heartbeat's write: the other slot still holds the
    previous heartbeat, so the outage starts at the last heartbeat written whole."""
    heartbeats = HeartbeatFile(tmp_path / HEARTBEAT_FILE)
    first = Heartbeat(OTHER_BOOT_ID, NOW - timedelta(hours=2))
    second = Heartbeat(OTHER_BOOT_ID, NOW - timedelta(hours=2) + timedelta(minutes=1))
    heartbeats.write(first)
    heartbeats.write(second)
    assert heartbeats.load() == second
    data = bytearray((tmp_path / HEARTBEAT_FILE).read_bytes())
    # Counters 1 and 2: the second heartbeat went to slot 2 % 2 = 0, at offset 0.
    assert data[0:4] == b"CWHB"
    assert int.from_bytes(data[4:12], "little") == 2
    # Torn so that it still parses (minute 16 -> 17): only the CRC can tell.
    at = data.index(b"T06:16", 0, 512) + 5
    data[at] = ord("7")
    (tmp_path / HEARTBEAT_FILE).write_bytes(bytes(data))
    assert HeartbeatFile(tmp_path / HEARTBEAT_FILE).load() == first
    [outage] = outages(list(sensor(tmp_path).read(stamp(NOW))))
    assert outage.outage_started_at == first.wall_time


def test_heartbeats_go_on_after_a_torn_slot(tmp_path: Path) -> None:
    """The next write after a restart lands in the slot that does not hold the newest
    valid heartbeat, and its counter is above it."""
    path = tmp_path / HEARTBEAT_FILE
    HeartbeatFile(path).write(Heartbeat(BOOT_ID, NOW))
    HeartbeatFile(path).write(Heartbeat(BOOT_ID, NOW + timedelta(minutes=1)))
    HeartbeatFile(path).write(Heartbeat(BOOT_ID, NOW + timedelta(minutes=2)))
    assert HeartbeatFile(path).load() == Heartbeat(BOOT_ID, NOW + timedelta(minutes=2))


@pytest.mark.parametrize(
    ("capture", "now", "since_boot"),
    [
        ("get_throttled-undervoltage-now.txt", True, True),
        ("get_throttled-undervoltage-earlier.txt", False, True),
        ("get_throttled-ok.txt", False, False),
    ],
)
def test_undervoltage_from_vcgencmd(
    tmp_path: Path, capture: str, now: bool, since_boot: bool
) -> None:
    power = power_reading(list(sensor(tmp_path, run=vcgencmd(capture)).read(stamp(NOW))))
    assert power.undervoltage_now is now
    assert power.undervoltage_since_boot is since_boot


def test_undervoltage_from_hwmon_without_vcgencmd(tmp_path: Path) -> None:
    runner = no_vcgencmd()
    power = sensor(tmp_path, run=runner, sysfs=SYS / "pi4-undervoltage")
    reading = power_reading(list(power.read(stamp(NOW))))
    assert reading.undervoltage_now is True
    assert reading.undervoltage_since_boot is None  # the alarm only tells about now
    power.read(stamp(NOW))
    assert runner.calls == [("vcgencmd", "get_throttled")]  # not asked again once missing


def test_ups_on_battery(tmp_path: Path) -> None:
    reading = power_reading(list(sensor(tmp_path, sysfs=SYS / "ups-on-battery").read(stamp(NOW))))
    assert reading.on_mains is False
    assert reading.battery_pct == 87
    assert reading.battery_charging is False


def test_battery_charging_means_mains(tmp_path: Path) -> None:
    reading = power_reading(list(sensor(tmp_path, sysfs=SYS / "ups-charging").read(stamp(NOW))))
    assert reading.on_mains is True
    assert reading.battery_pct == 42
    assert reading.battery_charging is True


def test_psutil_battery_fallback(tmp_path: Path) -> None:
    power = sensor(tmp_path, battery=BatteryFallback(percent=64.5, power_plugged=True))
    reading = power_reading(list(power.read(stamp(NOW))))
    assert reading.on_mains is True
    assert reading.battery_pct == 64.5
    assert reading.battery_charging is None


def test_missing_uptime_is_an_error_a_technician_can_read(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    power = PowerSensor(Settings(), tmp_path, proc=proc, sysfs=SYS / "empty", run=no_vcgencmd())
    with pytest.raises(SensorError, match="cannot read uptime"):
        power.read(stamp(NOW))


def test_parse_throttled_rejects_garbage() -> None:
    assert parse_throttled("VCHI initialization failed") is None


def test_state_dir_is_created(tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "power"
    sensor(state_dir).read(stamp(NOW))
    assert (state_dir / HEARTBEAT_FILE).exists()
    shutil.rmtree(state_dir)


def test_registered_as_a_plugin(tmp_path: Path) -> None:
    plugin = registered()["power"]
    assert plugin.enabled_by_default
    assert plugin.create(plugin.settings_type(), SensorContext(tmp_path)).name == "power"


def test_a_newer_heartbeat_of_the_version_before_wins_over_an_older_one_sector_one(
    tmp_path: Path,
) -> None:
    """This version ran 30 days ago (a one-sector heartbeat of boot OLD), then the probe
    ran the JSON-heartbeat version until it was stopped cleanly an hour ago, then was
    upgraded again: the newer heartbeat and its clean stop decide — no 30-day outage."""
    old_boot = "0f0e0d0c-0b0a-4908-8706-050403020100"
    write_heartbeat(tmp_path, old_boot, NOW - timedelta(days=30))
    (tmp_path / LEGACY_HEARTBEAT_FILE).write_text(
        json.dumps({"boot_id": OTHER_BOOT_ID, "wall_time": (NOW - timedelta(hours=1)).isoformat()})
    )
    (tmp_path / CLEAN_STOP_FILE).write_text(json.dumps({"boot_id": OTHER_BOOT_ID}))
    assert outages(list(sensor(tmp_path).read(stamp(NOW)))) == []
    # Without the clean stop, the outage starts at the newer heartbeat.
    write_heartbeat(tmp_path, old_boot, NOW - timedelta(days=30))
    (tmp_path / LEGACY_HEARTBEAT_FILE).write_text(
        json.dumps({"boot_id": OTHER_BOOT_ID, "wall_time": (NOW - timedelta(hours=1)).isoformat()})
    )
    [outage] = outages(list(sensor(tmp_path).read(stamp(NOW))))
    assert outage.outage_started_at == NOW - timedelta(hours=1)
