"""Cellular signal: registration, technology, operator, serving cell and radio levels.

One sensor, two backends, split the way Telegraf splits a plugin per backend:

* :mod:`.modemmanager` asks ModemManager (``mmcli -J``);
* :mod:`.at_backend` talks AT on the modem's port through :mod:`.at_session` (final
  result codes, timeouts) and decodes the replies with :mod:`.at_parsers` (3GPP
  :mod:`~.at_parsers.generic`, vendor :mod:`~.at_parsers.quectel` and
  :mod:`~.at_parsers.simcom`);
* this module is the plugin: the settings (:mod:`.settings`), the backend choice and the
  'auto' fallback from ModemManager to the AT port.

A kit with several modems has one sensor per ``[[sensors.cellular]]`` table, each named
``cellular.<name>`` and bound to its modem by a stable identity (:func:`check_entries`
says what a table needs); each reading carries the modem's name and its SIM's home
network (:mod:`.sim`).

"No service" is the reading that matters most in a village, so a modem that is
searching, denied or idle gives a :class:`SignalReading` with that registration and no
radio values, never an error. Errors are kept for what a technician must fix: no
modem, no SIM, a SIM PIN, a disabled modem, a port that cannot be opened. A missing
SIM is deliberately an error and not "idle": it says nothing about coverage, and
reporting it as no-service would paint a dead zone on the map.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.sensors._system import CommandRunner
from agent.sensors.base import (
    Sensor,
    SensorContext,
    SensorError,
    SensorPlugin,
    Stamp,
    instance_name,
    register,
)
from agent.sensors.cellular.at_backend import AtBackend
from agent.sensors.cellular.at_parsers.generic import (
    AT_REGISTRATION,
    COPS_TECHNOLOGY,
    Cesq,
    RegistrationInfo,
    ServingCell,
    check_sim,
    consolidate_registration,
    csq_rssi_dbm,
    parse_cesq,
    parse_cops,
    parse_registration,
    parse_registration_info,
    state_from_at,
)
from agent.sensors.cellular.at_parsers.quectel import parse_qcsq, parse_qeng
from agent.sensors.cellular.at_parsers.simcom import parse_cpsi
from agent.sensors.cellular.at_session import (
    AtReply,
    AtSession,
    SerialOpener,
    SerialPort,
    open_serial,
    split_at_fields,
)
from agent.sensors.cellular.cells import CellSource, CellsRound, CellsSchedule
from agent.sensors.cellular.modemmanager import (
    MMCLI_REGISTRATION,
    MMCLI_TECHNOLOGY,
    MmcliModem,
    MmcliSignal,
    MmcliSim,
    ModemManagerBackend,
    NoModemManagerModem,
    check_mmcli_modem,
    mm_number,
    parse_mmcli_location,
    parse_mmcli_modem,
    parse_mmcli_modem_list,
    parse_mmcli_signal,
    parse_mmcli_sim,
    run_mmcli,
    state_from_mmcli,
)
from agent.sensors.cellular.scan import OperatorScan, check_scan_settings, scan_modem
from agent.sensors.cellular.settings import BACKENDS, MODEM_NAME_RE, Settings
from agent.sensors.cellular.sim import MNC_DIGITS, home_network
from agent.sensors.cellular.state import CellularState
from coverwatch.protocol import Reading
from coverwatch.shown import shown

__all__ = [
    "AT_REGISTRATION",
    "BACKENDS",
    "COPS_TECHNOLOGY",
    "MMCLI_REGISTRATION",
    "MMCLI_TECHNOLOGY",
    "MNC_DIGITS",
    "AtReply",
    "AtSession",
    "CellularSensor",
    "CellularState",
    "Cesq",
    "MmcliModem",
    "MmcliSignal",
    "MmcliSim",
    "RegistrationInfo",
    "SerialOpener",
    "SerialPort",
    "ServingCell",
    "Settings",
    "check_entries",
    "check_mmcli_modem",
    "check_sim",
    "consolidate_registration",
    "create",
    "csq_rssi_dbm",
    "home_network",
    "mm_number",
    "open_serial",
    "parse_cesq",
    "parse_cops",
    "parse_cpsi",
    "parse_mmcli_location",
    "parse_mmcli_modem",
    "parse_mmcli_modem_list",
    "parse_mmcli_signal",
    "parse_mmcli_sim",
    "parse_qcsq",
    "parse_qeng",
    "parse_registration",
    "parse_registration_info",
    "run_mmcli",
    "split_at_fields",
    "state_from_at",
    "state_from_mmcli",
]


class CellularSensor:
    """Reads the modem through ModemManager or AT commands; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        run: CommandRunner = run_mmcli,
        open_port: SerialOpener = open_serial,
        port_exists: Callable[[str], bool] = lambda port: Path(port).exists(),
        clock: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
    ) -> None:
        if settings.backend not in BACKENDS:
            raise ValueError(
                f"sensors.cellular.backend must be one of {', '.join(BACKENDS)}, "
                f"got {settings.backend!r}"
            )
        self.settings = settings
        # "cellular", or "cellular.<name>" for one modem of a kit: in logs and errors.
        self.name = instance_name("cellular", settings.name)
        self._port_exists = port_exists
        self._modemmanager = ModemManagerBackend(settings, run)
        self._at = AtBackend(settings, open_port, clock)
        # The operator scan (off unless scan_interval_hours is set; see .scan).
        self.scan: OperatorScan | None = None
        if settings.scan_interval_hours > 0 and state_dir is not None:
            self.scan = OperatorScan(
                settings,
                state_dir,
                lambda: scan_modem(
                    settings, self._modemmanager, run, open_port, port_exists, clock
                ),
                sensor_name=self.name,
            )
        # The backend that measured the last round is the one asked for its cells.
        self._measured_by: CellSource | None = None
        schedule = CellsSchedule(settings.cells_interval_minutes, self.name, state_dir)
        self._cells = CellsRound(schedule, sensor_name=self.name, modem=settings.name or None)

    def read(self, stamp: Stamp) -> list[Reading]:
        cells: list[Reading] = []

        def signal() -> Reading:
            state = self.measure()
            # The cells of the modem just measured (when due; never costs the signal).
            cells.extend(self._cells.read(stamp, state, self._measured_by))
            return state.to_reading(stamp, modem=self.settings.name or None)

        if self.scan is None:
            return [signal(), *cells]
        return [*self.scan.around(stamp, signal), *cells]

    def measure(self) -> CellularState:
        backend = self.settings.backend
        if backend == "mmcli":
            return self._measure_with(self._modemmanager)
        if backend == "at":
            return self._measure_with(self._at)
        try:
            return self._measure_with(self._modemmanager)
        except NoModemManagerModem as reason:
            if self.settings.name and not self.settings.imei:
                # One modem of a kit: only its IMEI (AT+CGSN) proves that the modem on
                # the port is this one and not its neighbour.
                raise SensorError(
                    f"{reason}; modem {self.settings.name!r} has no imei set, so the AT "
                    f"port cannot be checked to be its own: set its imei, or backend = "
                    f'"at" with its /dev/serial/by-id/ port'
                ) from reason
            if self._port_exists(self.settings.port):
                return self._measure_with(self._at)
            raise SensorError(
                f"{reason}, and there is no AT port {self.settings.port}: is the modem "
                f"plugged in (`lsusb`)? Set sensors.cellular.port if it answers elsewhere."
            ) from reason

    def _measure_with(self, backend: ModemManagerBackend | AtBackend) -> CellularState:
        state = backend.measure()
        self._measured_by = backend
        return state


def create(settings: Settings, context: SensorContext) -> Sensor:
    return CellularSensor(
        settings, state_dir=context.state_dir if context.background_work else None
    )


# The sample probe.toml's example of a multi-modem kit (a test loads it).
SAMPLE_KIT = """
A kit with several modems: instead of the [sensors.cellular] table above, one
[[sensors.cellular]] table per modem, each with its own name (sent with its readings
as `modem`) and the modem's stable identity: imei, usb_path or device_id, as
`mmcli -m N -J` shows them (equipment-identifier, device, device-identifier); with
backend = "at", its port as /dev/serial/by-id/... (`ls -l /dev/serial/by-id/`).
Never modem_index: ModemManager renumbers modems when they re-enumerate. Any option
above may be set per modem. A three-modem kit, one SIM per operator:

[[sensors.cellular]]
name = "viettel"
imei = "861536030196001"

[[sensors.cellular]]
name = "vinaphone"
usb_path = "1-1.3"

[[sensors.cellular]]
name = "mobifone"
device_id = "e867aad23fc10dc614959ad025a9d1049b3ad213"
"""


_IMEI = re.compile(r"[0-9]{15}")
_USB_PATH = re.compile(r"(/sys/devices/\S+/)?[0-9]+-[0-9]+(\.[0-9]+)*")


def check_entries(entries: Sequence[tuple[str, Mapping[str, Any], Settings]]) -> list[str]:
    """What is wrong with the cellular tables, as (where, table as written, settings).

    One table (a one-modem probe) keeps today's choice: the first modem with a SIM, or
    an identity if one is given. Several tables each need a stable identity, never a
    modem index, and two tables must not bind the same modem or port.
    """
    problems: list[str] = []
    several = len(entries) > 1
    for where, table, settings in entries:
        problems.extend(check_scan_settings(where, settings))
        if settings.name and not re.fullmatch(MODEM_NAME_RE, settings.name):
            problems.append(
                f"{where} name {shown(settings.name)}: use 1-32 lowercase letters, digits, '-' or "
                "'_', e.g. viettel"
            )
        if settings.imei and not _IMEI.fullmatch(settings.imei):
            problems.append(
                f"{where} imei {shown(settings.imei)}: an IMEI is 15 digits (`mmcli -m N -J` "
                "equipment-identifier, or AT+CGSN)"
            )
        if settings.usb_path and not _USB_PATH.fullmatch(settings.usb_path):
            problems.append(
                f"{where} usb_path {shown(settings.usb_path)}: write the USB port part of "
                "ModemManager's generic.device, e.g. 1-1.2 (from /sys/devices/.../usb1/1-1.2)"
            )
        if settings.device_id and not re.fullmatch(r"[0-9a-f]{8,64}", settings.device_id):
            problems.append(
                f"{where} device_id {shown(settings.device_id)}: copy ModemManager's "
                "generic.device-identifier (hex) from `mmcli -m N -J`"
            )
        if settings.cells_interval_minutes < 0:
            problems.append(
                f"{where} cells_interval_minutes {settings.cells_interval_minutes}: use a "
                "number of minutes, or 0 to read no cells"
            )
        if not several:
            continue
        bound = settings.imei or settings.usb_path or settings.device_id
        if "modem_index" in table:
            problems.append(
                f"{where} modem_index: not allowed with several modems (ModemManager "
                "renumbers modems when they re-enumerate, so an index can name another "
                "SIM after a reboot); remove it and bind the modem by imei, usb_path or "
                "device_id (see `mmcli -m N -J`)"
            )
        if settings.backend == "at":
            if "port" not in table:
                problems.append(
                    f"{where} port: with several modems each AT modem needs its own port; "
                    "set it to the modem's /dev/serial/by-id/... path (`ls -l /dev/serial/by-id/`)"
                )
        elif not bound:
            problems.append(
                f"{where} needs the modem's identity: set imei (15 digits), usb_path (e.g. "
                '"1-1.2") or device_id, as `mmcli -m N -J` shows them'
            )
    if several:
        for key, what in (("imei", "IMEI"), ("usb_path", "USB path"), ("device_id", "device id")):
            _no_duplicates(entries, key, what, problems)
        ports = [(w, s) for w, t, s in entries if s.backend == "at" and "port" in t]
        seen: dict[str, str] = {}
        for where, settings in ports:
            if settings.port in seen:
                problems.append(
                    f"{where} port {shown(settings.port, 200)} is also the port of "
                    f"{seen[settings.port]}: each modem has its own AT port"
                )
            seen.setdefault(settings.port, where)
    return problems


def _no_duplicates(
    entries: Sequence[tuple[str, Mapping[str, Any], Settings]],
    key: str,
    what: str,
    problems: list[str],
) -> None:
    seen: dict[str, str] = {}
    for where, _, settings in entries:
        value = getattr(settings, key)
        if not value:
            continue
        if value in seen:
            problems.append(
                f"{where} {key} {shown(value)}: {seen[value]} has the same {what}; two tables "
                "cannot read the same modem"
            )
        seen.setdefault(value, where)


register(
    SensorPlugin(
        name="cellular",
        settings_type=Settings,
        create=create,
        enabled_by_default=True,
        multiple=True,
        check=check_entries,
        sample_instances=SAMPLE_KIT,
    )
)
