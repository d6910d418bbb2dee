"""Regression tests for the 5xx a tester found, and the limits that close them (issue item 5).

Each reported case first: ``window=1000000w`` on every read endpoint and ``/map``,
``since=0001-01-01T00:00:00+14:00`` on ``/map``, a NUL byte in a static path, an
authorised POST of JSON nested 1000 levels deep. Then the neighbours the fix covers:
every parameter's rule, bodies bounded in size and depth, names PostgreSQL could not
store. In-process (litestar TestClient) against a real seeded PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from collector import schema
from coverwatch.cli import main
from coverwatch.errors import ConfigError
from geo import params, web
from tests.test_map import seed_map

TOKEN = "limits-write-token-0123456789"
AUTHORISED = {"authorization": f"Bearer {TOKEN}"}
READS = ("/api/probes", "/api/villages", "/api/deadzones", "/api/uncovered", "/map")


@pytest.fixture
def seeded_url(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        seed_map(connection)
    return database_url


@pytest.fixture
def client(seeded_url: str) -> Iterator[TestClient[Litestar]]:
    app = web.create_app(seeded_url, write_token=TOKEN)
    with TestClient(app=app, raise_server_exceptions=False) as test_client:
        yield test_client


def refused(response: object, status: int, *words: str) -> dict[str, object]:
    """The response is a JSON ``status`` error whose detail holds ``words``."""
    assert hasattr(response, "status_code")
    assert hasattr(response, "json")
    assert response.status_code == status, getattr(response, "text", "")[:500]
    headers = getattr(response, "headers", {})
    assert headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# ------------------------------------------------------------ the reported cases


@pytest.mark.parametrize("path", READS)
def test_a_window_of_a_million_weeks_is_a_400_not_a_500(
    client: TestClient[Litestar], path: str
) -> None:
    # It was now - timedelta(weeks=1e6): OverflowError, year < 1.
    body = refused(
        client.get(path, params={"window": "1000000w"}),
        400,
        "window: '1000000w' is longer than 3650 days; allowed: at most 3650d",
    )
    assert body["extra"] == {"parameter": "window", "allowed": "at most 3650d (e.g. 12h, 30d, 4w)"}


@pytest.mark.parametrize("path", READS)
def test_a_since_before_year_one_in_utc_is_a_400_not_a_500(
    client: TestClient[Litestar], path: str
) -> None:
    # 0001-01-01T00:00:00+14:00 is 0000-12-31T10:00Z: /map's astimezone(UTC) overflowed.
    refused(
        client.get(path, params={"since": "0001-01-01T00:00:00+14:00"}),
        400,
        "since: 0001-01-01T00:00:00+14:00 is more than 3650 days ago",
    )
    # The other end of the calendar: 9999-12-31T23:59:59-14:00 is in year 10000 in UTC.
    refused(
        client.get(path, params={"since": "9999-12-31T23:59:59-14:00"}),
        400,
        "since: 9999-12-31T23:59:59-14:00 is not in the past",
    )


@pytest.mark.parametrize(
    "path",
    ["/static/%00", "/static/leaflet/leaflet.js%00", "/static/leaflet/%00", "/static/a%01b"],
)
def test_a_nul_byte_in_a_static_path_is_a_400_not_a_500(
    client: TestClient[Litestar], path: str
) -> None:
    # os.stat raised ValueError("embedded null byte") inside litestar's static router.
    refused(client.get(path), 400, "path: has a control character")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../web.py",
        "/static/..%2f..%2fweb.py",
        "/static/%2e%2e/web.py",
        "/static/leaflet/../../web.py",
        "/static/leaflet",  # a directory
        "/static/nope.js",
        "/static/%ED%A0%80",  # not UTF-8
        "/static/" + "a" * 5000,  # longer than a file name may be
    ],
)
def test_static_paths_outside_or_missing_are_404_naming_no_server_path(
    client: TestClient[Litestar], path: str
) -> None:
    body = refused(client.get(path), 404)
    assert "/work" not in str(body)
    assert "geo/static" not in str(body)


def test_static_assets_are_still_served(client: TestClient[Litestar]) -> None:
    for asset, kind in (
        ("/static/leaflet/leaflet.js", "javascript"),
        ("/static/leaflet/leaflet.css", "text/css"),
        ("/static/leaflet/images/layers.png", "image/png"),
    ):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert kind in response.headers["content-type"], asset
        head = client.head(asset)
        assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize(
    "document",
    [
        "[" * 1000 + "]" * 1000,
        '{"a":' * 1000 + "1" + "}" * 1000,
        "[" * 100_000 + "]" * 100_000,
        '{"type": "FeatureCollection", "features": ' + "[" * 40 + "]" * 40 + "}",
    ],
    ids=["arrays-1000", "objects-1000", "arrays-100000", "features-40"],
)
def test_deeply_nested_json_is_a_400_not_a_500(client: TestClient[Litestar], document: str) -> None:
    # json.loads raised RecursionError at ~1000 levels; now msgspec decodes and a walk
    # without recursion bounds the depth at 32.
    body = refused(
        client.post(
            "/api/villages",
            content=document,
            headers=AUTHORISED | {"content-type": "application/geo+json"},
        ),
        400,
        "body: JSON nested deeper than 32 levels",
    )
    assert body["extra"] == {
        "parameter": "body",
        "allowed": "a GeoJSON document nested at most 32 arrays/objects deep",
    }


def test_json_as_deep_as_geojson_needs_is_accepted(client: TestClient[Litestar]) -> None:
    square = [[[106.4, 22.7], [106.41, 22.7], [106.41, 22.71], [106.4, 22.71], [106.4, 22.7]]]
    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "Bản Vuông", "province": "Cao Bằng"},
                "geometry": {"type": "MultiPolygon", "coordinates": [square]},
            }
        ],
    }
    response = client.post(
        "/api/villages",
        content=json.dumps(document),
        headers=AUTHORISED | {"content-type": "application/geo+json"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["inserted"], response.json()["rejected"]) == (1, 0)


# --------------------------------------------------------------- bodies


def test_a_body_over_the_limit_is_413_and_only_read_with_the_token(
    client: TestClient[Litestar],
) -> None:
    big = b"name,lon,lat\n" + b"x" * params.MAX_BODY_BYTES
    body = refused(
        client.post(
            "/api/villages", content=big, headers=AUTHORISED | {"content-type": "text/csv"}
        ),
        413,
        f"body: too large; allowed: at most {params.MAX_BODY_BYTES} bytes",
    )
    assert body["extra"]["parameter"] == "body"  # type: ignore[index]
    # Without the token the guard refuses before anything is read.
    refused(client.post("/api/villages", content=big, headers={"content-type": "text/csv"}), 401)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"features": [' + "1" * 5000 + "]}", "body: invalid JSON: Integer value out of range"),
        ('{"type": "FeatureCollection", "features": [NaN]}', "body: invalid JSON"),
        ('{"type": "FeatureCollection", "features": [1e999]}', "body: invalid JSON"),
        ('{"name": "\\ud800"}', "body: invalid JSON"),  # a lone surrogate: not Unicode
        ("{not json", "body: invalid JSON"),
        ('{"type": "Topology"}', "body: expected a GeoJSON FeatureCollection"),
        ('{"type": "FeatureCollection"}', "has no features list"),
    ],
)
def test_json_that_is_not_geojson_is_a_400(
    client: TestClient[Litestar], content: str, words: str
) -> None:
    refused(
        client.post(
            "/api/villages",
            content=content,
            headers=AUTHORISED | {"content-type": "application/json"},
        ),
        400,
        words,
    )


def test_csv_that_cannot_be_read_is_a_400(client: TestClient[Litestar]) -> None:
    headers = AUTHORISED | {"content-type": "text/csv"}
    huge_field = 'name,lon,lat\n"' + "a" * 200_000 + '",106.4,22.7\n'
    refused(
        client.post("/api/villages", content=huge_field, headers=headers),
        400,
        "body: line 2: unreadable CSV: field larger than field limit",
    )
    refused(client.post("/api/villages", content=b"\xff\xfe", headers=headers), 400, "not UTF-8")
    refused(client.post("/api/villages", content="", headers=headers), 400, "CSV file is empty")


def test_other_content_types_are_415(client: TestClient[Litestar]) -> None:
    body = refused(
        client.post(
            "/api/villages",
            content="<villages/>",
            headers=AUTHORISED | {"content-type": "application/xml"},
        ),
        415,
        "content-type: cannot import 'application/xml'; allowed: text/csv",
    )
    assert body["extra"]["parameter"] == "content-type"  # type: ignore[index]


def test_names_postgresql_cannot_store_are_rejected_rows_not_500s(
    client: TestClient[Litestar],
) -> None:
    """NUL (text cannot hold it) and very long names (the unique index entry is ≤ 2704 bytes)."""
    csv_body = (
        "name,province,lon,lat\n"
        "Bản\x00Nul,Cao Bằng,106.40,22.70\n"
        f"{'Ả' * 3000},Cao Bằng,106.41,22.70\n"
        f"Bản Dài,{'Ả' * 101},106.42,22.70\n"
        "Bản Tốt,Cao Bằng,106.43,22.70\n"
    )
    response = client.post(
        "/api/villages", content=csv_body, headers=AUTHORISED | {"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["inserted"], body["rejected"]) == (1, 3)
    assert body["problems"] == [
        "error: line 2: name: has a control character (U+0000) at position 3; "
        "allowed: 1 to 100 characters, no control characters",
        "error: line 3: name: is 3000 characters long; "
        "allowed: 1 to 100 characters, no control characters",
        "error: line 4: province: is 101 characters long; "
        "allowed: 1 to 100 characters, no control characters",
    ]
    geojson = {
        "type": "Feature",
        "properties": {"name": "Bản\u0000Nul"},
        "geometry": {"type": "Point", "coordinates": [106.4, 22.7]},
    }
    response = client.post(
        "/api/villages",
        content=json.dumps(geojson),
        headers=AUTHORISED | {"content-type": "application/geo+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 1
    refused(
        client.post(
            "/api/villages",
            params={"source": "a\x00b"},
            content="name,lon,lat\nBản,106.4,22.7\n",
            headers=AUTHORISED | {"content-type": "text/csv"},
        ),
        400,
        "source: 'a\\x00b' has a control character (U+0000) at position 1",
    )


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    ("path", "query", "words"),
    [
        ("/api/villages", {"window": ""}, "window: cannot read '' as a duration"),
        ("/api/villages", {"window": "0d"}, "window: cannot read '0d' as a duration"),
        ("/api/villages", {"window": " 12h"}, "window: cannot read ' 12h' as a duration"),
        ("/api/villages", {"window": "3651d"}, "window: '3651d' is longer than 3650 days"),
        ("/api/villages", {"window": "9" * 400 + "d"}, "is longer than 3650 days"),
        ("/api/villages", {"since": ""}, "since: cannot read '' as a date"),
        ("/api/villages", {"since": "2026-02-30"}, "since: cannot read '2026-02-30' as a date:"),
        ("/api/villages", {"since": "2026-11-01T08"}, "since: cannot read '2026-11-01T08'"),
        ("/api/villages", {"operator": ""}, "operator: unknown operator ''"),
        ("/api/villages", {"operator": " Viettel"}, "operator: unknown operator ' Viettel'"),
        ("/api/villages", {"status": ""}, "status: unknown value ''"),
        ("/api/villages", {"province": ""}, "province: '' is empty"),
        ("/api/villages", {"province": "\x00"}, "province: '\\x00' has a control character"),
        ("/api/villages", {"province": "x" * 101}, "is 101 characters long"),
        ("/api/villages", {"radius_km": "nan"}, "radius_km: nan is out of range"),
        ("/api/villages", {"radius_km": "1e400"}, "radius_km: Number out of range"),
        ("/api/villages", {"radius_km": "far"}, "radius_km: Expected `float`, got `str`"),
        (
            "/api/deadzones",
            {"dead": "poor"},
            "dead: cannot use 'poor'; allowed: none, or none,poor",
        ),
        ("/api/uncovered", {"limit": "null"}, "limit: 'null' is not a whole number"),
        ("/api/uncovered", {"limit": "0"}, "limit: 0 is out of range"),
        ("/api/uncovered", {"limit": "100001"}, "limit: 100001 is out of range"),
        ("/api/uncovered", {"limit": "9" * 30}, "limit: '999999"),
        ("/api/uncovered", {"all": "maybe"}, "all: Expected `bool`, got `str`"),
        ("/api/probes", {"status": "asleep"}, "status: unknown value 'asleep'"),
        ("/map", {"province": "Hà Giang"}, "province: no villages in 'Hà Giang'"),
    ],
)
def test_each_parameter_breaking_its_rule_is_a_400_that_names_it(
    client: TestClient[Litestar], path: str, query: dict[str, str], words: str
) -> None:
    refused(client.get(path, params=query), 400, words)


def test_the_limits_themselves_are_accepted(client: TestClient[Litestar]) -> None:
    for query in (
        {"window": "3650d"},
        {"window": "521w"},
        {"window": "0.5h"},
        {"since": (datetime.now(UTC) - timedelta(days=3649)).date().isoformat()},
        {"since": "2026-11-01T08:00:00.5+07:00"},
        {"operator": "VIETTEL"},
        {"operator": "452040"},
        {"radius_km": "100"},
    ):
        response = client.get("/api/villages", params=query)
        assert response.status_code == 200, (query, response.text)
    assert client.get("/api/uncovered", params={"limit": "100000"}).status_code == 200
    assert client.get("/map", params={"window": "3650d"}).status_code == 200


def test_errors_of_the_html_page_are_json(client: TestClient[Litestar]) -> None:
    # /map answers text/html; its refusals were sent as JSON labelled text/html.
    refused(client.get("/map", params={"radius_km": "0"}), 400, "radius_km: 0 is out of range")


def test_options_of_villages_lists_get_and_post(client: TestClient[Litestar]) -> None:
    # litestar 2.25 answered "GET, OPTIONS" for the path GET and POST share.
    response = client.options("/api/villages")
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    assert "POST" in client.put("/api/villages").headers["allow"]


# ------------------------------------------------------- the parser, and the CLI


def test_parse_window_never_overflows() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    for since in ("0001-01-01T00:00:00+14:00", "0001-01-01", "1900-01-01T00:00Z"):
        with pytest.raises(ConfigError, match="more than 3650 days ago"):
            params.parse_window(since, None, now=now)
    for since in ("9999-12-31T23:59:59-14:00", "2026-11-30T12:00:00Z"):
        with pytest.raises(ConfigError, match="is not in the past"):
            params.parse_window(since, None, now=now)
    for window in ("1000000w", "99999999999s", "1" + "0" * 400 + "d"):
        with pytest.raises(ConfigError, match="longer than 3650 days"):
            params.parse_window(None, window, now=now)
    widest = params.parse_window(None, "3650d", now=now)
    assert widest.end - widest.start == timedelta(days=3650)
    assert params.parse_window(None, None, now=now).start == now - timedelta(days=30)


def test_the_cli_says_the_same_instead_of_a_traceback(
    seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["report", "uncovered", "--database-url", seeded_url]
    assert main([*base, "--window", "1000000w"]) == 2
    assert "--window: '1000000w' is longer than 3650 days" in capsys.readouterr().err
    assert main([*base, "--since", "0001-01-01T00:00:00+14:00"]) == 2
    assert "--since: 0001-01-01T00:00:00+14:00 is more than 3650 days ago" in (
        capsys.readouterr().err
    )
