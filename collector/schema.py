"""Versioned, idempotent schema migrations (``coverwatch db upgrade``).

Migrations are SQL files ``NNN_name.sql`` in ``collector/migrations/``. Where storage
differs, a version has two variants, ``NNN_name_plain.sql`` and
``NNN_name_timescale.sql``; the TimescaleDB one is chosen when the extension is
available on the server (``pg_available_extensions``), the plain one otherwise. Where
TimescaleDB only adds to the same tables (a hypertable, its policies), the version is
``NNN_name.sql`` for both plus ``NNN_name_timescale_extra.sql``, run after it on
TimescaleDB only, so that the common part is written once. The
applied versions and the storage kind are recorded in ``schema_migrations``; an
advisory lock keeps two collectors starting together from migrating at once. Each
migration runs in one transaction: it is applied whole or not at all.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import psycopg

logger = logging.getLogger("coverwatch.collector")

Storage = Literal["timescale", "plain"]
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:_(plain|timescale|timescale_extra))?\.sql$")
_LOCK_KEY = 0x636F7665  # "cove": one fixed key for coverwatch migrations


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_storage(connection: psycopg.Connection[Any]) -> Storage:
    """TimescaleDB when the extension can really be created here, else plain tables.

    Listed in ``pg_available_extensions`` is not enough: installed for every cluster
    but not in ``shared_preload_libraries`` (a common server state), CREATE EXTENSION
    fails with "must be preloaded", and choosing the TimescaleDB layout would fail
    half-way. So the extension is created in a transaction that is rolled back, on a
    connection of its own: that failure ends the session it happens in.
    """
    row = connection.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if not row:
        logger.info("storage layout: plain PostgreSQL (TimescaleDB is not installed)")
        return "plain"
    info = connection.info
    conninfo = psycopg.conninfo.make_conninfo(
        info.dsn, **({"password": info.password} if info.password else {})
    )
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as probe:
            probe.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            probe.rollback()
    except psycopg.Error as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        logger.warning(
            "storage layout: plain PostgreSQL, because TimescaleDB is installed but cannot "
            "be created here (%s); add it to shared_preload_libraries and restart the "
            "server to use it",
            reason,
        )
        return "plain"
    logger.info("storage layout: TimescaleDB (the extension can be created)")
    return "timescale"


def migrations_for(storage: Storage) -> list[Migration]:
    chosen: dict[int, Migration] = {}
    extras: dict[int, str] = {}
    for entry in sorted(resources.files("collector.migrations").iterdir(), key=lambda e: e.name):
        match = _MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        version, name, variant = int(match[1]), match[2], match[3]
        if variant == "timescale_extra":
            if storage == "timescale":
                extras[version] = entry.read_text(encoding="utf-8")
            continue
        if variant is not None and variant != storage:
            continue
        if version in chosen:
            raise RuntimeError(f"two migrations share version {version:03d}")
        chosen[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    for version, extra in extras.items():
        if version not in chosen:
            raise RuntimeError(f"migration {version:03d} has a TimescaleDB extra but no SQL")
        common = chosen[version]
        chosen[version] = Migration(version, common.name, common.sql + "\n" + extra)
    return [chosen[version] for version in sorted(chosen)]


def upgrade(database_url: str) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _upgrade_locked(connection)
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _upgrade_locked(connection: psycopg.Connection[Any]) -> list[Migration]:
    connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               storage    text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    # Once a database has a storage kind, it keeps it (a later-installed extension
    # does not turn half the migrations into TimescaleDB ones).
    storage = storage_in_use(connection) or available_storage(connection)
    applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
    done: list[Migration] = []
    for migration in migrations_for(storage):
        if migration.version in applied:
            continue
        logger.info("applying migration %03d_%s (%s)", migration.version, migration.name, storage)
        for attempt in range(1, _MIGRATION_ATTEMPTS + 1):
            try:
                with connection.transaction():
                    connection.execute(migration.sql.encode())
                    connection.execute(
                        "INSERT INTO schema_migrations (version, name, storage) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, storage),
                    )
                break
            except psycopg.Error as error:
                if attempt == _MIGRATION_ATTEMPTS or not _is_transient_race(error):
                    raise
                # A migration is one transaction: rolled back whole, it can run again.
                logger.warning(
                    "migration %03d_%s collided with concurrent catalog work (%s); trying it again",
                    migration.version,
                    migration.name,
                    str(error).strip().splitlines()[0],
                )
                time.sleep(0.5 * attempt)
        done.append(migration)
    return done


_MIGRATION_ATTEMPTS = 3


def _is_transient_race(error: psycopg.Error) -> bool:
    """Errors a concurrent session causes, gone when the transaction runs again.

    "tuple concurrently updated" (XX000) is what PostgreSQL reports when DDL and a
    TimescaleDB background job change one catalog row at once.
    """
    return isinstance(
        error, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    ) or (isinstance(error, psycopg.errors.InternalError_) and "concurrently" in str(error))


def pending_migrations(connection: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations this code has and the database lacks (all of them on an empty database)."""
    if connection.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return migrations_for(available_storage(connection))
    storage = storage_in_use(connection) or available_storage(connection)
    applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
    return [m for m in migrations_for(storage) if m.version not in applied]


def storage_in_use(connection: psycopg.Connection[Any]) -> Storage | None:
    row = connection.execute("SELECT storage FROM schema_migrations LIMIT 1").fetchone()
    return None if row is None else ("timescale" if row[0] == "timescale" else "plain")
