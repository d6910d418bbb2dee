"""The PostgreSQL harness itself: a real server, a database per test, crash-safe."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from collector import schema
from coverwatch.localservices import LocalPostgres
from tests.conftest import Layout


def test_each_test_gets_its_own_empty_database(database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        name = connection.execute("SELECT current_database()").fetchone()
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert name is not None
    assert name[0].startswith("cw_test_")
    assert tables == (0,)


def test_the_database_is_of_the_runs_storage_layout(
    database_url: str, storage_layout: Layout
) -> None:
    """COVERWATCH_TEST_LAYOUT=timescale gives databases with TimescaleDB created, on which
    `db upgrade` chooses hypertables; the default gives plain PostgreSQL ones."""
    with psycopg.connect(database_url) as connection:
        extension = connection.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        chosen = schema.available_storage(connection)
    assert (extension is not None) == (storage_layout == "timescale")
    assert chosen == storage_layout


def test_copy_and_unique_key_behave_as_in_production(database_url: str) -> None:
    """COPY and ON CONFLICT are what the collector's idempotent ingest rests on."""
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "CREATE TABLE r (probe_id text, seq bigint, PRIMARY KEY (probe_id, seq))"
        )
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY r (probe_id, seq) FROM STDIN") as copy,
        ):
            for seq in range(1000):
                copy.write_row(("cb-001", seq))
        connection.execute(
            "INSERT INTO r SELECT 'cb-001', s FROM generate_series(990, 1009) s "
            "ON CONFLICT DO NOTHING"
        )
        count = connection.execute("SELECT count(*), count(DISTINCT seq) FROM r").fetchone()
    assert count == (1010, 1010)


@pytest.mark.slow
def test_local_postgres_survives_kill_9(tmp_path: Path) -> None:
    """The embedded server recovers committed data after SIGKILL, like a real crash."""
    server = LocalPostgres(tmp_path / "data")
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as connection:
            connection.execute("CREATE TABLE t (n int)")
            connection.execute("INSERT INTO t SELECT generate_series(1, 100)")
        server.kill()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url(), connect_timeout=2)
        server.start()
        with psycopg.connect(server.url()) as connection:
            assert connection.execute("SELECT count(*) FROM t").fetchone() == (100,)
    finally:
        server.stop()
