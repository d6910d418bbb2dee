"""The villages' nearby-probe cache (migration 014) never answers with old positions.

Against a real database: the status read through the cache equals the status computed
from the positions; inserting, moving or deleting a village or a probe invalidates it;
a probe moved while the cache is being built (another connection) is never lost; a
role that may only read gets the same answer without writing.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from collector import schema
from geo import status
from geo.analysis import analyse
from geo.coverage import TimeWindow
from tests import geo_seed

NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = TimeWindow(NOW - timedelta(days=1), NOW + timedelta(minutes=1))
STATUS = """SELECT village_id, nearby_probe_ids, nearby_distances_m, operators,
                   availability_pct, coverage_classes
            FROM coverage_village_status(%s, %s, %s, 100) ORDER BY village_id"""


@pytest.fixture
def seeded(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as connection:
        for index, (lon, lat) in enumerate([(106.50, 22.80), (106.52, 22.81), (106.60, 22.90)]):
            geo_seed.add_village(connection, f"Bản {index}", lon, lat, population=100 + index)
        for probe_id, lon, lat, rsrp in [
            ("p-near", 106.501, 22.801, -90.0),
            ("p-mid", 106.515, 22.805, -112.0),
            ("p-far", 106.70, 22.95, -100.0),
        ]:
            geo_seed.add_probe(connection, probe_id, lon, lat)
            geo_seed.add_signal(connection, probe_id, NOW - timedelta(hours=6), 24, rsrp_dbm=rsrp)
        connection.commit()
    return database_url


def read_status(url: str, radius_m: float = 3000) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(STATUS, (WINDOW.start, WINDOW.end, radius_m)).fetchall()


def built(url: str) -> list[tuple[float, float]]:
    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT radius_m, min_distance_m FROM coverage_nearby_built ORDER BY 1"
        ).fetchall()


def refresh(url: str, radius_m: float = 3000) -> bool:
    with psycopg.connect(url) as connection:
        return status.refresh_nearby(connection, radius_m=radius_m)


def test_the_cached_status_equals_the_computed_one(seeded: str) -> None:
    computed = read_status(seeded)
    assert built(seeded) == []
    assert refresh(seeded) is True
    assert refresh(seeded) is False  # valid: nothing to build
    assert built(seeded) == [(3000.0, 100.0)]
    assert read_status(seeded) == computed
    assert [row[1] for row in computed] == [["p-near", "p-mid"], ["p-mid", "p-near"]]
    # Another radius is always computed: a caller cannot make the server cache per radius.
    wide = read_status(seeded, 30_000)
    assert refresh(seeded, 30_000) is False
    assert read_status(seeded, 30_000) == wide
    assert len(wide) == 3
    assert built(seeded) == [(3000.0, 100.0)]


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE probes SET lon = 106.599, lat = 22.899 WHERE probe_id = 'p-far'",
        "UPDATE villages SET lon = 106.69, lat = 22.94 WHERE name = 'Bản 2'",
        "DELETE FROM probes WHERE probe_id = 'p-near'",
        "DELETE FROM villages WHERE name = 'Bản 0'",
        "INSERT INTO probes (probe_id, lon, lat) VALUES ('p-new', 106.6, 22.9)",
        "INSERT INTO villages (name, lon, lat) VALUES ('Bản mới', 106.70, 22.95)",
        "TRUNCATE probes CASCADE",
        "UPDATE probes SET probe_id = 'p-renamed' WHERE probe_id = 'p-near'",
    ],
)
def test_every_change_of_position_invalidates_the_cache(seeded: str, change: str) -> None:
    refresh(seeded)
    before = read_status(seeded)
    with psycopg.connect(seeded) as connection:
        connection.execute(change)
    assert built(seeded) == []
    after = read_status(seeded)
    assert after != before, "the change must show at once, cache or not"
    refresh(seeded)
    assert read_status(seeded) == after


def test_an_update_that_moves_nothing_keeps_the_cache(seeded: str) -> None:
    refresh(seeded)
    with psycopg.connect(seeded) as connection:
        connection.execute("UPDATE probes SET operator = 'MobiFone', lon = lon")
        connection.execute("UPDATE villages SET population = population + 1")
    assert built(seeded) == [(3000.0, 100.0)]


def test_a_probe_moved_while_the_cache_is_built_is_never_lost(seeded: str) -> None:
    """The mover commits while the builder holds its lock: the build is invalidated."""
    with psycopg.connect(seeded) as builder, psycopg.connect(seeded) as mover:
        builder.execute("SELECT coverage_nearby_refresh(3000, 100)")  # built, not committed
        moved = threading.Event()

        def move() -> None:
            mover.execute("UPDATE probes SET lon = 106.599, lat = 22.899 WHERE probe_id = 'p-far'")
            mover.commit()
            moved.set()

        thread = threading.Thread(target=move)
        thread.start()
        assert not moved.wait(0.5), "the move waits for the build's lock"
        builder.commit()
        thread.join(10)
        assert moved.is_set()
    assert built(seeded) == []
    assert [row[1] for row in read_status(seeded)][-1] == ["p-far"]


def test_a_read_only_role_gets_the_same_answer_without_writing(seeded: str) -> None:
    computed = read_status(seeded)
    role = f"grafana_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(seeded, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    try:
        reader_url = psycopg.conninfo.make_conninfo(seeded, user=role)
        with psycopg.connect(reader_url) as reader:
            assert status.refresh_nearby(reader) is False
            result = analyse(reader, WINDOW)
        assert built(seeded) == []
        assert [s.village.village_id for s in result.statuses if s.nearby] == [
            row[0] for row in computed
        ]
        with psycopg.connect(seeded) as connection:
            connection.read_only = True  # e.g. a hot standby
            assert status.refresh_nearby(connection) is False
    finally:
        with psycopg.connect(seeded, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_analyse_builds_the_cache_and_commits_it_at_once(seeded: str) -> None:
    with psycopg.connect(seeded) as connection:
        analysis = analyse(connection, WINDOW)
        # Still inside the analysis' transaction, another session sees the cache built.
        assert built(seeded) == [(3000.0, 100.0)]
        assert [s.village.name for s in analysis.statuses if s.nearby] == ["Bản 0", "Bản 1"]


def test_no_build_inside_an_open_transaction_or_under_repeatable_read(seeded: str) -> None:
    """The build's lock is never held through an analysis, and never reads an old snapshot."""
    with psycopg.connect(seeded) as connection:
        connection.execute("SELECT 1")  # a transaction is open
        assert status.refresh_nearby(connection) is False
    with psycopg.connect(seeded) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        assert status.refresh_nearby(connection) is False
        # Even called directly, the database refuses to build from an old snapshot.
        assert connection.execute("SELECT coverage_nearby_refresh(3000, 100)").fetchone() == (
            False,
        )
    assert built(seeded) == []


def test_a_role_that_may_only_add_probes_still_invalidates_the_cache(seeded: str) -> None:
    refresh(seeded)
    role = f"provisioner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(seeded, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT SELECT, INSERT ON probes TO {}").format(sql.Identifier(role)))
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(seeded, user=role)) as provisioner:
            provisioner.execute(
                "INSERT INTO probes (probe_id, lon, lat) VALUES ('p-new', 106.6, 22.9)"
            )
        assert built(seeded) == []
    finally:
        with psycopg.connect(seeded, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_cli_and_the_api_build_the_cache_on_an_idle_connection(seeded: str) -> None:
    from geo import database, web

    with database.connect(seeded) as connection:
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    handle = web.serve_in_thread(web.create_app(seeded), "127.0.0.1", 0)
    try:
        assert httpx.get(f"{handle.url}/api/villages?window=2d", timeout=30).status_code == 200
    finally:
        handle.stop()
    assert built(seeded) == [(3000.0, 100.0)]
