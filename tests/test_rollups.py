"""The hourly rollups on a real server: the collector refreshes them on plain PostgreSQL,
and leaves them to TimescaleDB (continuous aggregates) on the TimescaleDB layout.

Tests about the collector's REFRESH MATERIALIZED VIEW are pinned to the plain layout;
the rest run on the layout ``COVERWATCH_TEST_LAYOUT`` selects.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from collector import schema
from collector.metrics import IngestMetrics
from collector.rollups import LOCK_KEYS, VIEWS, RollupRefresher
from collector.storage import InboundMessage, Store
from coverwatch import protocol
from coverwatch.localservices import AmqttBroker
from tests.collector_harness import CollectorProcess, publish_batches, wait_for_rows
from tests.conftest import Layout, refresh_rollups
from tests.helpers import reading_fields, signal

# The collector's refresher only refreshes materialized views of the plain layout.
PLAIN_ONLY = pytest.mark.layout(
    "plain", reason="the collector refreshes materialized views on plain PostgreSQL only"
)


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


def populated(database_url: str) -> dict[str, bool]:
    rows = query(
        database_url,
        "SELECT relname, relispopulated FROM pg_class WHERE relname = ANY(%s)",
        list(VIEWS),
    )
    return {str(name): bool(flag) for name, flag in rows}


def refreshes(metrics: IngestMetrics, view: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "coverwatch_rollup_refreshes_total", {"view": view, "outcome": outcome}
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


def test_the_rollups_aggregate_alike_on_every_layout(schema_url: str) -> None:
    """Materialized views and continuous aggregates give the same rows, late data too."""
    store(schema_url, "cb-001", FIRST_READINGS)
    refresh_rollups(schema_url)
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS
    assert latency_rows(schema_url) == FIRST_LATENCY_ROWS
    store(schema_url, "cb-001", LATE_READINGS)
    refresh_rollups(schema_url)
    assert signal_rows(schema_url) == ALL_SIGNAL_ROWS
    assert latency_rows(schema_url) == ALL_LATENCY_ROWS


@PLAIN_ONLY
def test_first_fill_then_concurrent_refresh_with_right_aggregates(schema_url: str) -> None:
    store(schema_url, "cb-001", FIRST_READINGS)
    metrics = IngestMetrics()
    refresher = RollupRefresher(schema_url, 300, metrics)
    assert populated(schema_url) == dict.fromkeys(VIEWS, False)

    assert refresher.refresh_once() == "refreshed"
    assert signal_rows(schema_url) == FIRST_SIGNAL_ROWS
    assert latency_rows(schema_url) == FIRST_LATENCY_ROWS

    store(schema_url, "cb-001", LATE_READINGS)
    # A dashboard reads the views in an open transaction. CONCURRENTLY does not wait for
    # it; a plain REFRESH (ACCESS EXCLUSIVE) would block until the reader finished.
    with psycopg.connect(schema_url) as reader:
        for view in VIEWS:
            reader.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view)))
        outcome: list[str] = []
        second = threading.Thread(target=lambda: outcome.append(refresher.refresh_once()))
        second.start()
        second.join(20)
        assert outcome == ["refreshed"], "the second refresh waited for a reader"
    assert signal_rows(schema_url) == ALL_SIGNAL_ROWS
    assert latency_rows(schema_url) == ALL_LATENCY_ROWS
    for view in VIEWS:
        assert refreshes(metrics, view, "ok") == 2
        assert metrics.registry.get_sample_value(
            "coverwatch_rollup_last_refresh_timestamp_seconds", {"view": view}
        ) == pytest.approx(time.time(), abs=60)


@PLAIN_ONLY
def test_a_round_another_collector_is_doing_is_skipped(schema_url: str) -> None:
    metrics = IngestMetrics()
    refresher = RollupRefresher(schema_url, 300, metrics)
    with psycopg.connect(schema_url, autocommit=True) as other_collector:
        other_collector.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEYS)
        assert refresher.refresh_once() == "skipped"
        assert populated(schema_url) == dict.fromkeys(VIEWS, False)
    assert refresher.refresh_once() == "refreshed"
    assert populated(schema_url) == dict.fromkeys(VIEWS, True)
    assert refreshes(metrics, "signal_hourly", "skipped") == 1


@PLAIN_ONLY
def test_a_failing_refresh_is_logged_and_retried_while_the_thread_lives_on(
    schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = IngestMetrics()
    refresher = RollupRefresher(schema_url, 0.1, metrics)
    assert refresher.refresh_once() == "refreshed"
    # Without its unique index, signal_hourly cannot be refreshed concurrently.
    execute(schema_url, "DROP INDEX signal_hourly_key")

    def wait_until(condition: Any) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    refresher.start()
    try:
        wait_until(lambda: refreshes(metrics, "signal_hourly", "failed") >= 2)
        assert refresher.is_running()
        assert refreshes(metrics, "latency_hourly", "ok") >= 2  # the other view goes on
        execute(
            schema_url,
            "CREATE UNIQUE INDEX signal_hourly_key ON signal_hourly "
            "(probe_id, hour, operator_code, technology) NULLS NOT DISTINCT",
        )
        ok_before = refreshes(metrics, "signal_hourly", "ok")
        wait_until(lambda: refreshes(metrics, "signal_hourly", "ok") > ok_before)
    finally:
        refresher.stop()
    assert not refresher.is_running()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        message.startswith("cannot refresh signal_hourly (cannot refresh materialized view")
        and message.endswith("trying again in 0.1s")
        for message in warnings
    ), warnings


def test_on_timescaledb_the_collector_leaves_the_rollups_alone(
    schema_url: str, storage_layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    # The storage kind is what schema.upgrade recorded. On the timescale layout it is
    # real; on the plain one, recording it is enough to check that the collector then
    # keeps its hands off (and shows it: the materialized views stay unpopulated).
    if storage_layout == "plain":
        execute(schema_url, "UPDATE schema_migrations SET storage = 'timescale'")
    caplog.set_level("INFO", logger="coverwatch.collector")
    metrics = IngestMetrics()
    refresher = RollupRefresher(schema_url, 0.05, metrics)
    refresher.start()
    deadline = time.monotonic() + 20
    while refresher.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not refresher.is_running(), "the refresher should end by itself on TimescaleDB"
    if storage_layout == "plain":
        assert populated(schema_url) == dict.fromkeys(VIEWS, False)
    for view in VIEWS:
        for outcome in ("ok", "failed", "skipped"):
            assert refreshes(metrics, view, outcome) == 0
    assert any("continuous aggregates" in r.getMessage() for r in caplog.records)


def test_collector_run_refreshes_the_rollups(
    schema_url: str,
    storage_layout: Layout,
    amqtt_broker: AmqttBroker,
    probe_id: str,
    tmp_path: Path,
) -> None:
    """Plain: the collector's refresher fills the views. TimescaleDB: the collector leaves
    the continuous aggregates alone, and a refresh of them sees what it stored."""
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
        rows: list[tuple[Any, ...]] = []
        if storage_layout == "timescale":
            assert wait_for_rows(schema_url, probe_id, published) == (published, published)
            # Not the background job's timing (README of ../shared/timescaledb).
            refresh_rollups(schema_url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and rows != [(published,)]:
            if storage_layout == "timescale" or populated(schema_url)["signal_hourly"]:
                rows = query(
                    schema_url,
                    "SELECT sum(readings)::int FROM signal_hourly WHERE probe_id = %s",
                    probe_id,
                )
            time.sleep(0.1)
    finally:
        assert collector.stop() == 0
    assert rows == [(published,)]
    log = (tmp_path / "collector.log").read_text()
    assert "rollups=every 0.3s" in log
    if storage_layout == "plain":
        assert "refreshed signal_hourly (first fill)" in log
    else:
        assert "rollups are TimescaleDB continuous aggregates" in log
        assert "refreshed signal_hourly" not in log
