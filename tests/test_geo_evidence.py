"""Verdicts with their evidence (geo.evidence, geo.assessment), `coverwatch report
evidence` and `coverwatch claims check`, against a real database."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from litestar.testing import TestClient

from collector import rollups, schema
from coverwatch.cli import main
from geo import maps, web
from geo.assessment import Assessment, assess
from geo.claims_check import compare_claims
from geo.coverage import TimeWindow
from geo.evidence import EVIDENCE_KINDS
from geo.projection import haversine_m
from simulator import scenario_load, scenarios
from tests.test_map import chromium_binary, run_chromium

EDGE_DBM = -115.0
NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = TimeWindow(NOW - timedelta(days=30), NOW + timedelta(hours=1))


@pytest.fixture
def geo_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    schema.upgrade(database_url)
    monkeypatch.setenv("COVERWATCH_DATABASE_URL", database_url)
    return database_url


# ------------------------------------------------------------- a simulated province


@pytest.fixture
def province(geo_db: str) -> tuple[str, scenarios.Scenario, Assessment]:
    scenario = scenarios.build("sparse", 31, villages=90, survey_start=NOW - timedelta(days=20))
    scenario_load.load(geo_db, scenario, end=NOW)
    with psycopg.connect(geo_db) as connection:
        return geo_db, scenario, assess(connection, WINDOW)


def test_every_verdict_names_its_evidence_and_measured_ones_hold(
    province: tuple[str, scenarios.Scenario, Assessment],
) -> None:
    _, scenario, assessment = province
    truth = {v.name: v for v in scenario.province.villages}
    kits = {scenario.village(k.village_id).name: k for k in scenario.kits}
    assert len(assessment.verdicts) == len(scenario.province.villages)
    kinds = {v.kind for v in assessment.verdicts}
    assert kinds <= set(EVIDENCE_KINDS)
    assert {"probe", "predicted"} <= kinds
    for verdict in assessment.verdicts:
        village = truth[verdict.village.name]
        for o in verdict.operators:
            if o.kind == "probe":
                # A probe speaks for a village only from inside it.
                kit = next(k for k in scenario.kits if o.evidence == f"probe {k.probe_id}")
                assert haversine_m(kit.lon, kit.lat, village.lon, village.lat) <= 1000.0
                assert o.operator in kit.sim_operators
            if o.kind in ("probe", "survey"):
                assert o.p_usable in (0.0, 1.0)
                assert o.rsrp_dbm is None
            if o.kind == "predicted":
                assert o.p_usable is not None
                assert 0.0 <= o.p_usable <= 1.0
                assert o.sigma_db is not None
                assert o.sigma_db > 0
                assert o.evidence in ("registry + measurements", "registry only")
        # Within a dB of the usable edge, whether a village "has service" is a coin toss
        # of the fading: the truth there is not what the verdicts are judged on.
        at_edge = any(abs(v - EDGE_DBM) < 1.0 for v in village.median_rsrp_dbm.values())
        if verdict.village.name in kits:
            kit = kits[verdict.village.name]
            mine = next(o for o in verdict.operators if o.operator == kit.sim_operators[0])
            assert mine.kind == "probe"
            if not at_edge:
                assert (mine.p_usable == 1.0) == village.has_service(kit.sim_operators[0])
        if verdict.measured:
            assert verdict.kind in ("probe", "survey")
            if not at_edge:
                assert verdict.no_service == (not village.covered), verdict.to_dict()
        else:
            assert verdict.to_dict()["evidence"] in ("predicted", "unknown")


def test_predictions_separate_dead_villages_from_served_ones(
    province: tuple[str, scenarios.Scenario, Assessment],
) -> None:
    _, scenario, assessment = province
    truth = {v.name: v for v in scenario.province.villages}
    predicted = [v for v in assessment.verdicts if not v.measured]
    p = np.array([v.p_no_service for v in predicted], dtype=float)
    dead = np.array([not truth[v.village.name].covered for v in predicted])
    assert dead.any()
    assert (~dead).any()
    # Far better than a coin (Brier 0.25) and than always answering "served".
    brier = float(np.mean((p - dead) ** 2))
    assert brier < 0.15
    assert brier < float(np.mean(dead))
    assert p[dead].mean() > p[~dead].mean() + 0.3
    # Every village called "no service" on a prediction is sure of it.
    assert all(
        v.p_no_service is not None and v.p_no_service >= 0.8 for v in predicted if v.no_service
    )


def test_report_evidence_lists_every_village_with_its_kind(
    province: tuple[str, scenarios.Scenario, Assessment], capsys: pytest.CaptureFixture[str]
) -> None:
    _, scenario, _ = province
    assert main(["report", "evidence", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(scenario.province.villages)
    assert {r["evidence"] for r in rows} <= set(EVIDENCE_KINDS)
    ordered = [r["p_no_service"] for r in rows]
    assert ordered == sorted(ordered, reverse=True)
    assert main(["report", "evidence"]) == 0
    table = capsys.readouterr().out
    assert "predicted p(usable)" in table
    assert "probe" in table
    assert table.rstrip().splitlines()[-1].startswith(f"{len(rows)} villages; evidence:")
    assert main(["report", "evidence", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("village_id,name,commune")
    assert len(lines) == len(rows) + 1


# ------------------------------------------------------------ hand-built evidence


def _village(
    connection: psycopg.Connection[Any], name: str, lon: float, lat: float, population: int
) -> None:
    connection.execute(
        """INSERT INTO villages (name, commune, district, province, lon, lat, population,
                                 households, grid_power, source)
           VALUES (%s, 'Xã Đức Hạnh', 'Huyện Bảo Lâm', 'Cao Bằng', %s, %s, %s, %s, 'yes', 't')""",
        (name, lon, lat, population, population // 5),
    )


def _probe(
    connection: psycopg.Connection[Any],
    probe_id: str,
    lon: float,
    lat: float,
    operator: str,
    rsrp: float | None,
    *,
    technology: str = "lte",
) -> None:
    connection.execute(
        "INSERT INTO probes (probe_id, name, lon, lat, report_interval_s) "
        "VALUES (%s, %s, %s, %s, 900)",
        (probe_id, probe_id, lon, lat),
    )
    boot = uuid.uuid4()
    with connection.cursor().copy(
        "COPY readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms, ntp_synced, "
        "registration, technology, operator_code, rsrp_dbm, rssi_dbm, sim_operator_code) "
        "FROM STDIN"
    ) as copy:
        for n in range(24):
            taken = NOW - timedelta(hours=6) + n * timedelta(minutes=15)
            copy.write_row(
                (probe_id, n + 1, boot, taken, n * 900_000, True,
                 "home" if rsrp is not None else "searching",
                 technology if rsrp is not None else None,
                 operator if rsrp is not None else None,
                 rsrp if technology != "gsm" else None,
                 rsrp if technology == "gsm" else None, operator)
            )  # fmt: skip


def _refresh(url: str) -> None:
    with psycopg.connect(url) as connection:
        rollups.invalidate(connection)
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        rollups.refresh_all(connection)


def _survey(
    connection: psycopg.Connection[Any],
    lon: float,
    lat: float,
    values: list[float | None],
    *,
    days_ago: float = 2,
    technology: str = "lte",
) -> None:
    for n, value in enumerate(values):
        # The technology's level: RSRP on LTE/NR, RSCP on UMTS, RSSI on GSM.
        levels = {
            "rsrp": value if technology in ("lte", "nr5g") else None,
            "rscp": value if technology == "umts" else None,
            "rssi": value if technology == "gsm" else None,
        }
        connection.execute(
            """INSERT INTO survey_points (survey, source_format, device, taken_at, lon, lat,
                   accuracy_m, service, operator_code, technology, rsrp_dbm, rscp_dbm, rssi_dbm)
               VALUES ('walk.csv', 'coverwatch', 'phone', %s, %s, %s, 5, %s, '45202', %s,
                       %s, %s, %s)""",
            (NOW - timedelta(days=days_ago, seconds=n), lon + n * 1e-5, lat,
             "serving" if value is not None else "none",
             technology if value is not None else None,
             levels["rsrp"], levels["rscp"], levels["rssi"]),
        )  # fmt: skip


def test_no_evidence_is_unknown_never_dead(geo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(geo_db) as connection:
        assert main(["report", "evidence"]) == 0
        assert "no villages in the registry" in capsys.readouterr().out
        _village(connection, "Bản Nà Pồng", 105.40, 22.86, 320)
        connection.commit()
        verdict = assess(connection, WINDOW).verdicts[0]
    assert verdict.kind == "unknown"
    assert not verdict.no_service
    assert verdict.p_no_service is None
    assert verdict.operators == ()
    assert main(["report", "evidence", "--format", "csv"]) == 0
    assert ",unknown,unknown,," in capsys.readouterr().out


def test_a_survey_decides_only_clear_of_the_edge(geo_db: str) -> None:
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Khuổi Lường", 105.40, 22.86, 300)
        _village(connection, "Bản Cốc Xả", 105.50, 22.86, 300)
        _village(connection, "Bản Nặm Rằng", 105.60, 22.86, 300)
        _survey(connection, 105.40, 22.86, [-116.0, -114.5, -116.5, -115.8])  # at the edge
        _survey(connection, 105.50, 22.86, [-125.0, None, None, -121.0])  # clearly none
        _survey(connection, 105.60, 22.86, [-101.0, -99.0, -103.0])  # clearly usable
        connection.commit()
        verdicts = {v.village.name: v for v in assess(connection, WINDOW).verdicts}
    at_edge = verdicts["Bản Khuổi Lường"].operators[0]
    assert at_edge.kind == "predicted"
    assert at_edge.evidence == "measurements only"
    assert 0.05 < (at_edge.p_usable or 0) < 0.95
    dead = verdicts["Bản Cốc Xả"]
    assert dead.operators[0].kind == "survey"
    assert dead.operators[0].p_usable == 0.0
    assert dead.measured
    assert dead.no_service
    assert dead.kind == "survey"
    served = verdicts["Bản Nặm Rằng"]
    assert served.operators[0].kind == "survey"
    assert not served.no_service


def test_claims_check_lists_both_directions_by_population(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    claimed = {
        "type": "Polygon",
        "coordinates": [
            [[105.3, 22.8], [105.7, 22.8], [105.7, 23.0], [105.3, 23.0], [105.3, 22.8]]
        ],
    }
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Pác Bó", 105.40, 22.90, 900)  # claimed, probe: none
        _village(connection, "Bản Nà Mạ", 105.50, 22.90, 2000)  # claimed, probe: none
        _village(connection, "Bản Lũng Nặm", 105.60, 22.90, 400)  # claimed, probe: usable
        _village(connection, "Bản Thôm Luông", 106.20, 22.90, 700)  # not claimed, usable
        _probe(connection, "kit-1", 105.4001, 22.9001, "45204", None)
        _probe(connection, "kit-2", 105.5001, 22.9001, "45204", -124.0)
        _probe(connection, "kit-3", 105.6001, 22.9001, "45204", -96.0)
        _probe(connection, "kit-4", 106.2001, 22.9001, "45204", -99.0)
        connection.commit()
    _refresh(geo_db)
    with psycopg.connect(geo_db) as connection:
        connection.execute(
            """INSERT INTO operator_claims (operator_code, technology, name, geometry,
                   min_lon, min_lat, max_lon, max_lat, source)
               VALUES ('45204', 'lte', 'Viettel 4G', %s, 105.3, 22.8, 105.7, 23.0, 'vt.geojson')""",
            (json.dumps(claimed),),
        )
        connection.commit()
        gaps = compare_claims(connection, assess(connection, WINDOW).verdicts)
    assert [(g.direction, g.village.name, g.evidence.kind) for g in gaps] == [
        ("claimed_not_served", "Bản Nà Mạ", "probe"),
        ("claimed_not_served", "Bản Pác Bó", "probe"),
        ("served_not_claimed", "Bản Thôm Luông", "probe"),
    ]
    assert main(["claims", "check"]) == 0
    out = capsys.readouterr().out
    assert "Viettel lte: claimed as covered, no service found" in out
    assert "Bản Nà Mạ" in out
    assert "Bản Lũng Nặm" not in out
    assert "Xã Đức Hạnh" in out
    assert "2900 people (2 measured)" in out
    assert main(["claims", "check", "--operator", "MobiFone", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"villages": [], "communes": []}
    assert main(["claims", "check", "--operator", "Telstra"]) == 2
    assert "--operator" in capsys.readouterr().err


def test_claims_check_without_claims_says_how_to_add_them(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["claims", "check"]) == 0
    assert "no claims imported" in capsys.readouterr().out


def test_api_serves_the_evidence_and_the_claims_check(
    province: tuple[str, scenarios.Scenario, Assessment],
) -> None:
    url, scenario, assessment = province
    with TestClient(app=web.create_app(url)) as client:
        answer = client.get("/api/evidence", params={"window": "30d"})
        assert answer.status_code == 200, answer.text
        villages = answer.json()["villages"]
        assert len(villages) == len(scenario.province.villages)
        by_name = {v.village.name: v for v in assessment.verdicts}
        for row in villages:
            assert row["evidence"] == by_name[row["name"]].kind
            assert row["no_service"] == by_name[row["name"]].no_service
        gaps = client.get("/api/claims/check", params={"operator": "Viettel"})
        assert gaps.status_code == 200, gaps.text
        body = gaps.json()
        assert body["villages"]
        assert {g["operator"] for g in body["villages"]} == {"45204"}
        assert all(g["evidence"]["evidence"] != "unknown" for g in body["villages"])
        populations = [
            g["population"] for g in body["villages"] if g["direction"] == "claimed_not_served"
        ]
        assert populations == sorted(populations, reverse=True)
        wrong = client.get("/api/claims/check", params={"operator": "Telstra"})
        assert wrong.status_code == 400
        assert "operator" in wrong.text
        nowhere = client.get("/api/evidence", params={"province": "Tỉnh Không Có"})
        assert nowhere.status_code == 400


def test_map_payload_carries_each_villages_evidence(
    province: tuple[str, scenarios.Scenario, Assessment],
) -> None:
    url, _, assessment = province
    with psycopg.connect(url) as connection:
        plain = maps.collect(connection, WINDOW)
        data = maps.collect(connection, WINDOW, evidence=True)
    assert "evidence" not in maps.payload(plain)  # the prediction only when asked for
    document = maps.payload(data)
    assert document["evidence_kinds"] == list(EVIDENCE_KINDS)
    assert len(document["evidence"]) == len(document["villages"])
    by_name = {v.village.name: v for v in assessment.verdicts}
    for village, row in zip(document["villages"], document["evidence"], strict=True):
        verdict = by_name[village[2]]
        assert document["evidence_kinds"][row[0]] == verdict.kind
        assert row[2] == int(verdict.no_service)
        for name, kind, p, dbm, _sigma in row[3]:
            if document["evidence_kinds"][kind] in ("probe", "survey"):
                assert p in (0.0, 1.0)
                assert dbm is None  # a measurement is not dressed up as a prediction
            assert name in ("Viettel", "VinaPhone", "MobiFone")


def test_evidence_view_renders_in_headless_chromium(
    province: tuple[str, scenarios.Scenario, Assessment], tmp_path: Path
) -> None:
    url, _, assessment = province
    binary = chromium_binary()
    handle = web.serve_in_thread(web.create_app(url), "127.0.0.1", 0)
    try:
        dom = run_chromium(binary, "--dump-dom", f"{handle.url}/map?evidence=true")
        assert dom.returncode == 0, dom.stderr[-2000:]
        plain = run_chromium(binary, "--dump-dom", f"{handle.url}/map")
        assert plain.returncode == 0, plain.stderr[-2000:]
    finally:
        handle.stop()
    html = dom.stdout
    assert "Villages: evidence (measured / predicted)" in html
    assert "Evidence view" in html  # the legend explains the drawing
    # Predicted dead villages are counted apart from measured ones in the clusters.
    predicted_dead = sum(1 for v in assessment.verdicts if v.no_service and not v.measured)
    assert predicted_dead > 0
    assert re.search(r"<small>\d+ \?</small>", html)
    assert "Evidence view" not in plain.stdout
    assert "Villages: evidence" not in plain.stdout


def test_surveys_outside_the_window_are_not_evidence(geo_db: str) -> None:
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Cốc Xả", 105.50, 22.86, 300)
        _survey(connection, 105.50, 22.86, [None, None, None, None], days_ago=200)
        connection.commit()
        old = assess(connection, WINDOW).verdicts[0]
        long_window = TimeWindow(NOW - timedelta(days=365), NOW + timedelta(hours=1))
        kept = assess(connection, long_window).verdicts[0]
    assert old.kind == "unknown"
    assert kept.kind == "survey"
    assert kept.no_service


def test_service_on_2g_or_3g_is_service(geo_db: str) -> None:
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Pác Bó", 105.40, 22.90, 900)
        _village(connection, "Bản Nà Mạ", 105.60, 22.90, 500)
        # Viettel measured without LTE service; Gmobile (45207) on GSM, fair.
        _probe(connection, "kit-1", 105.4001, 22.9001, "45204", None)
        _probe(connection, "kit-2", 105.4002, 22.9002, "45207", -80.0, technology="gsm")
        # A walk in the other village: 3G serving, strong (an RSCP of -85 dBm).
        _survey(connection, 105.60, 22.90, [-85.0, -86.0, -84.0, -85.0], technology="umts")
        connection.commit()
    _refresh(geo_db)
    with psycopg.connect(geo_db) as connection:
        verdicts = {v.village.name: v for v in assess(connection, WINDOW).verdicts}
    pac_bo = verdicts["Bản Pác Bó"]
    # VinaPhone was surveyed on 3G only, elsewhere: nothing to predict it from here.
    assert {o.operator: o.kind for o in pac_bo.operators} == {
        "45202": "unknown",
        "45204": "probe",
        "45207": "probe",
    }
    assert pac_bo.measured
    assert not pac_bo.no_service
    na_ma = verdicts["Bản Nà Mạ"]
    assert next(o for o in na_ma.operators if o.operator == "45202").kind == "survey"
    assert not na_ma.no_service


def test_no_service_is_none_whatever_the_thresholds(geo_db: str) -> None:
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Cốc Xả", 105.50, 22.86, 300)
        _survey(connection, 105.50, 22.86, [None, None, None, None, None])
        connection.execute(
            "UPDATE coverage_thresholds SET good_dbm = -100, fair_dbm = -110, poor_dbm = -124 "
            "WHERE technology = 'lte'"
        )
        connection.commit()
        verdict = assess(connection, WINDOW).verdicts[0]
    assert verdict.kind == "survey"
    assert verdict.no_service


def test_reports_refuse_an_unknown_province(
    geo_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(geo_db) as connection:
        _village(connection, "Bản Pác Bó", 105.40, 22.90, 900)
        connection.commit()
    assert main(["report", "evidence", "--province", "Cao Bang"]) == 2
    err = capsys.readouterr().err
    assert "no villages in 'Cao Bang'" in err
    assert "Cao Bằng" in err
    assert main(["sites", "recommend", "--operator", "Viettel", "--province", "Hà Giang"]) == 2
    assert "no villages in 'Hà Giang'" in capsys.readouterr().err
