"""Survey imports (`coverwatch survey import/list`) against a real database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import schema
from coverwatch.cli import main
from coverwatch.errors import CoverwatchError
from geo import survey
from tests.test_fuzz_protocol import HOSTILE_FRAGMENTS

DATA = Path(__file__).parent / "data" / "survey"


@pytest.fixture
def geo_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    return database_url


def points(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as connection:
        cursor = connection.execute(
            """SELECT survey, source_format, device, taken_at, lon, lat, accuracy_m, service,
                      operator_code, technology, cell_id, tac, pci, rsrp_dbm, rsrq_db, sinr_db,
                      rssi_dbm, rscp_dbm
               FROM survey_points ORDER BY taken_at, service, cell_id"""
        )
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def problems_of(err: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in err.strip().splitlines()]


def test_a_tower_collector_export_keeps_its_good_rows_and_names_each_bad_one(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["survey", "import", str(DATA / "towercollector-export.csv")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == (
        "imported 6 survey points from a Tower Collector log (0 already imported), "
        "rejected 3, skipped 1 CDMA/TD-SCDMA"
    )
    assert problems_of(err) == [
        "warning: line 7: rsrp_dbm: -20 is outside -156…-31; stored as unknown",
        "error: line 8: lon/lat: 0, 0 is the phone's 'no GPS fix' (the point has no position)",
        "error: line 10: time: '2036-11-28T02:22:04.120Z' is in the future (the phone's date "
        "is wrong?)",
        "error: line 11: net_type: expected GSM, UMTS, LTE or NR, got 'WIMAX'",
    ]
    stored = points(geo_db)
    assert [(p["technology"], p["service"], p["cell_id"]) for p in stored] == [
        ("lte", "neighbour", 31785473),
        ("lte", "serving", 31785217),
        ("nr5g", "serving", 5206671361),
        ("lte", "serving", 31785217),
        ("umts", "serving", 21495812),
        ("gsm", "serving", 5293),
    ]
    lte = stored[1]
    assert lte == {
        "survey": "towercollector-export.csv",
        "source_format": "towercollector",
        "device": "Xiaomi Redmi Note 9",
        "taken_at": datetime(2026, 11, 28, 2, 15, 4, 120000, tzinfo=UTC),
        "lon": 106.2551,
        "lat": 22.6663,
        "accuracy_m": 8.5,
        "service": "serving",
        "operator_code": "45204",
        "technology": "lte",
        "cell_id": 31785217,
        "tac": 12040,
        "pci": 215,
        "rsrp_dbm": -108.0,
        "rsrq_db": -13.0,
        "sinr_db": 4.0,
        "rssi_dbm": -71.0,
        "rscp_dbm": None,
    }
    nr, implausible, umts, gsm = stored[2], stored[3], stored[4], stored[5]
    assert (nr["rsrp_dbm"], nr["rsrq_db"], nr["sinr_db"]) == (-99.0, -11.0, 7.0)
    assert implausible["rsrp_dbm"] is None
    assert (umts["rscp_dbm"], umts["rsrp_dbm"]) == (-95.0, None)
    assert (gsm["rssi_dbm"], gsm["pci"], gsm["operator_code"]) == (-63.0, None, "45201")


def test_a_coverwatch_survey_with_no_service_points_local_times_and_vietnamese_headers(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["survey", "import", str(DATA / "coverwatch-survey.csv")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == (
        "imported 5 survey points from a coverwatch survey log (0 already imported), rejected 3"
    )
    assert problems_of(err) == [
        "warning: line 1: column 'ghi chú' is not used",
        "error: line 6: service: is none, yet the row has a signal level",
        "error: line 7: lon: is missing",
        "error: line 8: operator: is missing (needed unless service is none)",
        "warning: line 9: accuracy_m: 1500 m: the position is too rough to place a village's "
        "service; kept, shown with its accuracy",
    ]
    stored = points(geo_db)
    summary = [
        (p["taken_at"].isoformat(), p["service"], p["operator_code"], p["technology"],
         p["rsrp_dbm"])
        for p in stored
    ]  # fmt: skip
    assert summary == [
        ("2026-11-28T02:15:00+00:00", "serving", "45204", "lte", -104.0),
        ("2026-11-28T02:31:00+00:00", "none", "45204", None, None),
        ("2026-11-28T02:32:00+00:00", "none", "45201", None, None),
        ("2026-11-28T02:40:00+00:00", "serving", "45202", "lte", -110.0),
        ("2026-11-28T02:44:00+00:00", "serving", "45202", "umts", None),
    ]


def test_importing_a_log_again_stores_nothing_twice(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["survey", "import", str(DATA / "coverwatch-survey.csv")])
    # The same log under another name (a team sends it twice): still stored once.
    copy = tmp_path / "copy.csv"
    copy.write_bytes((DATA / "coverwatch-survey.csv").read_bytes())
    capsys.readouterr()
    main(["survey", "import", str(copy)])
    assert capsys.readouterr().out.startswith(
        "imported 0 survey points from a coverwatch survey log (5 already imported)"
    )
    assert len(points(geo_db)) == 5
    assert main(["survey", "list"]) == 0
    assert capsys.readouterr().out.strip() == (
        "coverwatch-survey.csv  (coverwatch): 5 points, 2 without service, 2026-11-28 09:15 "
        "to 2026-11-28 09:44 (Asia/Ho_Chi_Minh)"
    )


def test_a_windows_1258_spreadsheet_is_read_and_times_follow_the_timezone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "khao-sat.csv"
    # "Bản Nà Pài" written as Windows-1258 does: base letters and combining tone marks.
    path.write_bytes(
        b"time,lon,lat,operator,technology,service,device\n"
        b"2026-11-28 09:15:00,106.2551,22.6663,Viettel,4G,none,Ba\xd2n N\xe0 P\xe0i\n"
    )
    parsed = survey.read_survey(path, timezone="UTC")
    assert parsed.rejected == 0
    (point,) = parsed.points
    assert point.device == "Bản Nà Pài"
    assert point.taken_at == datetime(2026, 11, 28, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the CSV file is empty"),
        (b"when,where\n1,2\n", "the header has no lat, lon, time column"),
        (b"time,lon,lat\n\x81\x8d\x8f\x90\x9d\n", "neither UTF-8 nor Windows-1258"),
    ],
)
def test_files_that_are_not_surveys_are_refused_with_what_was_expected(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(CoverwatchError, match=message):
        survey.read_survey(path)


def test_a_nul_byte_costs_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(
        b"time,lon,lat,operator,technology,device\n"
        b"2026-11-28 09:15:00,106.2551,22.6663,Viettel,4G,ph\x00one\n"
        b"2026-11-28 09:16:00,106.2551,22.6663,Viettel,4G,phone\n"
    )
    parsed = survey.read_survey(path)
    assert len(parsed.points) == 1
    assert parsed.rejected == 1
    assert str(parsed.problems[0]).startswith("error: line 2: device:")


def test_values_postgresql_would_refuse_are_refused_per_row() -> None:
    parsed = survey.parse_survey(
        "time,lon,lat,accuracy_m,operator,technology,cell_id\n"
        "2026-11-28 09:15:00,106.2,22.6,1e300,Viettel,4G,\n"
        "2026-11-28 09:15:00,106.2,22.6,5,\uff14\uff15\uff12\uff10\uff14,4G,\n"
        "2026-11-28 09:15:00,106.2,22.6,1e-50,Viettel,4G,9223372036854775807\n",
        now=datetime(2026, 11, 30, tzinfo=UTC),
    )
    assert [str(p) for p in parsed.problems] == [
        "error: line 2: accuracy_m: 1e+300 m is not a GPS accuracy (at most 100000)",
        "error: line 3: operator: unknown operator '\uff14\uff15\uff12\uff10\uff14'; known: "
        "MobiFone (45201), "
        "VinaPhone (45202), Viettel (45204), Vietnamobile (45205), Gmobile (45207), "
        "or any MCC-MNC",
    ]
    (point,) = parsed.points
    assert (point.accuracy_m, point.cell_id) == (0.0, None)  # Long.MAX_VALUE: unknown


def test_a_bad_timezone_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("time,lon,lat\n")
    with pytest.raises(CoverwatchError, match="--timezone 'Hanoi' is not a time zone"):
        survey.read_survey(path, timezone="Hanoi")


def test_hostile_values_are_rejected_row_by_row() -> None:
    rows = [
        "2026-11-28 09:15:00,106.2,22.6,Viettel,4G,-104",
        "2026-11-28 09:15:00,nan,22.6,Viettel,4G,-104",
        "2026-11-28 09:15:00,106.2,1e999,Viettel,4G,-104",
        "1900-01-01 00:00:00,106.2,22.6,Viettel,4G,-104",
        "yesterday,106.2,22.6,Viettel,4G,-104",
        "2026-11-28 09:15:00,106.2,22.6,Viettel\x00,4G,-104",
        "2026-11-28 09:15:00,106.2,22.6,Viettel,4G," + "9" * 5000,
        "2026-11-28 09:15:00,106.2,22.6,Viettel,4G,-104",
    ]
    parsed = survey.parse_survey(
        "time,lon,lat,operator,technology,rsrp\n" + "\n".join(rows) + "\n",
        now=datetime(2026, 11, 30, tzinfo=UTC),
    )
    assert len(parsed.points) == 2  # the first and the last
    errors = [str(p) for p in parsed.problems if p.severity == "error"]
    assert errors == [
        "error: line 3: lon: expected a finite number, got 'nan'",
        "error: line 4: lat: expected a finite number, got '1e999'",
        "error: line 5: time: '1900-01-01 00:00:00' is before 2000 (the phone had no date?)",
        "error: line 6: time: 'yesterday' is not ISO 8601 (e.g. 2026-11-30T09:15:00+07:00)",
        "error: line 7: operator: 'Viettel\\x00' holds control characters; write the "
        "operator's name",
        "error: line 8: rsrp_dbm: expected a finite number, got '" + "9" * 40 + "'",
    ]


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
GOOD_ROW = "{minute},106.2551,22.6663,Viettel,4G,serving,-104"


@FUZZ
@given(
    st.lists(
        st.one_of(HOSTILE_FRAGMENTS, st.binary(max_size=200)).map(
            lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ").replace(b'"', b"'")
        ),
        max_size=6,
    )
)
def test_hostile_lines_never_cost_a_good_row(hostile: list[bytes]) -> None:
    lines = []
    for minute, bad in enumerate(hostile):
        lines.append(GOOD_ROW.format(minute=f"2026-11-28T09:{minute:02d}:00+07:00"))
        lines.append(bad.decode("utf-8", errors="replace"))
    lines.append(GOOD_ROW.format(minute="2026-11-28T10:00:00+07:00"))
    parsed = survey.parse_survey(
        "time,lon,lat,operator,technology,service,rsrp\n" + "\n".join(lines) + "\n",
        now=datetime(2026, 11, 30, tzinfo=UTC),
    )
    good_times = {p.taken_at for p in parsed.points if p.lon == 106.2551 and p.rsrp_dbm == -104}
    assert len(good_times) == len(hostile) + 1
