"""SIMCom cells: the serving cell of ``AT+CPSI?`` with its PCI (PSC) and channel.

SIMCom's SIM7500/SIM7600 and SIM7000/SIM7070/SIM7080 have no neighbour list in their
AT manuals (``AT+CPSI?`` is the serving cell only), so a SIMCom modem's cells round is
its serving cell: levels and identity as :func:`~.simcom.parse_cpsi` reads them, plus

* LTE: ``...,<tac>,<cell id>,<pci>,<band>,<earfcn>,...``
* WCDMA: ``...,<lac>,<cell id>,<band>,<psc>,<uarfcn>,...``
* NR5G_SA: ``...,<tac>,<cell id>,<pci>,<band>,<arfcn>,...``

GSM's ``<arfcn band>`` field ("754 DCS 1800") gives the channel before the space; GSM has
no BSIC there.
"""

from __future__ import annotations

from typing import Final

from agent.sensors.cellular.at_parsers.generic import to_int
from agent.sensors.cellular.at_parsers.simcom import parse_cpsi
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.cells import CellInfo

# Where the PCI (PSC) and the channel sit in the +CPSI fields, by system mode.
_PCI_AND_CHANNEL_AT: Final = {"LTE": (5, 7), "WCDMA": (6, 7), "NR5G_SA": (5, 7)}


def parse_cpsi_cells(reply: AtReply) -> list[CellInfo]:
    """The serving cell of ``AT+CPSI?``; none on ``NO SERVICE`` or an unknown mode."""
    serving = parse_cpsi(reply)
    fields = reply.fields("+CPSI")
    if serving is None or not fields:
        return []
    mode = fields[0].upper().split()[0] if fields[0].strip() else ""
    pci: int | None = None
    channel: int | None = None
    if mode in _PCI_AND_CHANNEL_AT:
        pci_at, channel_at = _PCI_AND_CHANNEL_AT[mode]
        pci = to_int(fields[pci_at]) if len(fields) > pci_at else None
        channel = to_int(fields[channel_at]) if len(fields) > channel_at else None
    elif mode == "GSM" and len(fields) > 5:
        channel = to_int(fields[5].split()[0]) if fields[5].split() else None
    return [
        CellInfo(
            serving=True,
            technology=serving.technology,
            operator_code=serving.operator_code,
            cell_id=serving.cell_id,
            tac=serving.tac,
            pci=pci,
            channel=channel,
            rsrp_dbm=serving.rsrp_dbm,
            rsrq_db=serving.rsrq_db,
            sinr_db=serving.sinr_db,
            rssi_dbm=serving.rssi_dbm,
            rscp_dbm=serving.rscp_dbm,
            ecio_db=serving.ecio_db,
        )
    ]
