"""The map, the HTTP API, the report and every Grafana coverage panel say the same.

The same readings go through the collector's own write path into a real database of
the run's layout; then, village by village and operator by operator, the API's
``/api/villages``, the map's payload, the uncovered-villages report and each panel of
the Grafana coverage dashboard (its SQL run as Grafana runs it) must agree — read live
from freshly marked hours, and again after the refresher has materialized them.

The seed includes the case that once split them: a registered reading at -125 dBm,
"available" to the old Grafana panels (registration only) and "none" on the map.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import Any

import httpx
import psycopg
import pytest

from collector import schema
from collector.storage import InboundMessage, Store
from coverwatch import protocol
from dashboards.generate import build_all
from geo import maps, report, web
from geo.analysis import analyse
from geo.coverage import TimeWindow
from geo.operators import operator_label
from geo.thresholds import COVERAGE_CLASSES
from tests import test_dashboards_sql as grafana
from tests.conftest import refresh_rollups
from tests.helpers import reading_fields, signal

START = grafana.RANGE_FROM
# Readings from 30 hours to 2 hours before the range's end, every 20 minutes: two days.
FIRST = (grafana.NOW - timedelta(hours=30)).replace(minute=0, second=0)
STEPS = 84

VILLAGES = [
    # name, commune, district, province, lon, lat
    ("Nà Pài", "Quang Trung", "Trùng Khánh", "Cao Bằng", 106.500, 22.800),
    ("Bản Giữa", "Quang Trung", "Trùng Khánh", "Cao Bằng", 106.515, 22.812),
    ("Bản Xa", "Đình Phong", "Trùng Khánh", "Cao Bằng", 106.900, 22.950),
    ("Pa Vệ Sủ", "Pa Vệ Sủ", "Mường Tè", "Lai Châu", 102.600, 22.450),
]
PROBES = [
    # probe_id, lon, lat, SIM operator
    ("cb-weak", 106.501, 22.801, "Viettel"),  # in Nà Pài, 2 km from Bản Giữa
    ("cb-fair", 106.524, 22.815, "Viettel"),  # 1 km from Bản Giữa
    ("lc-home", 102.601, 22.451, "45201"),  # in Pa Vệ Sủ
    ("lc-edge", 102.628, 22.452, "45201"),  # 2.9 km from Pa Vệ Sủ: still counts
]


def _readings(probe_id: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for step in range(STEPS):
        at = (FIRST + timedelta(minutes=20 * step)).strftime("%Y-%m-%dT%H:%M:%SZ")
        seq = 2 * step
        day_two = step >= STEPS // 2
        if probe_id == "cb-weak":
            # Registered, mostly at -125 dBm: service by registration, none by signal.
            rsrp = -100 if step % 4 == 0 else -125
            out.append(signal(seq, rsrp_dbm=rsrp, operator_code="45204", taken_at=at))
            out.append(signal(seq + 1, rsrp_dbm=-90, operator_code="45201", taken_at=at))
        elif probe_id == "cb-fair":
            rsrp = -108 if day_two else -101
            out.append(signal(seq, rsrp_dbm=rsrp, operator_code="45204", taken_at=at))
        elif probe_id == "lc-home":
            if step % 3 == 0:  # searching: counts against the SIM's MobiFone
                out.append(
                    reading_fields(seq, kind="signal", registration="searching", taken_at=at)
                )
            else:
                out.append(signal(seq, rsrp_dbm=-97, operator_code="45201", taken_at=at))
        else:
            out.append(
                signal(seq, technology="gsm", rssi_dbm=-100, operator_code="45201", taken_at=at)
            )
    return out


@pytest.fixture
def seeded_url(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        for name, commune, district, province, lon, lat in VILLAGES:
            connection.execute(
                "INSERT INTO villages (name, commune, district, province, lon, lat, population) "
                "VALUES (%s, %s, %s, %s, %s, %s, 100)",
                (name, commune, district, province, lon, lat),
            )
        for probe_id, lon, lat, operator in PROBES:
            connection.execute(
                "INSERT INTO probes (probe_id, lon, lat, operator, report_interval_s) "
                "VALUES (%s, %s, %s, %s, 1200)",
                (probe_id, lon, lat, operator),
            )
    writer = Store(database_url)
    try:
        for probe_id, *_ in PROBES:
            payload = json.dumps(
                {"v": 1, "probe_id": probe_id, "readings": _readings(probe_id)}
            ).encode()
            result = writer.write(
                [InboundMessage(protocol.readings_topic(probe_id), payload, datetime.now(UTC))]
            )
            assert result.stored_total == len(_readings(probe_id))
    finally:
        writer.close()
    return database_url


def _panel_rows(url: str, title: str) -> list[dict[str, Any]]:
    coverage = build_all()["coverage.json"]
    (panel,) = [p for p in coverage["panels"] if p["title"] == title]
    everything = {**grafana.VARIABLES, "province": panel_all_value(coverage)}
    names, _, rows = grafana._run(url, grafana.expand(panel["targets"][0]["rawSql"], everything))
    return [dict(zip(names, row, strict=True)) for row in rows]


def panel_all_value(coverage: dict[str, Any]) -> str:
    (province,) = coverage["templating"]["list"]
    return str(province["allValue"])


def _api_villages(url: str) -> list[dict[str, Any]]:
    handle = web.serve_in_thread(web.create_app(url), "127.0.0.1", 0)
    try:
        reply = httpx.get(
            f"{handle.url}/api/villages", params={"since": START.isoformat()}, timeout=30
        )
        reply.raise_for_status()
        body = reply.json()
    finally:
        handle.stop()
    return [feature["properties"] for feature in body["features"]]


def _check_agreement(url: str) -> None:
    villages = _api_villages(url)
    by_name = {v["name"]: v for v in villages}
    api = {
        (v["name"], o["operator_name"]): (o["coverage_class"], o["availability_pct"], o["probes"])
        for v in villages
        for o in v["operators"]
    }
    # The seed is what it claims: the -125 dBm village is "none" for Viettel, Bản Xa is
    # unmeasured, and the probe 2.9 km away speaks for Pa Vệ Sủ.
    assert api[("Nà Pài", "Viettel")][0] == "none"
    assert by_name["Bản Xa"]["status"] == "unmeasured"
    assert api[("Pa Vệ Sủ", "MobiFone")][2] == 2
    assert len(api) == 5

    # Grafana: the village table, cell by cell.
    table = _panel_rows(url, "Coverage by village and operator")
    grafana_cells = {
        (r["village"], r["operator"]): (
            r["coverage_class"],
            round(float(r["availability_pct"]), 1),
            int(r["probes"]),
        )
        for r in table
    }
    assert grafana_cells == api

    measured = [v for v in villages if v["status"] != "unmeasured"]
    [count] = _panel_rows(url, "Villages measured")
    assert count["villages"] == len(measured)
    [dead] = _panel_rows(url, "Measured villages without usable service")
    assert dead["villages"] == sum(v["status"] == "none" for v in villages)
    [mean] = _panel_rows(url, "Availability, mean of measured villages")
    assert float(mean["availability_pct"]) == pytest.approx(
        fmean(v["availability_pct"] for v in measured), abs=0.051
    )

    communes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for v in villages:
        for o in v["operators"]:
            communes[(v["commune"], o["operator_name"])].append(o)
    commune_rows = {
        (r["commune"], r["operator"]): (
            round(float(r["availability_pct"]), 1),
            int(r["villages_measured"]),
            int(r["villages_without_service"]),
        )
        for r in _panel_rows(url, "Coverage by commune and operator")
    }
    assert set(commune_rows) == set(communes)
    for key, ops in communes.items():
        availability, count_measured, without = commune_rows[key]
        assert availability == pytest.approx(fmean(o["availability_pct"] for o in ops), abs=0.051)
        assert (count_measured, without) == (
            len(ops),
            sum(o["coverage_class"] == "none" for o in ops),
        )

    # The daily series: each day's point is that day's analysis, as the map would show it.
    daily = _panel_rows(url, "Availability by operator, daily (mean of measured villages)")
    end = grafana.RANGE_TO
    with psycopg.connect(url) as connection:
        for row in daily:
            day = row["time"]
            window = TimeWindow(max(day, START), min(day + timedelta(days=1), end))
            statuses = analyse(connection, window).statuses
            values = [
                o.availability_pct
                for s in statuses
                for o in s.operators
                if operator_label(o.operator) == row["metric"]
            ]
            assert float(row["availability_pct"]) == pytest.approx(fmean(values), abs=1e-9)
        days = {r["time"] for r in daily}
        assert len(days) >= 2  # the seed spans two days: the series has something to say

        # The map's payload and the report, from the same analysis entry point.
        window = TimeWindow(START, datetime.now(UTC))
        data = maps.collect(connection, window)
        shown = maps.payload(data)
        classes = COVERAGE_CLASSES
        operators = sorted({o.operator for p in data.probes for o in p.operators})
        drawn = {
            (village[2], operator_label(operators[op[0]])): (classes[op[1]], op[2])
            for village in shown["villages"]
            for op in village[9]
        }
        assert drawn == {key: value[:2] for key, value in api.items()}
        ranked = report.uncovered_villages(connection, window, include_all=True)
    for ranked_row in ranked:
        assert ranked_row.status == by_name[ranked_row.name]["status"]
        assert ranked_row.best_availability_pct == by_name[ranked_row.name]["availability_pct"]


def test_map_api_report_and_grafana_agree_village_by_village(seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as connection:
        marked = connection.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    assert marked is not None
    assert marked[0] > 0  # first read: live aggregation of the marked hours
    _check_agreement(seeded_url)
    assert refresh_rollups(seeded_url) > 0
    _check_agreement(seeded_url)  # then from the materialized rollups
