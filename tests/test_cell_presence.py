"""cell_presence() (migration 012) never claims a tower outage (off_air) for a cell that is
on the air: a serving cell reported once by its id alone, and a kit whose modem for one
operator died while another modem goes on. Real broker, real PostgreSQL, seeded the way
tests/test_collector_cells.py seeds them (both found by a review of #13)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from collector import schema
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.collector_harness import running_collector
from tests.helpers import publish, reading_fields

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _at(seq: int, taken_at: datetime, **fields: object) -> dict[str, object]:
    return {**reading_fields(seq, **fields), "taken_at": taken_at.isoformat()}


def _presence(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "SELECT operator_code, technology, channel, pci, cell_id, presence "
            "FROM cell_presence(%s, INTERVAL '1 hour', INTERVAL '1 day')",
            (AT,),
        ).fetchall()


def test_a_serving_cell_seen_every_round_is_never_off_air(
    database_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    """The cells round falls back on the round's own serving cell (cell id, no channel or
    pci: cells.serving_cell_of) whenever listing the cells fails, e.g. an AT+QENG reply
    cut short. The same cell, listed with its channel and pci when the listing works, is
    then two cells to cell_presence(), and the fallback's key turns off_air while the
    probe sees that very cell (same cell id) every round."""
    schema.upgrade(database_url)
    serving = {"kind": "cell", "serving": True, "technology": "lte", "operator_code": "45204"}
    readings: list[dict[str, object]] = []
    # Three hours ago, one cells round where AT+QENG failed: the fallback serving cell.
    readings.append(_at(1, AT - timedelta(hours=3), **serving, cell_id=7000, rsrp_dbm=-95.0))
    # Every 15 minutes since: the listing works, the same cell with its channel and pci.
    for n in range(12):
        taken_at = AT - timedelta(hours=3) + timedelta(minutes=15 * (n + 1))
        readings.append(
            _at(
                len(readings) + 1,
                taken_at,
                **serving,
                cell_id=7000,
                channel=1650,
                pci=100,
                rsrp_dbm=-95.0,
            )
        )
        readings.append(
            _at(len(readings) + 1, taken_at, kind="signal", registration="home", cell_id=7000)
        )
    batch = {"v": 1, "probe_id": probe_id, "readings": readings}
    with running_collector(database_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), json.dumps(batch).encode())
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored < len(readings):
            time.sleep(0.2)
            with psycopg.connect(database_url) as connection:
                row = connection.execute(
                    "SELECT (SELECT count(*) FROM readings_cell WHERE probe_id = %s) + "
                    "(SELECT count(*) FROM readings_signal WHERE probe_id = %s)",
                    (probe_id, probe_id),
                ).fetchone()
                stored = int(row[0]) if row else 0
    assert stored == len(readings)
    off_air = [row for row in _presence(database_url) if row[5] == "off_air"]
    assert off_air == [], f"cell 7000 is on the air and seen every round: {off_air}"


def _publish_and_wait(
    database_url: str, broker_url: MqttUrl, probe_id: str, readings: list[dict[str, object]]
) -> None:
    batch = {"v": 1, "probe_id": probe_id, "readings": readings}
    with running_collector(database_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), json.dumps(batch).encode())
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored < len(readings):
            time.sleep(0.2)
            with psycopg.connect(database_url) as connection:
                row = connection.execute(
                    "SELECT (SELECT count(*) FROM readings_cell WHERE probe_id = %s) + "
                    "(SELECT count(*) FROM readings_signal WHERE probe_id = %s) + "
                    "(SELECT count(*) FROM readings_sensor_error WHERE probe_id = %s)",
                    (probe_id, probe_id, probe_id),
                ).fetchone()
                stored = int(row[0]) if row else 0
    assert stored == len(readings)


def test_a_dead_modem_of_a_kit_is_no_tower_outage_of_its_operator(
    database_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    """A three-modem kit (item 1): the Viettel modem stops answering (sensor_error
    readings, no signal readings) while the MobiFone modem of the same probe keeps
    measuring. cell_presence() counts the probe as a watcher that kept reporting, so the
    Viettel cell, which nobody can see any more, is called off_air: a tower outage."""
    schema.upgrade(database_url)
    viettel = {"technology": "lte", "operator_code": "45204", "channel": 1650, "pci": 100}
    mobifone = {"technology": "lte", "operator_code": "45201", "channel": 3000, "pci": 300}
    readings: list[dict[str, object]] = []

    def add(taken_at: datetime, **fields: object) -> None:
        readings.append(_at(len(readings) + 1, taken_at, **fields))

    for hours in (20, 8, 3, 2):
        taken_at = AT - timedelta(hours=hours)
        add(taken_at, kind="cell", serving=True, modem="viettel", rsrp_dbm=-90.0, **viettel)
        add(taken_at, kind="signal", registration="home", modem="viettel")
        add(taken_at, kind="cell", serving=True, modem="mobifone", rsrp_dbm=-92.0, **mobifone)
        add(taken_at, kind="signal", registration="home", modem="mobifone")
    for minutes in (45, 30, 15, 1):
        taken_at = AT - timedelta(minutes=minutes)
        add(
            taken_at,
            kind="sensor_error",
            sensor="cellular.viettel",
            error="the modem on /dev/serial/by-id/usb-Quectel_EC25 does not answer AT",
        )
        add(taken_at, kind="cell", serving=True, modem="mobifone", rsrp_dbm=-92.0, **mobifone)
        add(taken_at, kind="signal", registration="home", modem="mobifone")
    _publish_and_wait(database_url, broker_url, probe_id, readings)
    judged = {(row[0], row[5]) for row in _presence(database_url)}
    assert ("45204", "off_air") not in judged, (
        f"no Viettel watcher is measuring, yet its cell is called a tower outage: {judged}"
    )
