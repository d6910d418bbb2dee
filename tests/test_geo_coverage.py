"""Coverage classes, village status and the uncovered-villages report on a seeded database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import shapely

from collector import schema
from collector.rollups import refresh_all
from coverwatch.cli import main
from geo.coverage import ProbeCoverage, TimeWindow, by_probe, probe_coverage
from geo.deadzones import probe_dead_zones
from geo.registry import load_villages
from geo.report import rank_uncovered, render
from geo.status import village_status
from geo.thresholds import DEFAULT_THRESHOLDS, Band, load_thresholds, store_thresholds
from tests.geo_seed import add_latency, add_outage, add_probe, add_signal, add_village

# A day ending about now, so that the command line's "up to now" window holds it.
END = datetime.now(UTC).replace(second=0, microsecond=0)
START = END - timedelta(days=1)
WINDOW = TimeWindow(START, END)
DAY = 288  # readings at 5-minute intervals


@pytest.fixture
def seeded(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        seed(connection)
        connection.commit()
        yield connection


def seed(c: psycopg.Connection[Any]) -> None:
    add_probe(c, "cb-good", 106.52, 22.83, village="Nà Pài")
    add_signal(c, "cb-good", START, DAY, rsrp_dbm=-80)
    add_signal(c, "cb-good", START, 10, seq0=1000, technology="umts", operator_code="45201",
               rscp_dbm=-100)  # fmt: skip
    # Mostly searching (no operator code: put down to the SIM's Viettel), the rest too weak.
    add_probe(c, "cb-dead", 106.60, 22.90)
    add_signal(c, "cb-dead", START, 200, registration="searching", technology=None,
               operator_code=None)  # fmt: skip
    add_signal(c, "cb-dead", START + timedelta(minutes=5 * 200), 88, seq0=200, rsrp_dbm=-120)
    for seq in range(10):
        add_latency(c, "cb-dead", START + timedelta(hours=seq), seq, sent=10, received=5,
                    rtt_median_ms=100 + 10 * seq)  # fmt: skip
    # 60 % one-bar service, 40 % searching.
    add_probe(c, "cb-poor", 106.40, 22.70, operator="45204")
    add_signal(c, "cb-poor", START, 173, rsrp_dbm=-110)
    add_signal(c, "cb-poor", START + timedelta(minutes=5 * 173), 115, seq0=173,
               registration="searching", technology=None, operator_code=None)  # fmt: skip
    # Good service, but dark for the second half of the day: a power cut.
    add_probe(c, "cb-dark", 106.30, 22.60)
    add_signal(c, "cb-dark", START, DAY // 2, rsrp_dbm=-90)
    add_outage(c, "cb-dark", START + timedelta(hours=12), END + timedelta(hours=1), 500)
    # Installed, never heard from.
    add_probe(c, "cb-silent", 106.70, 22.95)
    # Not in the registry (no position) but sending.
    add_signal(c, "stray", START, 5, rsrp_dbm=-70)
    # Readings outside the window do not count.
    add_signal(c, "cb-good", START - timedelta(days=2), 50, seq0=5000, registration="denied",
               technology=None, operator_code=None)  # fmt: skip

    add_village(c, "Nà Pài", 106.52, 22.8301, population=420, grid_power="yes")
    add_village(c, "Bản Chết", 106.605, 22.90, population=300, grid_power="no")
    add_village(c, "Bản Nopop", 106.595, 22.905, population=None)
    add_village(c, "Bản Yếu", 106.40, 22.701, population=1000, grid_power="yes")
    add_village(c, "Bản Tối", 106.301, 22.60, population=800, grid_power="yes")
    add_village(c, "Bản Xa", 105.50, 22.50, population=50)
    add_village(c, "Bản Im", 106.70, 22.951, population=70)


def probes_of(connection: psycopg.Connection[Any]) -> dict[str, ProbeCoverage]:
    return dict(by_probe(probe_coverage(connection, WINDOW)))


def test_classes_availability_and_medians_per_operator(
    seeded: psycopg.Connection[Any],
) -> None:
    probes = probes_of(seeded)
    assert set(probes) == {"cb-good", "cb-dead", "cb-poor", "cb-dark", "cb-silent", "stray"}

    good = probes["cb-good"]
    summary = [
        (o.operator, o.coverage_class, o.readings, o.availability_pct) for o in good.operators
    ]
    assert summary == [("45201", "fair", 10, 100.0), ("45204", "good", DAY, 100.0)]
    assert good.coverage_class() == "good"
    [lte] = good.operators[1].technologies
    assert (lte.technology, lte.mean_signal_dbm, lte.signal_class) == ("lte", -80.0, "good")

    dead = probes["cb-dead"]
    [viettel] = dead.operators
    assert (viettel.operator, viettel.operator_name) == ("45204", "Viettel")
    assert (viettel.coverage_class, viettel.availability_pct, viettel.readings) == ("none", 0, DAY)
    assert {t.technology: t.readings for t in viettel.technologies} == {"none": 200, "lte": 88}
    assert (dead.latency_rounds, dead.loss_pct, dead.rtt_ms) == (10, 50.0, 145.0)

    poor = probes["cb-poor"]
    assert poor.coverage_class() == "poor"
    assert poor.best() is not None
    assert round(poor.operators[0].availability_pct, 1) == 60.1

    dark = probes["cb-dark"]
    assert (dark.coverage_class(), dark.operators[0].availability_pct) == ("good", 100.0)
    assert dark.measured_pct == 50.0
    assert (dark.outages, dark.outage_s) == (1, 12 * 3600)

    silent = probes["cb-silent"]
    assert (silent.measured, silent.coverage_class(), silent.measured_pct) == (
        False,
        "unmeasured",
        0.0,
    )
    assert silent.coverage_class("45204") == "unmeasured"
    assert probes["stray"].lon is None
    assert json.loads(json.dumps(good.to_dict()))["operators"][1]["coverage_class"] == "good"


def test_thresholds_change_the_classes(seeded: psycopg.Connection[Any]) -> None:
    assert load_thresholds(seeded) == DEFAULT_THRESHOLDS  # the migration seeds the defaults
    marked = store_thresholds(seeded, {"lte": Band(-75, -85, -95)})
    assert marked > 0
    # Read live from the marked hours, then from the re-materialized rollups: the same.
    for refreshed in (False, True):
        if refreshed:
            seeded.commit()
            with psycopg.connect(seeded.info.dsn, autocommit=True) as other:
                assert refresh_all(other) == marked
        probes = by_probe(probe_coverage(seeded, WINDOW))
        assert probes["cb-good"].coverage_class("45204") == "fair"
        assert probes["cb-dark"].coverage_class() == "poor"


def test_village_status_is_distance_weighted_and_unmeasured_is_not_none(
    seeded: psycopg.Connection[Any],
) -> None:
    probes = probe_coverage(seeded, WINDOW)
    statuses = {
        s.village.name: s for s in village_status(seeded, load_villages(seeded), probes, WINDOW)
    }
    assert statuses["Nà Pài"].status == "good"
    assert statuses["Bản Chết"].status == "none"
    assert statuses["Bản Chết"].nearest_probe_id == "cb-dead"
    assert 500 < (statuses["Bản Chết"].nearest_probe_m or 0) < 530
    assert statuses["Bản Im"].status == "unmeasured"  # its probe never reported
    assert statuses["Bản Im"].nearest_probe_id == "cb-silent"
    assert statuses["Bản Xa"].status == "unmeasured"
    assert statuses["Bản Xa"].nearby == ()
    assert 80_000 < (statuses["Bản Xa"].nearest_probe_m or 0) < 95_000

    # Two probes near one village: the nearer one weighs more.
    villages = load_villages(seeded)
    wide = {
        s.village.name: s for s in village_status(seeded, villages, probes, WINDOW, radius_m=15_000)
    }
    between = wide["Bản Chết"]
    assert [p.probe_id for p in between.nearby] == ["cb-dead", "cb-silent", "cb-good"]
    [viettel] = [o for o in between.operators if o.operator == "45204"]
    assert viettel.probes == 2  # cb-silent measured nothing, so it does not vote
    assert 0 < viettel.availability_pct < 10
    assert viettel.coverage_class == "none"


def test_uncovered_report_ranks_by_population_times_unavailability(
    seeded: psycopg.Connection[Any],
) -> None:
    probes = probe_coverage(seeded, WINDOW)
    statuses = village_status(seeded, load_villages(seeded), probes, WINDOW)
    rows = rank_uncovered(statuses, by_probe(probes))
    assert [(r.rank, r.name, r.status, r.uncovered_score) for r in rows] == [
        (1, "Bản Yếu", "poor", 399.3),
        (2, "Bản Chết", "none", 300.0),
        (3, "Bản Nopop", "none", None),
        (4, "Bản Im", "unmeasured", None),
        (5, "Bản Xa", "unmeasured", None),
    ]
    # The power cut at Bản Tối is unmeasured time, not a coverage gap.
    everything = rank_uncovered(statuses, by_probe(probes), include_all=True)
    [dark] = [r for r in everything if r.name == "Bản Tối"]
    assert (dark.best_availability_pct, dark.uncovered_score) == (100.0, 0.0)
    assert (dark.measured_pct, dark.power_outages, dark.outage_hours) == (50.0, 1, 12.0)
    assert (dark.grid_power, dark.nearest_probe_id) == ("yes", "cb-dark")

    table = render(rows, "table")
    assert table.splitlines()[0].split()[:4] == ["#", "village", "commune", "district"]
    assert "Bản Yếu" in table.splitlines()[2]


def test_report_command_formats(
    seeded: psycopg.Connection[Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["report", "uncovered", "--database-url", database_url, "--since", START.isoformat()]
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == ["Bản Yếu", "Bản Chết", "Bản Nopop", "Bản Im", "Bản Xa"]
    first = rows[0]
    assert (first["commune"], first["district"]) == ("Quang Trung", "Trùng Khánh")
    assert (first["nearest_probe_id"], first["availability_pct_Viettel"]) == ("cb-poor", "60.1")
    assert rows[3]["best_availability_pct"] == ""

    assert main([*base, "--format", "json", "--all"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert {v["name"] for v in body["villages"]} >= {"Nà Pài", "Bản Tối"}
    assert body["since"] == START.isoformat()

    # With the poor threshold at -200 dBm, cb-dead's -120 dBm readings count as service.
    assert main([*base, "--format", "csv", "--threshold", "lte=-100,-105,-200"]) == 2
    assert "coverwatch thresholds set lte=-100,-105,-200" in capsys.readouterr().err
    url = ["--database-url", database_url]
    assert main(["thresholds", "set", "lte=-100,-105,-200", *url]) == 0
    assert "probe-hours marked" in capsys.readouterr().out
    assert main(["thresholds", "show", *url]) == 0
    assert "lte           -100   -105   -200" in capsys.readouterr().out
    assert main([*base, "--format", "csv"]) == 0
    lenient = {r["name"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert (lenient["Bản Chết"]["best_availability_pct"], lenient["Bản Chết"]["status"]) == (
        "30.6",
        "none",
    )

    assert main(["report", "uncovered", "--database-url", database_url, "--window", "3x"]) == 2
    assert "Hint: write e.g. 12h, 30d or 4w" in capsys.readouterr().err


def test_dead_zones_from_measured_probes(seeded: psycopg.Connection[Any]) -> None:
    probes = probe_coverage(seeded, WINDOW)
    province = shapely.box(106.2, 22.5, 106.8, 23.0)
    zones = probe_dead_zones(probes, province)
    dead_probe = shapely.Point(106.60, 22.90)
    silent_probe = shapely.Point(106.70, 22.95)
    assert zones.dead.contains(dead_probe)
    assert zones.unmeasured.contains(silent_probe)  # never heard from: unmeasured, not dead
    assert zones.covered.contains(shapely.Point(106.52, 22.83))
    # Five 3 km discs at most: ~28 km² each.
    assert 25 < zones.dead_km2 < 29
    assert zones.covered_km2 + zones.dead_km2 + zones.unmeasured_km2 == pytest.approx(
        zones.area_km2, rel=1e-9
    )
    features = zones.to_geojson()["features"]
    assert [f["properties"]["state"] for f in features] == ["covered", "dead", "unmeasured"]


def test_nearby_probes_read_like_a_tuple_of_named_tuples() -> None:
    from geo.status import NearbyProbe, NearbyProbes

    nearby = NearbyProbes(["cb-001", "cb-002"], [50.0, 1200.5], [1e-4, 6.9e-7])
    expected = (NearbyProbe("cb-001", 50.0, 1e-4), NearbyProbe("cb-002", 1200.5, 6.9e-7))
    assert nearby == expected
    assert nearby[0].probe_id == "cb-001"
    assert nearby[-1] == expected[-1]
    assert nearby[1:] == expected[1:]
    assert [p.distance_m for p in nearby] == [50.0, 1200.5]
    assert len(nearby) == 2
    assert bool(nearby)
    assert not NearbyProbes([], [], [])
    assert hash(nearby) == hash(NearbyProbes(["cb-001", "cb-002"], [50.0, 1200.5], [1e-4, 6.9e-7]))
    with pytest.raises(ValueError, match="differ in length"):
        NearbyProbes(["cb-001"], [], [])
