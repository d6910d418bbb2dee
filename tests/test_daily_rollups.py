"""The daily rollups (migration 010) change no figure: a window read through them equals
the same window summed hour by hour, in every state the refresher can leave.

Readings of two probes over four UTC days are stored through the collector's write
path; windows start and end on day and hour boundaries and between them, shorter than
a day and longer. Each state is checked: nothing refreshed (every day read on the fly),
hours refreshed but not yet their days (day marks pending), all refreshed, and a late
reading into the middle of a refreshed day.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from collector import schema
from collector.rollups import refresh_all
from tests.helpers import signal
from tests.test_rollups import latency, no_service, query, store

PROBES = ("cb-001", "cb-002")
START = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
END = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)

# The reference: the 007 definition's sums, straight from the hourly rollups.
HOURLY_SIGNAL = """
SELECT h.probe_id,
       coalesce(h.operator_code,
                (SELECT o.code FROM mobile_operators o
                 WHERE o.code = p.operator OR lower(o.name) = lower(p.operator)),
                nullif(p.operator, ''), 'unknown'),
       coalesce(h.technology, 'none'),
       sum(readings)::bigint, sum(good_readings)::bigint, sum(fair_readings)::bigint,
       sum(poor_readings)::bigint, sum(weak_readings)::bigint,
       sum(readings - registered_readings)::bigint,
       round((sum(signal_dbm_sum) / nullif(sum(signal_dbm_count), 0))::numeric, 6)
FROM signal_hourly h LEFT JOIN probes p USING (probe_id)
WHERE h.hour >= date_trunc('hour', %s::timestamptz, 'UTC') AND h.hour < %s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
DAILY_SIGNAL = """
SELECT probe_id, operator, technology, readings, good_readings, fair_readings,
       poor_readings, weak_readings, unregistered_readings,
       round(signal_dbm_mean::numeric, 6)
FROM coverage_by_probe(%s, %s) WHERE technology <> 'all' ORDER BY 1, 2, 3
"""
HOURLY_ACTIVITY = """
WITH s AS (SELECT probe_id, sum(signal_slots) AS slots FROM probe_hourly
           WHERE hour >= date_trunc('hour', %(a)s::timestamptz, 'UTC') AND hour < %(b)s
           GROUP BY 1),
     l AS (SELECT probe_id, sum(rounds) AS rounds,
                  sum(rtt_median_sum) / nullif(sum(rtt_median_count), 0) AS rtt,
                  100.0 * sum(packets_sent - packets_received) / nullif(sum(packets_sent), 0)
                      AS loss
           FROM latency_hourly
           WHERE hour >= date_trunc('hour', %(a)s::timestamptz, 'UTC') AND hour < %(b)s
           GROUP BY 1)
SELECT probe_id, coalesce(s.slots, 0)::bigint, coalesce(l.rounds, 0)::bigint,
       round(l.rtt::numeric, 6), round(l.loss::numeric, 6)
FROM s FULL JOIN l USING (probe_id) ORDER BY 1
"""
DAILY_ACTIVITY = """
SELECT probe_id, signal_slots, latency_rounds, round(rtt_ms::numeric, 6),
       round(loss_pct::numeric, 6)
FROM coverage_probe_activity(%(a)s, %(b)s) ORDER BY 1
"""

WINDOWS = [
    (START, END),  # everything
    (datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),  # whole days
    (datetime(2026, 11, 21, 5, 30, tzinfo=UTC), datetime(2026, 11, 23, 17, 10, tzinfo=UTC)),
    (datetime(2026, 11, 21, 23, 59, tzinfo=UTC), datetime(2026, 11, 22, 0, 1, tzinfo=UTC)),
    (datetime(2026, 11, 22, 3, tzinfo=UTC), datetime(2026, 11, 22, 9, tzinfo=UTC)),  # in a day
    (datetime(2026, 11, 21, 1, tzinfo=UTC), datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC)),
    (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 22, 23, 0, 1, tzinfo=UTC)),
    (datetime(2026, 11, 22, tzinfo=UTC), datetime(2026, 11, 22, 23, 30, tzinfo=UTC)),
]


@pytest.fixture
def readings_url(database_url: str) -> str:
    schema.upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        for probe_id, operator in zip(PROBES, ("Viettel", "45202"), strict=True):
            connection.execute(
                "INSERT INTO probes (probe_id, village, lon, lat, operator) "
                "VALUES (%s, 'Bản Giốc', 106.7, 22.85, %s)",
                (probe_id, operator),
            )
    rng = random.Random(20261201)
    for probe_id in PROBES:
        batch: list[dict[str, object]] = []
        at, seq = START, 1
        while at < END:
            taken = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            choice = rng.random()
            if choice < 0.1:
                batch.append(no_service(seq, taken))
            elif choice < 0.85:
                batch.append(
                    signal(
                        seq,
                        rsrp_dbm=rng.randint(-128, -70),
                        taken_at=taken,
                        operator_code=rng.choice(("45204", "45202")),
                    )
                )
            else:
                loss = rng.choice((0.0, 10.0, 50.0, 100.0))
                batch.append(latency(seq, taken, loss_pct=loss, rtt_avg_ms=rng.uniform(20, 400)))
            seq += 1
            at += timedelta(minutes=rng.choice((7, 13, 29, 41)))
        store(database_url, probe_id, batch)
    return database_url


def assert_windows_agree(url: str) -> None:
    for start, end in WINDOWS:
        expected = query(url, HOURLY_SIGNAL, start, end)
        assert expected, f"no readings in {start}..{end}: the test lost its data"
        assert query(url, DAILY_SIGNAL, start, end) == expected, (start, end)
        window = {"a": start, "b": end}
        with psycopg.connect(url) as connection:
            hourly = connection.execute(HOURLY_ACTIVITY, window).fetchall()
            daily = connection.execute(DAILY_ACTIVITY, window).fetchall()
        assert daily == hourly, (start, end)


def daily_rows(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM signal_daily_store")[0][0])


def test_every_refresh_state_reads_the_same_as_hour_by_hour(readings_url: str) -> None:
    url = readings_url
    assert daily_rows(url) == 0
    assert_windows_agree(url)  # nothing refreshed: every day read on the fly

    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute("SELECT coverage_refresh(7)").fetchone() != (0,):
            pass
    assert query(url, "SELECT count(*) > 0 FROM rollup_dirty_day") == [(True,)]
    assert_windows_agree(url)  # hours refreshed, their days pending

    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute("SELECT coverage_refresh_days(3)").fetchone() != (0,):
            pass
    assert query(url, "SELECT count(*) FROM rollup_dirty_day") == [(0,)]
    assert daily_rows(url) > 0
    assert_windows_agree(url)  # all refreshed: whole days from the daily store

    # A late reading into the middle of a refreshed day: read on the fly until refreshed.
    store(url, "cb-001", [signal(99_999, rsrp_dbm=-60, taken_at="2026-11-22T12:34:00Z")])
    assert_windows_agree(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT coverage_refresh(2000)")
        assert_windows_agree(url)
        connection.execute("SELECT coverage_refresh_days(2000)")
    assert_windows_agree(url)
    total = query(
        url, "SELECT sum(readings)::int FROM signal_daily_store WHERE probe_id = 'cb-001'"
    )
    assert total == query(
        url, "SELECT count(*)::int FROM readings_signal WHERE probe_id = 'cb-001'"
    )


def test_a_day_rebuilt_while_a_refresher_holds_its_hours_stays_marked(readings_url: str) -> None:
    """A day rebuild that cannot see a concurrent refresher's hours leaves the day marked
    (by that refresher, at its commit), so the day is never read stale."""
    url = readings_url
    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute("SELECT coverage_refresh(2000)").fetchone() != (0,):
            pass
        connection.execute("SELECT coverage_refresh_days(2000)")
    store(url, "cb-002", [signal(88_888, rsrp_dbm=-61, taken_at="2026-11-22T06:00:00Z")])
    with psycopg.connect(url) as refresher, psycopg.connect(url, autocommit=True) as rebuilder:
        refresher.execute("SELECT coverage_refresh(2000)")  # hour refreshed, not committed
        rebuilder.execute("SET lock_timeout = '2s'")
        assert rebuilder.execute("SELECT coverage_refresh_days(2000)").fetchone() == (0,)
        refresher.commit()
    marks: list[tuple[Any, ...]] = query(url, "SELECT probe_id FROM rollup_dirty_day")
    assert marks == [("cb-002",)]
    assert_windows_agree(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT coverage_refresh_days(2000)")
    assert_windows_agree(url)


def test_two_rebuilders_of_one_day_take_turns(readings_url: str) -> None:
    """Marks of one day held by two sessions: the second rebuilds after the first commits
    (without the lock its INSERT met the first's rows: a unique violation in bench/geo.py
    with two refreshers)."""
    url = readings_url
    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute("SELECT coverage_refresh(2000)").fetchone() != (0,):
            pass
        connection.execute("SELECT coverage_refresh_days(2000)")
        for hour in ("01", "02"):  # two marks of one day, each committed on its own
            store(url, "cb-001", [signal(77_700 + int(hour), rsrp_dbm=-75,
                                         taken_at=f"2026-11-22T{hour}:30:00Z")])  # fmt: skip
            connection.execute("SELECT coverage_refresh(2000)")
    assert query(url, "SELECT count(*) FROM rollup_dirty_day") == [(2,)]
    errors: list[BaseException] = []
    with psycopg.connect(url) as first:
        assert first.execute("SELECT coverage_refresh_days(1)").fetchone() == (1,)

        def second() -> None:
            try:
                with psycopg.connect(url, autocommit=True) as other:
                    assert other.execute("SELECT coverage_refresh_days(1)").fetchone() == (1,)
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second waits for the first's day
        assert thread.is_alive()
        first.commit()
        thread.join(30)
    assert errors == []
    assert query(url, "SELECT count(*) FROM rollup_dirty_day") == [(0,)]
    assert_windows_agree(url)


def test_refresh_all_leaves_no_hour_or_day_marked_whatever_the_batch(readings_url: str) -> None:
    """Days have a mark per refresh that touched them: more marks than days. The loop ends
    on marks, not days (bench/geo.py found 1.3 M day marks left when it ended on days)."""
    url = readings_url
    with psycopg.connect(url, autocommit=True) as connection:
        refresh_all(connection, batch_hours=5)
    assert query(url, "SELECT count(*) FROM rollup_dirty") == [(0,)]
    assert query(url, "SELECT count(*) FROM rollup_dirty_day") == [(0,)]
    assert_windows_agree(url)
