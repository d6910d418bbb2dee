"""The coverage map: offline HTML, the numbers behind the colours, and a real headless browser."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import folium
import psycopg
import pytest
from branca.element import Element, Figure

from collector import schema
from coverwatch.cli import main
from geo import assets, maps, web
from geo.assets import STATIC_DIR, AssetError, check_offline
from tests.conftest import skip_unless_ci
from tests.geo_seed import add_boundary, add_probe_status, add_village
from tests.test_geo_coverage import WINDOW, seed

PROVINCE_BOX = (105.4, 22.4, 106.8, 23.0)
COMMUNE_BOX = (106.3, 22.55, 106.8, 23.0)


def seed_map(c: psycopg.Connection[Any], *, grid: int = 0) -> None:
    """The coverage scenario of test_geo_coverage, plus probe status and boundaries."""
    seed(c)
    # Seen relative to now, not to END (fixed when the module was imported): a probe is
    # stale after 3 report intervals, and a slow run reaches this test minutes later.
    seen = datetime.now(UTC)
    add_probe_status(c, "cb-good", "online", seen)
    add_probe_status(c, "cb-dead", "online", seen - timedelta(hours=2))  # silent: stale
    add_probe_status(c, "cb-poor", "offline", seen - timedelta(minutes=10))
    add_probe_status(c, "cb-dark", "online", seen)
    # cb-silent has no status row: never heard from.
    add_boundary(c, "province", "Cao Bằng", PROVINCE_BOX)
    add_boundary(c, "commune", "Quang Trung", COMMUNE_BOX, parent="Trùng Khánh")
    for i in range(grid):  # a dense cluster of villages near cb-poor
        add_village(
            c, f"Lũng {i}", 106.41 + 0.002 * (i % 10), 22.71 + 0.002 * (i // 10), population=50
        )


def add_survey_points(c: psycopg.Connection[Any]) -> None:
    """A walk test near cb-poor: service, weak service, and a spot without any."""
    c.execute(
        """INSERT INTO survey_points (survey, source_format, taken_at, lon, lat, accuracy_m,
                                      service, operator_code, technology, rsrp_dbm)
           VALUES ('walk.csv', 'coverwatch', %(t)s, 106.42, 22.72, 5, 'serving', '45204',
                   'lte', -92),
                  ('walk.csv', 'coverwatch', %(t)s + interval '1 min', 106.43, 22.72, 5,
                   'serving', '45204', 'lte', -112),
                  ('walk.csv', 'coverwatch', %(t)s + interval '2 min', 106.44, 22.72, 5,
                   'none', '45204', NULL, NULL),
                  ('walk.csv', 'coverwatch', %(t)s + interval '3 min', 106.44, 22.72, 5,
                   'neighbour', '45204', 'lte', -110)""",
        {"t": WINDOW.start + timedelta(hours=1)},
    )


@pytest.fixture
def seeded_url(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        seed_map(connection)
    return database_url


@pytest.fixture
def data(seeded_url: str) -> Iterator[maps.MapData]:
    with psycopg.connect(seeded_url) as connection:
        yield maps.collect(connection, WINDOW)


def embedded_payload(page: str) -> dict[str, Any]:
    match = re.search(r"coverwatchMap\(\w+, \w+, (\{.*\})\);", page)
    assert match, "the page does not hand a payload to coverwatchMap()"
    payload: dict[str, Any] = json.loads(match[1].replace("<\\/", "</"))
    return payload


def test_survey_points_are_on_the_map_apart_and_classed(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as connection:
        add_survey_points(connection)
        connection.commit()
        page = maps.render(maps.collect(connection, WINDOW))
    payload = embedded_payload(page)
    assert payload["survey_ops"] == ["Viettel"]
    # Neighbour cells heard are not service: not drawn. Classes by the same thresholds.
    assert [(row[5], row[6], row[8]) for row in payload["survey"]] == [
        (payload["classes"].index("good"), -92, 0),
        (payload["classes"].index("poor"), -112, 0),
        (payload["classes"].index("none"), None, 1),
    ]
    # Never mixed into the villages or probes.
    assert all(len(v[9]) <= 3 for v in payload["villages"])


def test_the_cached_page_is_the_page_built_whole(data: maps.MapData) -> None:
    """The page around the data is built once per options; each map is that page with its
    data and bounds put in, the same as building the page whole (element ids aside)."""
    maps._shell.cache_clear()

    def built_whole(data: maps.MapData) -> str:
        figure = folium.Map(
            location=[21.5, 105.5], zoom_start=8, tiles=None, control_scale=True,
            prefer_canvas=False,
        )  # fmt: skip
        figure.default_js = assets.js_links()
        figure.default_css = assets.css_links()
        root = figure.get_root()
        assert isinstance(root, Figure)
        root.header.add_child(Element("<title>coverwatch coverage map</title>"), name="title")
        bounds = maps._bounds(data)
        if bounds is not None:
            figure.fit_bounds(bounds, padding=(10, 10))
        control = folium.LayerControl(collapsed=False).add_to(figure)
        document = maps.to_json(maps.payload(data))
        maps._Layers(figure.get_name(), control.get_name(), document).add_to(figure)
        page: str = assets.inline_assets(root.render())
        return page

    def without_ids(page: str) -> str:
        return re.sub(r"_[0-9a-f]{32}(?![0-9a-f])", "_ID", page)

    first = maps.render(data)
    assert without_ids(first) == without_ids(built_whole(data))
    # Another province's data in the same cached page: its own payload and bounds.
    fewer = dataclasses.replace(data, villages=data.villages[:1], boundaries=())
    second = maps.render(fewer)
    assert maps._shell.cache_info().hits == 1
    assert without_ids(second) == without_ids(built_whole(fewer))
    assert embedded_payload(second)["villages"] == embedded_payload(first)["villages"][:1]
    # A map without bounds (no village, probe or boundary) has no fitBounds at all.
    empty = dataclasses.replace(data, villages=(), probes=(), boundaries=(), zones=None)
    assert "fitBounds" not in maps.render(empty, static_url="/static")  # Leaflet's own aside
    assert "fitBounds" in maps.render(data, static_url="/static")


def test_standalone_map_needs_no_internet(data: maps.MapData) -> None:
    page = maps.render(data)
    # Nothing is loaded from elsewhere: no remote script, stylesheet or image.
    assert not re.search(r"""<(script|link|img)[^>]*(src|href)=["']?(https?:)?//""", page)
    assert not re.search(r"<script[^>]*\bsrc=", page), "scripts are inlined"
    assert not re.search(r"<link[^>]*stylesheet", page), "styles are inlined"
    for dropped in ("jquery", "bootstrap", "fontawesome", "awesome-markers", "cdn."):
        assert dropped not in page.lower()
    # The vendored libraries and coverwatch's own code are there.
    assert 't.version="1.9.4"' in page  # Leaflet
    assert "L.MarkerClusterGroup=L.FeatureGroup.extend" in page
    assert "window.coverwatchMap = function" in page
    assert "url(data:image/png;base64," in page  # the layer control's icon, inlined
    assert ".cw-cluster" in page
    assert ".leaflet-cluster-anim" in page
    assert "<title>coverwatch coverage map</title>" in page


def test_map_payload_has_the_numbers_behind_each_colour(data: maps.MapData) -> None:
    payload = embedded_payload(maps.render(data))
    classes, ops, probes = payload["classes"], payload["ops"], payload["probes"]
    assert ops == ["MobiFone", "Viettel"]
    villages = {v[2]: v for v in payload["villages"]}
    assert len(villages) == 7

    lat, lon, _, place, population, cls, nearest, km, speaking, per_op, heard = villages["Bản Yếu"]
    assert heard == []  # no operator scan in this seed (tests/test_geo_scan_evidence.py)
    assert (lat, lon, population, classes[cls]) == (22.701, 106.4, 1000, "poor")
    assert payload["places"][place] == "Quang Trung, Trùng Khánh"
    assert (probes[nearest][0], km, probes[speaking][0]) == ("cb-poor", 0.1, "cb-poor")
    # Viettel: class poor, availability 60.1 %, median RSRP -110 dBm over 288 readings.
    assert per_op == [[ops.index("Viettel"), classes.index("poor"), 60.1, -110.0, 288]]

    dead = villages["Bản Chết"]
    assert classes[dead[5]] == "none"
    dead_probe = probes[dead[8]]
    assert dead_probe[0] == "cb-dead"
    assert (dead_probe[7], dead_probe[8]) == (145.0, 50.0)  # latency ms, loss %
    # Unmeasured villages stay unmeasured (grey), never "none".
    assert classes[villages["Bản Xa"][5]] == "unmeasured"
    assert villages["Bản Xa"][9] == []
    assert classes[villages["Bản Im"][5]] == "unmeasured"

    by_id = {p[0]: p for p in probes}
    states = payload["states"]
    assert {pid: states[p[3]] for pid, p in by_id.items()} == {
        "cb-good": "online",
        "cb-dead": "stale",
        "cb-poor": "offline",
        "cb-dark": "online",
        "cb-silent": "unknown",
    }
    assert by_id["cb-silent"][4] is None  # never seen
    dark = by_id["cb-dark"]
    assert (dark[9], dark[10]) == (1, 12.0)  # one outage, 12 h in the window

    zones = {z["properties"]["state"]: z for z in payload["zones"]}
    assert set(zones) == {"covered", "dead", "unmeasured"}
    assert 25 < zones["dead"]["properties"]["km2"] < 29
    assert payload["meta"]["area"] == "province boundary"
    assert {(b["properties"]["l"], b["properties"]["n"]) for b in payload["boundaries"]} == {
        ("province", "Cao Bằng"),
        ("commune", "Quang Trung"),
    }
    assert payload["meta"]["unplaced_probes"] == 1  # "stray" sends but has no position


def test_served_map_links_assets_under_static(data: maps.MapData) -> None:
    page = maps.render(data, static_url="/static")
    sources = re.findall(r'<script src="([^"]+)"', page)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert sources == [
        "/static/leaflet/leaflet.js",
        "/static/markercluster/leaflet.markercluster.js",
        "/static/coverwatch/map.js",
    ]
    assert styles == [
        "/static/leaflet/leaflet.css",
        "/static/markercluster/MarkerCluster.css",
        "/static/coverwatch/map.css",
    ]
    for url in sources + styles:
        assert (STATIC_DIR / url.removeprefix("/static/")).is_file()


def test_tiles_are_optional_and_only_from_the_given_server(data: maps.MapData) -> None:
    assert "L.tileLayer" not in maps.render(data)
    page = maps.render(data, tiles="http://tiles.office.local/{z}/{x}/{y}.png")
    assert '"http://tiles.office.local/{z}/{x}/{y}.png"' in page
    assert "L.tileLayer" in page


def test_a_remote_asset_is_refused() -> None:
    with pytest.raises(AssetError, match="remote resource"):
        check_offline('<script src="https://cdn.jsdelivr.net/npm/leaflet.js"></script>')
    with pytest.raises(AssetError, match="remote resource"):
        check_offline('<link rel="stylesheet" href="//example.org/a.css"/>')


def test_map_command_writes_an_offline_file(
    seeded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "coverage.html"
    code = main(["map", "-o", str(out), "--database-url", seeded_url, "--window", "2d"])
    assert code == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    payload = embedded_payload(out.read_text(encoding="utf-8"))
    assert len(payload["villages"]) == 7
    assert main(["map", "-o", str(out), "--database-url", seeded_url, "--window", "2x"]) == 2
    assert "Hint: write e.g. 12h, 30d or 4w" in capsys.readouterr().err


# ------------------------------------------------------------------------ browser


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        skip_unless_ci("chromium is not installed (Debian: apt-get install chromium)")
    return found


def run_chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            # No network beyond this machine: any other host fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_map_renders_in_headless_chromium(database_url: str, tmp_path: Path) -> None:
    binary = chromium_binary()
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        seed_map(connection, grid=60)
        add_survey_points(connection)
    handle = web.serve_in_thread(web.create_app(database_url), "127.0.0.1", 0)
    try:
        url = f"{handle.url}/map"
        dom = run_chromium(binary, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        shot = tmp_path / "map.png"
        screenshot = run_chromium(binary, f"--screenshot={shot}", "--window-size=1280,900", url)
        assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    finally:
        handle.stop()
    assert not handle.thread.is_alive()

    # Leaflet ran: the map container, the layer control with our layers, the legend.
    assert "leaflet-container" in html
    for label in ("Villages: best operator", "Villages: Viettel", "Dead zones", "Power outages"):
        assert label in html, label
    assert "cw-legend" in html
    # Vector paths: boundaries, zones and unclustered villages.
    assert html.count("leaflet-interactive") >= 10
    # The 60 villages close together are clustered; probes are marker icons with status.
    assert re.search(r'class="[^"]*marker-cluster[^"]*cw-cluster', html)
    assert html.count("leaflet-marker-icon") >= 5
    for state in ("online", "offline", "stale", "unknown"):
        assert f"cw-probe-{state}" in html
    assert "cw-outage" in html
    # Survey points: a layer of their own, drawn apart from villages and probes.
    assert "Survey points (walk tests)" in html
    assert html.count("cw-survey") >= 3
    # A real picture: a PNG of the page size with more than a blank page's bytes.
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)
    assert len(data) > 20_000
