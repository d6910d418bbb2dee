"""Scan evidence in geo: operators nearby probes' scans heard, shown apart and never as
coverage. A real PostgreSQL, seeded through the collector's own write path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from agent.sensors.cellular import Settings
from agent.sensors.cellular.scan import scan_over_at
from agent.sensors.cellular.scan_result import scan_readings
from collector import schema
from collector.storage import InboundMessage, Store
from coverwatch import protocol
from geo import web
from geo.analysis import analyse
from geo.coverage import TimeWindow
from geo.maps import MapData, payload
from geo.report import rank_uncovered, to_csv
from tests.geo_seed import add_probe, add_signal, add_village
from tests.sensor_fakes import DATA, ReplayedSerialPort, stamp

END = datetime.now(UTC).replace(second=0, microsecond=0)
START = END - timedelta(days=1)
WINDOW = TimeWindow(START, END)

COVERAGE_SQL = (
    "SELECT village_id, operator, availability_pct, coverage_class, probes "
    "FROM coverage_by_village(%s, %s, 3000, 100) ORDER BY village_id, operator"
)


class TickingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def connection(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as c:
        # Nà Pài: its probe measures Viettel. Bản Xa: its probe's SIM never gave a signal
        # reading (unmeasured), but it scans. Khuổi Khon: 10 km from every probe.
        add_village(c, "Nà Pài", 106.52, 22.83, population=420)
        add_village(c, "Bản Xa", 106.60, 22.90, population=310)
        add_village(c, "Khuổi Khon", 106.70, 22.80, population=150)
        add_probe(c, "cb-measures", 106.52, 22.83)
        add_signal(c, "cb-measures", START, 288, rsrp_dbm=-85)
        add_probe(c, "cb-scans", 106.601, 22.901)
        c.commit()
        yield c


def store_scan(database_url: str, probe_id: str, at: datetime, *, first_seq: int) -> None:
    """The Viettel capture's scan, stored by the collector's writer."""
    port = ReplayedSerialPort(DATA / "at" / "scan-cops-viettel.txt")
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    readings: list[protocol.Reading] = [
        msgspec.structs.replace(reading, seq=first_seq + index)
        for index, reading in enumerate(scan_readings(result, stamp(at), at))
    ]
    batch = protocol.ReadingsBatch(v=1, probe_id=probe_id, readings=readings)
    message = InboundMessage(protocol.readings_topic(probe_id), protocol.encode(batch), at)
    store = Store(database_url)
    try:
        assert store.write([message]).stored_total == len(readings)
    finally:
        store.close()


def coverage(connection: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return connection.execute(COVERAGE_SQL, (START, END)).fetchall()


def test_scans_are_evidence_for_unmeasured_operators_and_never_coverage(
    connection: psycopg.Connection[Any], database_url: str
) -> None:
    before = analyse(connection, WINDOW)
    coverage_before = coverage(connection)
    for probe_id in ("cb-measures", "cb-scans"):
        store_scan(database_url, probe_id, START + timedelta(hours=6), first_seq=10_000)
    # A scan before the window says nothing about it.
    store_scan(database_url, "cb-scans", START - timedelta(days=3), first_seq=20_000)
    after = analyse(connection, WINDOW)

    # Coverage is exactly what it was: the one definition ignores scans.
    assert coverage(connection) == coverage_before
    for old, new in zip(before.statuses, after.statuses, strict=True):
        assert (new.status, new.operators, new.best) == (old.status, old.operators, old.best)
    by_name = {s.village.name: s for s in after.statuses}

    measured = by_name["Nà Pài"]
    assert measured.status == "good"
    assert [o.operator for o in measured.operators] == ["45204"]
    # Viettel is measured there, so only the others are scan evidence.
    assert [e.operator for e in measured.scan_evidence] == ["45201", "45202", "45205"]
    mobifone = measured.scan_evidence[0]
    assert mobifone.technologies == ("lte", "umts")
    assert mobifone.statuses == ("available",)
    assert (mobifone.probes, mobifone.nearest_probe_m) == (1, 0.0)
    assert mobifone.last_scan_at == START + timedelta(hours=6)

    scan_only = by_name["Bản Xa"]
    assert scan_only.status == "unmeasured"  # still: a scan is not a measurement
    assert scan_only.operators == ()
    assert [e.operator for e in scan_only.scan_evidence] == ["45201", "45202", "45204", "45205"]
    assert by_name["Khuổi Khon"].scan_evidence == ()

    document = measured.to_dict()
    assert [o["evidence"] for o in document["operators"]] == ["probe"]
    assert {e["evidence"] for e in document["scan_evidence"]} == {"scan"}
    assert document["scan_evidence"][0]["operator_name"] == "MobiFone"
    json.dumps(document)  # plain JSON for the API

    rows = {
        row.name: row for row in rank_uncovered(after.statuses, after.probe_by_id, include_all=True)
    }
    assert rows["Bản Xa"].status == "unmeasured"
    assert rows["Bản Xa"].uncovered_score is None
    assert rows["Bản Xa"].heard_by_scan == (
        "MobiFone (lte, umts), VinaPhone (gsm, lte, umts), Viettel (gsm, lte, umts), "
        "Vietnamobile (lte, umts)"
    )
    assert "heard_by_scan" in to_csv(list(rows.values())).splitlines()[0]

    data = MapData(WINDOW, 3000.0, after.statuses, after.probes, {}, {}, [], None, "all")
    villages = {v[2]: v for v in payload(data)["villages"]}
    assert villages["Khuổi Khon"][10] == []
    assert villages["Bản Xa"][5] == villages["Khuổi Khon"][5]  # both unmeasured, same colour
    assert villages["Bản Xa"][10][0] == ["MobiFone", "lte, umts", None, 1]


def test_the_api_lists_scan_evidence_apart_from_the_measured_operators(
    connection: psycopg.Connection[Any], database_url: str
) -> None:
    store_scan(database_url, "cb-scans", START + timedelta(hours=6), first_seq=10_000)
    store_scan(database_url, "cb-measures", START + timedelta(hours=7), first_seq=10_000)
    with TestClient(app=web.create_app(database_url)) as client:
        response = client.get("/api/villages", params={"window": "1d"})
        filtered = client.get("/api/villages", params={"window": "1d", "operator": "MobiFone"})
    assert response.status_code == 200
    villages = {f["properties"]["name"]: f["properties"] for f in response.json()["features"]}
    scan_only = villages["Bản Xa"]
    assert scan_only["status"] == "unmeasured"
    assert scan_only["operators"] == []
    assert [e["operator_name"] for e in scan_only["scan_evidence"]] == [
        "MobiFone",
        "VinaPhone",
        "Viettel",
        "Vietnamobile",
    ]
    assert {e["evidence"] for e in scan_only["scan_evidence"]} == {"scan"}
    measured = villages["Nà Pài"]
    assert [(o["operator_name"], o["evidence"]) for o in measured["operators"]] == [
        ("Viettel", "probe")
    ]
    # Filtered by an operator only a scan heard, a village stays unmeasured for it.
    by_operator = {f["properties"]["name"]: f["properties"] for f in filtered.json()["features"]}
    assert by_operator["Nà Pài"]["status"] == "unmeasured"
    assert by_operator["Nà Pài"]["availability_pct"] is None
