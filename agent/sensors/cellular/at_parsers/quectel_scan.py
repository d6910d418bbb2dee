"""Quectel ``AT+QSCAN=<mode>,1``: every LTE and NR cell the modem hears, with its level.

On the 5G modules (RM5xx, RG5xx, RM520N) ``AT+QSCAN=3,1`` scans LTE and NR and prints
one line per cell (Quectel RG50xQ/RM5xxQ Network Application Note, "AT+QSCAN")::

    +QSCAN: "LTE",<MCC>,<MNC>,<freq>,<PCI>,<RSRP>,<RSRQ>,<srxlev>,<squal>,<cellID>,<TAC>,...
    +QSCAN: "NR5G",<MCC>,<MNC>,<freq>,<PCI>,<RSRP>,<RSRQ>,<srxlev>,<SCS>,<cellID>,<TAC>,...

Cell id and TAC are hex; ``-`` is a value the modem did not measure. A cell scan says
nothing of whether the SIM may use a network: its rows carry status "unknown" until
:func:`~agent.sensors.cellular.scan_result.with_cells` joins them to ``AT+COPS=?``.
"""

from __future__ import annotations

from typing import Final

from agent.sensors.base import SensorError
from agent.sensors.cellular.at_parsers.generic import plmn, to_float
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.scan_result import ScannedNetwork
from agent.sensors.cellular.state import hex_int
from coverwatch.protocol import Technology

QSCAN_TECHNOLOGY: Final[dict[str, Technology]] = {"LTE": "lte", "NR5G": "nr5g"}
# "<rat>",<MCC>,<MNC>,<freq>,<PCI>,<RSRP>,<RSRQ>: the least a row needs to be a cell.
_MIN_FIELDS: Final = 7
_CELL_ID, _TAC = 9, 10


def parse_qscan(reply: AtReply) -> list[ScannedNetwork]:
    """One row per cell of a complete ``AT+QSCAN`` reply; malformed rows are left out.

    Raises :class:`SensorError` when the reply was cut short or refused (no cells is a
    complete reply with no ``+QSCAN:`` line: an empty list).
    """
    if not reply.ok:
        raise SensorError(f"the modem did not complete {reply.command} ({reply.error})")
    cells = []
    for fields in reply.all_fields("+QSCAN"):
        if len(fields) < _MIN_FIELDS:
            continue
        technology = QSCAN_TECHNOLOGY.get(fields[0].strip().upper())
        code = plmn(fields[1], fields[2])
        if technology is None or code is None:
            continue
        cells.append(
            ScannedNetwork(
                operator_code=code,
                status="unknown",
                technology=technology,
                cell_id=hex_int(fields[_CELL_ID]) if len(fields) > _CELL_ID else None,
                tac=hex_int(fields[_TAC]) if len(fields) > _TAC else None,
                rsrp_dbm=to_float(fields[5]),
                rsrq_db=to_float(fields[6]),
            )
        )
    return cells
