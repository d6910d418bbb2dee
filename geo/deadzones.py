"""Dead zones: where service was measured and found wanting, apart from where nobody looked.

Each probe's result stands for a disc of ``radius_m`` around it (default 3 km). Within
the province boundary (all in a local metric projection, see geo/projection.py):

- **covered** = union of the discs of probes whose class is not dead, ∩ boundary;
- **dead** = (union of the discs of probes whose class is dead) - covered, ∩ boundary —
  where a covered and a dead disc overlap, service was found there, so it is covered;
- **unmeasured** = boundary - (covered | dead): no probe measured it, which is not the
  same as no service. Probes without readings ("unmeasured") add nothing.

The three never overlap and together make up the boundary (up to floating-point
tolerance). ``dead_classes`` defaults to ``{"none"}``: no usable service at least half
of the measured time (geo/coverage.py); add ``"poor"`` to count one-bar service as dead.

All geometry work is vectorised shapely 2: ``shapely.buffer`` over an array of points,
an STRtree to keep only discs touching the boundary, ``union_all`` for the unions.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely

from geo.coverage import ProbeCoverage
from geo.projection import LocalProjection
from geo.thresholds import COVERAGE_CLASSES

DEFAULT_DEAD_CLASSES: Final = frozenset({"none"})
QUAD_SEGS: Final = 16  # 64-gon discs: area within 0.2 % of a circle


@dataclass(frozen=True, slots=True)
class DeadZones:
    """Covered, dead and unmeasured parts of an area, in lon/lat, with areas in km²."""

    covered: Any
    dead: Any
    unmeasured: Any
    covered_km2: float
    dead_km2: float
    unmeasured_km2: float
    area_km2: float

    def to_geojson(self) -> dict[str, Any]:
        """A FeatureCollection with one feature per state (for maps and the HTTP API)."""
        features = []
        for state, geometry, km2 in (
            ("covered", self.covered, self.covered_km2),
            ("dead", self.dead, self.dead_km2),
            ("unmeasured", self.unmeasured, self.unmeasured_km2),
        ):
            features.append(
                {
                    "type": "Feature",
                    "properties": {"state": state, "area_km2": round(km2, 3)},
                    "geometry": json.loads(shapely.to_geojson(geometry)),
                }
            )
        return {"type": "FeatureCollection", "features": features}


@dataclass(frozen=True, slots=True)
class _Metric:
    """The same partition in metres, kept for tests and further geometry."""

    covered: Any
    dead: Any
    unmeasured: Any
    boundary: Any


def partition_metres(
    xy: npt.ArrayLike,
    classes: Sequence[str],
    boundary: Any,
    *,
    radius_m: float,
    dead_classes: Collection[str] = DEFAULT_DEAD_CLASSES,
) -> _Metric:
    """The partition for points already in metres (``xy``: (n, 2)) and a metric boundary."""
    cls = np.asarray(list(classes), dtype=object)
    unknown = set(cls.tolist()) - set(COVERAGE_CLASSES)
    if unknown:
        raise ValueError(f"unknown coverage classes {sorted(unknown)}")
    points = shapely.points(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    # An (n, 2) array gives an array of geometries (the stubs allow a lone one too).
    discs: npt.NDArray[np.object_] = np.asarray(
        shapely.buffer(points, radius_m, quad_segs=QUAD_SEGS), dtype=object
    )
    near = np.zeros(len(discs), dtype=np.bool_)
    if len(discs):
        near[shapely.STRtree(discs).query(boundary, predicate="intersects")] = True
    is_dead = near & np.isin(cls, list(dead_classes))
    is_covered = near & ~is_dead & (cls != "unmeasured")
    covered_all = shapely.union_all(discs[is_covered])
    dead_all = shapely.union_all(discs[is_dead])
    covered = shapely.intersection(covered_all, boundary)
    dead = shapely.difference(shapely.intersection(dead_all, boundary), covered_all)
    unmeasured = shapely.difference(boundary, shapely.union(covered, dead))
    return _Metric(covered, dead, unmeasured, boundary)


def dead_zones(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    classes: Sequence[str],
    boundary: Any,
    *,
    radius_m: float = 3000.0,
    dead_classes: Collection[str] = DEFAULT_DEAD_CLASSES,
) -> DeadZones:
    """Partition ``boundary`` (lon/lat polygon) by the classes measured at (lon, lat)."""
    projection = LocalProjection.for_geometry(boundary)
    lonlat = np.column_stack([np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)])
    metric = partition_metres(
        projection.forward(lonlat),
        classes,
        projection.to_metres(boundary),
        radius_m=radius_m,
        dead_classes=dead_classes,
    )
    covered_km2, dead_km2, unmeasured_km2, area_km2 = (
        shapely.area(np.array([metric.covered, metric.dead, metric.unmeasured, metric.boundary]))
        / 1e6
    ).tolist()
    return DeadZones(
        covered=projection.to_lonlat(metric.covered),
        dead=projection.to_lonlat(metric.dead),
        unmeasured=projection.to_lonlat(metric.unmeasured),
        covered_km2=covered_km2,
        dead_km2=dead_km2,
        unmeasured_km2=unmeasured_km2,
        area_km2=area_km2,
    )


def probe_dead_zones(
    probes: Sequence[ProbeCoverage],
    boundary: Any,
    *,
    operator: str | None = None,
    radius_m: float = 3000.0,
    dead_classes: Collection[str] = DEFAULT_DEAD_CLASSES,
) -> DeadZones:
    """Dead zones of one operator, or (``None``) of the best operator at each probe."""
    placed = [p for p in probes if p.lon is not None and p.lat is not None]
    return dead_zones(
        np.array([p.lon for p in placed], dtype=np.float64),
        np.array([p.lat for p in placed], dtype=np.float64),
        [p.coverage_class(operator) for p in placed],
        boundary,
        radius_m=radius_m,
        dead_classes=dead_classes,
    )
