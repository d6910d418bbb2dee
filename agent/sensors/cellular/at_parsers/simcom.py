"""SIMCom: ``AT+CPSI?`` (SIM7500/SIM7600 in tenths of dB; SIM7000/SIM7070/SIM7080 on
CAT-M1 or NB-IoT in plain dB)."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from agent.sensors.cellular.at_parsers.generic import ServingCell, plmn, to_float, to_int
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.state import hex_int
from coverwatch.protocol import Technology

_CPSI_TECHNOLOGY: Final[dict[str, Technology]] = {
    "GSM": "gsm",
    "WCDMA": "umts",
    "LTE": "lte",
    "NR5G_SA": "nr5g",
}

# System modes printed by the LPWA modules (SIM7000/SIM7070/SIM7080 AT manuals): their
# RSRQ/RSRP/RSSI are plain dB/dBm, not the SIM7600's tenths.
_PLAIN_UNIT_MODES: Final = ("CAT-M", "NB-IOT", "NB IOT")


def parse_cpsi(reply: AtReply) -> ServingCell | None:
    """SIMCom ``AT+CPSI?``; None on ``NO SERVICE``.

    * LTE (SIM7600): ``LTE,Online,<mcc>-<mnc>,<tac hex>,<cell id>,<pci>,<band>,<earfcn>,
      <dlbw>,<ulbw>,<rsrq 1/10 dB>,<rsrp 1/10 dBm>,<rssi 1/10 dBm>,<rssnr dB>``
    * LTE CAT-M1 / NB-IoT (SIM7000): ``LTE CAT-M1,Online,...`` (or ``LTE NB-IOT``), the
      same fields with RSRQ, RSRP and RSSI in plain dB/dBm.
    * WCDMA: ``WCDMA,Online,<mcc>-<mnc>,<lac hex>,<cell id>,<band>,<psc>,<freq>,<ssc>,
      <ec/io>,<rscp>,...``; SIMCom prints Ec/Io and RSCP as magnitudes (3.5, 96),
      so they are negated.
    * GSM: ``GSM,Online,<mcc>-<mnc>,<lac hex>,<cell id>,<arfcn band>,<rxlev dBm>,...``
    """
    fields_ = reply.fields("+CPSI")
    if not fields_ or len(fields_) < 5:
        return None
    system_mode = fields_[0].upper()
    technology = _CPSI_TECHNOLOGY.get(system_mode.split()[0] if system_mode else "")
    if technology is None:
        return None
    mcc, _, mnc = fields_[2].partition("-")
    common = ServingCell(
        technology=technology,
        operator_code=plmn(mcc, mnc),
        tac=hex_int(fields_[3]),
        cell_id=to_int(fields_[4]),
    )
    if technology == "lte" and len(fields_) >= 14:
        plain = any(mode in system_mode for mode in _PLAIN_UNIT_MODES)
        level = to_float if plain else _tenths
        return replace(
            common,
            rsrq_db=level(fields_[10]),
            rsrp_dbm=level(fields_[11]),
            rssi_dbm=level(fields_[12]),
            sinr_db=to_float(fields_[13]),
        )
    if technology == "umts" and len(fields_) >= 11:
        return replace(common, ecio_db=_negated(fields_[9]), rscp_dbm=_negated(fields_[10]))
    if technology == "gsm" and len(fields_) >= 7:
        return replace(common, rssi_dbm=to_float(fields_[6]))
    return common


def _tenths(text: str) -> float | None:
    value = to_float(text)
    return None if value is None else value / 10


def _negated(text: str) -> float | None:
    value = to_float(text)
    return None if value is None else -abs(value)
