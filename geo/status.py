"""Coverage status of each village, from the probes in or near it.

A probe counts for a village when it is within ``radius_m`` (default 3 km, great-circle
distance). Its results are weighted by inverse squared distance, ``1 / max(d,
min_distance_m)²`` (``min_distance_m`` 100 m: every probe inside the village counts
fully): per operator, the village's availability is the weighted mean of the nearby
probes' availability, and its class the weighted mean of their class levels rounded half
down (conservative). With no nearby probe that measured an operator, the village is
**unmeasured** for it — never "none".

Candidate pairs come from an STRtree in a local metric projection (``dwithin``), and the
weighting is done with numpy over all pairs at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import shapely

from geo.coverage import ProbeCoverage
from geo.operators import operator_label
from geo.projection import LocalProjection, haversine_m
from geo.registry import Village
from geo.thresholds import LEVELS, CoverageClass

DEFAULT_RADIUS_M: Final = 3000.0
DEFAULT_MIN_DISTANCE_M: Final = 100.0
# The equirectangular projection is off by ~1.5 % at a province's edge: query a little
# wider, then keep pairs by their exact great-circle distance.
_QUERY_SLACK: Final = 1.05


@dataclass(frozen=True, slots=True)
class NearbyProbe:
    probe_id: str
    distance_m: float
    weight: float


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    operator: str
    availability_pct: float
    coverage_class: CoverageClass
    probes: int

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
                }
                for o in self.operators
            ],
        }


def village_status(
    villages: Sequence[Village],
    probes: Sequence[ProbeCoverage],
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    min_distance_m: float = DEFAULT_MIN_DISTANCE_M,
) -> list[VillageStatus]:
    """One status per village, in the order given. Probes without coordinates are skipped."""
    placed = [p for p in probes if p.lon is not None and p.lat is not None]
    if not villages:
        return []
    v_lon = np.array([v.lon for v in villages], dtype=np.float64)
    v_lat = np.array([v.lat for v in villages], dtype=np.float64)
    if not placed:
        return [VillageStatus(v, (), (), None, None) for v in villages]
    p_lon = np.array([p.lon for p in placed], dtype=np.float64)
    p_lat = np.array([p.lat for p in placed], dtype=np.float64)

    projection = LocalProjection.around(np.r_[v_lon, p_lon], np.r_[v_lat, p_lat])
    v_points = shapely.points(projection.forward(np.column_stack([v_lon, v_lat])))
    p_points = shapely.points(projection.forward(np.column_stack([p_lon, p_lat])))
    tree = shapely.STRtree(p_points)

    # Nearest probe of every village, whatever the distance.
    nearest = tree.query_nearest(v_points, all_matches=False)
    nearest_probe = np.full(len(villages), -1)
    nearest_probe[nearest[0]] = nearest[1]
    nearest_m = haversine_m(v_lon, v_lat, p_lon[nearest_probe], p_lat[nearest_probe])

    # Village/probe pairs within the radius, with exact distances and weights.
    pairs = tree.query(v_points, predicate="dwithin", distance=radius_m * _QUERY_SLACK)
    pv, pp = pairs[0], pairs[1]
    distance = haversine_m(v_lon[pv], v_lat[pv], p_lon[pp], p_lat[pp])
    keep = distance <= radius_m
    pv, pp, distance = pv[keep], pp[keep], distance[keep]
    order = np.lexsort((distance, pv))
    pv, pp, distance = pv[order], pp[order], distance[order]
    weight = 1.0 / np.maximum(distance, min_distance_m) ** 2

    # Expand pairs to (pair, operator) rows and aggregate per (village, operator).
    op_names = sorted({o.operator for p in placed for o in p.operators})
    op_index = {name: i for i, name in enumerate(op_names)}
    rows = [
        (i, op_index[o.operator], o.availability_pct, LEVELS.index(o.coverage_class))
        for i, p in enumerate(placed)
        for o in p.operators
    ]
    operators_of: list[list[OperatorStatus]] = [[] for _ in villages]
    if rows and len(pv):
        r_probe = np.array([r[0] for r in rows])
        r_op = np.array([r[1] for r in rows])
        r_avail = np.array([r[2] for r in rows], dtype=np.float64)
        r_level = np.array([r[3] for r in rows], dtype=np.float64)
        starts = np.searchsorted(r_probe, np.arange(len(placed)))
        counts = np.bincount(r_probe, minlength=len(placed))
        per_pair = counts[pp]
        pair_of_row = np.repeat(np.arange(len(pp)), per_pair)
        offset = np.arange(len(pair_of_row)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        row_of = starts[pp][pair_of_row] + offset
        key = pv[pair_of_row] * len(op_names) + r_op[row_of]
        keys, group = np.unique(key, return_inverse=True)
        w = weight[pair_of_row]
        w_sum = np.bincount(group, weights=w)
        avail = np.bincount(group, weights=w * r_avail[row_of]) / w_sum
        level = np.bincount(group, weights=w * r_level[row_of]) / w_sum
        n_probes = np.bincount(group)
        rounded = np.ceil(level - 0.5 - 1e-9).clip(0, len(LEVELS) - 1).astype(int)
        for k, a, lv, n in zip(keys, avail, rounded, n_probes, strict=True):
            village_i, op_i = divmod(int(k), len(op_names))
            operators_of[village_i].append(
                OperatorStatus(op_names[op_i], float(a), LEVELS[lv], int(n))
            )

    nearby_of: list[list[NearbyProbe]] = [[] for _ in villages]
    for vi, pi, d, w_ in zip(
        pv.tolist(), pp.tolist(), distance.tolist(), weight.tolist(), strict=True
    ):
        nearby_of[vi].append(NearbyProbe(placed[pi].probe_id, d, w_))
    return [
        VillageStatus(
            village,
            tuple(nearby_of[i]),
            tuple(operators_of[i]),
            placed[nearest_probe[i]].probe_id if nearest_probe[i] >= 0 else None,
            float(nearest_m[i]) if nearest_probe[i] >= 0 else None,
        )
        for i, village in enumerate(villages)
    ]
