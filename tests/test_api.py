"""The HTTP API, in-process against a seeded real database (litestar TestClient)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from collector import schema
from geo import params, web
from tests.test_geo_coverage import START
from tests.test_map import seed_map

TOKEN = "s3cret-write-token-0123456789"


@pytest.fixture
def seeded_url(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        seed_map(connection)
    return database_url


@pytest.fixture
def client(seeded_url: str) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=web.create_app(seeded_url, write_token=TOKEN)) as test_client:
        yield test_client


def names(collection: dict[str, object]) -> list[str]:
    features = collection["features"]
    assert isinstance(features, list)
    return [f["properties"]["name"] for f in features]


def test_health_reports_database_and_schema_version(
    client: TestClient[Litestar], seeded_url: str
) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    with psycopg.connect(seeded_url) as connection:
        row = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row is not None
    assert (body["status"], body["database"], body["schema_version"]) == ("ok", "reachable", row[0])
    assert body["schema_version"] >= 4


def test_probes_with_status(client: TestClient[Litestar]) -> None:
    body = client.get("/api/probes", params={"window": "2d"}).json()
    status = {p["probe_id"]: p["status"] for p in body["probes"]}
    assert status == {
        "cb-good": "online",
        "cb-dead": "stale",
        "cb-poor": "offline",
        "cb-dark": "online",
        "cb-silent": "unknown",
        "stray": "unknown",
    }
    dead = next(p for p in body["probes"] if p["probe_id"] == "cb-dead")
    assert (dead["coverage_class"], dead["rtt_ms"], dead["loss_pct"]) == (
        "none",
        145.0,
        50.0,
    )
    assert dead["last_seen"] is not None
    offline = client.get("/api/probes", params={"status": "offline"}).json()["probes"]
    assert [p["probe_id"] for p in offline] == ["cb-poor"]
    bad = client.get("/api/probes", params={"status": "asleep"})
    assert bad.status_code == 400
    assert "status: unknown value 'asleep'; allowed: online, offline, stale, unknown" in bad.text


def test_villages_geojson_with_filters(client: TestClient[Litestar]) -> None:
    response = client.get("/api/villages")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    assert body["type"] == "FeatureCollection"
    by_name = {f["properties"]["name"]: f for f in body["features"]}
    assert len(by_name) == 7
    yeu = by_name["Bản Yếu"]
    assert yeu["geometry"] == {"type": "Point", "coordinates": [106.40, 22.701]}
    assert (yeu["properties"]["status"], yeu["properties"]["availability_pct"]) == ("poor", 60.1)
    assert yeu["properties"]["nearest_probe_id"] == "cb-poor"

    assert names(client.get("/api/villages", params={"status": "none"}).json()) == [
        "Bản Chết",
        "Bản Nopop",
    ]
    # Per operator: MobiFone was only measured at Nà Pài; elsewhere it is unmeasured.
    mobifone = client.get("/api/villages", params={"operator": "mobifone"}).json()
    assert {f["properties"]["name"]: f["properties"]["status"] for f in mobifone["features"]} == {
        "Nà Pài": "fair",
        "Bản Chết": "unmeasured",
        "Bản Nopop": "unmeasured",
        "Bản Yếu": "unmeasured",
        "Bản Tối": "unmeasured",
        "Bản Xa": "unmeasured",
        "Bản Im": "unmeasured",
    }
    by_code = client.get("/api/villages", params={"operator": "45201", "status": "fair"}).json()
    assert names(by_code) == ["Nà Pài"]
    assert len(client.get("/api/villages", params={"province": "Cao Bằng"}).json()["features"]) == 7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"status": "dead"},
            "status: unknown value 'dead'; allowed: good, fair, poor, none, unmeasured",
        ),
        (
            {"operator": "Telstra"},
            "operator: unknown operator 'Telstra'; allowed: MobiFone (45201)",
        ),
        ({"province": "Hà Giang"}, "province: no villages in 'Hà Giang'; allowed: Cao Bằng"),
        ({"window": "3x"}, "window: cannot read '3x' as a duration; allowed: write e.g. 12h, 30d"),
        ({"since": "yesterday"}, "since: cannot read 'yesterday' as a date; allowed: write it as"),
        ({"radius_km": "0"}, "radius_km: 0 is out of range; allowed: 0 < radius_km ≤ 100"),
    ],
)
def test_bad_parameters_say_what_is_allowed(
    client: TestClient[Litestar], params: dict[str, str], message: str
) -> None:
    response = client.get("/api/villages", params=params)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_wrongly_typed_parameter_is_a_400(client: TestClient[Litestar]) -> None:
    response = client.get("/api/uncovered", params={"limit": "many"})
    assert response.status_code == 400
    assert "limit" in response.text
    assert client.get("/api/uncovered", params={"limit": "0"}).status_code == 400


def test_deadzones_geojson(client: TestClient[Litestar]) -> None:
    body = client.get("/api/deadzones").json()
    assert body["area"] == "province boundary"
    areas = {f["properties"]["state"]: f["properties"]["area_km2"] for f in body["features"]}
    assert set(areas) == {"covered", "dead", "unmeasured"}
    assert 25 < areas["dead"] < 29
    # Counting one-bar service as dead adds cb-poor's disc.
    wider = client.get("/api/deadzones", params={"dead": "none,poor"}).json()
    dead_wider = next(f for f in wider["features"] if f["properties"]["state"] == "dead")
    assert dead_wider["properties"]["area_km2"] > areas["dead"] + 25
    # For MobiFone only cb-good measured: nothing is dead.
    mobifone = client.get("/api/deadzones", params={"operator": "MobiFone"}).json()
    states = {f["properties"]["state"]: f["properties"]["area_km2"] for f in mobifone["features"]}
    assert states["dead"] == 0
    bad = client.get("/api/deadzones", params={"dead": "fair"})
    assert bad.status_code == 400
    assert "allowed: none, or none,poor" in bad.json()["detail"]


def test_uncovered_ranking_formats(client: TestClient[Litestar]) -> None:
    since = {"since": START.isoformat()}
    body = client.get("/api/uncovered", params=since).json()
    assert [v["name"] for v in body["villages"]] == [
        "Bản Yếu",
        "Bản Chết",
        "Bản Nopop",
        "Bản Im",
        "Bản Xa",
    ]
    top = client.get("/api/uncovered", params=since | {"limit": 2}).json()["villages"]
    assert [(v["rank"], v["name"], v["uncovered_score"]) for v in top] == [
        (1, "Bản Yếu", 399.3),
        (2, "Bản Chết", 300.0),
    ]
    text = client.get("/api/uncovered", params={"format": "csv", "all": "true"})
    assert text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    assert {r["name"] for r in rows} >= {"Nà Pài", "Bản Tối"}
    table = client.get("/api/uncovered", params={"format": "table"}).text
    assert table.splitlines()[0].split()[:3] == ["#", "village", "commune"]
    bad = client.get("/api/uncovered", params={"format": "xlsx"})
    assert bad.status_code == 400
    assert "allowed: json, csv, table" in bad.json()["detail"]


def test_map_page_and_static_assets(client: TestClient[Litestar]) -> None:
    page = client.get("/map")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="https://' not in page.text
    assert 'href="https://' not in page.text
    assert '<script src="/static/leaflet/leaflet.js">' in page.text
    assert "coverwatchMap(" in page.text
    for asset, kind in (
        ("/static/leaflet/leaflet.js", "javascript"),
        ("/static/markercluster/leaflet.markercluster.js", "javascript"),
        ("/static/coverwatch/map.js", "javascript"),
        ("/static/leaflet/leaflet.css", "text/css"),
        ("/static/leaflet/images/layers.png", "image/png"),
    ):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"], asset
    assert client.get("/static/../web.py").status_code == 404
    assert client.get("/map", params={"window": "soon"}).status_code == 400


def test_openapi_documents_the_endpoints(client: TestClient[Litestar]) -> None:
    spec = client.get("/schema/openapi.json").json()
    assert spec["info"]["title"] == "coverwatch"
    paths = spec["paths"]
    for path in ("/api/probes", "/api/villages", "/api/deadzones", "/api/uncovered", "/api/health"):
        assert "get" in paths[path], path
    assert "post" in paths["/api/villages"]
    parameters = {p["name"] for p in paths["/api/villages"]["get"]["parameters"]}
    assert {"operator", "province", "status", "window", "since", "radius_km"} <= parameters


def test_openapi_says_what_the_server_does(client: TestClient[Litestar]) -> None:
    """Auth, media types, every status, and each parameter's rule as the server checks it."""
    spec = client.get("/schema/openapi.json").json()
    paths = spec["paths"]
    assert spec["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "the write token: the content of the file given to "
            "`coverwatch serve --write-token-file` (at least 16 characters)",
        }
    }
    write = paths["/api/villages"]["post"]
    assert write["security"] == [{"bearer": []}]
    assert set(write["responses"]) == {"200", "400", "401", "403", "413", "415", "503"}
    assert write["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert set(write["requestBody"]["content"]) == {
        "text/csv",
        "application/geo+json",
        "application/json",
    }
    reads = [(path, item["get"]) for path, item in paths.items() if "get" in item]
    assert {path for path, _ in reads} == {
        "/api/health",
        "/api/probes",
        "/api/villages",
        "/api/deadzones",
        "/api/uncovered",
        "/api/evidence",
        "/api/claims/check",
        "/api/sites",
        "/map",
    }
    for path, operation in reads:
        assert "security" not in operation, path  # reads are public
        for parameter in operation.get("parameters", []):
            assert "oneOf" not in parameter["schema"], (path, parameter)  # no null in a query
        if path != "/api/health":
            assert set(operation["responses"]) == {"200", "400", "503"}, path
            for status in ("400", "503"):
                assert set(operation["responses"][status]["content"]) == {"application/json"}

    def media_types(path: str) -> set[str]:
        return set(paths[path]["get"]["responses"]["200"]["content"])

    assert media_types("/api/villages") == {"application/geo+json"}
    assert media_types("/api/deadzones") == {"application/geo+json"}
    assert media_types("/map") == {"text/html"}
    assert media_types("/api/uncovered") == {"application/json", "text/csv", "text/plain"}
    assert set(paths["/api/health"]["get"]["responses"]) == {"200", "503"}

    schemas = {p["name"]: p["schema"] for p in paths["/api/uncovered"]["get"]["parameters"]}
    assert schemas["window"]["pattern"] == params.DURATION_PATTERN
    assert "at most 3650d" in schemas["window"]["description"]
    assert schemas["since"]["pattern"] == params.SINCE_PATTERN
    assert (schemas["limit"]["type"], schemas["limit"]["maximum"]) == ("integer", 100_000)
    assert (schemas["radius_km"]["exclusiveMinimum"], schemas["radius_km"]["maximum"]) == (0, 100)
    assert schemas["format"]["enum"] == ["json", "csv", "table"]
    assert schemas["province"]["maxLength"] == 100
    dead = {p["name"]: p["schema"] for p in paths["/api/deadzones"]["get"]["parameters"]}["dead"]
    assert dead["enum"] == ["none", "none,poor"]


VILLAGES_CSV = (
    "tên,xã,huyện,tỉnh,kinh độ,vĩ độ,dân số\n"
    "Bản Mới,Quang Trung,Trùng Khánh,Cao Bằng,106.45,22.75,210\n"
    "Bản Sai,Quang Trung,Trùng Khánh,Cao Bằng,106.45,123.4,10\n"
)


def test_writes_need_the_bearer_token(client: TestClient[Litestar]) -> None:
    headers = {"content-type": "text/csv"}
    missing = client.post("/api/villages", content=VILLAGES_CSV, headers=headers)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post(
        "/api/villages", content=VILLAGES_CSV, headers=headers | {"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    right = client.post(
        "/api/villages",
        content=VILLAGES_CSV,
        headers=headers | {"authorization": f"Bearer {TOKEN}"},
    )
    assert right.status_code == 200, right.text
    body = right.json()
    assert (body["inserted"], body["updated"], body["rejected"]) == (1, 0, 1)
    assert body["problems"] == ["error: line 3: lat: 123.4 is not between -90 and 90"]
    assert "Bản Mới" in names(client.get("/api/villages").json())

    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "Bản Mới", "commune": "Quang Trung",
                               "district": "Trùng Khánh", "province": "Cao Bằng",
                               "population": 250},
                "geometry": {"type": "Point", "coordinates": [106.45, 22.75]},
            }
        ],
    }  # fmt: skip
    again = client.post(
        "/api/villages",
        content=json.dumps(geojson),
        headers={"content-type": "application/geo+json", "authorization": f"Bearer {TOKEN}"},
    )
    assert again.status_code == 200, again.text
    assert (again.json()["inserted"], again.json()["updated"]) == (0, 1)
    garbage = client.post(
        "/api/villages",
        content="{not json",
        headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
    )
    assert garbage.status_code == 400
    assert "body: invalid JSON" in garbage.json()["detail"]


def test_writes_are_disabled_without_a_configured_token(seeded_url: str) -> None:
    with TestClient(app=web.create_app(seeded_url)) as client:
        response = client.post(
            "/api/villages",
            content=VILLAGES_CSV,
            headers={"content-type": "text/csv", "authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 403
        body = response.json()
        assert body["detail"] == "writes are disabled on this server"
        assert "--write-token-file" in body["extra"]["hint"]
        assert client.get("/api/villages").status_code == 200  # reads stay public


def test_unreachable_database_is_503_not_a_crash() -> None:
    app = web.create_app("postgresql://nobody@127.0.0.1:9/none", connect_timeout_s=1)
    with TestClient(app=app) as client:
        health = client.get("/api/health")
        assert health.status_code == 503
        assert health.json()["database"] == "unreachable"
        villages = client.get("/api/villages")
        assert villages.status_code == 503
        assert "database unreachable" in villages.json()["detail"]


def test_serve_in_thread_starts_and_stops(seeded_url: str) -> None:
    handle = web.serve_in_thread(web.create_app(seeded_url), "127.0.0.1", 0)
    try:
        response = httpx.get(f"{handle.url}/api/health", timeout=10)
        assert response.status_code == 200
        assert response.json()["database"] == "reachable"
    finally:
        handle.stop()
    assert not handle.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{handle.port}/api/health", timeout=2)


def test_answers_are_cached_for_a_while_and_an_import_clears_them(
    client: TestClient[Litestar], seeded_url: str
) -> None:
    first = client.get("/api/villages")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=60"
    assert "Bản Mới" not in names(first.json())
    # A change behind the app's back is seen once the answer is older than --cache-s...
    with psycopg.connect(seeded_url) as connection:
        connection.execute("UPDATE villages SET population = population + 1")
    again = client.get("/api/villages")
    assert again.content == first.content
    assert int(again.headers["age"]) <= 60
    page = client.get("/map")
    assert page.status_code == 200
    assert page.headers["cache-control"].startswith("public, max-age=")
    assert client.get("/map").text == page.text
    # ...and an import through the API is seen at once.
    imported = client.post(
        "/api/villages",
        content=VILLAGES_CSV,
        headers={"content-type": "text/csv", "authorization": f"Bearer {TOKEN}"},
    )
    assert imported.status_code == 200, imported.text
    assert "Bản Mới" in names(client.get("/api/villages").json())


def test_without_a_cache_every_request_computes(seeded_url: str) -> None:
    with TestClient(app=web.create_app(seeded_url, cache_s=0)) as client:
        before = client.get("/api/villages").json()
        assert client.get("/api/villages").headers["cache-control"] == "public, max-age=0"
        with psycopg.connect(seeded_url) as connection:
            connection.execute("DELETE FROM villages WHERE name = %s", (names(before)[0],))
        assert names(client.get("/api/villages").json()) == names(before)[1:]


@pytest.mark.parametrize(
    ("value", "problem"),
    [("-1", "-1 is out of range"), ("soon", "'soon' is not a number"), ("nan", "out of range")],
)
def test_serve_refuses_a_bad_cache_age_before_starting(value: str, problem: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "coverwatch"), "serve", "--cache-s", value],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COVERWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"},
    )
    assert result.returncode == 2
    assert "--cache-s" in result.stderr
    assert problem in result.stderr


@pytest.mark.parametrize("path", ["/api/villages", "/map"])
def test_big_answers_come_gzipped_to_clients_that_accept_it(
    client: TestClient[Litestar], path: str
) -> None:
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    zipped = client.get(path, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == plain.content  # the client inflates it: the same answer
    assert zipped.num_bytes_downloaded < len(plain.content) / 3
    assert zipped.headers["content-type"] == plain.headers["content-type"]
    refused = client.get(path, headers={"Accept-Encoding": "gzip;q=0, *;q=1"})
    assert "content-encoding" not in refused.headers
    assert refused.content == plain.content
