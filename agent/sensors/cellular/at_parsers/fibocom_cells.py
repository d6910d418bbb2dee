"""Fibocom cells: ``AT+GTCCINFO?`` (FM350-GL and the MediaTek-based FM1xx/FM3xx family).

The reply is a ``+GTCCINFO:`` header and one bare line per cell, the serving cell(s)
first (Fibocom FM350 AT Commands User Manual V2.10, section 11.1.15):

* LTE (``<rat>`` 4), serving: ``1,4,<mcc>,<mnc>,<tac>,<cellid>,<earfcn>,<pci>,<band>,
  <bandwidth>,<rssnr>,<rxlev>,<rsrp>,<rsrq>`` (14 fields); neighbour: ``2,4,<mcc>,<mnc>,
  <tac>,<cellid>,<earfcn>,<pci>,<bandwidth>,<rxlev>,<rsrp>,<rsrq>`` (12 fields)
* NR (``<rat>`` 9), serving: ``1,9,...,<arfcn>,<pci>,<band>,<bandwidth>,<ss_sinr>,
  <rxlev>,<ss_rsrp>,<ss_rsrq>``; neighbour: ``2,9,...,<arfcn>,<pci>,<ss_sinr>,<rxlev>,
  <ss_rsrp>,<ss_rsrq>``

Levels are 27.007 ``+CESQ`` indices, read as the lower bound of their range: RSRP
-141 + n dBm, RSRQ -20 + n/2 dB, RSSNR n/2 dB; NR SS-RSRP -157 + n, SS-RSRQ -43.5 + n/2,
SS-SINR -23.5 + n/2; 255 is "not known". MCC and MNC are integers (``262,2`` is 26202).
TAC and cell id are hex, ``FFFF`` and
``00FFFFFFF`` their "not known". WCDMA/GSM rows (``<rat>`` 2 or 0) have other layouts no
public capture shows: they are skipped, as is any line that fits no layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from agent.sensors.cellular.at_parsers.generic import plmn, to_int
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.cells import CellInfo
from agent.sensors.cellular.sim import MNC_DIGITS

_LTE_RAT: Final = "4"
_NR_RAT: Final = "9"
_SERVING_FIELDS: Final = 14
_NEIGHBOUR_FIELDS: Final = 12


def parse_gtccinfo_cells(reply: AtReply) -> list[CellInfo]:
    """The cells of ``AT+GTCCINFO?``; none unless the reply ended in OK."""
    if not reply.ok:
        return []
    cells: list[CellInfo] = []
    for line in reply.lines:
        if line.startswith("+GTCCINFO") or "," not in line:
            continue
        cell = _cell([field.strip() for field in line.split(",")])
        if cell is not None:
            cells.append(cell)
    return cells


def _cell(f: Sequence[str]) -> CellInfo | None:
    if len(f) not in (_SERVING_FIELDS, _NEIGHBOUR_FIELDS) or f[0] not in ("1", "2"):
        return None
    serving = f[0] == "1"
    if serving != (len(f) == _SERVING_FIELDS) or f[1] not in (_LTE_RAT, _NR_RAT):
        return None
    lte = f[1] == _LTE_RAT
    # After <pci>: serving <band>,<bandwidth>,<snr>; neighbour LTE <bandwidth>, NR <snr>.
    snr = f[10] if serving else (None if lte else f[8])
    rsrp_floor, rsrq_floor, snr_floor = (-141.0, -20.0, 0.0) if lte else (-157.0, -43.5, -23.5)
    return CellInfo(
        serving=serving,
        technology="lte" if lte else "nr5g",
        operator_code=_network(f[2], f[3]),
        tac=_hex(f[4]),
        cell_id=_hex(f[5]),
        channel=to_int(f[6]),
        pci=to_int(f[7]),
        rsrp_dbm=_scaled(f[-2], rsrp_floor, 1.0),
        rsrq_db=_scaled(f[-1], rsrq_floor, 0.5),
        sinr_db=_scaled(snr, snr_floor, 0.5),
    )


def _network(mcc: str, mnc: str) -> str | None:
    """MCC-MNC from Fibocom's integers: "262","2" is 26202. The MNC's leading zeros are
    dropped, so its length comes from the country (:data:`MNC_DIGITS`); where the
    country is not known, a number below 100 could be either ("50": 50 or 050, Digicel
    Jamaica is 338050) and is not guessed: None, and the cell takes the network the
    modem is registered on."""
    mnc = mnc.strip()
    if not mnc.isdecimal():
        return None
    digits = MNC_DIGITS.get(mcc.strip())
    if digits is None:
        if len(mnc) < 3 and int(mnc) < 100:
            return None
        digits = len(mnc)
    return plmn(mcc, mnc.zfill(digits))


def _scaled(text: str | None, floor: float, step: float) -> float | None:
    """A +CESQ-style index as the lower bound of its range; 255 (or no number) is
    "not known"."""
    value = to_int(text)
    return None if value is None or value == 255 else floor + step * value


def _hex(text: str) -> int | None:
    """A hex TAC or cell id; empty, or only F after leading zeros, is "not known"."""
    digits = text.strip().lstrip("0")
    if not text.strip() or (digits and set(digits.upper()) == {"F"}):
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None
