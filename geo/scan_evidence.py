"""Scan evidence: operators that nearby probes' network scans heard but nobody measured.

A probe measures coverage with its own SIM; its modem's operator scan (the agent's
``operator_scan`` readings: ``AT+COPS=?``, Quectel ``AT+QSCAN``, ``mmcli --3gpp-scan``)
also hears the other operators. For a village and an operator that no nearby probe
measured (the operator is "unmeasured" there), a scan within the radius and the window
that heard the operator is evidence that its network is **on air** there.

It is a separate, labelled layer, never coverage: it does not enter
``coverage_by_village()`` (the one definition of coverage, migration 007), a village's
class, its availability or the ranking of the report, and the API, the report and the
map show it as ``evidence: "scan"`` beside the measured operators (``evidence:
"probe"``). Every status counts as heard: ``forbidden`` means this SIM may not use the
network, not that the network is absent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from geo.coverage import TimeWindow
from geo.operators import CODE_OF_NAME, operator_label

SCAN_EVIDENCE: Final = "scan"
MEASURED_EVIDENCE: Final = "probe"

# Per probe and operator: what its scans in the window heard.
_SCANS_SQL = """
SELECT probe_id,
       operator_code,
       array_remove(array_agg(DISTINCT technology), NULL) AS technologies,
       array_agg(DISTINCT status) AS statuses,
       max(rsrp_dbm) AS best_rsrp_dbm,
       max(rssi_dbm) AS best_rssi_dbm,
       count(DISTINCT scan_started_at) AS scans,
       max(scan_started_at) AS last_scan_at
FROM readings_operator_scan
WHERE probe_id = ANY(%(probes)s)
  AND taken_at >= %(start)s AND taken_at < %(end)s
  AND operator_code IS NOT NULL
GROUP BY probe_id, operator_code
"""


@dataclass(frozen=True, slots=True)
class HeardOperator:
    """One probe's scans of one operator in the window."""

    probe_id: str
    operator: str
    technologies: tuple[str, ...]
    statuses: tuple[str, ...]
    best_rsrp_dbm: float | None
    best_rssi_dbm: float | None
    scans: int
    last_scan_at: datetime


@dataclass(frozen=True, slots=True)
class ScanEvidence:
    """An operator heard by the scans of probes near a village that no probe measured."""

    operator: str
    technologies: tuple[str, ...]
    statuses: tuple[str, ...]
    best_rsrp_dbm: float | None
    best_rssi_dbm: float | None
    probes: int
    nearest_probe_m: float
    last_scan_at: datetime

    @property
    def operator_name(self) -> str:
        return operator_label(self.operator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "operator_name": self.operator_name,
            "evidence": SCAN_EVIDENCE,
            "technologies": list(self.technologies),
            "statuses": list(self.statuses),
            "best_rsrp_dbm": self.best_rsrp_dbm,
            "best_rssi_dbm": self.best_rssi_dbm,
            "probes": self.probes,
            "nearest_probe_m": round(self.nearest_probe_m, 1),
            "last_scan_at": self.last_scan_at.isoformat(),
        }


def heard_operators(
    connection: psycopg.Connection[Any], probe_ids: Iterable[str], window: TimeWindow
) -> dict[str, list[HeardOperator]]:
    """What each probe's operator scans in the window heard, per operator."""
    probes = sorted(set(probe_ids))
    if not probes:
        return {}
    params = {"probes": probes, "start": window.start, "end": window.end}
    heard: dict[str, list[HeardOperator]] = defaultdict(list)
    for row in connection.execute(_SCANS_SQL, params):
        probe_id, operator, technologies, statuses, rsrp, rssi, scans, last = row
        heard[probe_id].append(
            HeardOperator(
                probe_id,
                operator,
                tuple(sorted(technologies)),
                tuple(sorted(statuses)),
                None if rsrp is None else float(rsrp),
                None if rssi is None else float(rssi),
                int(scans),
                last,
            )
        )
    return heard


def village_scan_evidence(
    nearby: Sequence[tuple[str, float]],
    heard: Mapping[str, Sequence[HeardOperator]],
    measured: Iterable[str],
) -> tuple[ScanEvidence, ...]:
    """The scan evidence of one village: ``nearby`` is (probe, distance) within the
    radius; operators in ``measured`` (a nearby probe measured them) are left out."""
    # A probe's registry operator may be written as a name ("Viettel"): compare codes.
    skip = {CODE_OF_NAME.get(m.lower(), m) for m in measured}
    found: dict[str, list[tuple[float, HeardOperator]]] = defaultdict(list)
    for probe_id, distance_m in nearby:
        for item in heard.get(probe_id, ()):
            if item.operator not in skip:
                found[item.operator].append((distance_m, item))
    evidence = []
    for operator, items in sorted(found.items()):
        heard_here = [item for _, item in items]
        rsrp = [i.best_rsrp_dbm for i in heard_here if i.best_rsrp_dbm is not None]
        rssi = [i.best_rssi_dbm for i in heard_here if i.best_rssi_dbm is not None]
        evidence.append(
            ScanEvidence(
                operator=operator,
                technologies=tuple(sorted({t for i in heard_here for t in i.technologies})),
                statuses=tuple(sorted({s for i in heard_here for s in i.statuses})),
                best_rsrp_dbm=max(rsrp) if rsrp else None,
                best_rssi_dbm=max(rssi) if rssi else None,
                probes=len({i.probe_id for i in heard_here}),
                nearest_probe_m=min(distance for distance, _ in items),
                last_scan_at=max(i.last_scan_at for i in heard_here),
            )
        )
    return tuple(evidence)
