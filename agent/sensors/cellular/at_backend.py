"""The AT backend: one round of AT commands on the modem's port, parsed per vendor.

3GPP ``+CREG/+CGREG/+CEREG/+C5GREG`` (with ``<n>`` = 2, so every modem names its LAC/TAC
and cell id), ``+COPS``, ``+CSQ``, ``+CESQ``, plus the vendor serving-cell report:
Quectel ``AT+QENG="servingcell"`` and ``AT+QCSQ``, SIMCom ``AT+CPSI?``. ``AT+CIMI``
gives the SIM's IMSI (its home network), and with ``imei`` set ``AT+CGSN`` checks that
the modem on the port is the one configured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace

from agent.sensors.base import SensorError
from agent.sensors.cellular.at_parsers.fibocom_cells import parse_gtccinfo_cells
from agent.sensors.cellular.at_parsers.generic import (
    REGISTRATION_PREFIXES,
    ServingCell,
    check_sim,
    consolidate_registration,
    csq_rssi_dbm,
    parse_cesq,
    parse_cops,
    parse_registration_info,
    registered_cell,
    state_from_at,
)
from agent.sensors.cellular.at_parsers.quectel import parse_qcsq, parse_qeng
from agent.sensors.cellular.at_parsers.quectel_cells import parse_qeng_cells
from agent.sensors.cellular.at_parsers.simcom import parse_cpsi
from agent.sensors.cellular.at_parsers.simcom_cells import parse_cpsi_cells
from agent.sensors.cellular.at_session import AtReply, AtSession, SerialOpener, require_complete
from agent.sensors.cellular.cells import CellInfo, CellsUnsupported
from agent.sensors.cellular.settings import Settings
from agent.sensors.cellular.sim import home_network
from agent.sensors.cellular.state import CellularState
from coverwatch.protocol import Technology


def parse_digits_reply(reply: AtReply, prefix: str) -> str | None:
    """The number a modem prints alone on a line (``AT+CIMI``, ``AT+CGSN``), or after
    ``+CGSN:`` (some firmware quote it): None unless the reply is complete."""
    if not reply.ok:
        return None
    for line in reply.lines:
        text = line.removeprefix(prefix + ":").strip().strip('"')
        if re.fullmatch(r"[0-9]{6,17}", text):
            return text
    return None


class AtBackend:
    """Reads the modem on ``settings.port``; the port is opened per round and closed."""

    def __init__(
        self,
        settings: Settings,
        open_port: SerialOpener,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._open_port = open_port
        self._clock = clock
        self._vendor: str | None = None

    def measure(self) -> CellularState:
        settings = self._settings
        port = self._open_port(settings.port, settings.baud, 0.2)
        try:
            return self._measure(
                AtSession(port, timeout_s=settings.at_timeout_s, clock=self._clock)
            )
        finally:
            port.close()

    def read_cells(self, serving_technology: Technology | None) -> list[CellInfo]:
        """The cells the modem lists (:mod:`.cells`), on the port the round just read:
        Quectel ``AT+QENG`` and Fibocom ``AT+GTCCINFO?`` serving and neighbour cells,
        SIMCom's ``AT+CPSI?`` serving cell. A reply cut short is an error; ``ERROR``
        means "not on this firmware"."""
        vendor = self._vendor or ""
        if not any(name in vendor for name in ("quectel", "simcom", "fibocom")):
            raise CellsUnsupported(
                f"the modem on {self._settings.port} has no cell report this agent reads "
                "(Quectel AT+QENG, Fibocom AT+GTCCINFO?, SIMCom AT+CPSI?)"
            )
        settings = self._settings
        port = self._open_port(settings.port, settings.baud, 0.2)
        try:
            at = AtSession(port, timeout_s=settings.at_timeout_s, clock=self._clock)
            if "quectel" in vendor:
                serving = require_complete(at.command('AT+QENG="servingcell"'))
                neighbours = require_complete(at.command('AT+QENG="neighbourcell"'))
                return parse_qeng_cells(serving, neighbours, serving_technology)
            if "fibocom" in vendor:
                return parse_gtccinfo_cells(require_complete(at.command("AT+GTCCINFO?")))
            return parse_cpsi_cells(require_complete(at.command("AT+CPSI?")))
        finally:
            port.close()

    def _measure(self, at: AtSession) -> CellularState:
        probe = at.command("AT")
        if not probe.ok:
            raise SensorError(
                f"the modem on {self._settings.port} does not answer AT ({probe.error}); "
                f"is this its AT port (try ttyUSB2/ttyUSB3)?"
            )
        at.command("ATE0")  # no echo: fewer lines to skip
        if settings_imei := self._settings.imei:
            imei = parse_digits_reply(at.command("AT+CGSN"), "+CGSN")
            if imei != settings_imei:
                raise SensorError(
                    f"the modem on {self._settings.port} has IMEI {imei or 'unknown'}, not "
                    f"{settings_imei}: is the port of another modem configured here? Use its "
                    f"/dev/serial/by-id/ path (`ls -l /dev/serial/by-id/`)"
                )
        check_sim(at.command("AT+CPIN?"))
        imsi = parse_digits_reply(at.command("AT+CIMI"), "+CIMI")
        # <n> = 2: the read commands then name the LAC/TAC and cell id (27.007 §7.2),
        # the only way to a cell identity on modems without a vendor report.
        for prefix in REGISTRATION_PREFIXES:
            at.command(f"AT{prefix}=2")
        # A registration cut short would drop a domain and could turn "registered" into
        # "searching": an error, not a guess.
        infos = [
            parse_registration_info(require_complete(at.command(f"AT{prefix}?")), prefix)
            for prefix in REGISTRATION_PREFIXES
        ]
        registrations = [info.registration if info else None for info in infos]
        registration = consolidate_registration(registrations)
        if registration not in ("home", "roaming"):
            return CellularState(
                registration=registration, sim_operator_code=home_network(None, imsi)
            )
        at.command("AT+COPS=3,0")  # long alphanumeric operator name
        operator_name, _ = parse_cops(at.command("AT+COPS?"), expected_format=0)
        at.command("AT+COPS=3,2")  # numeric MCC-MNC
        operator_code, cops_technology = parse_cops(at.command("AT+COPS?"), expected_format=2)
        csq = csq_rssi_dbm(at.command("AT+CSQ"))
        cesq = parse_cesq(at.command("AT+CESQ"))
        state = state_from_at(
            registrations,
            operator_name,
            operator_code,
            cops_technology,
            csq,
            cesq,
            self._serving_cell(at),
            registered=registered_cell(infos),
        )
        home = state.operator_code if registration == "home" else None
        return replace(state, sim_operator_code=home_network(None, imsi, registered_home=home))

    def _serving_cell(self, at: AtSession) -> ServingCell | None:
        if self._vendor is None:
            manufacturer = at.command("AT+CGMI")
            self._vendor = " ".join(manufacturer.lines).lower() if manufacturer.ok else ""
        if "quectel" in self._vendor:
            serving = parse_qeng(at.command('AT+QENG="servingcell"'))
            # +QCSQ carries the SINR on EC2x/EG25/BG96 and fills what +QENG lacks.
            signal = parse_qcsq(at.command("AT+QCSQ"))
            return serving.filled_from(signal) if serving else signal
        if "simcom" in self._vendor:
            return parse_cpsi(at.command("AT+CPSI?"))
        return None
