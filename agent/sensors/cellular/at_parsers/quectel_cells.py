"""Quectel cells: ``AT+QENG="servingcell"`` (with the PCI and channel the signal reading
does not carry) and ``AT+QENG="neighbourcell"``.

The neighbour layouts depend on the technology the modem is camped on (EC2x/EG2x and
RG50x/RM5xx AT manuals), and two of them have the same field count, so the serving
cell's technology chooses the layout:

* LTE (and EN-DC):
  ``"neighbourcell intra"|"neighbourcell inter","LTE",<earfcn>,<pcid>,<rsrq>,<rsrp>,
  <rssi>,<sinr>,...``,
  ``"neighbourcell","WCDMA",<uarfcn>,<resel_priority>,<thresh_Xhigh>,<thresh_Xlow>,
  <psc>,<rscp>,<ecno>,<srxlev>``,
  ``"neighbourcell","GSM",<arfcn>,<resel_priority>,<thresh_high>,<thresh_low>,
  <ncc_permitted>,<band>,<bsic>,<rssi>,<srxlev>``
* WCDMA: ``"neighbourcell","WCDMA",<uarfcn>,<srxqual>,<psc>,<rscp>,<ecno>,...``,
  ``"neighbourcell","LTE",<earfcn>,<pcid>,<rsrp>,<rsrq>,<s_rxlev>`` (RSRP first)
* GSM: ``"neighbourcell","GSM",<mcc>,<mnc>,<lac>,<cellid>,<bsic>,<arfcn>,<rxlev dBm>,
  <c1>,<c2>,<c31>,<c32>``, ``"neighbourcell","WCDMA",<uarfcn>,<psc>,<rscp>,<ecno>``,
  ``"neighbourcell","LTE",<earfcn>,<pcid>,<rsrp>,<rsrq>``

Without a serving cell only the unambiguous ``intra``/``inter`` LTE lines are read.
'-' is Quectel's "no value"; cell ids and LAC/TAC are hex, everything else decimal.
A line that does not fit its layout is skipped, never the lines around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from agent.sensors.cellular.at_parsers.generic import plmn, to_float, to_int
from agent.sensors.cellular.at_parsers.quectel import parse_qeng
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.cells import CellInfo
from agent.sensors.cellular.state import hex_int
from coverwatch.protocol import Technology

_LTE_RATS: Final = ("LTE", "CAT-M", "CAT-NB")
_CAMPED_ON: Final[dict[str, Technology]] = {
    "WCDMA": "umts",
    "TDSCDMA": "umts",
    "GSM": "gsm",
    "NR5G-SA": "nr5g",
}
# Where the PCI (PSC, BSIC) and the channel sit among the fields after the RAT:
# WCDMA <mcc>,<mnc>,<lac>,<cellid>,<uarfcn>,<psc>; GSM <mcc>,<mnc>,<lac>,<cellid>,<bsic>,
# <arfcn>; NR5G-SA <duplex>,<mcc>,<mnc>,<cellid>,<pcid>,<tac>,<arfcn>. parse_qeng has
# checked that the line is long enough for them.
_PCI_AND_CHANNEL_AT: Final = {
    "WCDMA": (5, 4),
    "GSM": (4, 5),
    "NR5G-SA": (4, 6),
}


def serving_technology(reply: AtReply) -> Technology | None:
    """The technology the modem is camped on, as the neighbour layouts depend on it
    (EN-DC counts as LTE: its neighbours are listed in the LTE layout)."""
    lines = reply.all_fields("+QENG")
    serving = next((f for f in lines if f and f[0] == "servingcell"), None)
    if serving is None:
        return None
    rat = serving[2] if len(serving) > 2 else ""
    if rat in _LTE_RATS or any(f and f[0] == "LTE" for f in lines):
        return "lte"
    return _CAMPED_ON.get(rat)


def parse_qeng_serving_cells(reply: AtReply) -> list[CellInfo]:
    """The serving cell(s) of ``AT+QENG="servingcell"``: one, or the LTE anchor and the
    NR leg with EN-DC. Levels and identity as :func:`~.quectel.parse_qeng` reads them,
    plus the PCI (PSC, BSIC) and channel."""
    lines = reply.all_fields("+QENG")
    serving = next((f for f in lines if f and f[0] == "servingcell"), None)
    if serving is None:
        return []
    rat = serving[2] if len(serving) > 2 else ""
    f = serving[3:]
    if rat in _LTE_RATS:
        cell = _lte_cell(f)
        return [cell] if cell else []
    single = parse_qeng(reply)
    if single is not None and rat in _PCI_AND_CHANNEL_AT:
        pci_at, channel_at = _PCI_AND_CHANNEL_AT[rat]
        return [
            CellInfo(
                serving=True,
                technology=single.technology,
                operator_code=single.operator_code,
                cell_id=single.cell_id,
                tac=single.tac,
                pci=to_int(f[pci_at]),
                channel=to_int(f[channel_at]),
                rsrp_dbm=single.rsrp_dbm,
                rsrq_db=single.rsrq_db,
                sinr_db=single.sinr_db,
                rssi_dbm=single.rssi_dbm,
                rscp_dbm=single.rscp_dbm,
                ecio_db=single.ecio_db,
            )
        ]
    # EN-DC: the state line, then the LTE anchor and the NR leg on lines of their own.
    cells: list[CellInfo] = []
    anchor = next((f for f in lines if f and f[0] == "LTE"), None)
    anchor_cell = _lte_cell(anchor[1:]) if anchor else None
    if anchor_cell:
        cells.append(anchor_cell)
    nr = next((f for f in lines if f and f[0] == "NR5G-NSA"), None)
    if nr is not None and len(nr) >= 7:
        # "NR5G-NSA",<mcc>,<mnc>,<pcid>,<rsrp>,<sinr>,<rsrq>,<arfcn>,<band>,...
        cells.append(
            CellInfo(
                serving=True,
                technology="nr5g",
                operator_code=plmn(nr[1], nr[2]),
                pci=to_int(nr[3]),
                channel=to_int(nr[7]) if len(nr) > 7 else None,
                rsrp_dbm=to_float(nr[4]),
                sinr_db=to_float(nr[5]),
                rsrq_db=to_float(nr[6]),
            )
        )
    return cells


def _lte_cell(f: Sequence[str]) -> CellInfo | None:
    """LTE fields after the RAT: <is_tdd>,<mcc>,<mnc>,<cellid>,<pcid>,<earfcn>,<band>,
    <ul_bw>,<dl_bw>,<tac>,<rsrp>,<rsrq>,<rssi>,<sinr>,..."""
    if len(f) < 14:
        return None
    return CellInfo(
        serving=True,
        technology="lte",
        operator_code=plmn(f[1], f[2]),
        cell_id=hex_int(f[3]),
        pci=to_int(f[4]),
        channel=to_int(f[5]),
        tac=hex_int(f[9]),
        rsrp_dbm=to_float(f[10]),
        rsrq_db=to_float(f[11]),
        rssi_dbm=to_float(f[12]),
        sinr_db=to_float(f[13]),
    )


def parse_qeng_neighbours(reply: AtReply, serving: Technology | None) -> list[CellInfo]:
    """The neighbour cells of ``AT+QENG="neighbourcell"``, read in the layout of the
    technology the modem is camped on (``serving``); lines that fit no layout are skipped."""
    cells: list[CellInfo] = []
    for fields in reply.all_fields("+QENG"):
        if len(fields) < 3 or not fields[0].startswith("neighbourcell"):
            continue
        cell = _neighbour(fields[0], fields[1].strip().upper(), fields[2:], serving)
        if cell is not None:
            cells.append(cell)
    return cells


def _neighbour(
    kind: str, rat: str, f: Sequence[str], serving: Technology | None
) -> CellInfo | None:
    if kind in ("neighbourcell intra", "neighbourcell inter"):
        if rat != "LTE" or len(f) < 6:
            return None
        # <earfcn>,<pcid>,<rsrq>,<rsrp>,<rssi>,<sinr>
        return CellInfo(
            serving=False,
            technology="lte",
            channel=to_int(f[0]),
            pci=to_int(f[1]),
            rsrq_db=to_float(f[2]),
            rsrp_dbm=to_float(f[3]),
            rssi_dbm=to_float(f[4]),
            sinr_db=to_float(f[5]),
        )
    if kind != "neighbourcell":
        return None
    if serving in ("lte", "nr5g"):
        return _neighbour_in_lte_mode(rat, f)
    if serving == "umts":
        return _neighbour_in_wcdma_mode(rat, f)
    if serving == "gsm":
        return _neighbour_in_gsm_mode(rat, f)
    return None


def _neighbour_in_lte_mode(rat: str, f: Sequence[str]) -> CellInfo | None:
    if rat == "WCDMA" and len(f) >= 7:
        return CellInfo(
            serving=False,
            technology="umts",
            channel=to_int(f[0]),
            pci=to_int(f[4]),
            rscp_dbm=to_float(f[5]),
            ecio_db=to_float(f[6]),
        )
    if rat == "GSM" and len(f) >= 8:
        return CellInfo(
            serving=False,
            technology="gsm",
            channel=to_int(f[0]),
            pci=to_int(f[6]),
            rssi_dbm=to_float(f[7]),
        )
    return None


def _neighbour_in_wcdma_mode(rat: str, f: Sequence[str]) -> CellInfo | None:
    if rat == "WCDMA" and len(f) >= 5:
        return CellInfo(
            serving=False,
            technology="umts",
            channel=to_int(f[0]),
            pci=to_int(f[2]),
            rscp_dbm=to_float(f[3]),
            ecio_db=to_float(f[4]),
        )
    if rat == "LTE" and len(f) >= 4:
        return CellInfo(
            serving=False,
            technology="lte",
            channel=to_int(f[0]),
            pci=to_int(f[1]),
            rsrp_dbm=to_float(f[2]),
            rsrq_db=to_float(f[3]),
        )
    return None


def _neighbour_in_gsm_mode(rat: str, f: Sequence[str]) -> CellInfo | None:
    if rat == "GSM" and len(f) >= 7:
        return CellInfo(
            serving=False,
            technology="gsm",
            operator_code=plmn(f[0], f[1]),
            tac=hex_int(f[2]),
            cell_id=hex_int(f[3]),
            pci=to_int(f[4]),
            channel=to_int(f[5]),
            rssi_dbm=to_float(f[6]),
        )
    if rat == "WCDMA" and len(f) >= 4:
        return CellInfo(
            serving=False,
            technology="umts",
            channel=to_int(f[0]),
            pci=to_int(f[1]),
            rscp_dbm=to_float(f[2]),
            ecio_db=to_float(f[3]),
        )
    if rat == "LTE" and len(f) >= 4:
        return CellInfo(
            serving=False,
            technology="lte",
            channel=to_int(f[0]),
            pci=to_int(f[1]),
            rsrp_dbm=to_float(f[2]),
            rsrq_db=to_float(f[3]),
        )
    return None


def parse_qeng_cells(
    serving: AtReply, neighbours: AtReply, fallback: Technology | None = None
) -> list[CellInfo]:
    """Serving and neighbour cells of one round; the neighbour layout follows the serving
    cell's technology, else ``fallback`` (the technology the round's registration names)."""
    camped = serving_technology(serving) or fallback
    return parse_qeng_serving_cells(serving) + parse_qeng_neighbours(neighbours, camped)
