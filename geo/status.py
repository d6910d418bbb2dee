"""Coverage status of each village, from the probes in or near it.

The rule is the database's (``coverage_village_status()``, migration 013, of which
``coverage_by_village()`` is the per-operator view), so that the map,
the API, the reports and Grafana say the same: a probe counts for a village when it is
within ``radius_m`` (default 3 km, great-circle distance), weighted by inverse squared
distance ``1 / max(d, min_distance_m)²`` (``min_distance_m`` 100 m: every probe inside
the village counts fully); per operator, the village's availability is the weighted
mean of the nearby probes' availability, and its class the weighted mean of their class
levels rounded half down (conservative). With no nearby probe that measured an
operator, the village is **unmeasured** for it — never "none".

This module adds what is not a coverage verdict: the nearest probe at any distance
(an STRtree in a local metric projection), shown so that a technician knows how far
the closest measurement is; and the operators that nearby probes' network scans heard
but no probe measured (:mod:`geo.scan_evidence`), listed apart as ``evidence: "scan"``
and never counted as coverage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
import shapely

from geo.coverage import ProbeCoverage, TimeWindow
from geo.operators import operator_label
from geo.projection import LocalProjection, haversine_m
from geo.registry import Village
from geo.scan_evidence import (
    MEASURED_EVIDENCE,
    ScanEvidence,
    heard_operators,
    village_scan_evidence,
)
from geo.thresholds import LEVELS, CoverageClass

DEFAULT_RADIUS_M: Final = 3000.0
DEFAULT_MIN_DISTANCE_M: Final = 100.0


class NearbyProbe(NamedTuple):
    # A named tuple, not a dataclass: a province has ~140 k of them, and a tuple is
    # built several times faster.
    probe_id: str
    distance_m: float
    weight: float


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    operator: str
    availability_pct: float
    coverage_class: CoverageClass
    probes: int
    # Measured by nearby probes, the only evidence coverage is made of (see
    # geo.scan_evidence for the operators a scan merely heard).
    evidence: str = MEASURED_EVIDENCE

    @property
    def operator_name(self) -> str:
        return operator_label(self.operator)


@dataclass(frozen=True, slots=True)
class VillageStatus:
    village: Village
    nearby: tuple[NearbyProbe, ...]
    operators: tuple[OperatorStatus, ...]
    nearest_probe_id: str | None
    nearest_probe_m: float | None
    # Operators no nearby probe measured but a nearby probe's network scan heard.
    scan_evidence: tuple[ScanEvidence, ...] = ()

    @property
    def best(self) -> OperatorStatus | None:
        if not self.operators:
            return None
        return max(
            self.operators,
            key=lambda o: (LEVELS.index(o.coverage_class), o.availability_pct, o.operator),
        )

    @property
    def status(self) -> CoverageClass:
        best = self.best
        return "unmeasured" if best is None else best.coverage_class

    def to_dict(self) -> dict[str, Any]:
        v = self.village
        return {
            "village_id": v.village_id,
            "name": v.name,
            "commune": v.commune,
            "district": v.district,
            "province": v.province,
            "lon": v.lon,
            "lat": v.lat,
            "status": self.status,
            "nearest_probe_id": self.nearest_probe_id,
            "nearest_probe_m": self.nearest_probe_m,
            "nearby_probes": [
                {"probe_id": p.probe_id, "distance_m": round(p.distance_m, 1)} for p in self.nearby
            ],
            "operators": [
                {
                    "operator": o.operator,
                    "operator_name": o.operator_name,
                    "availability_pct": round(o.availability_pct, 1),
                    "coverage_class": o.coverage_class,
                    "probes": o.probes,
                    "evidence": o.evidence,
                }
                for o in self.operators
            ],
            "scan_evidence": [e.to_dict() for e in self.scan_evidence],
        }


# One row per village with a probe within the radius: its nearby probes (nearest first)
# and its per-operator status, both computed in one pass (migration 013).
_STATUS_SQL = """
SELECT village_id, nearby_probe_ids, nearby_distances_m, nearby_weights,
       operators, availability_pct, coverage_classes, probes
FROM coverage_village_status(%(start)s, %(end)s, %(radius_m)s, %(min_distance_m)s)
WHERE village_id = ANY(%(villages)s)
"""


def village_status(
    connection: psycopg.Connection[Any],
    villages: Sequence[Village],
    probes: Sequence[ProbeCoverage],
    window: TimeWindow,
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    min_distance_m: float = DEFAULT_MIN_DISTANCE_M,
) -> list[VillageStatus]:
    """One status per village, in the order given (villages of the registry)."""
    if not villages:
        return []
    params = {
        "start": window.start,
        "end": window.end,
        "radius_m": float(radius_m),
        "min_distance_m": float(min_distance_m),
        "villages": [v.village_id for v in villages],
    }
    nearby_of: dict[int, tuple[NearbyProbe, ...]] = {}
    operators_of: dict[int, tuple[OperatorStatus, ...]] = {}
    for row in connection.execute(_STATUS_SQL, params):
        village_id, probe_ids, distances, weights, operators, availability, classes, counts = row
        nearby_of[village_id] = tuple(map(NearbyProbe, probe_ids, distances, weights))
        operators_of[village_id] = tuple(
            OperatorStatus(operator, float(pct), coverage_class, int(count))
            for operator, pct, coverage_class, count in zip(
                operators, availability, classes, counts, strict=True
            )
        )
    nearest_id, nearest_m = _nearest_probes(villages, probes)
    heard = heard_operators(
        connection, (p.probe_id for near in nearby_of.values() for p in near), window
    )
    evidence_of: dict[int, tuple[ScanEvidence, ...]] = {}
    if heard:  # most fleets scan rarely or never: skip 10,000 empty look-ups then
        for village_id, near in nearby_of.items():
            evidence_of[village_id] = village_scan_evidence(
                [(p.probe_id, p.distance_m) for p in near],
                heard,
                (o.operator for o in operators_of.get(village_id, ())),
            )
    return [
        VillageStatus(
            village,
            nearby_of.get(village.village_id, ()),
            operators_of.get(village.village_id, ()),
            nearest_id[i],
            nearest_m[i],
            evidence_of.get(village.village_id, ()),
        )
        for i, village in enumerate(villages)
    ]


def _nearest_probes(
    villages: Sequence[Village], probes: Sequence[ProbeCoverage]
) -> tuple[list[str | None], list[float | None]]:
    """The nearest placed probe of every village, whatever the distance."""
    placed = [p for p in probes if p.lon is not None and p.lat is not None]
    if not placed:
        return [None] * len(villages), [None] * len(villages)
    v_lon = np.array([v.lon for v in villages], dtype=np.float64)
    v_lat = np.array([v.lat for v in villages], dtype=np.float64)
    p_lon = np.array([p.lon for p in placed], dtype=np.float64)
    p_lat = np.array([p.lat for p in placed], dtype=np.float64)
    projection = LocalProjection.around(np.r_[v_lon, p_lon], np.r_[v_lat, p_lat])
    v_points = shapely.points(projection.forward(np.column_stack([v_lon, v_lat])))
    p_points: npt.NDArray[np.object_] = np.asarray(
        shapely.points(projection.forward(np.column_stack([p_lon, p_lat]))), dtype=object
    )
    nearest = shapely.STRtree(p_points).query_nearest(v_points, all_matches=False)
    index = np.full(len(villages), -1)
    index[nearest[0]] = nearest[1]
    distance = haversine_m(v_lon, v_lat, p_lon[index], p_lat[index])
    ids: list[str | None] = [placed[i].probe_id if i >= 0 else None for i in index.tolist()]
    metres: list[float | None] = [
        float(d) if i >= 0 else None for i, d in zip(index.tolist(), distance.tolist(), strict=True)
    ]
    return ids, metres
