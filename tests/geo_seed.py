"""Seeding the real coverwatch tables for geo tests (plain INSERTs, no mocks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.helpers import BOOT_ID


def add_probe(
    connection: psycopg.Connection[Any],
    probe_id: str,
    lon: float | None,
    lat: float | None,
    *,
    operator: str = "Viettel",
    village: str | None = None,
    report_interval_s: int = 300,
) -> None:
    connection.execute(
        """INSERT INTO probes (probe_id, village, lon, lat, operator, report_interval_s)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (probe_id, village, lon, lat, operator, report_interval_s),
    )


def add_signal(
    connection: psycopg.Connection[Any],
    probe_id: str,
    start: datetime,
    count: int,
    *,
    seq0: int = 0,
    step: timedelta = timedelta(minutes=5),
    registration: str = "home",
    technology: str | None = "lte",
    operator_code: str | None = "45204",
    rsrp_dbm: float | None = None,
    rscp_dbm: float | None = None,
    rssi_dbm: float | None = None,
    cell_id: int | None = None,
    tac: int | None = None,
    modem: str | None = None,
) -> None:
    """``count`` signal readings every ``step`` from ``start`` (one INSERT … SELECT)."""
    connection.execute(
        """INSERT INTO readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms,
                                        ntp_synced, registration, technology, operator_code,
                                        rsrp_dbm, rscp_dbm, rssi_dbm, cell_id, tac, modem)
           SELECT %(probe)s, %(seq0)s + s, %(boot)s, %(start)s + s * %(step)s, s * 1000, true,
                  %(registration)s, %(technology)s, %(operator_code)s,
                  %(rsrp)s, %(rscp)s, %(rssi)s, %(cell_id)s, %(tac)s, %(modem)s
           FROM generate_series(0, %(count)s - 1) AS s""",
        {
            "probe": probe_id,
            "seq0": seq0,
            "boot": BOOT_ID,
            "start": start,
            "step": step,
            "count": count,
            "registration": registration,
            "technology": technology,
            "operator_code": operator_code,
            "rsrp": rsrp_dbm,
            "rscp": rscp_dbm,
            "rssi": rssi_dbm,
            "cell_id": cell_id,
            "tac": tac,
            "modem": modem,
        },
    )
    # Written past the collector: mark the hours for the rollups, as a bulk load must.
    connection.execute(
        "SELECT coverage_invalidate(%s, %s)", (start, start + count * step + timedelta(hours=1))
    )


def add_latency(
    connection: psycopg.Connection[Any],
    probe_id: str,
    taken_at: datetime,
    seq: int,
    *,
    sent: int,
    received: int,
    rtt_median_ms: float | None,
) -> None:
    connection.execute(
        """INSERT INTO readings_latency (probe_id, seq, boot_id, taken_at, monotonic_ms,
               ntp_synced, target, method, packets_sent, packets_received, loss_pct,
               rtt_median_ms)
           VALUES (%s, %s, %s, %s, 0, true, '1.1.1.1', 'icmp', %s, %s, %s, %s)""",
        (
            probe_id,
            seq,
            BOOT_ID,
            taken_at,
            sent,
            received,
            100.0 * (sent - received) / sent,
            rtt_median_ms,
        ),
    )
    connection.execute(
        "SELECT coverage_invalidate(%s, %s)", (taken_at, taken_at + timedelta(seconds=1))
    )


def add_outage(
    connection: psycopg.Connection[Any],
    probe_id: str,
    started: datetime,
    ended: datetime,
    seq: int,
) -> None:
    connection.execute(
        """INSERT INTO readings_outage (probe_id, seq, boot_id, taken_at, monotonic_ms,
               ntp_synced, previous_boot_id, outage_started_at, outage_ended_at,
               outage_duration_s)
           VALUES (%s, %s, %s, %s, 0, true, %s, %s, %s, %s)""",
        (
            probe_id,
            seq,
            BOOT_ID,
            ended,
            "00000000-0000-4000-8000-000000000000",
            started,
            ended,
            (ended - started).total_seconds(),
        ),
    )


def add_village(
    connection: psycopg.Connection[Any],
    name: str,
    lon: float,
    lat: float,
    *,
    population: int | None,
    commune: str = "Quang Trung",
    district: str = "Trùng Khánh",
    province: str = "Cao Bằng",
    grid_power: str = "unknown",
) -> None:
    connection.execute(
        """INSERT INTO villages (name, commune, district, province, lon, lat, population,
                                 grid_power)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (name, commune, district, province, lon, lat, population, grid_power),
    )


def add_probe_status(
    connection: psycopg.Connection[Any],
    probe_id: str,
    state: str,
    last_seen: datetime | None,
) -> None:
    """The collector's view of a probe (the probe_health view reads it)."""
    connection.execute(
        """INSERT INTO probe_status (probe_id, state, state_changed_at, last_seen)
           VALUES (%s, %s, %s, %s)""",
        (probe_id, state, last_seen, last_seen),
    )


def add_boundary(
    connection: psycopg.Connection[Any],
    level: str,
    name: str,
    box: tuple[float, float, float, float],
    *,
    parent: str = "",
) -> None:
    """A rectangular boundary (min lon, min lat, max lon, max lat)."""
    min_lon, min_lat, max_lon, max_lat = box
    ring = [[min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat], [min_lon, max_lat]]
    geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    connection.execute(
        """INSERT INTO boundaries (level, name, parent, geometry, min_lon, min_lat,
                                   max_lon, max_lat)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (level, name, parent, Jsonb(geometry), *box),
    )
