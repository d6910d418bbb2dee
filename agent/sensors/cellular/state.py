"""What a modem says, whichever backend asked: checked against the protocol's ranges here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from agent.sensors._system import printable, within
from agent.sensors.base import Stamp
from coverwatch.protocol import Registration, SignalReading, Technology

# MMModemAccessTechnology order and 27.007 <AcT> both end up on these four generations.
GENERATION_ORDER: Final[tuple[Technology, ...]] = ("gsm", "umts", "lte", "nr5g")


@dataclass(frozen=True)
class CellularState:
    """The modem's answer before it is checked against the protocol's ranges."""

    registration: Registration
    technology: Technology | None = None
    operator_code: str | None = None
    operator_name: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    rscp_dbm: float | None = None
    ecio_db: float | None = None
    signal_quality_pct: float | None = None
    # The SIM's home network (MCC-MNC), known with or without service.
    sim_operator_code: str | None = None

    def to_reading(self, stamp: Stamp, *, modem: str | None = None) -> SignalReading:
        """The wire reading. Values outside the protocol's ranges become None, and a modem
        that is not registered sends its registration alone (docs/protocol.md), with the
        modem's name and the SIM's network, which say whose coverage is missing."""
        label = modem[:255] if modem else None
        sim_operator_code = _code(self.sim_operator_code)
        if self.registration not in ("home", "roaming"):
            return SignalReading(
                **stamp.base(),
                registration=self.registration,
                modem=label,
                sim_operator_code=sim_operator_code,
            )
        name = printable(self.operator_name)
        return SignalReading(
            **stamp.base(),
            registration=self.registration,
            technology=self.technology,
            operator_code=_code(self.operator_code),
            operator_name=name,
            cell_id=_int_within(self.cell_id, 0, 2**36 - 1),
            tac=_int_within(self.tac, 0, 2**24 - 1),
            rsrp_dbm=within(self.rsrp_dbm, -160, -20),
            rsrq_db=within(self.rsrq_db, -40, 20),
            sinr_db=within(self.sinr_db, -30, 50),
            rssi_dbm=within(self.rssi_dbm, -130, 0),
            rscp_dbm=within(self.rscp_dbm, -130, -20),
            ecio_db=within(self.ecio_db, -40, 0),
            signal_quality_pct=within(self.signal_quality_pct, 0, 100),
            modem=label,
            sim_operator_code=sim_operator_code,
        )


def _code(code: str | None) -> str | None:
    """An MCC-MNC the protocol accepts, else None."""
    return code if code is not None and re.fullmatch(r"[0-9]{5,6}", code) else None


def _int_within(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None


def hex_int(text: str | None) -> int | None:
    """A cell id, TAC or LAC printed in hex ('0x639D', '0197763E'); None when absent or
    when every digit is F (the 'not known' filler some modems print)."""
    if text is None:
        return None
    digits = text.strip().removeprefix("0x").removeprefix("0X")
    if not digits or set(digits.upper()) == {"F"}:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None
