"""Cells at the collector: ``cell`` readings through a real broker into ``readings_cell``
(migration 012), and ``cell_presence()`` telling a tower outage from a power cut on
seeded readings. Real broker, real PostgreSQL, on the layout the run selects."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from collector import schema
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.collector_harness import running_collector
from tests.conftest import Layout
from tests.helpers import publish, reading_fields

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def query(database_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(sql.encode(), params).fetchall()


def cell(seq: int, taken_at: datetime, **fields: object) -> dict[str, object]:
    return {
        **reading_fields(seq, kind="cell", **fields),
        "taken_at": taken_at.isoformat().replace("+00:00", "Z"),
    }


def signal(seq: int, taken_at: datetime, **fields: object) -> dict[str, object]:
    return {
        **reading_fields(seq, **{"kind": "signal", "registration": "searching", **fields}),
        "taken_at": taken_at.isoformat().replace("+00:00", "Z"),
    }


def publish_readings(url: MqttUrl, probe_id: str, readings: list[dict[str, object]]) -> None:
    batch = {"v": 1, "probe_id": probe_id, "readings": readings}
    publish(url, protocol.readings_topic(probe_id), json.dumps(batch).encode())


def wait_for(database_url: str, sql: str, expected: int, *params: object) -> int:
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:
        count = int(query(database_url, sql, *params)[0][0])
        if count >= expected:
            return count
        time.sleep(0.1)
    return count


def test_cell_readings_are_stored_with_every_field(
    schema_url: str, broker_url: MqttUrl, probe_id: str, storage_layout: Layout
) -> None:
    serving = cell(
        1,
        AT,
        serving=True,
        technology="lte",
        operator_code="45204",
        cell_id=124217865,
        tac=1539,
        pci=188,
        channel=6300,
        rsrp_dbm=-104.0,
        rsrq_db=-9.0,
        sinr_db=11.0,
        rssi_dbm=-78.0,
        modem="viettel",
    )
    neighbour = cell(
        2, AT, serving=False, technology="umts", pci=302, channel=10713, rscp_dbm=-97.0,
        ecio_db=-9.0,
    )  # fmt: skip
    bad = cell(3, AT, serving=False, technology="lte", pci=5000, channel=6300)
    with running_collector(schema_url, broker_url):
        publish_readings(broker_url, probe_id, [serving, neighbour, bad])
        rows = "SELECT count(*) FROM readings_cell WHERE probe_id = %s"
        assert wait_for(schema_url, rows, 2, probe_id) == 2
        letters = "SELECT count(*) FROM dead_letters WHERE probe_id = %s"
        assert wait_for(schema_url, letters, 1, probe_id) == 1
    stored = query(
        schema_url,
        "SELECT seq, serving, technology, operator_code, cell_id, tac, pci, channel, rsrp_dbm, "
        "rsrq_db, sinr_db, rssi_dbm, rscp_dbm, ecio_db, modem FROM readings_cell "
        "WHERE probe_id = %s ORDER BY seq",
        probe_id,
    )
    assert stored == [
        (1, True, "lte", "45204", 124217865, 1539, 188, 6300, -104, -9, 11, -78, None, None,
         "viettel"),
        (2, False, "umts", None, None, None, 302, 10713, None, None, None, None, -97, -9, None),
    ]  # fmt: skip
    reason = query(
        schema_url, "SELECT field, reason FROM dead_letters WHERE probe_id = %s", probe_id
    )
    assert reason == [("readings[2].pci", "expected integer between 0 and 1007, got 5000")]
    if storage_layout == "timescale":
        hypertables = query(
            schema_url,
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'readings_cell'",
        )
        assert hypertables == [("readings_cell",)]


def test_cell_presence_tells_a_tower_outage_from_a_power_cut(
    schema_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    """Four villages' probes over a day, asked about the last hour at AT:

    * village A: probes a1 and a2 saw tower A (LTE 1650/100) all day; in the last hour
      they kept measuring (signal readings: searching) but no longer see it: off_air;
    * village B: probe b1 saw tower B (LTE 1650/200) until the power went out an hour
      ago; it has sent nothing since: unheard, nothing said about the tower;
    * village C: probe c1 still sees tower C (LTE 3000/300, as a neighbour with no cell
      id, named by the id its serving-cell reports gave it) and a GSM cell it knows only
      by cell id: both on_air;
    * a cell seen for the first time in the last hour has no watchers: not judged, nor is
      a neighbour c1 heard in only one of its four rounds before.
    """
    a1, a2, b1, c1 = (f"{probe_id}-{name}" for name in ("a1", "a2", "b1", "c1"))
    tower_a = {"technology": "lte", "operator_code": "45204", "channel": 1650, "pci": 100}
    tower_b = {"technology": "lte", "operator_code": "45204", "channel": 1650, "pci": 200}
    tower_c = {"technology": "lte", "operator_code": "45201", "channel": 3000, "pci": 300}
    cell_ids = {100: 7001, 200: 7002, 300: 7003}
    gsm_d = {"technology": "gsm", "operator_code": "45202", "cell_id": 4660, "tac": 10997}
    history = [AT - timedelta(hours=h) for h in (20, 8, 3, 2)]
    last_hour = [AT - timedelta(minutes=m) for m in (45, 30, 15, 1)]

    def day(serving: dict[str, object], *, then: list[datetime], sees: bool) -> list[Any]:
        readings: list[dict[str, object]] = []
        for taken_at in history:
            readings.append(
                cell(
                    len(readings) + 1,
                    taken_at,
                    serving=True,
                    cell_id=cell_ids[int(str(serving["pci"]))],
                    **serving,
                )
            )
            readings.append(signal(len(readings) + 1, taken_at, registration="home"))
        for taken_at in then:
            if sees:
                readings.append(
                    cell(len(readings) + 1, taken_at, serving=False, rsrp_dbm=-99.0, **serving)
                )
            readings.append(signal(len(readings) + 1, taken_at))
        return readings

    c1_readings = day(tower_c, then=last_hour, sees=True)
    c1_readings += [
        *(cell(100 + n, taken_at, serving=False, rssi_dbm=-85.0, **gsm_d)
          for n, taken_at in enumerate(history)),
        cell(110, last_hour[2], serving=False, rssi_dbm=-88.0, **gsm_d),
        cell(111, last_hour[3], serving=False, technology="lte", operator_code="45201",
             channel=9, pci=9, rsrp_dbm=-110.0),
        # Heard in one round of four before the window, not since: no watcher.
        cell(112, history[1], serving=False, technology="lte", operator_code="45201",
             channel=3000, pci=301, rsrp_dbm=-121.0),
    ]  # fmt: skip
    batches = {
        a1: day(tower_a, then=last_hour, sees=False),
        a2: day(tower_a, then=last_hour[1:], sees=False),
        b1: day(tower_b, then=[], sees=False),
        c1: c1_readings,
    }
    with running_collector(schema_url, broker_url):
        for probe, readings in batches.items():
            publish_readings(broker_url, probe, readings)
        total = (
            "SELECT (SELECT count(*) FROM readings_cell WHERE probe_id LIKE %s) "
            "+ (SELECT count(*) FROM readings_signal WHERE probe_id LIKE %s)"
        )
        like = f"{probe_id}-%"
        expected = sum(len(readings) for readings in batches.values())
        assert wait_for(schema_url, total, expected, like, like) == expected
    presence = {
        (row[0], row[2], row[3], row[4]): row[5:]
        for row in query(
            schema_url,
            "SELECT operator_code, technology, channel, pci, cell_id, watchers, "
            "watchers_reporting, watchers_seeing, presence "
            "FROM cell_presence(%s, INTERVAL '1 hour', INTERVAL '1 day')",
            AT,
        )
    }
    assert presence[("45204", 1650, 100, 7001)] == (2, 2, 0, "off_air")
    assert presence[("45204", 1650, 200, 7002)] == (1, 0, 0, "unheard")
    assert presence[("45201", 3000, 300, 7003)] == (1, 1, 1, "on_air")
    assert presence[("45202", None, None, 4660)] == (1, 1, 1, "on_air")
    # The cell first seen in the last hour has no watchers yet, and the neighbour heard
    # once has none: neither is judged.
    assert ("45201", 9, 9, None) not in presence
    assert ("45201", 3000, 301, None) not in presence
    assert len(presence) == 4
    # Asked before the outage, tower A was on the air.
    before = query(
        schema_url,
        "SELECT presence FROM cell_presence(%s, INTERVAL '1 hour', INTERVAL '1 day') "
        "WHERE operator_code = '45204' AND pci = 100",
        AT - timedelta(hours=2) + timedelta(minutes=1),
    )
    assert before == [("on_air",)]


def test_both_layouts_create_the_same_table_and_function() -> None:
    """The TimescaleDB variant is the plain one plus the hypertable: they cannot drift."""
    plain, timescale = (
        next(m for m in schema.migrations_for(layout) if m.version == 12).sql
        for layout in ("plain", "timescale")
    )
    assert timescale.startswith(plain)
    assert "create_hypertable('readings_cell'" in timescale[len(plain) :]
