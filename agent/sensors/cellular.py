"""Cellular signal: registration, technology, operator, serving cell and radio levels.

Two backends read the same facts:

* **mmcli** asks ModemManager (``mmcli -L -J``, ``mmcli -m N -J``,
  ``--signal-get -J``, ``--location-get -J``). ModemManager only measures the
  extended values (RSRP, RSRQ, SINR...) once polling is switched on, so the sensor
  calls ``--signal-setup`` once when it finds polling off.
* **at** talks to the modem's AT port with pyserial, for modems ModemManager does not
  drive: 3GPP ``+CREG/+CGREG/+CEREG``, ``+COPS``, ``+CSQ``, ``+CESQ`` plus the
  vendor serving-cell report (Quectel ``AT+QENG="servingcell"``, SIMCom ``AT+CPSI?``),
  which is the only way to get the cell id and TAC over AT.

"No service" is the reading that matters most in a village, so a modem that is
searching, denied or idle gives a :class:`SignalReading` with that registration and no
radio values, never an error. Errors are kept for what a technician must fix: no
modem, no SIM, a SIM PIN, a disabled modem, a port that cannot be opened. A missing
SIM is deliberately an error and not "idle": it says nothing about coverage, and
reporting it as no-service would paint a dead zone on the map.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

from agent.sensors._system import CommandRunner, run_command, within
from agent.sensors.base import (
    Sensor,
    SensorContext,
    SensorError,
    SensorPlugin,
    Stamp,
    register,
)
from coverwatch.protocol import Reading, Registration, SignalReading, Technology

BACKENDS: Final = ("auto", "mmcli", "at")


@dataclass(frozen=True)
class Settings:
    backend: str = field(
        default="auto",
        metadata={
            "help": "How to reach the modem: 'mmcli' (ModemManager), 'at' (AT commands on "
            "`port`), or 'auto' (ModemManager when it lists a modem, else the AT port)."
        },
    )
    modem_index: int = field(
        default=-1,
        metadata={
            "help": "ModemManager modem index (the N in `mmcli -m N`); -1 takes the first "
            "modem `mmcli -L` lists."
        },
    )
    port: str = field(
        default="/dev/ttyUSB2",
        metadata={
            "help": "AT command port for the 'at' backend (Quectel EC25/EG25 and SIMCom "
            "SIM7600 answer AT on ttyUSB2)."
        },
    )
    baud: int = field(default=115200, metadata={"help": "AT port speed in baud."})
    at_timeout_s: float = field(
        default=5.0,
        metadata={"help": "Seconds to wait for one AT command's final OK/ERROR."},
    )
    command_timeout_s: float = field(
        default=20.0, metadata={"help": "Seconds to wait for one mmcli command."}
    )
    signal_refresh_s: int = field(
        default=30,
        metadata={
            "help": "Polling period handed to `mmcli --signal-setup` when ModemManager's "
            "extended signal polling is off (it is off after every ModemManager start)."
        },
    )


# ------------------------------------------------------------------ what a modem says


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

    def to_reading(self, stamp: Stamp) -> SignalReading:
        """The wire reading. Values outside the protocol's ranges become None, and a modem
        that is not registered sends its registration alone (docs/protocol.md)."""
        if self.registration not in ("home", "roaming"):
            return SignalReading(**stamp.base(), registration=self.registration)
        operator_code = self.operator_code
        if operator_code is not None and not re.fullmatch(r"[0-9]{5,6}", operator_code):
            operator_code = None
        name = self.operator_name[:255] if self.operator_name else None
        return SignalReading(
            **stamp.base(),
            registration=self.registration,
            technology=self.technology,
            operator_code=operator_code,
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
        )


def _int_within(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None


# -------------------------------------------------------------------- mmcli parsing

# ModemManager's MMModem3gppRegistrationState nicks. "emergency-only" and
# "attached-rlos" mean camped on a cell that refuses normal service: denied.
MMCLI_REGISTRATION: Final[dict[str, Registration]] = {
    "home": "home",
    "home-sms-only": "home",
    "home-csfb-not-preferred": "home",
    "roaming": "roaming",
    "roaming-sms-only": "roaming",
    "roaming-csfb-not-preferred": "roaming",
    "searching": "searching",
    "denied": "denied",
    "emergency-only": "denied",
    "attached-rlos": "denied",
    "idle": "idle",
    "unknown": "unknown",
}

# MMModemAccessTechnology nicks onto the protocol's four generations.
MMCLI_TECHNOLOGY: Final[dict[str, Technology]] = {
    "gsm": "gsm",
    "gsm-compact": "gsm",
    "gprs": "gsm",
    "edge": "gsm",
    "umts": "umts",
    "hsdpa": "umts",
    "hsupa": "umts",
    "hspa": "umts",
    "hspa-plus": "umts",
    "lte": "lte",
    "lte-cat-m": "lte",
    "lte-nb-iot": "lte",
    "5gnr": "nr5g",
}
_GENERATION_ORDER: Final[tuple[Technology, ...]] = ("gsm", "umts", "lte", "nr5g")

# Modem states in which registration and signal can be read.
_MMCLI_WORKING_STATES: Final = frozenset(
    {"enabled", "searching", "registered", "connecting", "connected", "disconnecting"}
)

_MMCLI_FAILED_HINTS: Final = {
    "sim-missing": "no SIM card detected: insert or reseat the SIM",
    "sim-error": "the SIM card does not answer: reseat or replace the SIM",
    "unknown-capabilities": "ModemManager does not know this modem's capabilities",
    "esim-without-profiles": "the eSIM has no profile installed",
}


@dataclass(frozen=True)
class MmcliModem:
    """The parts of ``mmcli -m N -J`` the sensor uses."""

    state: str
    failed_reason: str | None
    unlock_required: str | None
    registration: Registration
    technologies: tuple[Technology, ...]
    operator_code: str | None
    operator_name: str | None
    signal_quality_pct: float | None


def _mm_value(value: Any) -> str | None:
    """mmcli prints '--' (and sometimes '') for 'no value'."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "--", "unknown") else text


def mm_number(value: Any) -> float | None:
    """A number mmcli printed as text: '-95.00', '-67,00' (decimal comma), or '--'."""
    text = _mm_value(value)
    if text is None:
        return None
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None


def _load_json(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SensorError(f"{what} did not print JSON ({error}); is mmcli >= 1.12?") from error
    if not isinstance(document, dict):
        raise SensorError(f"{what} printed unexpected JSON: {text[:200]!r}")
    return document


def parse_mmcli_modem_list(text: str) -> list[int]:
    """Modem indices from ``mmcli -L -J`` (paths end in /Modem/<index>)."""
    paths = _load_json(text, "mmcli -L -J").get("modem-list") or []
    indices = []
    for path in paths:
        match = re.search(r"/Modem/(\d+)$", str(path))
        if match:
            indices.append(int(match.group(1)))
    return indices


def parse_mmcli_modem(text: str) -> MmcliModem:
    """The status part of ``mmcli -m N -J``."""
    modem = _load_json(text, "mmcli -m N -J").get("modem") or {}
    generic = modem.get("generic") or {}
    gpp = modem.get("3gpp") or {}
    state = (_mm_value(generic.get("state")) or "unknown").split()[0]
    registration = MMCLI_REGISTRATION.get(_mm_value(gpp.get("registration-state")) or "", "unknown")
    raw_technologies = generic.get("access-technologies") or []
    if isinstance(raw_technologies, str):  # older mmcli printed "lte, 5gnr"
        raw_technologies = [part.strip() for part in raw_technologies.split(",")]
    technologies = tuple(
        MMCLI_TECHNOLOGY[nick] for nick in raw_technologies if nick in MMCLI_TECHNOLOGY
    )
    quality = generic.get("signal-quality") or {}
    # A quality ModemManager has not refreshed lately ("recent": "no") is a stale cache.
    recent = _mm_value(quality.get("recent")) != "no"
    return MmcliModem(
        state=state,
        failed_reason=_mm_value(generic.get("state-failed-reason")),
        unlock_required=_mm_value(generic.get("unlock-required")),
        registration=registration,
        technologies=technologies,
        operator_code=_mm_value(gpp.get("operator-code")),
        operator_name=_mm_value(gpp.get("operator-name")),
        signal_quality_pct=mm_number(quality.get("value")) if recent else None,
    )


@dataclass(frozen=True)
class MmcliSignal:
    """``mmcli -m N --signal-get -J``: per-technology values and the polling period."""

    refresh_s: float | None
    values: dict[str, dict[str, float | None]]

    def has_values(self) -> bool:
        return any(
            value is not None
            for technology, block in self.values.items()
            if technology in ("gsm", "umts", "lte", "5g")
            for value in block.values()
        )


def parse_mmcli_signal(text: str) -> MmcliSignal:
    signal = (_load_json(text, "mmcli --signal-get -J").get("modem") or {}).get("signal") or {}
    values = {
        technology: {key: mm_number(value) for key, value in block.items()}
        for technology, block in signal.items()
        if isinstance(block, dict)
    }
    refresh = (signal.get("refresh") or {}).get("rate")
    return MmcliSignal(refresh_s=mm_number(refresh), values=values)


def parse_mmcli_location(text: str) -> tuple[int | None, int | None]:
    """(cell id, TAC or LAC) from ``mmcli -m N --location-get -J``; hex in, ints out."""
    location = (_load_json(text, "mmcli --location-get -J").get("modem") or {}).get("location")
    gpp = (location or {}).get("3gpp") or {}
    cell_id = _hex(_mm_value(gpp.get("cid")))
    # LTE/NR have a TAC; GSM/UMTS only a LAC. Both name the area the cell belongs to.
    tac = _hex(_mm_value(gpp.get("tac"))) or _hex(_mm_value(gpp.get("lac")))
    return (cell_id or None), tac


def _hex(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.removeprefix("0x").removeprefix("0X"), 16)
    except ValueError:
        return None


def state_from_mmcli(
    modem: MmcliModem,
    signal: MmcliSignal | None,
    location: tuple[int | None, int | None] = (None, None),
) -> CellularState:
    """Combine the three mmcli answers into one state.

    With 5G NSA ModemManager lists both "lte" and "5gnr"; the reading says nr5g and
    carries the NR leg's values, or the LTE anchor's when the NR block is empty.
    """
    technology = max(modem.technologies, key=_GENERATION_ORDER.index, default=None)
    state = CellularState(
        registration=modem.registration,
        technology=technology,
        operator_code=modem.operator_code,
        operator_name=modem.operator_name,
        cell_id=location[0],
        tac=location[1],
        signal_quality_pct=modem.signal_quality_pct,
    )
    if signal is None or technology is None:
        return state
    block_names = {"gsm": ["gsm"], "umts": ["umts"], "lte": ["lte"], "nr5g": ["5g", "lte"]}
    for name in block_names[technology]:
        block = signal.values.get(name) or {}
        if any(value is not None for value in block.values()):
            return replace(
                state,
                rsrp_dbm=block.get("rsrp"),
                rsrq_db=block.get("rsrq"),
                sinr_db=block.get("snr") if block.get("snr") is not None else block.get("sinr"),
                rssi_dbm=block.get("rssi"),
                rscp_dbm=block.get("rscp"),
                ecio_db=block.get("ecio"),
            )
    return state


def check_mmcli_modem(index: int, modem: MmcliModem) -> None:
    """Raise with a technician's hint when the modem cannot measure at all."""
    if modem.state == "failed":
        reason = modem.failed_reason or "no reason given"
        hint = _MMCLI_FAILED_HINTS.get(reason, "see `mmcli -m {index}` and the ModemManager log")
        raise SensorError(f"modem {index} failed ({reason}): {hint.format(index=index)}")
    if modem.state == "locked":
        lock = modem.unlock_required or "a PIN"
        raise SensorError(
            f"modem {index} is locked: the SIM needs {lock}; remove the PIN from the SIM "
            f"(or unlock it with `mmcli -i <sim> --pin=...`)"
        )
    if modem.state not in _MMCLI_WORKING_STATES:
        raise SensorError(
            f"modem {index} is {modem.state}, not enabled: enable it with "
            f"`mmcli -m {index} --enable` (or check the ModemManager log)"
        )


# ----------------------------------------------------------------------- AT parsing

_FINAL_OK: Final = "OK"
_FINAL_ERRORS: Final = ("ERROR", "+CME ERROR", "+CMS ERROR", "NO CARRIER")


@dataclass(frozen=True)
class AtReply:
    command: str
    lines: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def fields(self, prefix: str) -> list[str] | None:
        """The comma-separated fields of the first ``prefix:`` line, quotes removed."""
        for line in self.lines:
            if line.startswith(prefix + ":"):
                return split_at_fields(line[len(prefix) + 1 :])
        return None

    def all_fields(self, prefix: str) -> list[list[str]]:
        return [
            split_at_fields(line[len(prefix) + 1 :])
            for line in self.lines
            if line.startswith(prefix + ":")
        ]


def split_at_fields(text: str) -> list[str]:
    """Split an AT response body on commas outside quotes and strip the quotes."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text.strip():
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    fields.append("".join(current).strip())
    return fields


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "-", "--"):
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def csq_rssi_dbm(reply: AtReply) -> float | None:
    """``+CSQ: <rssi>,<ber>``: 0..31 is -113..-51 dBm in 2 dB steps; 99 is unknown."""
    fields = reply.fields("+CSQ")
    value = _int(fields[0]) if fields else None
    if value is None or not 0 <= value <= 31:
        return None
    return -113.0 + 2 * value


@dataclass(frozen=True)
class Cesq:
    """``+CESQ`` (3GPP TS 27.007 §8.69) in dB/dBm; each index's lower bound."""

    rssi_dbm: float | None = None
    rscp_dbm: float | None = None
    ecio_db: float | None = None
    rsrq_db: float | None = None
    rsrp_dbm: float | None = None


def parse_cesq(reply: AtReply) -> Cesq:
    """``+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>``; 99/255 mean not known."""
    fields = reply.fields("+CESQ")
    if not fields or len(fields) < 6:
        return Cesq()

    def scaled(index: int, top: int, offset: float, step: float) -> float | None:
        raw = _int(fields[index])
        if raw is None or not 0 <= raw <= top:
            return None
        return offset + raw * step

    return Cesq(
        rssi_dbm=scaled(0, 63, -111, 1),
        rscp_dbm=scaled(2, 96, -121, 1),
        ecio_db=scaled(3, 49, -24.5, 0.5),
        rsrq_db=scaled(4, 34, -20, 0.5),
        rsrp_dbm=scaled(5, 97, -141, 1),
    )


# <stat> of +CREG/+CGREG/+CEREG/+C5GREG (27.007 §7.2).
AT_REGISTRATION: Final[dict[int, Registration]] = {
    0: "idle",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home",
    7: "roaming",
    8: "denied",
    9: "home",
    10: "roaming",
    11: "denied",
}
_REGISTRATION_PRECEDENCE: Final[tuple[Registration, ...]] = (
    "home",
    "roaming",
    "searching",
    "denied",
    "idle",
    "unknown",
)


def parse_registration(reply: AtReply, prefix: str) -> Registration | None:
    """``+CEREG: <n>,<stat>[,...]`` (query form) or ``+CEREG: <stat>`` (unsolicited)."""
    fields = reply.fields(prefix)
    if not fields:
        return None
    stat = _int(fields[1] if len(fields) > 1 else fields[0])
    return AT_REGISTRATION.get(stat, "unknown") if stat is not None else None


def consolidate_registration(states: Iterable[Registration | None]) -> Registration:
    """One registration from the CS, PS, EPS and 5GS domains: the best one wins, as
    ModemManager does (registered on LTE while CS is 'searching' is registered)."""
    present = {state for state in states if state is not None}
    for candidate in _REGISTRATION_PRECEDENCE:
        if candidate in present:
            return candidate
    return "unknown"


# <AcT> of +COPS (27.007 §7.3).
COPS_TECHNOLOGY: Final[dict[int, Technology]] = {
    0: "gsm",
    1: "gsm",
    2: "umts",
    3: "gsm",
    4: "umts",
    5: "umts",
    6: "umts",
    7: "lte",
    8: "gsm",
    9: "lte",
    10: "lte",
    11: "nr5g",
    12: "nr5g",
    13: "nr5g",
}


def parse_cops(reply: AtReply) -> tuple[str | None, Technology | None]:
    """(operator, technology) from ``+COPS: <mode>,<format>,"<oper>",<AcT>``; a bare
    ``+COPS: 0`` means no operator selected."""
    fields = reply.fields("+COPS")
    if not fields or len(fields) < 3:
        return None, None
    operator = fields[2] or None
    act = _int(fields[3]) if len(fields) > 3 else None
    return operator, COPS_TECHNOLOGY.get(act) if act is not None else None


@dataclass(frozen=True)
class ServingCell:
    """What a vendor serving-cell command says; None for '-' or absent fields."""

    technology: Technology | None = None
    operator_code: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    rscp_dbm: float | None = None
    ecio_db: float | None = None


_QENG_TECHNOLOGY: Final[dict[str, Technology]] = {
    "GSM": "gsm",
    "WCDMA": "umts",
    "TDSCDMA": "umts",
    "LTE": "lte",
    "CAT-M": "lte",
    "CAT-NB": "lte",
    "NR5G-SA": "nr5g",
    "NR5G-NSA": "nr5g",
}


def _plmn(mcc: str, mnc: str) -> str | None:
    code = f"{mcc.strip()}{mnc.strip()}"
    return code if re.fullmatch(r"[0-9]{5,6}", code) else None


def parse_qeng(reply: AtReply) -> ServingCell | None:
    """Quectel ``AT+QENG="servingcell"``; None when the modem has no serving cell.

    Layouts (Quectel EC2x/EG2x and RM5xx AT manuals; cell id and TAC/LAC are hex):

    * ``"servingcell",<state>,"LTE",<is_tdd>,<mcc>,<mnc>,<cellid>,<pcid>,<earfcn>,
      <band>,<ul_bw>,<dl_bw>,<tac>,<rsrp>,<rsrq>,<rssi>,<sinr>,...``
    * ``"servingcell",<state>,"WCDMA",<mcc>,<mnc>,<lac>,<cellid>,<uarfcn>,<psc>,<rac>,
      <rscp>,<ecio>,...``
    * ``"servingcell",<state>,"GSM",<mcc>,<mnc>,<lac>,<cellid>,<bsic>,<arfcn>,<band>,
      <rxlev dBm>,...``
    * ``"servingcell",<state>,"NR5G-SA",<duplex>,<mcc>,<mnc>,<cellid>,<pcid>,<tac>,
      <arfcn>,<band>,<bw>,<rsrp>,<rsrq>,<sinr>,...``
    * EN-DC (5G NSA): ``"servingcell",<state>`` then a ``"LTE",<is_tdd>,...`` line for
      the anchor and a ``"NR5G-NSA",<mcc>,<mnc>,<pcid>,<rsrp>,<sinr>,<rsrq>,...`` line.
      The reading takes the cell identity from the LTE anchor (the NR leg has none)
      and the radio values from the NR leg when it has them.
    """
    lines = reply.all_fields("+QENG")
    serving = next((f for f in lines if f and f[0] == "servingcell"), None)
    if serving is None:
        return None
    rat = serving[2] if len(serving) > 2 else ""  # EN-DC and "SEARCH" name no RAT here
    if rat == "LTE" or rat in ("CAT-M", "CAT-NB"):
        return _qeng_lte(serving[3:])
    if rat == "WCDMA" and len(serving) >= 13:
        f = serving[3:]
        return ServingCell(
            technology="umts",
            operator_code=_plmn(f[0], f[1]),
            tac=_hex(f[2]),
            cell_id=_hex(f[3]),
            rscp_dbm=_float(f[7]),
            ecio_db=_float(f[8]),
        )
    if rat == "GSM" and len(serving) >= 11:
        f = serving[3:]
        return ServingCell(
            technology="gsm",
            operator_code=_plmn(f[0], f[1]),
            tac=_hex(f[2]),
            cell_id=_hex(f[3]),
            rssi_dbm=_float(f[7]),
        )
    if rat == "NR5G-SA" and len(serving) >= 18:
        f = serving[3:]
        return ServingCell(
            technology="nr5g",
            operator_code=_plmn(f[1], f[2]),
            cell_id=_hex(f[3]),
            tac=_hex(f[5]),
            rsrp_dbm=_float(f[9]),
            rsrq_db=_float(f[10]),
            sinr_db=_float(f[11]),
        )
    # EN-DC: the state line is followed by the anchor and the NR leg.
    anchor_fields = next((f for f in lines if f and f[0] == "LTE"), None)
    anchor = _qeng_lte(anchor_fields[1:]) if anchor_fields else None
    nr = next((f for f in lines if f and f[0] == "NR5G-NSA"), None)
    if nr is not None and len(nr) >= 7:
        nr_values = (_float(nr[4]), _float(nr[6]), _float(nr[5]))  # rsrp, rsrq, sinr
        base = anchor or ServingCell(operator_code=_plmn(nr[1], nr[2]))
        if any(value is not None for value in nr_values):
            return replace(
                base,
                technology="nr5g",
                rsrp_dbm=nr_values[0],
                rsrq_db=nr_values[1],
                sinr_db=nr_values[2],
                rssi_dbm=None,
            )
        return replace(base, technology="nr5g")
    return anchor


def _qeng_lte(f: Sequence[str]) -> ServingCell | None:
    """LTE fields after the RAT: <is_tdd>,<mcc>,<mnc>,<cellid>,<pcid>,<earfcn>,<band>,
    <ul_bw>,<dl_bw>,<tac>,<rsrp>,<rsrq>,<rssi>,<sinr>,..."""
    if len(f) < 14:
        return None
    return ServingCell(
        technology="lte",
        operator_code=_plmn(f[1], f[2]),
        cell_id=_hex(f[3]),
        tac=_hex(f[9]),
        rsrp_dbm=_float(f[10]),
        rsrq_db=_float(f[11]),
        rssi_dbm=_float(f[12]),
        sinr_db=_float(f[13]),
    )


_CPSI_TECHNOLOGY: Final[dict[str, Technology]] = {
    "GSM": "gsm",
    "WCDMA": "umts",
    "LTE": "lte",
    "NR5G_SA": "nr5g",
}


def parse_cpsi(reply: AtReply) -> ServingCell | None:
    """SIMCom ``AT+CPSI?`` (SIM7500/SIM7600 manual); None on ``NO SERVICE``.

    * LTE: ``LTE,Online,<mcc>-<mnc>,<tac hex>,<cell id>,<pci>,<band>,<earfcn>,<dlbw>,
      <ulbw>,<rsrq 1/10 dB>,<rsrp 1/10 dBm>,<rssi 1/10 dBm>,<rssnr dB>``
    * WCDMA: ``WCDMA,Online,<mcc>-<mnc>,<lac hex>,<cell id>,<band>,<psc>,<freq>,<ssc>,
      <ec/io>,<rscp>,...``; SIMCom prints Ec/Io and RSCP as magnitudes (3.5, 96),
      so they are negated.
    * GSM: ``GSM,Online,<mcc>-<mnc>,<lac hex>,<cell id>,<arfcn band>,<rxlev dBm>,...``
    """
    fields = reply.fields("+CPSI")
    if not fields or len(fields) < 5:
        return None
    technology = _CPSI_TECHNOLOGY.get(fields[0].split()[0] if fields[0] else "")
    if technology is None:
        return None
    mcc, _, mnc = fields[2].partition("-")
    common = ServingCell(
        technology=technology,
        operator_code=_plmn(mcc, mnc),
        tac=_hex(fields[3]),
        cell_id=_int(fields[4]),
    )
    if technology == "lte" and len(fields) >= 14:
        return replace(
            common,
            rsrq_db=_tenths(fields[10]),
            rsrp_dbm=_tenths(fields[11]),
            rssi_dbm=_tenths(fields[12]),
            sinr_db=_float(fields[13]),
        )
    if technology == "umts" and len(fields) >= 11:
        return replace(common, ecio_db=_negated(fields[9]), rscp_dbm=_negated(fields[10]))
    if technology == "gsm" and len(fields) >= 7:
        return replace(common, rssi_dbm=_float(fields[6]))
    return common


def _tenths(text: str) -> float | None:
    value = _float(text)
    return None if value is None else value / 10


def _negated(text: str) -> float | None:
    value = _float(text)
    return None if value is None else -abs(value)


def check_sim(reply: AtReply) -> None:
    """Raise when ``AT+CPIN?`` says the SIM is missing, broken or locked."""
    if reply.ok:
        fields = reply.fields("+CPIN")
        status = fields[0] if fields else "READY"
        if status == "READY":
            return
        raise SensorError(
            f"the SIM card needs {status}: remove the PIN from the SIM or unlock it "
            f"(`AT+CPIN=<pin>`)"
        )
    error = reply.error or ""
    # +CME ERROR 10 "SIM not inserted", 13 "SIM failure", 14 "SIM busy" (27.007 §9.2).
    if re.search(r"\b10\b|not inserted", error, re.IGNORECASE):
        raise SensorError(f"no SIM card detected ({error}): insert or reseat the SIM")
    if re.search(r"\b13\b|failure", error, re.IGNORECASE):
        raise SensorError(f"the SIM card does not answer ({error}): reseat or replace it")
    raise SensorError(f"the modem cannot read the SIM card ({error})")


def state_from_at(
    registrations: Iterable[Registration | None],
    operator_name: str | None,
    operator_code: str | None,
    cops_technology: Technology | None,
    csq_rssi: float | None,
    cesq: Cesq,
    serving: ServingCell | None,
) -> CellularState:
    """Combine the AT answers; the vendor serving-cell report wins over +CESQ and +CSQ."""
    cell = serving or ServingCell()

    def first(*values: float | None) -> float | None:
        return next((value for value in values if value is not None), None)

    return CellularState(
        registration=consolidate_registration(registrations),
        technology=cell.technology or cops_technology,
        operator_code=operator_code or cell.operator_code,
        operator_name=operator_name,
        cell_id=cell.cell_id,
        tac=cell.tac,
        rsrp_dbm=first(cell.rsrp_dbm, cesq.rsrp_dbm),
        rsrq_db=first(cell.rsrq_db, cesq.rsrq_db),
        sinr_db=cell.sinr_db,
        rssi_dbm=first(cell.rssi_dbm, cesq.rssi_dbm, csq_rssi),
        rscp_dbm=first(cell.rscp_dbm, cesq.rscp_dbm),
        ecio_db=first(cell.ecio_db, cesq.ecio_db),
    )


# ------------------------------------------------------------------------ the AT port


class SerialPort(Protocol):
    """The slice of ``serial.Serial`` the AT backend uses (a fake replays captures)."""

    def write(self, data: bytes, /) -> int | None: ...

    def readline(self) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


SerialOpener = Callable[[str, int, float], SerialPort]


def open_serial(port: str, baud: int, read_timeout_s: float) -> SerialPort:
    """Open the modem's AT port with pyserial (imported here: only this backend needs it)."""
    import serial

    try:
        return serial.Serial(port, baud, timeout=read_timeout_s)
    except (serial.SerialException, OSError) as error:
        raise SensorError(
            f"cannot open the modem's AT port {port}: {error}; is the modem plugged in "
            f"and is ModemManager (which holds the port) stopped?"
        ) from error


class AtSession:
    """Send AT commands and collect the lines up to the final result code."""

    def __init__(
        self,
        port: SerialPort,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._port = port
        self._timeout_s = timeout_s
        self._clock = clock

    def command(self, command: str) -> AtReply:
        self._port.reset_input_buffer()
        self._port.write(command.encode("ascii") + b"\r")
        deadline = self._clock() + self._timeout_s
        lines: list[str] = []
        while self._clock() < deadline:
            raw = self._port.readline()
            if not raw:
                continue  # read timeout; keep waiting until the deadline
            line = raw.decode("ascii", errors="replace").strip()
            if not line or line == command:  # blank separator or the modem's echo
                continue
            if line == _FINAL_OK:
                return AtReply(command, tuple(lines))
            if line.startswith(_FINAL_ERRORS):
                return AtReply(command, tuple(lines), error=line)
            lines.append(line)
        return AtReply(command, tuple(lines), error=f"no answer within {self._timeout_s:g} s")


# ------------------------------------------------------------------------ the sensor


class CellularSensor:
    """Reads the modem through ModemManager or AT commands; see the module docstring."""

    name = "cellular"

    def __init__(
        self,
        settings: Settings,
        *,
        run: CommandRunner = run_command,
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
        self._run = run
        self._open_port = open_port
        self._port_exists = port_exists
        self._clock = clock
        self._signal_setup_done: set[int] = set()
        self._vendor: str | None = None

    def read(self, stamp: Stamp) -> list[Reading]:
        return [self.measure().to_reading(stamp)]

    def measure(self) -> CellularState:
        backend = self.settings.backend
        if backend == "mmcli":
            return self._measure_mmcli()
        if backend == "at":
            return self._measure_at()
        try:
            return self._measure_mmcli()
        except _NoModemManagerModem as reason:
            if self._port_exists(self.settings.port):
                return self._measure_at()
            raise SensorError(
                f"{reason}, and there is no AT port {self.settings.port}: is the modem "
                f"plugged in (`lsusb`)? Set sensors.cellular.port if it answers elsewhere."
            ) from reason

    # ModemManager ----------------------------------------------------------------

    def _mmcli(self, *args: str) -> str:
        return self._run(["mmcli", *args], self.settings.command_timeout_s)

    def _measure_mmcli(self) -> CellularState:
        try:
            listed = parse_mmcli_modem_list(self._mmcli("-L", "-J"))
        except FileNotFoundError as error:
            raise _NoModemManagerModem("mmcli is not installed") from error
        if not listed:
            raise _NoModemManagerModem("ModemManager lists no modem")
        index = self.settings.modem_index
        if index < 0:
            index = listed[0]
        elif index not in listed:
            raise SensorError(
                f"ModemManager has no modem {index} (it lists {listed}); the index changes "
                f"when the modem re-enumerates: set sensors.cellular.modem_index = -1"
            )
        modem = parse_mmcli_modem(self._mmcli("-m", str(index), "-J"))
        check_mmcli_modem(index, modem)
        if modem.registration not in ("home", "roaming"):
            return state_from_mmcli(modem, None)
        signal = parse_mmcli_signal(self._mmcli("-m", str(index), "--signal-get", "-J"))
        if not signal.refresh_s and index not in self._signal_setup_done:
            # Extended signal polling is off until someone sets it up (once per modem
            # object); afterwards ModemManager refreshes the values on its own.
            self._signal_setup_done.add(index)
            self._mmcli("-m", str(index), f"--signal-setup={self.settings.signal_refresh_s}")
            signal = parse_mmcli_signal(self._mmcli("-m", str(index), "--signal-get", "-J"))
        try:
            location = parse_mmcli_location(self._mmcli("-m", str(index), "--location-get", "-J"))
        except SensorError:
            location = (None, None)  # 3GPP location not enabled: no cell id, still a reading
        return state_from_mmcli(modem, signal, location)

    # AT commands -----------------------------------------------------------------

    def _measure_at(self) -> CellularState:
        settings = self.settings
        port = self._open_port(settings.port, settings.baud, 0.2)
        try:
            at = AtSession(port, timeout_s=settings.at_timeout_s, clock=self._clock)
            probe = at.command("AT")
            if not probe.ok:
                raise SensorError(
                    f"the modem on {settings.port} does not answer AT ({probe.error}); "
                    f"is this its AT port (try ttyUSB2/ttyUSB3)?"
                )
            at.command("ATE0")  # no echo: fewer lines to skip
            check_sim(at.command("AT+CPIN?"))
            registrations = [
                parse_registration(at.command(f"AT{prefix}?"), prefix)
                for prefix in ("+CREG", "+CGREG", "+CEREG", "+C5GREG")
            ]
            registration = consolidate_registration(registrations)
            if registration not in ("home", "roaming"):
                return CellularState(registration=registration)
            at.command("AT+COPS=3,0")  # long alphanumeric operator name
            operator_name, _ = parse_cops(at.command("AT+COPS?"))
            at.command("AT+COPS=3,2")  # numeric MCC-MNC
            operator_code, cops_technology = parse_cops(at.command("AT+COPS?"))
            csq = csq_rssi_dbm(at.command("AT+CSQ"))
            cesq = parse_cesq(at.command("AT+CESQ"))
            serving = self._serving_cell(at)
            return state_from_at(
                registrations,
                operator_name,
                operator_code,
                cops_technology,
                csq,
                cesq,
                serving,
            )
        finally:
            port.close()

    def _serving_cell(self, at: AtSession) -> ServingCell | None:
        if self._vendor is None:
            manufacturer = at.command("AT+CGMI")
            self._vendor = " ".join(manufacturer.lines).lower() if manufacturer.ok else ""
        if "quectel" in self._vendor:
            return parse_qeng(at.command('AT+QENG="servingcell"'))
        if "simcom" in self._vendor:
            return parse_cpsi(at.command("AT+CPSI?"))
        return None


class _NoModemManagerModem(SensorError):
    """ModemManager is absent or has no modem: 'auto' then tries the AT port."""


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
