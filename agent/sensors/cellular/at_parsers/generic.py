"""3GPP TS 27.007 replies every modem gives: SIM, registration (with LAC/TAC and cell id
when ``<n>`` is 2), operator, ``+CSQ`` and ``+CESQ``; and how they combine."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Final

from agent.sensors.base import SensorError
from agent.sensors.cellular.at_session import AtReply, split_at_fields
from agent.sensors.cellular.state import CellularState, hex_int
from coverwatch.protocol import Registration, Technology


def to_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def to_float(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "-", "--"):
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def plmn(mcc: str, mnc: str) -> str | None:
    code = f"{mcc.strip()}{mnc.strip()}"
    return code if re.fullmatch(r"[0-9]{5,6}", code) else None


@dataclass(frozen=True)
class ServingCell:
    """What a vendor serving-cell command (or a registration report) says; None for '-'
    or absent fields."""

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

    def filled_from(self, other: ServingCell | None) -> ServingCell:
        """This report, with the fields it lacks taken from ``other``."""
        if other is None:
            return self
        missing = {
            item.name: getattr(other, item.name)
            for item in fields(self)
            if getattr(self, item.name) is None
        }
        return replace(self, **missing)


# ----------------------------------------------------------------------------- SIM

# +CPIN: <code> (27.007 §8.3) other than READY, and what the technician should do.
_CPIN_HINTS: Final[dict[str, str]] = {
    "SIM PIN": "the SIM card asks for its PIN: remove the PIN from the SIM (in a phone) "
    "or unlock it (`AT+CPIN=<pin>`)",
    "SIM PIN2": "the SIM card asks for its PIN2: remove the PIN2 from the SIM (in a phone)",
    "SIM PUK": "the SIM card is blocked (wrong PIN too often): unblock it with its PUK in a phone",
    "SIM PUK2": "the SIM card's PIN2 is blocked: unblock it with its PUK2 in a phone",
    "NOT READY": "the SIM card is not ready yet: the modem may still be starting; if this "
    "persists, power off and reseat the SIM",
    "NOT INSERTED": "no SIM card detected: insert or reseat the SIM",
}


def check_sim(reply: AtReply) -> None:
    """Raise when ``AT+CPIN?`` says the SIM is missing, broken, locked or not ready."""
    if reply.timed_out:
        raise SensorError(f"the modem did not finish answering AT+CPIN? ({reply.error})")
    if reply.ok:
        fields_ = reply.fields("+CPIN")
        status = fields_[0].upper() if fields_ else "READY"
        if status == "READY":
            return
        hint = _CPIN_HINTS.get(status)
        if hint is None and status.startswith("PH-"):
            hint = (
                "the modem is locked to another SIM or network: ask its supplier for the "
                "unlock code"
            )
        raise SensorError(f"{hint or 'the SIM card is not usable'} (+CPIN: {status})")
    error = reply.error or ""
    # +CME ERROR 10 "SIM not inserted", 13 "SIM failure", 14 "SIM busy" (27.007 §9.2).
    if re.search(r"\b10\b|not inserted", error, re.IGNORECASE):
        raise SensorError(f"no SIM card detected ({error}): insert or reseat the SIM")
    if re.search(r"\b13\b|failure", error, re.IGNORECASE):
        raise SensorError(f"the SIM card does not answer ({error}): reseat or replace it")
    raise SensorError(f"the modem cannot read the SIM card ({error})")


# -------------------------------------------------------------------- registration

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

# <AcT> of +COPS and of +CREG/+CGREG/+CEREG/+C5GREG (27.007 §7.2, §7.3).
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

# The registration domains, most specific first: the location of the first registered
# one names the serving cell.
REGISTRATION_PREFIXES: Final = ("+C5GREG", "+CEREG", "+CGREG", "+CREG")

# The answer to a read command is "<n>,<stat>[,...]" with an unquoted <stat>; an
# unsolicited report that slipped in before it is "<stat>[,"<lac>",...]".
_QUERY_FORM: Final = re.compile(r"^\s*\d+\s*,\s*(\d+)\s*(?:,(.*))?$")


@dataclass(frozen=True)
class RegistrationInfo:
    """One domain's ``<stat>`` and, with ``<n>`` = 2, its location."""

    registration: Registration
    area: int | None = None  # LAC (CS/GPRS) or TAC (EPS/5GS), hex on the wire
    cell_id: int | None = None
    technology: Technology | None = None


def parse_registration_info(reply: AtReply, prefix: str) -> RegistrationInfo | None:
    """``+CEREG: <n>,<stat>[,[<tac>],[<ci>],[<AcT>]...]`` (and the +CREG/+CGREG/+C5GREG
    equivalents with ``<lac>``); the bare unsolicited ``+CEREG: <stat>`` is accepted too."""
    bodies = reply.bodies(prefix)
    for body in bodies:
        match = _QUERY_FORM.match(body)
        if match:
            stat = int(match.group(1))
            rest = split_at_fields(match.group(2)) if match.group(2) else []
            registration = AT_REGISTRATION.get(stat, "unknown")
            if len(rest) < 2:
                return RegistrationInfo(registration)
            act = to_int(rest[2]) if len(rest) > 2 else None
            return RegistrationInfo(
                registration,
                area=hex_int(rest[0]),
                cell_id=hex_int(rest[1]),
                technology=COPS_TECHNOLOGY.get(act) if act is not None else None,
            )
    for body in bodies:
        bare = to_int(split_at_fields(body)[0])
        if bare is not None:
            return RegistrationInfo(AT_REGISTRATION.get(bare, "unknown"))
    return None


def parse_registration(reply: AtReply, prefix: str) -> Registration | None:
    """``+CEREG: <n>,<stat>[,...]`` (query form) or ``+CEREG: <stat>`` (unsolicited)."""
    info = parse_registration_info(reply, prefix)
    return info.registration if info else None


def consolidate_registration(states: Iterable[Registration | None]) -> Registration:
    """One registration from the CS, PS, EPS and 5GS domains: the best one wins, as
    ModemManager does (registered on LTE while CS is 'searching' is registered)."""
    present = {state for state in states if state is not None}
    for candidate in _REGISTRATION_PRECEDENCE:
        if candidate in present:
            return candidate
    return "unknown"


def registered_cell(infos: Iterable[RegistrationInfo | None]) -> ServingCell | None:
    """The serving cell named by the most specific registered domain (C5GREG, CEREG,
    CGREG, CREG in that order, as :data:`REGISTRATION_PREFIXES` lists them)."""
    for info in infos:
        if info is not None and info.registration in ("home", "roaming") and info.cell_id:
            return ServingCell(technology=info.technology, cell_id=info.cell_id, tac=info.area)
    return None


# ------------------------------------------------------------------------ operator


def parse_cops(
    reply: AtReply, expected_format: int | None = None
) -> tuple[str | None, Technology | None]:
    """(operator, technology) from ``+COPS: <mode>,<format>,"<oper>",<AcT>``; a bare
    ``+COPS: 0`` means no operator selected. With ``expected_format`` (0 long name, 2
    numeric) an operator in another format is not returned: a modem that refused
    ``AT+COPS=3,0`` still prints the numeric code, which is no name."""
    fields_ = reply.fields("+COPS")
    if not fields_ or len(fields_) < 3:
        return None, None
    operator = fields_[2] or None
    if expected_format is not None and to_int(fields_[1]) != expected_format:
        operator = None
    act = to_int(fields_[3]) if len(fields_) > 3 else None
    return operator, COPS_TECHNOLOGY.get(act) if act is not None else None


# -------------------------------------------------------------------------- signal


def csq_rssi_dbm(reply: AtReply) -> float | None:
    """``+CSQ: <rssi>,<ber>``: 0..31 is -113..-51 dBm in 2 dB steps; 99 is unknown."""
    fields_ = reply.fields("+CSQ")
    value = to_int(fields_[0]) if fields_ else None
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
    fields_ = reply.fields("+CESQ")
    if not fields_ or len(fields_) < 6:
        return Cesq()

    def scaled(index: int, top: int, offset: float, step: float) -> float | None:
        raw = to_int(fields_[index])
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


# ------------------------------------------------------------------------ together


def state_from_at(
    registrations: Iterable[Registration | None],
    operator_name: str | None,
    operator_code: str | None,
    cops_technology: Technology | None,
    csq_rssi: float | None,
    cesq: Cesq,
    serving: ServingCell | None,
    *,
    registered: ServingCell | None = None,
) -> CellularState:
    """Combine the AT answers: the vendor serving-cell report wins over the registration
    report's location (``registered``), and both over +COPS, +CESQ and +CSQ."""
    cell = (serving or ServingCell()).filled_from(registered)

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
