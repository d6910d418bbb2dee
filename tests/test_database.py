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


RACY_MIGRATION = """
DO $$ BEGIN
    IF nextval('migration_attempts') = 1 THEN
        RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'could not serialize access';
    END IF;
END $$;
CREATE TABLE retried (x integer);
"""


def test_a_migration_that_collides_with_concurrent_work_runs_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration is one transaction: when a concurrent session makes it fail
    transiently (a TimescaleDB job changing the same catalog row), it runs again."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        # A sequence is not rolled back with the failed attempt: it counts them.
        connection.execute("CREATE SEQUENCE migration_attempts")
    migration = schema.Migration(900, "racy", RACY_MIGRATION)
    monkeypatch.setattr(schema, "migrations_for", lambda storage: [migration])
    assert schema.upgrade(database_url) == [migration]
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT to_regclass('retried') IS NOT NULL").fetchone() == (True,)
        assert connection.execute("SELECT nextval('migration_attempts')").fetchone() == (3,)

    broken = schema.Migration(901, "broken", "SELECT 1/0")
    monkeypatch.setattr(schema, "migrations_for", lambda storage: [migration, broken])
    with pytest.raises(psycopg.errors.DivisionByZero):
        schema.upgrade(database_url)  # a real error is not tried again


def test_a_timescale_extra_runs_after_the_common_sql_on_timescaledb_only() -> None:
    """NNN_name.sql serves both layouts; NNN_name_timescale_extra.sql is appended on
    TimescaleDB only (migrations 011, 012): the common part is written once."""
    plain = {m.version: m for m in schema.migrations_for("plain")}
    timescale = {m.version: m for m in schema.migrations_for("timescale")}
    assert plain.keys() == timescale.keys()
    for version, table in ((11, "readings_operator_scan"), (12, "readings_cell")):
        assert f"CREATE TABLE {table}" in plain[version].sql
        assert "create_hypertable" not in plain[version].sql
        assert timescale[version].sql.startswith(plain[version].sql)
        assert f"create_hypertable('{table}'" in timescale[version].sql
        assert timescale[version].name == plain[version].name
