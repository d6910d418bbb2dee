"""`coverwatch villages import` against a real database, with good and bad rows."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import psycopg
import pytest

from collector import schema
from coverwatch.cli import main
from geo import registry

DATA = Path(__file__).parent / "data" / "geo"


@pytest.fixture
def geo_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    return database_url


def villages(url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT name, commune, lon, lat, population, households, grid_power, area IS NOT NULL"
            " FROM villages"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_csv_import_stores_valid_rows_and_reports_each_bad_one(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["villages", "import", str(DATA / "villages.csv")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == "imported 3 villages (3 new, 0 updated), rejected 6, warnings 1"
    problems = [line.split(": ", 1)[1] for line in err.strip().splitlines()]
    assert problems == [
        "warning: line 1: column 'Ghi chú' is not used",
        "error: line 4: lat: 123.4 is not between -90 and 90",
        "error: line 5: name: is missing",
        "error: line 6: population: expected a whole number, got 'khoảng 300'",
        "error: line 7: duplicate of line 2 (Cao Bằng / Trùng Khánh / Quang Trung / nà pài)",
        "error: line 8: lon/lat: (100.5, 13.7) is outside Vietnam (lon 102-110, lat 8-24)",
        "error: line 9: lat: 106.05 is not between -90 and 90 (lon and lat swapped?)",
    ]
    assert villages(geo_db) == {
        "Nà Pài": ("Quang Trung", 106.52, 22.83, 420, 95, "yes", False),
        "Lũng Rì": ("Phan Thanh", 105.7, 22.95, 310, 70, "no", False),
        "Phja Đén": ("Phan Thanh", 105.92, 22.64, 1250, 260, "no", False),
    }


def test_reimport_updates_in_place(geo_db: str, tmp_path: Path) -> None:
    first = tmp_path / "v.csv"
    first.write_text(
        "name,commune,district,province,lon,lat,population\nNà Pài,Q,T,CB,106.5,22.8,100\n"
    )
    assert main(["villages", "import", str(first)]) == 0
    # Same village, spelt with NFD accents and a different header spelling: one row, updated.
    second = tmp_path / "v2.csv"
    second.write_text(
        "Village;Commune;District;Province;Longitude;Latitude;Pop;grid\n"
        + unicodedata.normalize("NFD", "Nà Pài")
        + ";Q;T;CB;106.51;22.81;130;yes\n"
    )
    assert main(["villages", "import", str(second)]) == 0
    assert villages(geo_db) == {"Nà Pài": ("Q", 106.51, 22.81, 130, None, "yes", False)}


def test_outside_vietnam_can_be_downgraded_to_a_warning(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v.csv"
    path.write_text("name,lon,lat\nVientiane,102.6,17.97\nBangkok,100.5,13.7\n")
    assert main(["villages", "import", "--allow-outside-vietnam", str(path)]) == 0
    assert "warning: line 3: lon/lat: (100.5, 13.7) is outside Vietnam" in capsys.readouterr().err
    assert set(villages(geo_db)) == {"Vientiane", "Bangkok"}


def test_geojson_points_and_polygons(geo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["villages", "import", str(DATA / "villages.geojson")]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "imported 2 villages (2 new, 0 updated), rejected 4, warnings 0"
    assert "features[2]: lon: 203.0 is not between -180 and 180" in err
    assert "features[3]: name: is missing" in err
    assert "features[4]: population: expected a whole number, got 'nhiều'" in err
    assert "features[5]: geometry: expected Point, Polygon or MultiPolygon" in err
    stored = villages(geo_db)
    assert stored["Sìn Hồ"] == ("Sìn Hồ", 103.243, 22.358, 520, 110, "yes", False)
    name, lon, lat, population, _, power, has_area = stored["Pa Vây Sử"]
    assert (name, population, power, has_area) == ("Pa Vây Sử", 240, "no", True)
    assert 103.30 < float(str(lon)) < 103.32
    assert 22.60 < float(str(lat)) < 22.62


def test_boundaries(geo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["villages", "import", "--boundaries", str(DATA / "boundaries.geojson")]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "imported 3 boundaries (3 new, 0 updated), rejected 2, warnings 1"
    assert "features[2]: geometry: repaired invalid Polygon (Self-intersection" in err
    assert "features[3]: level: expected province, district or commune, got 'county'" in err
    with psycopg.connect(geo_db) as connection:
        rows = connection.execute(
            "SELECT level, name, parent, geometry->>'type' FROM boundaries ORDER BY name"
        ).fetchall()
        province = registry.load_boundary(connection, "Cao Bằng")
    assert rows == [
        ("commune", "Bowtie", "", "MultiPolygon"),
        ("province", "Cao Bằng", "", "Polygon"),
        ("commune", "Quang Trung", "Trùng Khánh", "Polygon"),
    ]
    assert province.bounds == (105.3, 22.3, 106.8, 23.1)


def test_missing_schema_and_bad_files_say_what_to_do(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["villages", "import", "--database-url", database_url, str(DATA / "villages.csv")])
    assert code == 2
    assert "Hint: run `coverwatch db upgrade` first" in capsys.readouterr().err
    headerless = tmp_path / "x.csv"
    headerless.write_text("a,b\n1,2\n")
    assert main(["villages", "import", "--database-url", database_url, str(headerless)]) == 2
    assert "the CSV header has no lat, lon, name column" in capsys.readouterr().err
    broken = tmp_path / "x.geojson"
    broken.write_text(json.dumps({"type": "Feature"})[:-3])
    assert main(["villages", "import", "--database-url", database_url, str(broken)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_counts_and_text_are_read_as_spreadsheets_write_them() -> None:
    parsed = registry.parse_villages_csv(
        "tên,dân số,số hộ,điện lưới,kinh độ,vĩ độ\n"
        'A,"1 234",12.0,Có,105.5,22.5\n'
        "B,,,,105.5,22.6\n"
        "C,-5,,,105.5,22.7\n"
        "D,,,maybe,105.5,22.8\n"
    )
    assert [(v.name, v.population, v.households, v.grid_power) for v in parsed.villages] == [
        ("A", 1234, 12, "yes"),
        ("B", None, None, "unknown"),
    ]
    assert [str(p) for p in parsed.errors] == [
        "error: line 4: population: expected a whole number ≥ 0, got '-5'",
        "error: line 5: grid_power: expected yes, no or unknown, got 'maybe'",
    ]
