"""What an operator scan found, whichever way the modem was asked, and its wire readings.

Every scan backend (``AT+COPS=?``, Quectel ``AT+QSCAN``, ``mmcli --3gpp-scan``) ends in a
list of :class:`ScannedNetwork`, one per operator and technology. :func:`scan_readings`
turns one scan into its :class:`~coverwatch.protocol.OperatorScanReading` list, checked
against the protocol's ranges the way :class:`~.state.CellularState` checks a signal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from agent.sensors._system import printable, within
from agent.sensors.base import Stamp
from coverwatch.protocol import (
    MAX_SCAN_NETWORKS,
    OperatorScanReading,
    ScanMethod,
    ScanStatus,
    Technology,
)

# 27.007 §7.3 <stat> of AT+COPS=? (ModemManager's MMModem3gppNetworkAvailability says the same).
COPS_STATUS: Final[dict[int, ScanStatus]] = {
    0: "unknown",
    1: "available",
    2: "current",
    3: "forbidden",
}
# When a modem lists one operator twice on one generation (e.g. GSM and EDGE, AcT 0 and 3),
# the row that says the most wins.
_STATUS_RANK: Final[dict[ScanStatus, int]] = {
    "current": 0,
    "available": 1,
    "forbidden": 2,
    "unknown": 3,
}


@dataclass(frozen=True)
class ScannedNetwork:
    """One operator on one technology, and its best cell where the modem measured one."""

    operator_code: str
    status: ScanStatus
    technology: Technology | None = None
    operator_name: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    rssi_dbm: float | None = None

    def with_cell_of(self, other: ScannedNetwork) -> ScannedNetwork:
        """This network with ``other``'s cell and levels."""
        return replace(
            self,
            cell_id=other.cell_id,
            tac=other.tac,
            rsrp_dbm=other.rsrp_dbm,
            rsrq_db=other.rsrq_db,
            rssi_dbm=other.rssi_dbm,
        )

    @property
    def key(self) -> tuple[str, Technology | None]:
        return (self.operator_code, self.technology)


@dataclass(frozen=True)
class ScanResult:
    """A finished scan: how it was made and what it heard (possibly nothing)."""

    method: ScanMethod
    networks: tuple[ScannedNetwork, ...]


def is_operator_code(code: str | None) -> bool:
    return code is not None and re.fullmatch(r"[0-9]{5,6}", code) is not None


def merge_duplicates(networks: Iterable[ScannedNetwork]) -> list[ScannedNetwork]:
    """One row per (operator, technology), in first-seen order: the most telling status,
    the name and best cell of whichever row has them."""
    merged: dict[tuple[str, Technology | None], ScannedNetwork] = {}
    for network in networks:
        seen = merged.get(network.key)
        if seen is None:
            merged[network.key] = network
            continue
        best = min(seen, network, key=lambda n: _STATUS_RANK[n.status])
        named = replace(best, operator_name=seen.operator_name or network.operator_name)
        merged[network.key] = named.with_cell_of(_stronger(seen, network))
    return list(merged.values())


def with_cells(
    networks: Iterable[ScannedNetwork], cells: Iterable[ScannedNetwork]
) -> list[ScannedNetwork]:
    """The operator list with each (operator, technology)'s best measured cell added.

    ``cells`` come from a cell scan (Quectel ``AT+QSCAN``), which measures cells but says
    nothing of whether the SIM may use them: an operator it hears that the operator list
    lacks is added with status "unknown".
    """
    listed = merge_duplicates(networks)
    best: dict[tuple[str, Technology | None], ScannedNetwork] = {}
    for cell in cells:
        seen = best.get(cell.key)
        best[cell.key] = cell if seen is None else _stronger(seen, cell)
    result = []
    for network in listed:
        measured = best.pop(network.key) if network.key in best else None
        result.append(network if measured is None else network.with_cell_of(measured))
    result.extend(best.values())
    return result


def _strength(network: ScannedNetwork) -> float:
    for value in (network.rsrp_dbm, network.rssi_dbm):
        if value is not None:
            return value
    return float("-inf")


def _stronger(a: ScannedNetwork, b: ScannedNetwork) -> ScannedNetwork:
    return b if _strength(b) > _strength(a) else a


def scan_readings(
    result: ScanResult, stamp: Stamp, started_at: datetime, *, modem: str | None = None
) -> list[OperatorScanReading]:
    """The wire readings of one scan: one per operator and technology, or exactly one
    with ``networks_found`` 0 when the scan heard nothing. Values outside the protocol's
    ranges become None; a row without a valid MCC-MNC says nothing and is left out."""
    label = modem[:255] if modem else None
    networks = [n for n in merge_duplicates(result.networks) if is_operator_code(n.operator_code)]
    networks = networks[:MAX_SCAN_NETWORKS]
    common = {
        **stamp.base(),
        "scan_started_at": started_at,
        "scan_method": result.method,
        "networks_found": len(networks),
        "modem": label,
    }
    if not networks:
        return [OperatorScanReading(**common)]
    return [
        OperatorScanReading(
            **common,
            operator_code=network.operator_code,
            operator_name=printable(network.operator_name),
            technology=network.technology,
            status=network.status,
            cell_id=_int_within(network.cell_id, 0, 2**36 - 1),
            tac=_int_within(network.tac, 0, 2**24 - 1),
            rsrp_dbm=within(network.rsrp_dbm, -160, -20),
            rsrq_db=within(network.rsrq_db, -40, 20),
            rssi_dbm=within(network.rssi_dbm, -130, 0),
        )
        for network in networks
    ]


def _int_within(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None
