"""``coverwatch-probe doctor``: a plain-language checklist for the technician on site.

Each check says PASS, WARN or FAIL, what it saw, and for anything not passing what to
do about it, in words for someone holding a Pi in a village rather than for a
developer. The exit code is non-zero when any check fails, so the install script can
stop on it.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.clock import Clock
from agent.config import ProbeConfig
from agent.outbox import Outbox
from agent.sensors.base import Sensor, plugin_of
from agent.sensors.cellular import CellularSensor, Settings
from agent.sensors.cellular.modemmanager import describe_identity
from agent.sensors.cellular.scan import ScanSchedule, scan_state_file
from coverwatch import protocol
from coverwatch.protocol import SignalReading

Verdict = Literal["PASS", "WARN", "FAIL"]
MIN_FREE_DISK_BYTES = 200 * 1024 * 1024

# Where signal turns from usable to marginal, per technology (the "poor" edge of
# Android's levels, see geo/README.md for the full table and its source).
_WEAK_SIGNAL = {"lte": ("rsrp_dbm", -105.0), "nr5g": ("rsrp_dbm", -105.0)}
_WEAK_SIGNAL_FALLBACK = ("rssi_dbm", -97.0)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    seen: str
    fix: str = ""


def run_checks(
    config: ProbeConfig,
    *,
    sensors: Mapping[str, Sensor],
    clock: Clock,
    connect_timeout_s: float = 10.0,
    disk_usage: Callable[[str], Any] = shutil.disk_usage,
    mounts: Path = Path("/proc/self/mounts"),
) -> list[Check]:
    checks: list[Check] = []
    modems = [sensor for name, sensor in sorted(sensors.items()) if plugin_of(name) == "cellular"]
    state_dir = Path(config.probe.state_dir)
    if not modems:
        checks.extend(_modem_checks(None, clock, state_dir))
    for modem in modems:  # every modem of a kit, each found by its own identity
        checks.extend(_modem_checks(modem, clock, state_dir))
    checks.extend(_broker_checks(config, connect_timeout_s))
    checks.append(_clock_check(clock))
    checks.append(_disk_check(config, disk_usage))
    checks.append(_sd_card_writes_check(config, mounts))
    checks.append(_outbox_check(config))
    return checks


def _modem_checks(sensor: Sensor | None, clock: Clock, state_dir: Path) -> list[Check]:
    if sensor is None:
        return [_disabled_modem_check()]
    settings = sensor.settings if isinstance(sensor, CellularSensor) else None
    label = settings.name if settings is not None else ""
    checks = _one_modem_checks(sensor, clock, settings)
    if settings is not None and settings.scan_interval_hours > 0:
        checks.append(_scan_check(settings, state_dir))
    if not label:
        return checks
    # One modem of a kit: its name on every line ("modem viettel", "signal viettel").
    return [dataclasses.replace(check, name=f"{check.name} {label}") for check in checks]


def _scan_check(settings: Settings, state_dir: Path) -> Check:
    """When the operator scan runs next (doctor itself never scans)."""
    schedule = ScanSchedule.load(state_dir / scan_state_file(settings.name))
    due = (
        f"next due {schedule.next_due_at:%Y-%m-%d %H:%M} UTC"
        if schedule.next_due_at
        else f"first within {settings.scan_jitter_minutes:g} min of the agent's start"
    )
    return Check(
        "operator scan",
        "PASS",
        f"every {settings.scan_interval_hours:g} h, {due}; each scan takes the modem offline "
        f"for 1-3 minutes (at most {settings.scan_timeout_s:g} s)",
    )


def _disabled_modem_check() -> Check:
    return Check(
        "modem",
        "WARN",
        "the cellular sensor is disabled in probe.toml",
        "enable [sensors.cellular] unless this probe really has no modem",
    )


def _one_modem_checks(sensor: Sensor, clock: Clock, settings: Settings | None) -> list[Check]:
    bound = describe_identity(settings) if settings is not None else ""
    try:
        readings = list(sensor.read(clock.stamp()))
    except Exception as error:
        fix = (
            "check the USB modem is plugged in and powered (lsusb), that ModemManager "
            "sees it (mmcli -L), or set [sensors.cellular] backend/port for AT commands"
        )
        if bound:
            fix = (
                f"check the modem with {bound} is plugged in and powered (lsusb, mmcli -L), "
                "and that probe.toml names it as `mmcli -m N -J` shows it "
                "(equipment-identifier, device, device-identifier)"
            )
        return [Check("modem", "FAIL", f"cannot read the modem: {error}", fix)]
    signal = next((r for r in readings if isinstance(r, SignalReading)), None)
    if signal is None:
        return [Check("modem", "FAIL", "the modem answered without a signal reading", "")]
    operator = signal.operator_name or signal.operator_code or "unknown operator"
    found = f"found by {bound}, " if bound else ""
    sim = f"; SIM of {signal.sim_operator_code}" if signal.sim_operator_code else ""
    checks = [
        Check("modem", "PASS", f"{found}answers ({signal.technology or 'no technology'}){sim}")
    ]
    if signal.registration == "denied":
        checks.append(
            Check(
                "SIM / registration",
                "FAIL",
                "the network refused the SIM (registration denied)",
                "check the SIM is activated and has credit, and that it belongs to an "
                "operator present here; try it in a phone",
            )
        )
        return checks
    if not signal.registered:
        checks.append(
            Check(
                "SIM / registration",
                "FAIL",
                f"not registered to any network (state: {signal.registration})",
                "this may be a true dead zone (which is worth recording: leave the probe "
                "running); otherwise check the antenna is screwed on and the SIM is seated",
            )
        )
        return checks
    roaming = " (roaming)" if signal.registration == "roaming" else ""
    checks.append(Check("SIM / registration", "PASS", f"registered on {operator}{roaming}"))
    field, weak_at = _WEAK_SIGNAL.get(signal.technology or "", _WEAK_SIGNAL_FALLBACK)
    value = getattr(signal, field)
    if value is None:
        checks.append(
            Check(
                "signal",
                "WARN",
                f"registered but the modem reports no {field}",
                "older modems report only signal quality; readings still count",
            )
        )
    elif value < weak_at:
        checks.append(
            Check(
                "signal",
                "WARN",
                f"weak signal: {field} {value:g} (usable from {weak_at:g})",
                "try the antenna higher or by a window, facing the nearest tower",
            )
        )
    else:
        checks.append(Check("signal", "PASS", f"{field} {value:g}"))
    return checks


def _broker_checks(config: ProbeConfig, timeout_s: float) -> list[Check]:
    try:
        url = config.mqtt_url
    except Exception as error:
        return [Check("broker", "FAIL", str(error), "fix [mqtt] url in probe.toml")]
    where = f"{url.host}:{url.port}"
    try:
        with socket.create_connection((url.host, url.port), timeout=timeout_s):
            pass
    except OSError as error:
        return [
            Check(
                "broker reachable",
                "FAIL",
                f"cannot reach {where}: {error.strerror or error}",
                "check mobile data works (ping 1.1.1.1), the broker address in probe.toml, "
                "and that the server's firewall lets this port through",
            )
        ]
    checks = [Check("broker reachable", "PASS", f"{where} answers")]
    checks.append(_credentials_check(config, url, timeout_s))
    return checks


def _credentials_check(config: ProbeConfig, url: Any, timeout_s: float) -> Check:
    outcome: dict[str, Any] = {}
    answered = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"coverwatch-doctor-{config.probe.id}",
        protocol=mqtt.MQTTv311,
    )
    if url.username:
        client.username_pw_set(url.username, url.password)

    def on_connect(_: Any, __: Any, ___: Any, reason: Any, ____: Any) -> None:
        outcome["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    try:
        if url.tls:
            client.tls_set(
                ca_certs=config.mqtt.ca_file or None,
                certfile=config.mqtt.cert_file or None,
                keyfile=config.mqtt.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.connect(url.host, url.port, keepalive=30)
        client.loop_start()
        answered.wait(timeout_s)
    except (OSError, ssl.SSLError, ValueError) as error:
        return Check(
            "broker login",
            "FAIL",
            f"TLS or connection failed: {error}",
            "check [mqtt] ca_file is the CA from the server's deploy kit and the clock is "
            "right (certificates are refused when the date is wrong)",
        )
    finally:
        client.disconnect()
        client.loop_stop()
    reason = outcome.get("reason")
    if reason is None:
        return Check(
            "broker login", "FAIL", "the broker did not answer the login in time", "try again"
        )
    if reason.is_failure:
        return Check(
            "broker login",
            "FAIL",
            f"the broker refused the login: {reason}",
            "check the probe id, username and password in probe.toml match what "
            "`coverwatch probes add` printed for this probe",
        )
    return Check(
        "broker login",
        "PASS",
        f"logged in as {url.username or 'anonymous'}; will publish "
        f"to {protocol.readings_topic(config.probe.id)}",
    )


def _clock_check(clock: Clock) -> Check:
    stamp = clock.stamp()
    if stamp.ntp_synced:
        return Check("clock", "PASS", f"synchronised (now {stamp.taken_at:%Y-%m-%d %H:%M} UTC)")
    return Check(
        "clock",
        "WARN",
        f"not synchronised yet (the Pi thinks it is {stamp.taken_at:%Y-%m-%d %H:%M} UTC)",
        "readings are kept and corrected once NTP syncs; if this lasts, check mobile data "
        "and that systemd-timesyncd or chrony runs (timedatectl)",
    )


def _disk_check(config: ProbeConfig, disk_usage: Callable[[str], Any]) -> Check:
    directory = Path(config.probe.state_dir)
    probe_path = directory if directory.exists() else directory.parent
    try:
        free = disk_usage(str(probe_path)).free
    except OSError as error:
        return Check("disk", "FAIL", f"cannot check {directory}: {error.strerror}", "")
    megabytes = free / 1024 / 1024
    if free < MIN_FREE_DISK_BYTES:
        return Check(
            "disk",
            "FAIL",
            f"only {megabytes:.0f} MB free on the SD card",
            "free space (sudo journalctl --vacuum-size=50M; remove old files) or use a "
            "larger SD card",
        )
    return Check("disk", "PASS", f"{megabytes:.0f} MB free")


# File systems that know lazytime and write to the card; tmpfs and the like keep no data.
_LAZYTIME_FILE_SYSTEMS = frozenset({"ext4", "ext3", "ext2", "f2fs", "btrfs", "xfs"})
_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def _sd_card_writes_check(config: ProbeConfig, mounts: Path) -> Check:
    """Whether the state directory's file system is mounted with lazytime: without it,
    each round's durable one-sector write also rewrites a 4 KB inode block (its mtime)."""
    directory = Path(config.probe.state_dir).resolve()
    try:
        mount = _mount_of(directory, mounts.read_text(encoding="utf-8", errors="replace"))
    except OSError as error:
        return Check("sd card", "WARN", f"cannot read {mounts}: {error.strerror}", "")
    if mount is None:
        return Check("sd card", "WARN", f"no mount found for {directory} in {mounts}", "")
    point, fs_type, options = mount
    where = f"{directory} is on {point} ({fs_type}, {','.join(options)})"
    if fs_type in _MEMORY_FILE_SYSTEMS:
        return Check(
            "sd card",
            "FAIL",
            f"{where}: in RAM, readings would be lost in a power cut",
            "set [probe] state_dir to a directory on the SD card (default /var/lib/coverwatch)",
        )
    if "lazytime" in options or fs_type not in _LAZYTIME_FILE_SYSTEMS:
        return Check("sd card", "PASS", where)
    return Check(
        "sd card",
        "WARN",
        f"{where}: without lazytime every round also rewrites a 4 KB block "
        "(the file's modification time), ~7x the data",
        f"add lazytime to the options of {point} in /etc/fstab and run "
        f"`sudo mount -o remount,lazytime {point}` (install.sh does this)",
    )


def _mount_of(directory: Path, mounts_text: str) -> tuple[str, str, list[str]] | None:
    """(mount point, type, options) of the last-mounted longest mount point holding
    ``directory``, from /proc/self/mounts text (spaces in paths are written \\040)."""
    best: tuple[str, str, list[str]] | None = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t")
        inside = directory == Path(point) or Path(point) in directory.parents
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2], fields[3].split(","))
    return best


def _outbox_check(config: ProbeConfig) -> Check:
    try:
        outbox = Outbox(config.outbox_path, max_readings=config.outbox.max_readings)
    except Exception as error:
        return Check(
            "outbox",
            "FAIL",
            f"cannot open {config.outbox_path}: {error}",
            f"check {config.probe.state_dir} exists and belongs to the coverwatch user",
        )
    try:
        stats = outbox.stats()
    finally:
        outbox.close()
    seen = f"{stats.pending} readings waiting, {stats.dropped_total} dropped so far"
    if stats.dropped_total:
        return Check(
            "outbox",
            "WARN",
            seen,
            "readings were lost to the outbox limit during a long outage; if this keeps "
            "happening, raise [outbox] max_readings or export with coverwatch-probe export",
        )
    return Check("outbox", "PASS", seen)


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        lines.append(f"[{check.verdict}] {check.name.ljust(width)}  {check.seen}")
        if check.verdict != "PASS" and check.fix:
            lines.append(f"       {' ' * width}  -> {check.fix}")
    failed = sum(check.verdict == "FAIL" for check in checks)
    warned = sum(check.verdict == "WARN" for check in checks)
    if failed:
        lines.append(f"\n{failed} check(s) FAILED, {warned} warning(s): fix the FAIL lines above.")
    else:
        lines.append(f"\nAll checks passed ({warned} warning(s)).")
    return "\n".join(lines)
