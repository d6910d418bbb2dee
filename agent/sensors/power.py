"""Power: uptime, Raspberry Pi under-voltage, mains/battery, and outages found after boot.

Outage detection. Every round the sensor writes a heartbeat (boot id + wall time) into
the state directory, durably and for one sector of the SD card (:mod:`agent.heartbeat`:
two alternating slots, so a power cut leaves the old or the new heartbeat, never a torn
one; probes upgraded from the JSON heartbeat file have it read once, then removed).
On a clean shutdown the daemon calls :meth:`PowerSensor.mark_clean_stop`, which writes
a clean-stop marker naming the boot. When the sensor later finds a heartbeat from
another boot and no clean-stop marker for that boot, the probe lost power (or
crashed hard): it emits one :class:`OutageReading` from the last heartbeat to this
boot's start (now minus uptime).

A Pi has no real-time clock: right after boot the wall clock may be fake-hwclock's
last saved time until NTP synchronises, which would make the outage look short. So
the sensor waits for NTP, at most ``outage_ntp_wait_s`` of uptime, before it reports
an outage; after that it reports anyway (the reading carries ``ntp_synced=false``).

Under-voltage comes from ``vcgencmd get_throttled`` (bit 0: now, bit 16: since boot)
or, without vcgencmd, from the ``rpi_volt`` hwmon alarm (now only). Mains and battery
come from ``/sys/class/power_supply`` (a UPS HAT's driver) with psutil as fallback.
Every field the hardware cannot tell stays None.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent.heartbeat import Heartbeat, HeartbeatFile, parse_heartbeat
from agent.sectorio import fsync_directory
from agent.sensors._system import CommandRunner, read_text, run_command, within
from agent.sensors.base import Sensor, SensorContext, SensorError, SensorPlugin, Stamp, register
from coverwatch.protocol import OutageReading, PowerReading, Reading

HEARTBEAT_FILE = "power-heartbeat"
# Where heartbeats were kept before (replaced whole every round): read once after an upgrade.
LEGACY_HEARTBEAT_FILE = "power-heartbeat.json"
CLEAN_STOP_FILE = "power-clean-stop.json"

_UNDERVOLTAGE_NOW = 0x1
_UNDERVOLTAGE_SINCE_BOOT = 0x10000


@dataclass(frozen=True)
class Settings:
    use_vcgencmd: bool = field(
        default=True,
        metadata={
            "help": "Ask `vcgencmd get_throttled` for under-voltage (Raspberry Pi OS); "
            "without it only the rpi_volt hwmon alarm is read."
        },
    )
    outage_ntp_wait_s: int = field(
        default=600,
        metadata={
            "help": "After a power loss, seconds of uptime to wait for NTP before reporting "
            "the outage with an unsynchronised clock."
        },
    )


@dataclass(frozen=True)
class SupplyState:
    on_mains: bool | None = None
    battery_pct: float | None = None
    battery_charging: bool | None = None


@dataclass(frozen=True)
class BatteryFallback:
    """psutil.sensors_battery's answer, reduced to what the reading needs."""

    percent: float
    power_plugged: bool | None


def psutil_battery() -> BatteryFallback | None:
    import psutil

    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return None
    return BatteryFallback(percent=float(battery.percent), power_plugged=battery.power_plugged)


# ----------------------------------------------------------------- durable files


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` so that after a power cut it holds the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as temp:
            json.dump(data, temp)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_directory(path.parent)  # make the rename itself durable


def load_legacy_heartbeat(path: Path) -> Heartbeat | None:
    """The JSON heartbeat of an earlier version, or None when absent or unreadable."""
    try:
        return parse_heartbeat(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _newest(*heartbeats: Heartbeat | None) -> Heartbeat | None:
    """The latest of the heartbeats found. Both files exist when a probe went back to a
    version that wrote the JSON file, then forward again: the newer one is the truth."""
    found = [heartbeat for heartbeat in heartbeats if heartbeat is not None]
    return max(found, key=lambda heartbeat: heartbeat.wall_time, default=None)


def _clean_stop_boot(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["boot_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------- hardware


def parse_throttled(text: str) -> tuple[bool, bool] | None:
    """(under-voltage now, since boot) from ``throttled=0x50005``."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text)
    if not match:
        return None
    bits = int(match.group(1), 16)
    return bool(bits & _UNDERVOLTAGE_NOW), bool(bits & _UNDERVOLTAGE_SINCE_BOOT)


def hwmon_undervoltage(sysfs: Path) -> bool | None:
    """The ``rpi_volt`` hwmon's ``in1_lcrit_alarm`` (kernel >= 5.x on a Pi), or None."""
    for hwmon in sorted((sysfs / "class" / "hwmon").glob("hwmon*")):
        if read_text(hwmon / "name") == "rpi_volt":
            alarm = read_text(hwmon / "in1_lcrit_alarm")
            if alarm in ("0", "1"):
                return alarm == "1"
    return None


def read_power_supplies(sysfs: Path) -> SupplyState | None:
    """Mains and battery from /sys/class/power_supply; None when there is no supply."""
    supplies = sorted((sysfs / "class" / "power_supply").glob("*"))
    mains_online: list[bool] = []
    battery: Path | None = None
    for supply in supplies:
        kind = read_text(supply / "type")
        if kind in ("Mains", "USB", "UPS"):
            online = read_text(supply / "online")
            if online in ("0", "1"):
                mains_online.append(online == "1")
        elif kind == "Battery" and battery is None:
            battery = supply
    if not mains_online and battery is None:
        return None
    on_mains: bool | None = any(mains_online) if mains_online else None
    battery_pct: float | None = None
    charging: bool | None = None
    if battery is not None:
        capacity = read_text(battery / "capacity")
        battery_pct = within(float(capacity), 0, 100) if capacity and capacity.isdigit() else None
        status = read_text(battery / "status")
        charging = {
            "Charging": True,
            "Discharging": False,
            "Not charging": False,
            "Full": False,
        }.get(status or "")
        if on_mains is None and status == "Discharging":
            on_mains = False  # only a battery, and it is draining: no mains
        elif on_mains is None and status in ("Charging", "Full"):
            on_mains = True
    return SupplyState(on_mains, battery_pct, charging)


# --------------------------------------------------------------------- the sensor


class PowerSensor:
    name = "power"

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        *,
        proc: Path = Path("/proc"),
        sysfs: Path = Path("/sys"),
        run: CommandRunner = run_command,
        battery: Callable[[], BatteryFallback | None] = psutil_battery,
    ) -> None:
        self.settings = settings
        self._heartbeat = HeartbeatFile(state_dir / HEARTBEAT_FILE)
        self._legacy_heartbeat_path = state_dir / LEGACY_HEARTBEAT_FILE
        self._clean_stop_path = state_dir / CLEAN_STOP_FILE
        self._proc = proc
        self._sysfs = sysfs
        self._run = run
        self._battery = battery
        self._has_vcgencmd = settings.use_vcgencmd
        self._boot_id: str | None = None

    def read(self, stamp: Stamp) -> list[Reading]:
        uptime_s = self.uptime_s()
        readings: list[Reading] = []
        outage, settled = self._check_outage(stamp, uptime_s)
        if outage is not None:
            readings.append(outage)
        if settled:
            # Until the previous boot is judged, its heartbeat must stay on disk.
            self._heartbeat.write(Heartbeat(stamp.boot_id, stamp.taken_at))
            with contextlib.suppress(FileNotFoundError):
                self._legacy_heartbeat_path.unlink()  # superseded by the line above
        self._boot_id = stamp.boot_id
        undervoltage_now, undervoltage_since_boot = self._undervoltage()
        supply = self._supply()
        readings.append(
            PowerReading(
                **stamp.base(),
                uptime_s=uptime_s,
                undervoltage_now=undervoltage_now,
                undervoltage_since_boot=undervoltage_since_boot,
                on_mains=supply.on_mains,
                battery_pct=supply.battery_pct,
                battery_charging=supply.battery_charging,
            )
        )
        return readings

    def mark_clean_stop(self) -> None:
        """Record that this boot's agent stopped on purpose (called by the daemon)."""
        boot_id = self._boot_id or read_text(self._proc / "sys" / "kernel" / "random" / "boot_id")
        if boot_id is None:
            raise SensorError("cannot mark a clean stop: the boot id is unknown")
        write_atomically(self._clean_stop_path, {"boot_id": boot_id})

    def uptime_s(self) -> float:
        """Seconds since boot from /proc/uptime (the monotonic clock would stop in suspend)."""
        text = read_text(self._proc / "uptime") or ""
        try:
            uptime = float(text.split()[0])
        except (IndexError, ValueError):
            raise SensorError(
                f"cannot read uptime from {self._proc / 'uptime'}: {text!r}"
            ) from None
        if uptime < 0:
            raise SensorError(f"{self._proc / 'uptime'} says a negative uptime: {text!r}")
        return uptime

    def _check_outage(self, stamp: Stamp, uptime_s: float) -> tuple[OutageReading | None, bool]:
        """(the outage to report, whether the previous boot is settled)."""
        previous = _newest(
            self._heartbeat.load(), load_legacy_heartbeat(self._legacy_heartbeat_path)
        )
        if previous is None or previous.boot_id == stamp.boot_id:
            self._forget_clean_stop()
            return None, True
        if _clean_stop_boot(self._clean_stop_path) == previous.boot_id:
            self._forget_clean_stop()
            return None, True
        if not stamp.ntp_synced and uptime_s < self.settings.outage_ntp_wait_s:
            return None, False
        self._forget_clean_stop()
        boot_time = stamp.taken_at - timedelta(seconds=uptime_s)
        duration_s = max(0.0, (boot_time - previous.wall_time).total_seconds())
        outage = OutageReading(
            **stamp.base(),
            previous_boot_id=previous.boot_id,
            outage_started_at=previous.wall_time,
            outage_ended_at=max(boot_time, previous.wall_time),
            outage_duration_s=duration_s,
        )
        return outage, True

    def _forget_clean_stop(self) -> None:
        # The agent is running again: a stale marker must not excuse a later crash.
        with contextlib.suppress(FileNotFoundError):
            self._clean_stop_path.unlink()

    def _undervoltage(self) -> tuple[bool | None, bool | None]:
        if self._has_vcgencmd:
            try:
                parsed = parse_throttled(self._run(["vcgencmd", "get_throttled"], 10.0))
            except FileNotFoundError:
                self._has_vcgencmd = False  # not Raspberry Pi OS: stop asking
                parsed = None
            except SensorError:
                parsed = None  # e.g. no /dev/vchiq access: the hwmon may still tell
            if parsed is not None:
                return parsed
        return hwmon_undervoltage(self._sysfs), None

    def _supply(self) -> SupplyState:
        from_sysfs = read_power_supplies(self._sysfs)
        if from_sysfs is not None:
            return from_sysfs
        battery = self._battery()
        if battery is None:
            return SupplyState()
        return SupplyState(
            on_mains=battery.power_plugged,
            battery_pct=within(battery.percent, 0, 100),
        )


def create(settings: Settings, context: SensorContext) -> Sensor:
    return PowerSensor(settings, context.state_dir)


register(SensorPlugin(name="power", settings_type=Settings, create=create, enabled_by_default=True))
