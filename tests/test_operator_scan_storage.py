"""Operator scan readings from the agent's parser to the collector's table, through a
real broker and a real PostgreSQL (both layouts: COVERWATCH_TEST_LAYOUT)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg

from agent.sensors.cellular import Settings
from agent.sensors.cellular.scan import scan_over_at
from agent.sensors.cellular.scan_result import ScanResult, scan_readings
from collector import schema
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.collector_harness import running_collector
from tests.helpers import publish
from tests.sensor_fakes import DATA, ReplayedSerialPort, stamp

NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class TickingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def scan_rows(database_url: str, probe_id: str, expected: int) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + 60
    rows: list[tuple[object, ...]] = []
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as connection:
            rows = connection.execute(
                "SELECT seq, scan_started_at, scan_method, networks_found, operator_code, "
                "operator_name, technology, status, cell_id, tac, rsrp_dbm, rsrq_db, modem "
                "FROM readings_operator_scan WHERE probe_id = %s ORDER BY seq",
                (probe_id,),
            ).fetchall()
        if len(rows) >= expected:
            return rows
        time.sleep(0.1)
    return rows


def test_scan_readings_are_stored_one_row_each_and_an_empty_scan_as_one_row(
    database_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    schema.upgrade(database_url)
    port = ReplayedSerialPort(DATA / "at" / "scan-quectel-qscan.txt")
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    started = NOON - timedelta(minutes=2)
    found = scan_readings(result, stamp(NOON), started, modem="mobifone")
    nothing = scan_readings(ScanResult("mmcli", ()), stamp(NOON + timedelta(days=1)), NOON)
    readings: list[protocol.Reading] = [
        msgspec.structs.replace(reading, seq=seq)
        for seq, reading in enumerate([*found, *nothing], start=1)
    ]
    batch = protocol.ReadingsBatch(v=1, probe_id=probe_id, readings=readings)
    with running_collector(database_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), protocol.encode(batch))
        publish(broker_url, protocol.readings_topic(probe_id), protocol.encode(batch))  # again
        rows = scan_rows(database_url, probe_id, len(readings))
        time.sleep(0.3)
        rows = scan_rows(database_url, probe_id, len(readings))
    assert len(rows) == len(readings) == 11  # stored once, the re-send doubled nothing
    by_pair = {(row[4], row[6]): row for row in rows[:-1]}
    tmobile = by_pair["310260", "lte"]
    assert tmobile[1:4] == (started, "qscan", 10)
    assert tmobile[5:13] == ("T-Mobile", "lte", "available", 0x2DED616, 0x2D18, -88, -8, "mobifone")
    assert by_pair["310260", "nr5g"][7:9] == ("unknown", 0x105FB012D)
    empty = rows[-1]
    assert empty[2:9] == ("mmcli", 0, None, None, None, None, None)


def test_line_noise_in_an_operator_name_costs_no_scan_row(
    database_url: str, broker_url: MqttUrl, probe_id: str, tmp_path: Path
) -> None:
    """A NUL byte of line noise in "VN Mobifone" (derived from the real Viettel capture):
    PostgreSQL refuses NUL in text, so the agent sends names without control characters
    and the operator's rows are stored, not dead-lettered."""
    schema.upgrade(database_url)
    transcript = tmp_path / "scan-cops-viettel-nul.txt"
    text = (DATA / "at" / "scan-cops-viettel.txt").read_text()
    transcript.write_text(text.replace('"VN Mobifone"', '"VN Mob\x00ifone\x07"'))
    port = ReplayedSerialPort(transcript)
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    found = scan_readings(result, stamp(NOON), NOON - timedelta(minutes=2))
    readings: list[protocol.Reading] = [
        msgspec.structs.replace(reading, seq=seq) for seq, reading in enumerate(found, start=1)
    ]
    batch = protocol.ReadingsBatch(v=1, probe_id=probe_id, readings=readings)
    with running_collector(database_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), protocol.encode(batch))
        rows = scan_rows(database_url, probe_id, len(readings))
    assert len(rows) == len(readings)
    assert "VN Mobifone" in {row[5] for row in rows}
