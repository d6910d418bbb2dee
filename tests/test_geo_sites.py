"""Tower-site recommendations (geo.sites, `coverwatch sites recommend`, /api/sites):
candidate rules, the selection against a known optimum, the outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import shapely
from litestar.testing import TestClient

from collector import schema
from coverwatch.cli import main
from coverwatch.errors import CoverwatchError
from geo import maps, sites, web
from geo.coverage import TimeWindow
from geo.evidence import OperatorVerdict, VillageVerdict
from geo.prediction import Covariance, Observation, fit, nominal_rsrp_dbm
from geo.registry import Village
from simulator import scenario_load, scenarios
from tests.geo_points import KM_LAT, KM_LON, PROJECTION, lonlat
from tests.test_map import chromium_binary, run_chromium


def village(n: int, x_km: float, y_km: float, population: int = 500, power: str = "yes") -> Village:
    lon, lat = lonlat(x_km, y_km)
    return Village(n, f"Bản {n}", "Xã A", "Huyện B", "Cao Bằng", lon, lat, population,
                   population // 5, power)  # type: ignore[arg-type]  # fmt: skip


def dark(v: Village) -> VillageVerdict:
    """A village measured without service from the one operator there is."""
    return VillageVerdict(v, (OperatorVerdict("45204", "probe", 0.0, None, None, "probe p"),))


# ------------------------------------------------------------------------ candidates


def test_grid_candidates_follow_the_rules() -> None:
    villages = [village(1, 0, 0), village(2, 20, 0, power="no")]
    rules = sites.CandidateRules(grid_km=1.0, max_village_km=3.0)
    grid = sites.grid_candidates(villages, rules, PROJECTION)
    assert grid
    for c in grid:
        near = min(math.hypot((c.lon - v.lon) * KM_LON, (c.lat - v.lat) * KM_LAT) for v in villages)
        assert near <= 3.05  # (this test's degrees-to-km is not geo's projection)
    # Only near a village on grid power.
    powered = sites.grid_candidates(
        villages, sites.CandidateRules(grid_km=1.0, max_village_km=3.0, max_grid_power_km=3.0),
        PROJECTION,
    )  # fmt: skip
    assert powered
    assert all(c.lon < lonlat(10, 0)[0] for c in powered)
    assert len(powered) < len(grid)
    # Outside the exclusion areas.
    x0, y0 = lonlat(-4, -4)
    x1, y1 = lonlat(4, 4)
    box = shapely.box(x0, y0, x1, y1)
    excluded = sites.grid_candidates(
        villages, sites.CandidateRules(grid_km=1.0, max_village_km=3.0, exclusions=box), PROJECTION
    )
    assert not any(x0 <= c.lon <= x1 and y0 <= c.lat <= y1 for c in excluded)
    assert len(excluded) < len(grid)
    assert sites.grid_candidates([], rules, PROJECTION) == []


def test_listed_candidates_keep_the_good_rows_and_name_the_bad() -> None:
    text = (
        "id,name,lon,lat,cost\n"
        "a,Đồi Thông,106.1,22.7,2\n"
        "b,,abc,22.7,\n"
        "c,,106.2,95,\n"
        "a,again,106.3,22.7,\n"
        "d,,106.4,22.7,-1\n"
        "e,,nan,22.7,\n"
        "f,,106.5,22.8,\n"
    )
    parsed = sites.parse_candidates(text, name="sites.csv")
    assert [(c.candidate_id, c.name, c.cost) for c in parsed.candidates] == [
        ("a", "Đồi Thông", 2.0),
        ("f", "", 1.0),
    ]
    problems = [str(p) for p in parsed.problems]
    assert problems == [
        "error: line 3: lon: 'abc' is not a number",
        "error: line 4: lon/lat: 106.2, 95.0 is not a position",
        "error: line 5: id: 'a' is listed twice",
        "error: line 6: cost: -1.0 is not a positive cost",
        "error: line 7: lon: 'nan' is not a finite number",
    ]
    geojson = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"id": "p1", "cost": 3},
                 "geometry": {"type": "Point", "coordinates": [106.1, 22.7]}},
                {"type": "Feature", "properties": {},
                 "geometry": {"type": "Polygon", "coordinates": []}},
                {"type": "Feature", "properties": {"id": "p3"},
                 "geometry": {"type": "Point", "coordinates": [106.2]}},
                "not a feature",
            ],
        }
    )  # fmt: skip
    parsed = sites.parse_candidates(geojson, name="sites.geojson")
    assert [(c.candidate_id, c.cost) for c in parsed.candidates] == [("p1", 3.0)]
    assert sorted(p.where for p in parsed.problems) == ["features[1]", "features[2]", "features[3]"]


# ------------------------------------------------------------------------- selection


def instance(
    covers: list[list[int]], need: list[float], costs: list[float] | None = None
) -> sites.Instance:
    matrix = np.zeros((len(covers), len(need)), dtype=bool)
    for c, villages in enumerate(covers):
        matrix[c, villages] = True
    candidates = [sites.Candidate(f"c{c}", 106.0, 22.7, (costs or [1.0] * len(covers))[c])
                  for c in range(len(covers))]  # fmt: skip
    return sites.Instance(
        candidates, np.array(need), matrix, np.array([c.cost for c in candidates])
    )


def test_greedy_against_a_known_optimum() -> None:
    # The textbook case: the biggest set first leaves the greedy one short of the optimum.
    problem = instance([[0, 1, 2, 3], [0, 1, 4], [2, 3, 5]], [1, 1, 1, 1, 1, 1])
    greedy = sites.greedy(problem, sites=2)
    best = sites.exact(problem, sites=2)
    assert greedy.chosen[0] == 0
    assert greedy.objective == 5
    assert sorted(best.chosen) == [1, 2]
    assert best.objective == 6
    assert best.optimal
    # One site: both take the biggest.
    assert sites.greedy(problem, sites=1).objective == sites.exact(problem, sites=1).objective == 4


def test_budget_greedy_by_gain_per_cost_with_the_best_single_site() -> None:
    problem = instance([[0, 1, 2, 3], [0, 1, 4], [2, 3, 5]], [1] * 6, costs=[3, 1, 1])
    assert sites.greedy(problem, budget=2).objective == 6
    assert sites.exact(problem, budget=2).objective == 6
    # A cheap small site first would leave no money for the one that matters.
    lopsided = instance([[0], [1]], [10, 1], costs=[2, 0.1])
    chosen = sites.greedy(lopsided, budget=2)
    assert chosen.chosen == [0]
    assert chosen.objective == 10
    assert sites.exact(lopsided, budget=2).objective == 10


def test_nothing_to_gain_selects_nothing() -> None:
    problem = instance([[0], [1]], [0, 0])
    assert sites.greedy(problem, sites=3).chosen == []
    assert sites.exact(problem, sites=3).objective == 0


# -------------------------------------------------------------------------- coverage


def test_a_new_mast_serves_near_villages_and_not_where_the_land_is_dark() -> None:
    rng = np.random.default_rng(3)
    towers = {"45204": [lonlat(0, 0)], "45201": [lonlat(0, 0)]}
    rings = [
        Observation(op, *lonlat(r * math.cos(k), r * math.sin(k)),
                    float(nominal_rsrp_dbm(np.array([r]))[0]) + rng.normal(0, 6), "survey", "s")
        for r in (20.0, 25.0) for k in np.linspace(0, 2 * math.pi, 30, endpoint=False)
        for op in towers
    ]  # fmt: skip
    # Far out east and west two villages; the western one sits where MobiFone was
    # measured 25 dB below its model (a closed valley).
    west, east = village(1, -40, 0), village(2, 40, 0)
    spot = float(nominal_rsrp_dbm(np.array([40.0]))[0]) - 25
    rings += [Observation("45201", *lonlat(-40 + dx, 0), spot, "survey", "s")
              for dx in (-0.1, 0.0, 0.1)]  # fmt: skip
    model = fit(PROJECTION, towers, rings)
    # Much of what shades a village shades it from every mast.
    model.covariance = Covariance(range_km=3.0, nugget_share=0.1, shared=0.8)
    near_west = sites.Candidate("w", *lonlat(-32, 0))
    near_east = sites.Candidate("e", *lonlat(32, 0))
    far = sites.Candidate("f", *lonlat(0, 30))
    p = sites.candidate_probabilities(model, "45204", [near_west, near_east, far], [west, east])
    assert p[1, 1] > 0.8  # 8 km away, nothing known against it
    assert p[0, 0] < p[1, 1] - 0.3  # the valley's darkness holds for a new mast too
    assert p[2, 0] < 0.05
    assert p[2, 1] < 0.05
    verdicts = [
        VillageVerdict(west, (), 1.0),
        VillageVerdict(east, (), 1.0),
    ]
    gains = sites.expected_gain(model, "45204", [near_west, near_east], verdicts)
    assert gains[1] > gains[0]
    assert 0 <= gains[0] <= 500
    assert gains[1] <= 500
    served = [VillageVerdict(east, (OperatorVerdict("45201", "probe", 1.0, None, None, "p"),))]
    assert sites.expected_gain(model, "45204", [near_east], served)[0] == 0.0


# ------------------------------------------------------------- the command and the API


@pytest.fixture
def province(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    now = datetime.now(UTC)
    scenario = scenarios.build("sparse", 41, villages=70, survey_start=now - timedelta(days=20))
    scenario_load.load(database_url, scenario, end=now)
    return database_url


def test_sites_recommend_in_every_format(
    province: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sites", "recommend", "--operator", "Viettel", "--sites", "3"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["#", "site", "lon"]
    assert "people expected to gain service" in table
    greedy_total = float(table.splitlines()[-1].split(": ")[1].split()[0].replace(",", ""))
    assert main(["sites", "recommend", "--operator", "Viettel", "--sites", "3", "--exact"]) == 0
    exact_total = float(
        capsys.readouterr().out.splitlines()[-1].split(": ")[1].split()[0].replace(",", "")
    )
    assert exact_total >= greedy_total
    out = tmp_path / "sites.geojson"
    code = main(
        ["sites", "recommend", "--operator", "45204", "--format", "geojson", "-o", str(out)]
    )
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    document = json.loads(out.read_text(encoding="utf-8"))
    ranks = [f["properties"]["rank"] for f in document["features"]]
    assert ranks == list(range(1, len(ranks) + 1))
    gains = [f["properties"]["expected_population_served"] for f in document["features"]]
    assert gains == sorted(gains, reverse=True)  # the greedy's marginal gains fall
    assert main(["sites", "recommend", "--operator", "Viettel", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("rank,candidate_id,name,operator,lon,lat,cost")


def test_listed_candidates_and_exclusions(
    province: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(province) as connection:
        lon, lat = connection.execute("SELECT avg(lon), avg(lat) FROM villages").fetchone() or (
            0,
            0,
        )
    listed = tmp_path / "sites.csv"
    listed.write_text(f"id,name,lon,lat\nhill,Đồi A,{lon},{lat}\nbad,,x,{lat}\n", encoding="utf-8")
    code = main(["sites", "recommend", "--operator", "Viettel", "--candidates", str(listed)])
    captured = capsys.readouterr()
    assert code == 0
    assert "line 3: lon: 'x' is not a number" in captured.err
    assert "bad" not in captured.out
    everywhere = tmp_path / "exclude.geojson"
    vietnam = [[[100, 8], [112, 8], [112, 24], [100, 24], [100, 8]]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": vietnam},
    }
    everywhere.write_text(
        json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8"
    )
    assert main(["sites", "recommend", "--operator", "Viettel", "--exclude", str(everywhere)]) == 0
    assert "no candidate site would newly serve" in capsys.readouterr().out
    empty = tmp_path / "none.csv"
    empty.write_text("id,lon,lat\n", encoding="utf-8")
    assert main(["sites", "recommend", "--operator", "Viettel", "--candidates", str(empty)]) == 2
    assert "holds no usable candidate site" in capsys.readouterr().err


def test_api_recommends_sites(province: str) -> None:
    with TestClient(app=web.create_app(province)) as client:
        answer = client.get("/api/sites", params={"operator": "Viettel", "sites": "2"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["type"] == "FeatureCollection"
        assert len(body["features"]) <= 2
        assert body["candidates"] > 0
        assert (
            client.get("/api/sites", params={"operator": "Viettel", "sites": "0"}).status_code
            == 400
        )
        assert client.get("/api/sites", params={"operator": "Telstra"}).status_code == 400
        assert client.get("/api/sites").status_code == 400


def test_map_shows_the_proposed_sites(
    province: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(province) as connection:
        window = TimeWindow(datetime.now(UTC) - timedelta(days=30), datetime.now(UTC))
        options = sites.SiteOptions(operator="45204", sites=3)
        data = maps.collect(connection, window, sites=options)
        alone = sites.recommend(connection, window, options)
        five = sites.recommend(connection, window, sites.SiteOptions(operator="45204"))
    document = maps.payload(data)
    assert [row[2] for row in document["sites"]] == [r.rank for r in alone.rows]
    assert [row[3] for row in document["sites"]] == [r.candidate.candidate_id for r in alone.rows]
    assert all(row[4] == "Viettel" for row in document["sites"])
    assert "sites" not in maps.payload(dataclasses.replace(data, sites=None))
    out = tmp_path / "map.html"
    assert main(["map", "-o", str(out), "--sites-operator", "Viettel", "--sites", "2"]) == 0
    assert "Proposed tower sites" in out.read_text(encoding="utf-8")
    assert main(["map", "-o", str(out), "--sites-operator", "Telstra"]) == 2
    assert "--sites-operator" in capsys.readouterr().err

    binary = chromium_binary()
    handle = web.serve_in_thread(web.create_app(province), "127.0.0.1", 0)
    try:
        dom = run_chromium(binary, "--dump-dom", f"{handle.url}/map?sites_operator=Viettel")
        assert dom.returncode == 0, dom.stderr[-2000:]
    finally:
        handle.stop()
    assert "Proposed tower sites (Viettel)" in dom.stdout
    assert five.rows
    assert dom.stdout.count("leaflet-marker-icon cw-site") == len(five.rows)


def test_hostile_files_are_clear_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.geojson"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(CoverwatchError, match=r"nests too deeply|not valid JSON"):
        sites.read_exclusions(deep)
    deep_object = tmp_path / "deep-object.geojson"
    deep_object.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(CoverwatchError, match=r"nests too deeply|not valid JSON"):
        sites.read_candidates(deep_object)
    huge = tmp_path / "huge.geojson"
    huge.write_text('{"type": "FeatureCollection", "features": [' + "9" * 5000 + "]}")
    with pytest.raises(CoverwatchError, match="is not valid JSON"):
        sites.read_exclusions(huge)
    latin = tmp_path / "latin.geojson"
    latin.write_bytes(b'{"type": "Feature", "properties": {"name": "caf\xe9"}}')
    with pytest.raises(CoverwatchError, match="is not UTF-8 text"):
        sites.read_exclusions(latin)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"id,lon,lat\nok,106.1,22.7\nbad\x00,106.\x002,22.7\n")
    parsed = sites.read_candidates(nul)
    assert [c.candidate_id for c in parsed.candidates] == ["ok"]
    assert len(parsed.problems) == 1
