"""Operators' claimed coverage (`coverwatch claims import/list`) against a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import shapely

from collector import schema
from coverwatch.cli import main
from coverwatch.errors import CoverwatchError
from geo import claims


@pytest.fixture
def geo_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    return database_url


def square(lon: float, lat: float, size: float = 0.1) -> dict[str, Any]:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def write(path: Path, *features: Any) -> Path:
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": list(features)}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


def claim_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT operator_code, technology, name, source FROM operator_claims ORDER BY claim_id"
        ).fetchall()


def test_claims_keep_good_features_and_name_each_bad_one(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[106.0, 22.5], [106.2, 22.7], [106.2, 22.5], [106.0, 22.7], [106.0, 22.5]]
        ],
    }
    path = write(
        tmp_path / "dich-vu-cao-bang.geojson",
        feature(square(106.1, 22.6), nha_mang="Viettel", cong_nghe="4G", ten="Trùng Khánh"),
        feature(square(105.9, 22.8), operator="VNPT VinaPhone", technology="LTE"),
        feature(square(106.3, 22.7)),  # operator from --operator, technology missing
        feature({"type": "Point", "coordinates": [106.2, 22.6]}, operator="45201", technology="3G"),
        feature(square(106.0, 22.5), operator="Beeline", technology="4G"),
        feature(square(106.0, 22.5), operator="MobiFone", technology="6G"),
        feature(bowtie, operator="MobiFone", technology="5G"),
        feature(None, operator="MobiFone", technology="4G"),
        "not a feature",
    )
    code = main(["claims", "import", str(path), "--operator", "viettel"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == (
        "imported 3 claimed areas (replacing 0 from an earlier import of "
        "dich-vu-cao-bang.geojson), rejected 6"
    )
    problems = [line.split(": ", 1)[1] for line in err.strip().splitlines()]
    assert problems[:3] == [
        "error: features[2]: technology: is missing (give a technology property or --technology)",
        "error: features[3]: geometry: expected Polygon or MultiPolygon, got 'Point'",
        "error: features[4]: operator: unknown operator 'Beeline'; known: MobiFone (45201), "
        "VinaPhone (45202), Viettel (45204), Vietnamobile (45205), Gmobile (45207), "
        "or any MCC-MNC",
    ]
    assert problems[3] == "error: features[5]: technology: expected 2G, 3G, 4G or 5G, got '6G'"
    assert problems[4].startswith("warning: features[6]: geometry: repaired invalid Polygon")
    assert problems[5:] == [
        "error: features[7]: geometry: is missing",
        "error: features[8]: not a GeoJSON Feature",
    ]
    assert claim_rows(geo_db) == [
        ("45204", "lte", "Trùng Khánh", "dich-vu-cao-bang.geojson"),
        ("45202", "lte", "", "dich-vu-cao-bang.geojson"),
        ("45201", "nr5g", "", "dich-vu-cao-bang.geojson"),
    ]
    with psycopg.connect(geo_db) as connection:
        area = claims.load_claim_areas(connection, "45204", "lte")
        assert area.contains(shapely.Point(106.15, 22.65))
        assert not area.contains(shapely.Point(105.95, 22.85))
        assert claims.load_claim_areas(connection, "45204", "nr5g").is_empty


def test_reimporting_a_file_replaces_its_claims_and_keeps_other_files(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    north = write(tmp_path / "viettel-north.geojson", feature(square(106.0, 22.8)))
    south = write(tmp_path / "viettel-south.geojson", feature(square(106.0, 22.4)))
    for path in (north, south):
        assert (
            main(["claims", "import", str(path), "--operator", "45204", "--technology", "4g"]) == 0
        )
    write(north, feature(square(106.0, 22.8)), feature(square(106.2, 22.8)))
    assert main(["claims", "import", str(north), "--operator", "45204", "--technology", "4g"]) == 0
    assert "imported 2 claimed areas (replacing 1 from an earlier import" in capsys.readouterr().out
    assert [row[3] for row in claim_rows(geo_db)] == [
        "viettel-south.geojson",
        "viettel-north.geojson",
        "viettel-north.geojson",
    ]
    assert main(["claims", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("(imported")[0].split() for line in listed] == [
        ["Viettel", "lte", "2", "areas", "viettel-north.geojson"],
        ["Viettel", "lte", "1", "areas", "viettel-south.geojson"],
    ]


def test_bad_options_and_files_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "c.geojson", feature(square(106.0, 22.8)))
    with pytest.raises(CoverwatchError, match="--operator: unknown operator 'Vinaphon'"):
        claims.read_claims(path, operator="Vinaphon")
    with pytest.raises(CoverwatchError, match="--technology: expected 2G, 3G, 4G or 5G"):
        claims.read_claims(path, operator="Viettel", technology="4.5G")
    (tmp_path / "deep.geojson").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CoverwatchError, match=r"nests too deeply|not valid JSON"):
        claims.read_claims(tmp_path / "deep.geojson")
    # "Cao Bằng" in Windows-1258: ă (0xE3) followed by a combining grave accent (0xCC).
    (tmp_path / "cp1258.geojson").write_bytes(b'{"name": "Cao B\xe3\xccng"}')
    with pytest.raises(CoverwatchError, match="is not UTF-8 text"):
        claims.read_claims(tmp_path / "cp1258.geojson")
    (tmp_path / "list.geojson").write_text("[]")
    with pytest.raises(CoverwatchError, match="expected a GeoJSON FeatureCollection"):
        claims.read_claims(tmp_path / "list.geojson")


def test_claims_list_on_an_empty_database_says_how_to_add_them(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["claims", "list"]) == 0
    assert "no claims imported" in capsys.readouterr().out
