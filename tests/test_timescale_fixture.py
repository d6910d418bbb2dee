"""The TimescaleDB fixtures are real: the extension is there and `db upgrade` uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

# The hypertables migrations 002 and 012 (TimescaleDB variants) make. Its continuous aggregates are
# dropped by migration 007: the rollups are the same tables and views on both layouts.
HYPERTABLES = {
    "readings_signal",
    "readings_latency",
    "readings_power",
    "readings_outage",
    "readings_throughput",
    "readings_system",
    "readings_sensor_error",
    # migration 011's TimescaleDB variant
    "readings_operator_scan",
    "readings_cell",  # migration 012
}


def db_upgrade(url: str) -> subprocess.CompletedProcess[str]:
    """The real `coverwatch db upgrade`, as an operator runs it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "coverwatch"), "db", "upgrade", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )


def test_the_timescale_database_has_the_extension(timescale_database_url: str) -> None:
    with psycopg.connect(timescale_database_url) as connection:
        version = connection.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        preload = connection.execute("SHOW shared_preload_libraries").fetchone()
    assert version is not None, "CREATE EXTENSION timescaledb was not done"
    assert version[0].split(".")[0] == "2"
    assert preload is not None
    assert "timescaledb" in preload[0]


def test_db_upgrade_chooses_timescale_and_makes_hypertables(timescale_database_url: str) -> None:
    result = db_upgrade(timescale_database_url)
    assert result.returncode == 0, result.stderr
    assert "schema upgraded (timescale)" in result.stdout
    with psycopg.connect(timescale_database_url) as connection:
        storages = connection.execute("SELECT DISTINCT storage FROM schema_migrations").fetchall()
        hypertables = {
            row[0]
            for row in connection.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            )
        }
        aggregates = connection.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
        jobs = {
            row[0]
            for row in connection.execute("SELECT proc_name FROM timescaledb_information.jobs")
        }
        rollups = connection.execute(
            "SELECT count(*) FROM pg_views WHERE viewname IN "
            "('signal_hourly', 'latency_hourly', 'probe_hourly')"
        ).fetchone()
    assert storages == [("timescale",)]
    assert hypertables >= HYPERTABLES
    # No coverage figure waits for TimescaleDB's scheduler: no aggregate, no refresh job.
    assert aggregates == []
    assert "policy_refresh_continuous_aggregate" not in jobs
    assert {"policy_compression", "policy_retention"} <= jobs
    assert rollups == (3,)
    again = db_upgrade(timescale_database_url)
    assert again.returncode == 0, again.stderr
    assert "applied none (up to date)" in again.stdout


def test_layout_database_url_gives_each_layout(
    layout_database_url: str, request: pytest.FixtureRequest
) -> None:
    """Each parameter is a fresh database on which `db upgrade` picks that layout."""
    layout = request.node.callspec.params["layout_database_url"]
    with psycopg.connect(layout_database_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)  # fresh
    result = db_upgrade(layout_database_url)
    assert result.returncode == 0, result.stderr
    assert f"schema upgraded ({layout})" in result.stdout


def test_an_installed_but_not_preloaded_timescaledb_gives_the_plain_layout(
    timescale_admin_url: str, tmp_path: Path
) -> None:
    """The extension's files are there (install.sh puts them in every PostgreSQL 15) but
    this server does not preload it: `db upgrade` must choose plain tables and say why,
    not pick TimescaleDB and fail half-way."""
    from coverwatch.localservices import LocalPostgres

    bin_dir = Path("/usr/lib/postgresql/15/bin")
    server = LocalPostgres(tmp_path / "pg15", bin_dir=bin_dir)  # no shared_preload_libraries
    server.start()
    try:
        url = server.url()
        with psycopg.connect(url) as connection:
            listed = connection.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        assert listed, "the TimescaleDB files should be installed for PostgreSQL 15"
        result = db_upgrade(url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "must be preloaded" in result.stdout + result.stderr
        with psycopg.connect(url) as connection:
            storages = connection.execute("SELECT DISTINCT storage FROM schema_migrations")
            assert storages.fetchall() == [("plain",)]
            count = connection.execute("SELECT count(*) FROM reading_ledger").fetchone()
            assert count == (0,)
    finally:
        server.stop()
