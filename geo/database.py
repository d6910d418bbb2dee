"""Connecting to the coverwatch database from geo, with errors that say what to fix.

geo reads the tables collector/ owns (``coverwatch db upgrade`` creates them all,
migration 004 adds ``villages`` and ``boundaries``); it never creates schema itself.
"""

from __future__ import annotations

from typing import Any

import psycopg

from coverwatch.errors import ConfigError
from coverwatch.settings import DATABASE_URL_ENV, redact_url


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection to a database whose schema includes migration 004 (villages)."""
    try:
        connection = psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise ConfigError(
            DATABASE_URL_ENV,
            f"cannot connect to {redact_url(url)}: {str(error).strip().splitlines()[0]}",
            "check host, port, database name, user and password, and that PostgreSQL is running",
        ) from None
    row = connection.execute("SELECT to_regclass('villages') IS NOT NULL").fetchone()
    if not row or not row[0]:
        connection.close()
        raise ConfigError(
            DATABASE_URL_ENV,
            f"{redact_url(url)} has no villages table",
            "run `coverwatch db upgrade` first (migration 004 adds the village registry)",
        )
    connection.rollback()  # idle again: an analysis may first build its caches (geo.status)
    return connection
