"""Cellular signal: registration, technology, operator, serving cell and radio levels.

One sensor, two backends, split the way Telegraf splits a plugin per backend:

* :mod:`.modemmanager` asks ModemManager (``mmcli -J``);
* :mod:`.at_backend` talks AT on the modem's port through :mod:`.at_session` (final
  result codes, timeouts) and decodes the replies with :mod:`.at_parsers` (3GPP
  :mod:`~.at_parsers.generic`, vendor :mod:`~.at_parsers.quectel` and
  :mod:`~.at_parsers.simcom`);
* this module is the plugin: the settings (:mod:`.settings`), the backend choice and the
  'auto' fallback from ModemManager to the AT port.

"No service" is the reading that matters most in a village, so a modem that is
searching, denied or idle gives a :class:`SignalReading` with that registration and no
radio values, never an error. Errors are kept for what a technician must fix: no
modem, no SIM, a SIM PIN, a disabled modem, a port that cannot be opened. A missing
SIM is deliberately an error and not "idle": it says nothing about coverage, and
reporting it as no-service would paint a dead zone on the map.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from agent.sensors._system import CommandRunner
from agent.sensors.base import (
    Sensor,
    SensorContext,
    SensorError,
    SensorPlugin,
    Stamp,
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
from agent.sensors.cellular.modemmanager import (
    MMCLI_REGISTRATION,
    MMCLI_TECHNOLOGY,
    MmcliModem,
    MmcliSignal,
    ModemManagerBackend,
    NoModemManagerModem,
    check_mmcli_modem,
    mm_number,
    parse_mmcli_location,
    parse_mmcli_modem,
    parse_mmcli_modem_list,
    parse_mmcli_signal,
    run_mmcli,
    state_from_mmcli,
)
from agent.sensors.cellular.settings import BACKENDS, Settings
from agent.sensors.cellular.state import CellularState
from coverwatch.protocol import Reading

__all__ = [
    "AT_REGISTRATION",
    "BACKENDS",
    "COPS_TECHNOLOGY",
    "MMCLI_REGISTRATION",
    "MMCLI_TECHNOLOGY",
    "AtReply",
    "AtSession",
    "CellularSensor",
    "CellularState",
    "Cesq",
    "MmcliModem",
    "MmcliSignal",
    "RegistrationInfo",
    "SerialOpener",
    "SerialPort",
    "ServingCell",
    "Settings",
    "check_mmcli_modem",
    "check_sim",
    "consolidate_registration",
    "create",
    "csq_rssi_dbm",
    "mm_number",
    "open_serial",
    "parse_cesq",
    "parse_cops",
    "parse_cpsi",
    "parse_mmcli_location",
    "parse_mmcli_modem",
    "parse_mmcli_modem_list",
    "parse_mmcli_signal",
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

    name = "cellular"

    def __init__(
        self,
        settings: Settings,
        *,
        run: CommandRunner = run_mmcli,
        open_port: SerialOpener = open_serial,
        port_exists: Callable[[str], bool] = lambda port: Path(port).exists(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.backend not in BACKENDS:
            raise ValueError(
                f"sensors.cellular.backend must be one of {', '.join(BACKENDS)}, "
                f"got {settings.backend!r}"
            )
        self.settings = settings
        self._port_exists = port_exists
        self._modemmanager = ModemManagerBackend(settings, run)
        self._at = AtBackend(settings, open_port, clock)

    def read(self, stamp: Stamp) -> list[Reading]:
        return [self.measure().to_reading(stamp)]

    def measure(self) -> CellularState:
        backend = self.settings.backend
        if backend == "mmcli":
            return self._modemmanager.measure()
        if backend == "at":
            return self._at.measure()
        try:
            return self._modemmanager.measure()
        except NoModemManagerModem as reason:
            if self._port_exists(self.settings.port):
                return self._at.measure()
            raise SensorError(
                f"{reason}, and there is no AT port {self.settings.port}: is the modem "
                f"plugged in (`lsusb`)? Set sensors.cellular.port if it answers elsewhere."
            ) from reason


def create(settings: Settings, context: SensorContext) -> Sensor:
    return CellularSensor(settings)


register(
    SensorPlugin(
        name="cellular",
        settings_type=Settings,
        create=create,
        enabled_by_default=True,
    )
)
