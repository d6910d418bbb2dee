"""Property tests of the dead-zone geometry (hypothesis): a partition, order-free, honest.

Covered, dead and unmeasured never overlap and together make up the province; the
result does not depend on the order of the probes; a probe that measured nothing never
makes anything dead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.deadzones import dead_zones, partition_metres
from geo.projection import LocalProjection, haversine_m
from geo.thresholds import COVERAGE_CLASSES

SIZE_M = 30_000.0

coordinate = st.floats(min_value=-5_000, max_value=SIZE_M + 5_000, allow_nan=False)
probe = st.tuples(coordinate, coordinate, st.sampled_from(COVERAGE_CLASSES))
probes = st.lists(probe, max_size=25)
radius = st.floats(min_value=300, max_value=6_000)
dead_classes = st.sampled_from([frozenset({"none"}), frozenset({"none", "poor"})])


@st.composite
def boundaries(draw: st.DrawFn) -> Any:
    """A box, or a box with a lake cut out of it, or two islands (a MultiPolygon)."""
    x0 = draw(st.floats(0, SIZE_M / 2))
    y0 = draw(st.floats(0, SIZE_M / 2))
    w = draw(st.floats(2_000, SIZE_M / 2))
    h = draw(st.floats(2_000, SIZE_M / 2))
    box = shapely.box(x0, y0, x0 + w, y0 + h)
    shape = draw(st.sampled_from(["box", "lake", "islands"]))
    if shape == "lake":
        return box.difference(shapely.Point(x0 + w / 2, y0 + h / 2).buffer(min(w, h) / 4))
    if shape == "islands":
        return shapely.union(box, shapely.box(x0 + w + 1_000, y0, x0 + 2 * w, y0 + h / 2))
    return box


def partition(points: list[tuple[float, float, str]], boundary: Any, r: float, dead: Any) -> Any:
    xy = np.array([(x, y) for x, y, _ in points], dtype=np.float64).reshape(-1, 2)
    return partition_metres(xy, [c for _, _, c in points], boundary, radius_m=r, dead_classes=dead)


def tolerance(boundary: Any) -> float:
    return 1e-7 * float(boundary.area) + 1e-3


@settings(max_examples=80, deadline=None)
@given(probes, boundaries(), radius, dead_classes)
def test_covered_dead_and_unmeasured_partition_the_province(
    points: list[tuple[float, float, str]], boundary: Any, r: float, dead: Any
) -> None:
    result = partition(points, boundary, r, dead)
    tol = tolerance(boundary)
    parts = [result.covered, result.dead, result.unmeasured]
    # Pairwise disjoint ...
    assert shapely.intersection(result.dead, result.covered).area <= tol
    assert shapely.intersection(result.dead, result.unmeasured).area <= tol
    assert shapely.intersection(result.covered, result.unmeasured).area <= tol
    # ... inside the province ...
    for part in parts:
        assert shapely.difference(part, boundary).area <= tol
    # ... and together the whole of it.
    assert sum(p.area for p in parts) == pytest.approx(boundary.area, abs=3 * tol)
    assert shapely.union_all(parts).symmetric_difference(boundary).area <= 3 * tol


@settings(max_examples=60, deadline=None)
@given(probes, boundaries(), radius, dead_classes, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_probe_order(
    points: list[tuple[float, float, str]], boundary: Any, r: float, dead: Any, rng: Any
) -> None:
    shuffled = list(points)
    rng.shuffle(shuffled)
    first = partition(points, boundary, r, dead)
    second = partition(shuffled, boundary, r, dead)
    tol = tolerance(boundary)
    for a, b in (
        (first.covered, second.covered),
        (first.dead, second.dead),
        (first.unmeasured, second.unmeasured),
    ):
        assert shapely.symmetric_difference(a, b).area <= tol


@settings(max_examples=60, deadline=None)
@given(probes, st.lists(st.tuples(coordinate, coordinate), max_size=10), boundaries(), radius)
def test_unmeasured_probes_never_make_anything_dead_or_covered(
    points: list[tuple[float, float, str]],
    silent: list[tuple[float, float]],
    boundary: Any,
    r: float,
) -> None:
    dead = frozenset({"none"})
    without = partition(points, boundary, r, dead)
    with_silent = partition(points + [(x, y, "unmeasured") for x, y in silent], boundary, r, dead)
    tol = tolerance(boundary)
    assert shapely.symmetric_difference(without.dead, with_silent.dead).area <= tol
    assert shapely.symmetric_difference(without.covered, with_silent.covered).area <= tol
    # Dead area only ever lies within reach of a probe that measured no service.
    dead_discs = shapely.union_all(
        [shapely.Point(x, y).buffer(r * 1.001) for x, y, c in points if c == "none"]
    )
    assert shapely.difference(without.dead, dead_discs).area <= tol
    # Only measured service covers: every covered point is near a measured, live probe.
    live = [(x, y) for x, y, c in points if c in ("good", "fair", "poor")]
    if not live:
        assert without.covered.area <= tol


def test_a_covered_disc_wins_where_it_overlaps_a_dead_one() -> None:
    boundary = shapely.box(0, 0, 20_000, 20_000)
    result = partition(
        [(8_000, 10_000, "good"), (11_000, 10_000, "none")], boundary, 2_000, frozenset({"none"})
    )
    assert result.covered.contains(shapely.Point(9_500, 10_000))
    assert not result.dead.contains(shapely.Point(9_500, 10_000))
    assert result.dead.contains(shapely.Point(12_500, 10_000))
    assert result.unmeasured.contains(shapely.Point(1_000, 1_000))
    assert result.covered.area == pytest.approx(np.pi * 2_000**2, rel=0.003)


def test_lon_lat_wrapper_projects_and_clips_to_the_province() -> None:
    # Cao Bang-sized box; a probe on the edge is clipped to the province.
    province = shapely.box(105.3, 22.3, 106.8, 23.1)
    zones = dead_zones([105.3, 106.0], [22.7, 22.7], ["none", "good"], province, radius_m=3000)
    disc_km2 = np.pi * 9 * 0.998
    assert zones.dead_km2 == pytest.approx(disc_km2 / 2, rel=0.01)
    assert zones.covered_km2 == pytest.approx(disc_km2, rel=0.01)
    assert zones.area_km2 == pytest.approx(
        haversine_m(105.3, 22.3, 106.8, 22.3)[()] / 1000 * 89.0, rel=0.03
    )
    assert province.covers(zones.dead) or zones.dead.difference(province).area < 1e-12
    with pytest.raises(ValueError, match="unknown coverage classes"):
        dead_zones([106.0], [22.7], ["dead"], province)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(102, 110), st.floats(8, 24)), min_size=1, max_size=20))
def test_projection_round_trips(points: list[tuple[float, float]]) -> None:
    lonlat = np.array(points, dtype=np.float64)
    projection = LocalProjection.around(lonlat[:, 0], lonlat[:, 1])
    assert np.allclose(projection.inverse(projection.forward(lonlat)), lonlat, atol=1e-9)
