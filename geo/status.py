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

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, overload

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

logger = logging.getLogger(__name__)


def refresh_nearby(
    connection: psycopg.Connection[Any],
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    min_distance_m: float = DEFAULT_MIN_DISTANCE_M,
) -> bool:
    """Build the villages' nearby-probe cache if a village or probe moved since.

    Migration 014 keeps which probes lie near each village until a position changes;
    the status reads it when valid and computes the pairs otherwise, so this is only
    about speed, and never fails an analysis. It builds only for the default radius and
    minimum distance (any other radius is computed each time: an API caller cannot make
    the server write a cache per radius), only on an idle connection (in a transaction
    of its own, committed at once: its lock is never held through an analysis), and only
    where it may write. Returns whether it built.
    """
    if (radius_m, min_distance_m) != (DEFAULT_RADIUS_M, DEFAULT_MIN_DISTANCE_M):
        return False
    if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        with connection.transaction():
            row = connection.execute(
                "SELECT coverage_nearby_refresh(%s, %s)", (float(radius_m), float(min_distance_m))
            ).fetchone()
    except (
        psycopg.errors.InsufficientPrivilege,  # a read-only role
        psycopg.errors.ReadOnlySqlTransaction,  # a hot standby, or read-only by default
        psycopg.errors.LockNotAvailable,  # lock_timeout
        psycopg.errors.QueryCanceled,  # statement_timeout
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
    ) as error:
        logger.debug("the nearby-probe cache was not built: %s", error.diag.message_primary)
        return False
    return bool(row and row[0])


class NearbyProbe(NamedTuple):
    probe_id: str
    distance_m: float
    weight: float


class NearbyProbes(Sequence[NearbyProbe]):
    """A village's probes within the radius, nearest first, as the database listed them.

    Each :class:`NearbyProbe` is built when it is read: a province has ~140 k of them,
    and most uses read only the first (the report, the map's "speaking" probe)."""

    __slots__ = ("_distances", "_ids", "_weights")

    def __init__(
        self, ids: Sequence[str], distances: Sequence[float], weights: Sequence[float]
    ) -> None:
        if not len(ids) == len(distances) == len(weights):
            raise ValueError("nearby probes: ids, distances and weights differ in length")
        self._ids, self._distances, self._weights = ids, distances, weights

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def probe_ids(self) -> Sequence[str]:
        """The probes' ids alone, nearest first, without building a NearbyProbe each."""
        return self._ids

    @overload
    def __getitem__(self, index: int) -> NearbyProbe: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[NearbyProbe]: ...

    def __getitem__(self, index: int | slice) -> NearbyProbe | Sequence[NearbyProbe]:
        if isinstance(index, slice):
            return tuple(self)[index]
        return NearbyProbe(self._ids[index], self._distances[index], self._weights[index])

    def __iter__(self) -> Iterator[NearbyProbe]:
        return map(NearbyProbe, self._ids, self._distances, self._weights)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"NearbyProbes({list(self)!r})"


NO_NEARBY_PROBES: Final = NearbyProbes((), (), ())


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
    nearby: Sequence[NearbyProbe]
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
# and its per-operator status, both computed in one pass (migration 013), from the probes'
# coverage this analysis has already read (the database's coverage_by_probe 'all' rows).
_STATUS_SQL = """
SELECT village_id, nearby_probe_ids, nearby_distances_m, nearby_weights,
       operators, availability_pct, coverage_classes, probes
FROM coverage_village_status_of(%(probe_ids)s::text[], %(operators)s::text[],
                                %(levels)s::integer[], %(usable)s::bigint[],
                                %(readings)s::bigint[], %(radius_m)s, %(min_distance_m)s)
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
    """One status per village, in the order given (villages of the registry). ``probes``
    is :func:`geo.coverage.probe_coverage` over the same ``window``: the villages' status
    is combined from it, in the database."""
    if not villages:
        return []
    params: dict[str, Any] = {
        "radius_m": float(radius_m),
        "min_distance_m": float(min_distance_m),
        "villages": [v.village_id for v in villages],
        "probe_ids": [],
        "operators": [],
        "levels": [],
        "usable": [],
        "readings": [],
    }
    for probe in probes:
        for operator in probe.operators:
            params["probe_ids"].append(probe.probe_id)
            params["operators"].append(operator.operator)
            params["levels"].append(LEVELS.index(operator.coverage_class))
            params["usable"].append(operator.usable_readings)
            params["readings"].append(operator.readings)
    nearby_of: dict[int, NearbyProbes] = {}
    operators_of: dict[int, tuple[OperatorStatus, ...]] = {}
    for row in connection.cursor(binary=True).execute(_STATUS_SQL, params):
        village_id, probe_ids, distances, weights, operators, availability, classes, counts = row
        nearby_of[village_id] = NearbyProbes(probe_ids, distances, weights)
        operators_of[village_id] = tuple(
            OperatorStatus(operator, float(pct), coverage_class, int(count))
            for operator, pct, coverage_class, count in zip(
                operators, availability, classes, counts, strict=True
            )
        )
    nearest_id, nearest_m = _nearest_probes(villages, probes)
    # What any probe's scans heard: a village looks up only its nearby probes in it (and
    # listing the 2,000 probes is cheaper than walking the 140,000 village-probe pairs).
    heard = heard_operators(connection, (p.probe_id for p in probes), window)
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
            nearby_of.get(village.village_id, NO_NEARBY_PROBES),
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
