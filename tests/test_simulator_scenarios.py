"""The evidence scenarios (simulator.scenarios): what a realistic deployment sees, and
that the hidden terrain stays hidden."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import shapely

from geo import claims, registry, survey, towers
from simulator import radio, scenarios, terrain
from simulator.province import OPERATORS

KM_LON = 111.320 * math.cos(math.radians(22.70))


@pytest.fixture(scope="module")
def sparse() -> scenarios.Scenario:
    return scenarios.build("sparse", 21)


def test_sparse_kits_in_a_quarter_of_the_villages_with_one_sim(
    sparse: scenarios.Scenario,
) -> None:
    villages = len(sparse.province.villages)
    assert len(sparse.kits) == round(villages * scenarios.PROBE_SHARE)
    assert all(len(kit.sim_operators) == 1 for kit in sparse.kits)
    assert {kit.sim_operators[0] for kit in sparse.kits} == set(OPERATORS)
    assert len({kit.village_id for kit in sparse.kits}) == len(sparse.kits)
    dense = scenarios.build("dense", 21)
    assert len(dense.kits) == villages
    assert all(set(kit.sim_operators) == set(OPERATORS) for kit in dense.kits)


def test_same_seed_same_world_other_seed_other_world(sparse: scenarios.Scenario) -> None:
    again = scenarios.build("sparse", 21)
    assert again.survey_csv == sparse.survey_csv
    assert again.registry_csv == sparse.registry_csv
    assert [v.median_rsrp_dbm for v in again.province.villages] == [
        v.median_rsrp_dbm for v in sparse.province.villages
    ]
    other = scenarios.build("sparse", 22)
    assert other.registry_csv != sparse.registry_csv
    with pytest.raises(ValueError, match="unknown scenario 'busy'"):
        scenarios.build("busy", 1)  # type: ignore[arg-type]


def test_registry_is_an_opencellid_export_with_errors_and_gaps(
    sparse: scenarios.Scenario,
) -> None:
    parsed = towers.parse_cells(iter(io.StringIO(sparse.registry_csv)))
    assert not parsed.problems
    assert len(parsed.cells) == sparse.registry_sites * scenarios.CELLS_PER_SITE
    # Some towers are missing, and every cell's position is an estimate.
    assert len(sparse.province.towers) * 0.6 < sparse.registry_sites < len(sparse.province.towers)
    true_positions = np.array([(t.lon, t.lat) for t in sparse.province.towers])
    errors_m = []
    for cell in parsed.cells.values():
        d = np.hypot(
            (true_positions[:, 0] - cell.lon) * KM_LON, (true_positions[:, 1] - cell.lat) * 110.574
        )
        errors_m.append(float(d.min()) * 1000)
    assert 100 < float(np.median(errors_m)) < 1000
    assert min(errors_m) > 0


def test_claims_are_optimistic(sparse: scenarios.Scenario) -> None:
    parsed = claims.parse_claims(sparse.claims)
    assert not parsed.problems
    assert {c.operator_code for c in parsed.claims} == set(OPERATORS)
    for claim in parsed.claims:
        area = shapely.from_geojson(json.dumps(claim.geometry))
        inside = [v for v in sparse.province.villages if shapely.contains_xy(area, v.lon, v.lat)]
        served = [v for v in sparse.province.villages if v.has_service(claim.operator_code)]
        # The planning model claims more than the terrain allows: villages without
        # service inside the claim, and most served villages claimed.
        assert any(not v.has_service(claim.operator_code) for v in inside)
        claimed_served = sum(1 for v in served if shapely.contains_xy(area, v.lon, v.lat))
        assert claimed_served >= 0.7 * len(served)


def test_survey_walks_the_roads_with_a_phone_per_operator(sparse: scenarios.Scenario) -> None:
    parsed = survey.parse_survey(sparse.survey_csv)
    assert not [p for p in parsed.problems if p.severity == "error"]
    assert len(parsed.points) == sparse.survey_points
    assert {p.operator_code for p in parsed.points} == set(OPERATORS)
    days = {p.taken_at.date() for p in parsed.points}
    assert len(days) == scenarios.SURVEY_DAYS
    services = {p.service for p in parsed.points}
    assert services == {"serving", "none"}  # dead stretches are logged as such
    rows = list(csv.DictReader(io.StringIO(sparse.survey_csv)))
    assert all(row["service"] == "none" or float(row["rsrp_dbm"]) >= -122.0 for row in rows)


def test_villages_geojson_imports_cleanly(sparse: scenarios.Scenario) -> None:
    parsed = registry.parse_villages_geojson(sparse.province.villages_geojson())
    assert not parsed.problems
    assert len(parsed.villages) == len(sparse.province.villages)


def test_terrain_is_correlated_nearby_and_valleys_are_walled_off() -> None:
    land = terrain.Terrain(5, (106.05, 22.70), [(106.05, 22.70)], [])
    # Along a line away from the tower: the shadowing (truth minus the path-loss model)
    # changes little over 100 m and decorrelates over tens of km.
    lons = 106.05 + np.linspace(5, 60, 551) / KM_LON
    lats = np.full_like(lons, 22.70)
    rsrp = land.rsrp_dbm(lons, lats)[:, 0]
    distance = np.linspace(5, 60, 551)
    shadow = radio.median_rsrp_dbm(distance, np.zeros_like(distance)) - rsrp
    step = np.abs(np.diff(shadow))
    assert float(np.median(step)) < 1.5
    assert 4 < float(np.std(shadow)) < 12
    walled = terrain.Terrain(
        5, (106.05, 22.70), [(106.05, 22.70)], [terrain.Valley(lons[100], 22.70, 2.0)]
    )
    inside = walled.rsrp_dbm(lons[100:101], lats[100:101])[0, 0]
    assert inside == pytest.approx(rsrp[100] - terrain.VALLEY_LOSS_DB, abs=1e-6)
    # A tower inside the valley is not walled off from it.
    own = terrain.Terrain(
        5, (106.05, 22.70), [(lons[101], 22.70)], [terrain.Valley(lons[100], 22.70, 2.0)]
    )
    plain = terrain.Terrain(5, (106.05, 22.70), [(lons[101], 22.70)], [])
    assert own.rsrp_dbm(lons[100:101], lats[100:101])[0, 0] == pytest.approx(
        plain.rsrp_dbm(lons[100:101], lats[100:101])[0, 0]
    )


def test_truth_comes_from_the_terrain_not_from_the_evidence(sparse: scenarios.Scenario) -> None:
    lon = np.array([v.lon for v in sparse.province.villages])
    lat = np.array([v.lat for v in sparse.province.villages])
    rsrp = sparse.terrain.rsrp_dbm(lon, lat)
    codes = np.array([t.operator_code for t in sparse.province.towers])
    for index, village in enumerate(sparse.province.villages[:40]):
        for code in OPERATORS:
            assert village.median_rsrp_dbm[code] == pytest.approx(
                float(rsrp[index, codes == code].max()), abs=0.05
            )
    # Some villages without service, most with: a province, not a desert or a city.
    without = sum(not v.covered for v in sparse.province.villages)
    assert 0.03 < without / len(sparse.province.villages) < 0.4
