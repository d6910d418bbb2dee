"""The tower registry (`coverwatch towers import/links`) against a real database."""

from __future__ import annotations

import gzip
import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import schema
from coverwatch.cli import main
from coverwatch.errors import CoverwatchError
from geo import towers
from geo.coverage import TimeWindow
from tests import geo_seed
from tests.test_fuzz_protocol import HOSTILE_FRAGMENTS

DATA = Path(__file__).parent / "data" / "towers"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OUTSIDE_262 = ["--mcc", "262", "--allow-outside-vietnam"]
HEADER = (
    "radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal"
)


@pytest.fixture
def geo_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    return database_url


def stored_cells(url: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    with psycopg.connect(url) as connection:
        cursor = connection.execute(
            """SELECT technology, mcc, mnc, area, cell, pci, lon, lat, range_m, samples,
                      average_signal_dbm, site, updated_at, source FROM tower_cells"""
        )
        names = [column.name for column in cursor.description or ()]
        rows = cursor.fetchall()
    return {tuple(row[:5]): dict(zip(names[5:], row[5:], strict=True)) for row in rows}


def problems_of(err: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in err.strip().splitlines()]


def test_an_opencellid_country_file_keeps_its_good_rows_and_names_each_bad_one(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["towers", "import", str(DATA / "opencellid-452.csv")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == (
        "imported 8 cells (8 new, 0 updated), rejected 4, skipped 1 of other countries "
        "(--mcc any keeps them) and 1 CDMA"
    )
    assert problems_of(err) == [
        "error: line 9: cell: 300000000 is not between 0 and 268435455",
        "error: line 10: area: is missing",
        "error: line 11: lat: 106.2 is not between -90 and 90 (lon and lat swapped?)",
        "warning: line 12: range: 250000 m is not a cell's reach; stored as unknown",
        "warning: line 13: the same cell as line 2; kept the one updated last (line 13)",
        "error: line 14: radio: expected GSM, UMTS, LTE or NR, got 'WIMAX'",
        "warning: line 15: unit: 9000 is not a lte PCI/PSC (0-503); stored as unknown",
    ]
    cells = stored_cells(geo_db)
    assert set(cells) == {
        ("gsm", 452, 1, 10068, 5293),
        ("lte", 452, 4, 12040, 31785217),
        ("lte", 452, 4, 12040, 31785218),
        ("lte", 452, 4, 12040, 31785473),
        ("umts", 452, 2, 3301, 21495812),
        ("nr5g", 452, 4, 12040, 5206671361),
        ("lte", 452, 1, 201, 9999),
        ("lte", 452, 4, 12040, 31785221),
    }
    # The real Vietnamese row as OpenCelliD wrote it; averageSignal 0 means "unknown".
    assert cells[("gsm", 452, 1, 10068, 5293)] == {
        "pci": 0,
        "lon": 105.8031464,
        "lat": 20.95985413,
        "range_m": 1000,
        "samples": 2,
        "average_signal_dbm": None,
        "site": "gsm:452-01:10068:5293",
        "updated_at": datetime.fromtimestamp(1488347104, UTC),
        "source": "opencellid-452.csv",
    }
    # The later duplicate won; two sectors of one eNB share a site, a third eNB is apart.
    first = cells[("lte", 452, 4, 12040, 31785217)]
    assert (first["lon"], first["samples"], first["average_signal_dbm"]) == (106.2549, 35, -96)
    assert first["site"] == cells[("lte", 452, 4, 12040, 31785218)]["site"] == "lte:452-04:124161"
    assert cells[("lte", 452, 4, 12040, 31785473)]["site"] == "lte:452-04:124162"
    assert cells[("lte", 452, 1, 201, 9999)]["range_m"] is None
    assert cells[("lte", 452, 4, 12040, 31785221)]["pci"] is None
    with psycopg.connect(geo_db) as connection:
        site = connection.execute(
            "SELECT cells, technologies FROM tower_sites WHERE site = 'lte:452-04:124161'"
        ).fetchone()
    assert site == (3, ["lte"])  # cells 31785217, 31785218 and 31785221: ECI // 256 = 124161


def test_an_mls_export_with_header_gzipped_or_not_and_a_reimport_updates_in_place(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["towers", "import", str(DATA / "mls-452.csv.gz")]) == 0
    assert capsys.readouterr().out.strip() == "imported 2 cells (2 new, 0 updated), rejected 0"
    gzipped = stored_cells(geo_db)
    assert main(["towers", "import", str(DATA / "mls-452.csv")]) == 0
    assert capsys.readouterr().out.strip() == "imported 2 cells (0 new, 2 updated), rejected 0"
    plain = stored_cells(geo_db)
    assert {key: {**v, "source": None} for key, v in gzipped.items()} == {
        key: {**v, "source": None} for key, v in plain.items()
    }
    gsm = plain[("gsm", 452, 2, 3301, 40311)]
    assert (gsm["pci"], gsm["average_signal_dbm"]) == (None, None)


def test_other_countries_are_kept_only_when_asked(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["towers", "import", str(DATA / "opencellid-452.csv"), "--mcc", "any"])
    out, err = capsys.readouterr()
    assert "rejected 5" in out  # the German cell is outside Vietnam: refused by default
    assert (
        "error: line 7: lon/lat: (10.948628, 50.170324) is outside Vietnam "
        "(lon 102-110, lat 8-24)" in problems_of(err)
    )
    main(["towers", "import", str(DATA / "opencellid-452.csv"), *OUTSIDE_262])
    out, _ = capsys.readouterr()
    assert out.startswith("imported 1 cells (1 new, 0 updated), rejected 1, skipped 12 of other")
    assert ("gsm", 262, 2, 852, 2521) in stored_cells(geo_db)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("radio,mcc,net,cell,lon,lat\n", "the CSV header has no area column"),
        ("hello,world\n", "is neither the OpenCelliD/MLS header nor a cell row"),
    ],
)
def test_a_file_that_is_not_a_registry_says_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(CoverwatchError, match=message):
        towers.parse_cells(iter(io.StringIO(text)))


def test_hostile_rows_are_rejected_one_by_one_and_good_rows_kept() -> None:
    good = "LTE,452,4,12040,31785217,215,106.2551,22.6663,1450,31,1,1459814400,1700000000,-97"
    hostile = [
        "LTE,452,4,12040,3178\x005217,215,106.2551,22.6663,1450,31,1,1459814400,1700000000,0",
        "LTE,452,4,12040,1" + "0" * 5000 + ",215,106.2551,22.6663,1450,31,1,1,1,0",
        "LTE,452,4,12040,31785217,215,nan,22.6663,1450,31,1,1,1,0",
        "LTE,452,4,12040,31785217,215,1e400,22.6663,1450,31,1,1,1,0",
        "LTE,452,4,12040,31785217,215,106.2,22.6,1000,31,yes,1,1,0",
        "LTE,452,4,12040,31785217,215,106.2,22.6,1000,31,1,99999999999,1,0",
        "LTE,452,-4,12040,31785217,215,106.2,22.6,1000,31,1,1,1,0",
        "LTE,452",
        "LTE,452,4,12040,31785217.5,215,106.2,22.6,1000,31,1,1,1,0",
    ]
    parsed = towers.parse_cells(iter(io.StringIO("\n".join([good, *hostile, good]) + "\n")))
    assert parsed.rejected == len(hostile)
    assert list(parsed.cells) == [("lte", 452, 4, 12040, 31785217)]
    messages = [str(problem) for problem in parsed.problems if problem.severity == "error"]
    assert messages[0] == "error: line 2: cell: expected a whole number, got '3178\\x005217'"
    assert (
        messages[1] == "error: line 3: cell: a number of 5001 digits is not between 0 and 268435455"
    )
    assert messages[2] == "error: line 4: lon: expected a finite number, got 'nan'"
    assert messages[3] == "error: line 5: lon: expected a finite number, got '1e400'"
    assert messages[4] == "error: line 6: changeable: expected 0 or 1, got 'yes'"
    assert messages[5] == "error: line 7: created: 99999999999 is not between 0 and 4102444800"
    assert messages[6] == "error: line 8: net: -4 is not between 0 and 999"
    assert messages[7].startswith("error: line 9: 2 fields; expected 14")
    assert messages[8] == "error: line 10: cell: expected a whole number, got '31785217.5'"


def test_a_bad_optional_figure_costs_only_that_figure() -> None:
    rows = [
        "LTE,452,4,12040,31785217,-7,106.2,22.6,-5,31,1,1,1,abc",
        "NR,452,4,12040,5206671361,402,106.2,22.6,1e3,3,1,1,1,-85",
    ]
    parsed = towers.parse_cells(iter(io.StringIO("\n".join(rows) + "\n")))
    assert parsed.rejected == 0
    lte = parsed.cells[("lte", 452, 4, 12040, 31785217)]
    assert (lte.pci, lte.range_m, lte.average_signal_dbm) == (None, None, None)
    assert [str(p) for p in parsed.problems] == [
        "warning: line 1: unit: -7 is not a lte PCI/PSC (0-503); stored as unknown",
        "warning: line 1: range: -5 m is not a cell's reach; stored as unknown",
        "warning: line 1: averageSignal: expected a whole number, got 'abc'; stored as unknown",
    ]
    nr = parsed.cells[("nr5g", 452, 4, 12040, 5206671361)]
    assert (nr.pci, nr.range_m, nr.average_signal_dbm) == (402, 1000, -85.0)


def test_undecodable_or_damaged_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"LTE,452,4,12040,1,1,106.2,22.6,1000,1,1,1,1,0\nGSM,452,\xe9\n")
    with pytest.raises(CoverwatchError, match="is not UTF-8 text"):
        towers.read_cells(latin)
    damaged = tmp_path / "damaged.csv.gz"
    damaged.write_bytes(gzip.compress((HEADER + "\n").encode() * 200)[:60])
    with pytest.raises(CoverwatchError, match="the gzip data is damaged"):
        towers.read_cells(damaged)
    with pytest.raises(CoverwatchError, match=r"cannot read .*missing\.csv"):
        towers.read_cells(tmp_path / "missing.csv")


def test_a_bad_mcc_option_says_how_to_fix_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["towers", "import", str(DATA / "mls-452.csv"), "--mcc", "VN"])
    assert "'VN' is not a country code: give an MCC such as 452 (Vietnam), or 'any'" in (
        capsys.readouterr().err
    )


def test_links_name_the_registry_site_of_each_serving_cell_and_its_distance(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(DATA / "opencellid-452.csv", tmp_path / "registry.csv")
    main(["towers", "import", str(tmp_path / "registry.csv")])
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=6)
    with psycopg.connect(geo_db) as connection:
        # pac-ma sits 0.3 km from the eNB of cells 31785217/8; far-away 40 km from it.
        geo_seed.add_probe(connection, "pac-ma", 106.2580, 22.6680)
        geo_seed.add_probe(connection, "far-away", 105.9, 22.5)
        geo_seed.add_signal(
            connection, "pac-ma", start, 30, rsrp_dbm=-99, cell_id=31785217, tac=12040, modem="m1"
        )
        geo_seed.add_signal(
            connection, "pac-ma", start, 6, seq0=100, rsrp_dbm=-108, cell_id=31785218,
            tac=12040, modem="m1",
        )  # fmt: skip
        # A cell the registry does not know, and readings that name no cell at all.
        geo_seed.add_signal(
            connection, "pac-ma", start, 4, seq0=200, operator_code="45202", rsrp_dbm=-110,
            cell_id=777, tac=5, modem="m2",
        )  # fmt: skip
        geo_seed.add_signal(connection, "pac-ma", start, 4, seq0=300, rsrp_dbm=-90)
        geo_seed.add_signal(
            connection, "far-away", start, 3, rsrp_dbm=-115, cell_id=31785217, tac=12040
        )
        # 5G NSA (EN-DC): the reading is nr5g, its cell and TAC those of the LTE anchor.
        geo_seed.add_probe(connection, "en-dc", 106.2560, 22.6670)
        geo_seed.add_signal(
            connection, "en-dc", start, 5, technology="nr5g", rsrp_dbm=-95, cell_id=31785218,
            tac=12040,
        )  # fmt: skip
        # The same cell id under another TAC is another cell.
        geo_seed.add_signal(
            connection, "far-away", start, 2, seq0=50, rsrp_dbm=-115, cell_id=31785217, tac=1
        )
        connection.commit()
        links = towers.tower_links(connection, TimeWindow(start, now + timedelta(minutes=1)))
    summary = [
        (link.probe_id, link.modem, link.cell_id, link.tac, link.readings, link.site)
        for link in links
    ]
    assert summary == [
        ("en-dc", None, 31785218, 12040, 5, "lte:452-04:124161"),
        ("far-away", None, 31785217, 12040, 3, "lte:452-04:124161"),
        ("far-away", None, 31785217, 1, 2, None),
        ("pac-ma", "m1", 31785217, 12040, 30, "lte:452-04:124161"),
        ("pac-ma", "m1", 31785218, 12040, 6, "lte:452-04:124161"),
        ("pac-ma", "m2", 777, 5, 4, None),
    ]
    near = links[3]
    assert near.distance_m is not None
    assert 200 < near.distance_m < 400
    assert not near.beyond_range
    far = links[1]
    assert far.distance_m is not None
    assert 35_000 < far.distance_m < 45_000
    assert far.beyond_range
    capsys.readouterr()
    assert main(["towers", "links", "--window", "1d"]) == 0
    out = capsys.readouterr().out
    assert "6 serving cells, 2 not in the tower registry" in out
    assert "not in registry" in out
    assert out.count("beyond its range") == 1


def test_links_on_an_empty_window_say_so(geo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["towers", "links", "--window", "1d"]) == 0
    assert "no signal readings named a serving cell" in capsys.readouterr().out


@st.composite
def registry_file(draw: st.DrawFn) -> tuple[bytes, set[tuple[str, int, int, int, int]]]:
    """Good rows (distinct cells) with hostile lines between them, and the good cells."""
    good_cells = draw(st.lists(st.integers(0, 255), min_size=1, max_size=8, unique=True))
    lines: list[bytes] = []
    for local in good_cells:
        eci = 31785216 + local
        lines.append(
            f"LTE,452,4,12040,{eci},1,106.25,22.66,1000,3,1,1459814400,1700000000,0".encode()
        )
        for _ in range(draw(st.integers(0, 2))):
            hostile = draw(st.one_of(HOSTILE_FRAGMENTS, st.binary(max_size=200)))
            lines.append(hostile.replace(b"\n", b" ").replace(b"\r", b" "))
    wanted = {("lte", 452, 4, 12040, 31785216 + local) for local in good_cells}
    return b"\n".join(lines) + b"\n", wanted


@FUZZ
@given(registry_file())
def test_hostile_lines_never_cost_a_good_row(sample: tuple[bytes, set[Any]]) -> None:
    data, wanted = sample
    text = data.decode("utf-8", errors="surrogateescape")
    parsed = towers.parse_cells(iter(io.StringIO(text, newline="")))
    # A hostile line may itself be a valid cell (the same one, updated later); never fewer.
    assert wanted <= set(parsed.cells)
    for problem in parsed.problems:
        assert len(str(problem)) < 400, "a problem quotes at most a short part of the line"


def test_a_file_of_many_bad_rows_shows_the_first_and_counts_the_rest(
    geo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "junk.csv"
    good = "LTE,452,4,12040,31785217,215,106.2551,22.6663,1450,31,1,1459814400,1700000000,0"
    path.write_text("\n".join([good] + ["LTE,452,4,12040,x,1,106.2,22.6,1,1,1,1,1,0"] * 250))
    assert main(["towers", "import", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 201
    assert lines[-1].endswith("… and 50 more problems")
    assert out.strip() == "imported 1 cells (1 new, 0 updated), rejected 250"
