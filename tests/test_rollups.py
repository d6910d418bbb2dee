"""The hourly rollups on a real server, the same on both layouts (migration 007).

Every test runs on the layout ``COVERWATCH_TEST_LAYOUT`` selects. What they pin down:
reads are exact before and after the refresher has run (live aggregation of marked
hours); the collector marks exactly the hours it writes into, a month-old backlog and
the current hour included; a writer whose hour the refresher holds waits instead of
losing its mark; refreshers share the work; failures are retried.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from collector import schema, storage
from collector.metrics import IngestMetrics
from collector.rollups import RollupRefresher, pending_hours
from collector.storage import COLUMNS, InboundMessage, Store
from coverwatch import protocol
from coverwatch.localservices import AmqttBroker
from tests.collector_harness import CollectorProcess, publish_batches, wait_for_rows
from tests.conftest import refresh_rollups
from tests.helpers import BOOT_ID, reading_fields, signal


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def query(database_url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(statement.encode(), params).fetchall()


def execute(database_url: str, statement: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(statement.encode())


def store(database_url: str, probe_id: str, readings: list[dict[str, object]]) -> None:
    """Through the collector's own write path, as an MQTT batch would be stored."""
    payload = json.dumps({"v": 1, "probe_id": probe_id, "readings": readings}).encode()
    writer = Store(database_url)
    try:
        result = writer.write(
            [InboundMessage(protocol.readings_topic(probe_id), payload, datetime.now(UTC))]
        )
    finally:
        writer.close()
    assert result.stored_total == len(readings)


def latency(seq: int, taken_at: str, *, loss_pct: float, rtt_avg_ms: float) -> dict[str, object]:
    return reading_fields(
        seq,
        kind="latency",
        taken_at=taken_at,
        target="1.1.1.1",
        method="icmp",
        packets_sent=10,
        packets_received=10 - int(loss_pct / 10),
        loss_pct=loss_pct,
        rtt_avg_ms=rtt_avg_ms,
        rtt_max_ms=rtt_avg_ms * 2,
    )


def no_service(seq: int, taken_at: str) -> dict[str, object]:
    """No technology, no operator: NULLs in the rollup's unique key."""
    return reading_fields(seq, kind="signal", registration="searching", taken_at=taken_at)


def refreshes(metrics: IngestMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "coverwatch_rollup_refreshes_total", {"outcome": outcome}
    )
    return value or 0.0


def signal_rows(database_url: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT probe_id, to_char(hour AT TIME ZONE 'UTC', 'HH24:MI'), operator_code, "
        "technology, readings, registered_readings, rsrp_dbm_avg, rsrp_dbm_min, rsrp_dbm_max "
        "FROM signal_hourly ORDER BY hour, technology NULLS LAST",
    )


def latency_rows(database_url: str) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT probe_id, to_char(hour AT TIME ZONE 'UTC', 'HH24:MI'), target, rounds, "
        "loss_pct_avg, rtt_avg_ms, rtt_max_ms FROM latency_hourly ORDER BY hour",
    )


def marked(database_url: str) -> list[tuple[str, str]]:
    return [
        (str(probe), str(hour))
        for probe, hour in query(
            database_url,
            "SELECT probe_id, to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "FROM rollup_dirty ORDER BY hour, probe_id",
        )
    ]


def materialized(database_url: str) -> int:
    return int(query(database_url, "SELECT count(*) FROM signal_hourly_store")[0][0])


LTE = {"operator_code": "45204"}
FIRST_READINGS = [
    signal(1, rsrp_dbm=-100, taken_at="2026-11-22T08:05:00Z", **LTE),
    signal(2, rsrp_dbm=-110, taken_at="2026-11-22T08:40:00Z", **LTE),
    no_service(3, "2026-11-22T08:30:00Z"),
    signal(4, rsrp_dbm=-90, taken_at="2026-11-22T09:10:00Z", **LTE),
    latency(5, "2026-11-22T08:10:00Z", loss_pct=10, rtt_avg_ms=80),
    latency(6, "2026-11-22T08:50:00Z", loss_pct=30, rtt_avg_ms=120),
]
FIRST_SIGNAL_ROWS = [
    ("cb-001", "08:00", "45204", "lte", 2, 2, -105.0, -110.0, -100.0),
    ("cb-001", "08:00", None, None, 1, 0, None, None, None),
    ("cb-001", "09:00", "45204", "lte", 1, 1, -90.0, -90.0, -90.0),
]
FIRST_LATENCY_ROWS = [("cb-001", "08:00", "1.1.1.1", 2, 20.0, 100.0, 240.0)]
# Late readings for an hour already rolled up.
LATE_READINGS = [
    signal(7, rsrp_dbm=-120, taken_at="2026-11-22T08:55:00Z", **LTE),
    no_service(8, "2026-11-22T08:59:00Z"),
    latency(9, "2026-11-22T08:59:00Z", loss_pct=50, rtt_avg_ms=100),
]
ALL_SIGNAL_ROWS = [
    ("cb-001", "08:00", "45204", "lte", 3, 3, -110.0, -120.0, -100.0),
    ("cb-001", "08:00", None, None, 2, 0, None, None, None),
    ("cb-001", "09:00", "45204", "lte", 1, 1, -90.0, -90.0, -90.0),
]
ALL_LATENCY_ROWS = [("cb-001", "08:00", "1.1.1.1", 3, 30.0, 100.0, 240.0)]


def test_reads_are_exact_before_and_after_the_refresh(schema_url: str) -> None:
    store(schema_url, "cb-001", FIRST_READINGS)
    assert marked(schema_url) == [("cb-001", "2026-11-22 08:00"), ("cb-001", "2026-11-22 09:00")]
    assert materialized(schema_url) == 0
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS  # live, from the raw readings
    assert latency_rows(schema_url) == FIRST_LATENCY_ROWS
    assert refresh_rollups(schema_url) == 2
    assert (marked(schema_url), materialized(schema_url)) == ([], 3)
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS  # materialized
    assert latency_rows(schema_url) == FIRST_LATENCY_ROWS

    # A late backlog marks exactly the hour it fell into; the other stays materialized.
    store(schema_url, "cb-001", LATE_READINGS)
    assert marked(schema_url) == [("cb-001", "2026-11-22 08:00")]
    assert signal_rows(schema_url) == ALL_SIGNAL_ROWS
    assert latency_rows(schema_url) == ALL_LATENCY_ROWS
    assert refresh_rollups(schema_url) == 1
    assert signal_rows(schema_url) == ALL_SIGNAL_ROWS
    assert latency_rows(schema_url) == ALL_LATENCY_ROWS


def test_a_redelivered_batch_changes_nothing(schema_url: str) -> None:
    store(schema_url, "cb-001", FIRST_READINGS)
    refresh_rollups(schema_url)
    writer = Store(schema_url)
    try:
        payload = json.dumps({"v": 1, "probe_id": "cb-001", "readings": FIRST_READINGS}).encode()
        result = writer.write(
            [InboundMessage(protocol.readings_topic("cb-001"), payload, datetime.now(UTC))]
        )
    finally:
        writer.close()
    assert result.stored_total == 0
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS
    refresh_rollups(schema_url)
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS


def test_a_resent_batch_marks_only_the_hours_of_what_it_stored(schema_url: str) -> None:
    """The marks are computed where the batch is decoded; when the ledger drops readings
    already committed, only the hours of what was stored are marked (a re-send storm
    after a broker restart must not make the refresher redo hours nothing changed in)."""
    outbox = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"

    def write(readings: list[dict[str, object]]) -> int:
        payload = json.dumps(
            {"v": 1, "probe_id": "cb-001", "outbox_id": outbox, "readings": readings}
        ).encode()
        writer = Store(schema_url)
        try:
            message = InboundMessage(protocol.readings_topic("cb-001"), payload, datetime.now(UTC))
            return writer.write([message]).stored_total
        finally:
            writer.close()

    first = [
        signal(1, rsrp_dbm=-100, taken_at="2026-11-22T08:05:00Z", **LTE),
        signal(2, rsrp_dbm=-101, taken_at="2026-11-22T09:05:00Z", **LTE),
    ]
    assert write(first) == 2
    assert marked(schema_url) == [("cb-001", "2026-11-22 08:00"), ("cb-001", "2026-11-22 09:00")]
    refresh_rollups(schema_url)
    assert marked(schema_url) == []
    later = signal(3, rsrp_dbm=-102, taken_at="2026-11-22T10:05:00Z", **LTE)
    assert write([*first, later]) == 1
    assert marked(schema_url) == [("cb-001", "2026-11-22 10:00")]
    assert write(first) == 0
    assert marked(schema_url) == [("cb-001", "2026-11-22 10:00")]


def test_a_month_old_backlog_and_the_current_hour_are_in_the_rollups(schema_url: str) -> None:
    """The continuous aggregates of migration 002 never saw either (refresh policy from
    30 days to 1 hour ago)."""
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).replace(minute=20, second=0, microsecond=0)
    current = now.replace(second=0, microsecond=0)
    readings = [
        signal(1, rsrp_dbm=-100, taken_at=old.isoformat(), **LTE),
        signal(2, rsrp_dbm=-90, taken_at=current.isoformat(), **LTE),
    ]
    store(schema_url, "cb-001", readings)
    hours = [old.replace(minute=0), current.replace(minute=0)]
    for refreshed in (False, True):
        if refreshed:
            refresh_rollups(schema_url)
        rows = query(
            schema_url,
            "SELECT hour, readings FROM signal_hourly WHERE probe_id = 'cb-001' ORDER BY hour",
        )
        assert rows == [(hours[0], 1), (hours[1], 1)]


def test_a_writer_waits_for_a_refresh_holding_its_hour_and_keeps_its_mark(
    schema_url: str,
) -> None:
    """The refresher has aggregated an hour and not yet committed when a batch for that
    hour arrives: the writer waits for it, and its hour ends up marked again."""
    store(schema_url, "cb-001", FIRST_READINGS)
    late = [signal(7, rsrp_dbm=-120, taken_at="2026-11-22T08:55:00Z", **LTE)]
    with psycopg.connect(schema_url) as refresher:
        assert refresher.execute("SELECT coverage_refresh(10)").fetchone() == (2,)
        done = threading.Event()

        def write_late() -> None:
            store(schema_url, "cb-001", late)
            done.set()

        writer = threading.Thread(target=write_late, daemon=True)
        writer.start()
        time.sleep(1.0)
        assert not done.is_set(), "the writer did not wait for the refresher's mark"
        refresher.commit()
    writer.join(20)
    assert done.is_set()
    assert marked(schema_url) == [("cb-001", "2026-11-22 08:00")]
    assert query(schema_url, "SELECT sum(readings)::int FROM signal_hourly") == [(5,)]
    refresh_rollups(schema_url)
    assert query(schema_url, "SELECT sum(readings)::int FROM signal_hourly") == [(5,)]


def test_a_refresh_skips_an_hour_a_writer_is_still_writing(schema_url: str) -> None:
    """A writer has marked its hour and not committed when the refresher runs: the
    refresher must leave that hour (its aggregate cannot see the uncommitted reading)
    rather than take the mark away. (With ON CONFLICT DO NOTHING the writer would not
    hold the existing mark, the refresher would clear it, and the reading would be in
    no rollup once committed.)"""
    store(schema_url, "cb-001", FIRST_READINGS)
    taken_at = datetime(2026, 11, 22, 8, 55, tzinfo=UTC)
    with psycopg.connect(schema_url) as writer:
        writer.execute(
            "INSERT INTO readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms, "
            "ntp_synced, registration, technology, operator_code, rsrp_dbm) VALUES "
            "('cb-001', 99, %s, %s, 0, true, 'home', 'lte', '45204', -120)",
            (BOOT_ID, taken_at),
        )
        row: list[Any] = [None] * (1 + len(COLUMNS["signal"]))
        row[0], row[1 + COLUMNS["signal"].index("taken_at")] = "cb-001", taken_at
        storage._mark_rollup_hours(writer, storage.rollup_hours({"signal": [tuple(row)]}))
        with psycopg.connect(schema_url, autocommit=True) as refresher:
            refresher.execute("SET lock_timeout = '5s'")
            assert refresher.execute("SELECT coverage_refresh(10)").fetchone() == (1,)
        writer.commit()
    assert marked(schema_url) == [("cb-001", "2026-11-22 08:00")]
    assert query(schema_url, "SELECT sum(readings)::int FROM signal_hourly") == [(5,)]
    refresh_rollups(schema_url)
    assert query(schema_url, "SELECT sum(readings)::int FROM signal_hourly") == [(5,)]


def test_refreshers_share_the_work_without_waiting(schema_url: str) -> None:
    readings = [
        signal(n, rsrp_dbm=-100, taken_at=f"2026-11-22T{n:02d}:05:00Z", **LTE) for n in range(10)
    ]
    store(schema_url, "cb-001", readings)
    with psycopg.connect(schema_url) as first:
        assert first.execute("SELECT coverage_refresh(4)").fetchone() == (4,)
        with psycopg.connect(schema_url, autocommit=True) as second:
            second.execute("SET lock_timeout = '2s'")
            assert second.execute("SELECT coverage_refresh(100)").fetchone() == (6,)
        first.commit()
    assert marked(schema_url) == []
    assert query(schema_url, "SELECT count(*)::int FROM signal_hourly_store") == [(10,)]


def test_a_failing_refresh_is_logged_and_retried_while_the_thread_lives_on(
    schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = IngestMetrics()
    refresher = RollupRefresher(schema_url, 0.1, metrics)
    store(schema_url, "cb-001", FIRST_READINGS)
    execute(schema_url, "ALTER TABLE signal_hourly_store RENAME TO signal_hourly_store_away")

    def wait_until(condition: Any) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    refresher.start()
    try:
        wait_until(lambda: refreshes(metrics, "failed") >= 2)
        assert refresher.is_running()
        assert len(marked(schema_url)) == 2  # nothing half-done: the marks stay
        execute(schema_url, "ALTER TABLE signal_hourly_store_away RENAME TO signal_hourly_store")
        wait_until(lambda: refreshes(metrics, "ok") >= 1)
    finally:
        refresher.stop()
    assert not refresher.is_running()
    assert marked(schema_url) == []
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS
    assert metrics.registry.get_sample_value(
        "coverwatch_rollup_last_refresh_timestamp_seconds"
    ) == pytest.approx(time.time(), abs=60)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        message.startswith("cannot refresh the rollups (relation")
        and message.endswith("trying again in 0.1s")
        for message in warnings
    ), warnings


def test_collector_run_refreshes_the_rollups(
    schema_url: str, amqtt_broker: AmqttBroker, probe_id: str, tmp_path: Path
) -> None:
    collector = CollectorProcess(
        schema_url,
        amqtt_broker.url,
        tmp_path / "collector.log",
        client_id=f"r-{probe_id}",
        extra=["--rollup-refresh-s", "0.3"],
    )
    collector.start()
    try:
        published = publish_batches(amqtt_broker.url, probe_id, 3, 10)
        assert wait_for_rows(schema_url, probe_id, published) == (published, published)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with psycopg.connect(schema_url) as connection:
                if pending_hours(connection) == 0:
                    break
            time.sleep(0.1)
    finally:
        assert collector.stop() == 0
    rows = query(
        schema_url,
        "SELECT sum(readings)::int FROM signal_hourly_store WHERE probe_id = %s",
        probe_id,
    )
    assert rows == [(published,)]
    log = (tmp_path / "collector.log").read_text()
    assert "rollups=every 0.3s" in log


def test_a_kit_without_service_counts_for_each_modems_sim(schema_url: str) -> None:
    """Migration 008: a multi-modem kit's readings keep their modem and SIM network, and a
    reading without service counts for the SIM's network, before and after the refresh."""
    kit = [
        signal(1, rsrp_dbm=-90, modem="viettel", sim_operator_code="45204", **LTE),
        reading_fields(
            2, kind="signal", registration="searching", modem="mobifone", sim_operator_code="45201"
        ),
        signal(3, rsrp_dbm=-100, modem="vinaphone", operator_code="45202"),
        no_service(4, "2026-11-22T08:20:00Z"),  # an old probe's: no modem, no SIM code
    ]
    store(schema_url, "cb-017", kit)
    assert query(
        schema_url,
        "SELECT seq, modem, sim_operator_code, operator_code FROM readings_signal ORDER BY seq",
    ) == [
        (1, "viettel", "45204", "45204"),
        (2, "mobifone", "45201", None),
        (3, "vinaphone", None, "45202"),
        (4, None, None, None),
    ]
    coverage = (
        "SELECT operator, readings, unregistered_readings FROM coverage_by_probe("
        "'2026-11-22T08:00:00Z', '2026-11-22T09:00:00Z') WHERE technology = 'all' "
        "ORDER BY operator"
    )
    # The old probe's reading goes to the probe's own SIM operator as before (none is
    # registered for cb-017: 'unknown').
    expected = [("45201", 1, 1), ("45202", 1, 0), ("45204", 1, 0), ("unknown", 1, 1)]
    assert query(schema_url, coverage) == expected
    refresh_rollups(schema_url)
    assert materialized(schema_url) == 4
    assert query(schema_url, coverage) == expected
