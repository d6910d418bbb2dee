"""Quectel: ``AT+QENG="servingcell"`` (EC2x/EG2x/EP06/BG9x/RM5xx) and ``AT+QCSQ``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from agent.sensors.cellular.at_parsers.generic import ServingCell, plmn, to_float
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.state import hex_int
from coverwatch.protocol import Technology

QENG_TECHNOLOGY: Final[dict[str, Technology]] = {
    "GSM": "gsm",
    "WCDMA": "umts",
    "TDSCDMA": "umts",
    "LTE": "lte",
    "CAT-M": "lte",
    "CAT-NB": "lte",
    "NR5G-SA": "nr5g",
    "NR5G-NSA": "nr5g",
}

# NR5G-SA: "servingcell",<state>,"NR5G-SA",<duplex>,<mcc>,<mnc>,<cellid>,<pcid>,<tac>,
# <arfcn>,<band>,<dl_bw>,<rsrp>,<rsrq>,<sinr>,<tx_power|scs>,<srxlev>: 17 fields, the
# last two absent on some firmware. SINR is the 15th.
_NR5G_SA_MIN_FIELDS: Final = 15


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
      <arfcn>,<band>,<bw>,<rsrp>,<rsrq>,<sinr>,<tx_power>,<srxlev>`` (17 fields)
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
    if rat in ("LTE", "CAT-M", "CAT-NB"):
        return _qeng_lte(serving[3:])
    if rat == "WCDMA" and len(serving) >= 13:
        f = serving[3:]
        return ServingCell(
            technology="umts",
            operator_code=plmn(f[0], f[1]),
            tac=hex_int(f[2]),
            cell_id=hex_int(f[3]),
            rscp_dbm=to_float(f[7]),
            ecio_db=to_float(f[8]),
        )
    if rat == "GSM" and len(serving) >= 11:
        f = serving[3:]
        return ServingCell(
            technology="gsm",
            operator_code=plmn(f[0], f[1]),
            tac=hex_int(f[2]),
            cell_id=hex_int(f[3]),
            rssi_dbm=to_float(f[7]),
        )
    if rat == "NR5G-SA" and len(serving) >= _NR5G_SA_MIN_FIELDS:
        f = serving[3:]
        return ServingCell(
            technology="nr5g",
            operator_code=plmn(f[1], f[2]),
            cell_id=hex_int(f[3]),
            tac=hex_int(f[5]),
            rsrp_dbm=to_float(f[9]),
            rsrq_db=to_float(f[10]),
            sinr_db=to_float(f[11]),
        )
    # EN-DC: the state line is followed by the anchor and the NR leg.
    anchor_fields = next((f for f in lines if f and f[0] == "LTE"), None)
    anchor = _qeng_lte(anchor_fields[1:]) if anchor_fields else None
    nr = next((f for f in lines if f and f[0] == "NR5G-NSA"), None)
    if nr is not None and len(nr) >= 7:
        nr_values = (to_float(nr[4]), to_float(nr[6]), to_float(nr[5]))  # rsrp, rsrq, sinr
        base = anchor or ServingCell(operator_code=plmn(nr[1], nr[2]))
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
        operator_code=plmn(f[1], f[2]),
        cell_id=hex_int(f[3]),
        tac=hex_int(f[9]),
        rsrp_dbm=to_float(f[10]),
        rsrq_db=to_float(f[11]),
        rssi_dbm=to_float(f[12]),
        sinr_db=to_float(f[13]),
    )


# The +QCSQ system modes with the LTE layout (EC2x/EG2x: "LTE"; BG96: "CAT-M1"/"CAT-NB1";
# BG95/BG77: "eMTC"/"NBIoT").
_QCSQ_LTE_MODES: Final = frozenset({"LTE", "CAT-M1", "CAT-NB1", "EMTC", "NBIOT"})


def parse_qcsq(reply: AtReply) -> ServingCell | None:
    """Quectel ``AT+QCSQ``; None on ``"NOSERVICE"`` or a mode it does not decode.

    * LTE family: ``"<mode>",<rssi dBm>,<rsrp dBm>,<sinr>,<rsrq dB>`` where ``<sinr>`` is
      in 1/5 dB from -20 dB: 0..250 is -20..+30 dB (EC25 and BG96 AT manuals,
      ``AT+QCSQ``). Not the SINR of ``+QENG``, which is printed in dB.
    * ``"GSM",<rssi dBm>``.
    """
    fields_ = reply.fields("+QCSQ")
    if not fields_:
        return None
    mode = fields_[0].upper()
    if mode in _QCSQ_LTE_MODES and len(fields_) >= 5:
        sinr_raw = to_float(fields_[3])
        return ServingCell(
            technology="lte",
            rssi_dbm=to_float(fields_[1]),
            rsrp_dbm=to_float(fields_[2]),
            sinr_db=None if sinr_raw is None else sinr_raw / 5 - 20,
            rsrq_db=to_float(fields_[4]),
        )
    if mode == "GSM" and len(fields_) >= 2:
        return ServingCell(technology="gsm", rssi_dbm=to_float(fields_[1]))
    return None
