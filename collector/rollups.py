"""Keeps the hourly rollups materialized, on both storage layouts.

The rollups (``signal_hourly``, ``latency_hourly``, ``probe_hourly``; migration
``007_coverage_definition.sql``) are exact at every moment: the collector marks each
(probe, hour) it writes readings into in ``rollup_dirty``, in the writing transaction,
and readers aggregate marked hours from the raw readings. What this module does is keep
that live part small: a :class:`RollupRefresher` thread of ``coverwatch collector run``
calls the database's ``coverage_refresh()`` every ``rollup_refresh_s`` seconds until no
marked hour is left, each call re-materializing up to ``BATCH_HOURS`` of them in one
transaction, then ``coverage_refresh_days()`` for the daily rollups under them
(migration ``010_coverage_daily.sql``: whole days of a window are read from those).
So a backlog that arrives a month late, or readings of the current hour,
are refreshed exactly where they fell, on plain PostgreSQL and on TimescaleDB alike,
and no result ever depends on when a background job runs.

Several collectors may refresh at once: ``coverage_refresh`` takes the marks it works on
with ``FOR UPDATE SKIP LOCKED``, so they share the work instead of waiting for each
other, and a writer whose mark is taken waits at most one call. A failure is logged and
counted and the next round tries again; ingest runs on its own connection and never
notices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import psycopg

from collector.metrics import IngestMetrics

logger = logging.getLogger("coverwatch.collector")

# Hours re-materialized per transaction: large enough to amortize a call, small enough
# that a writer waiting on one of its marks waits well under a second.
BATCH_HOURS: Final = 2000

RoundOutcome = Literal["refreshed", "failed"]


def refresh_all(
    connection: psycopg.Connection[Any],
    *,
    batch_hours: int = BATCH_HOURS,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Re-materialize every marked hour, then the days they fall in (autocommit
    connection); the number of hours done."""
    done = 0
    while not should_stop():
        row = connection.execute("SELECT coverage_refresh(%s)", (batch_hours,)).fetchone()
        count = int(row[0]) if row else 0
        done += count
        if count < batch_hours:
            break
    # A day's rollup (migration 010) is rebuilt from its hours once they are refreshed;
    # days are 24 times fewer than hours, so the same batch size serves.
    while not should_stop():
        row = connection.execute("SELECT coverage_refresh_days(%s)", (batch_hours,)).fetchone()
        if not row or int(row[0]) < batch_hours:
            break
    return done


def invalidate(connection: psycopg.Connection[Any], start: Any = None, end: Any = None) -> int:
    """Mark the hours of all readings in [start, end) (all: None) for re-aggregation.

    For readings that did not come through the collector (a bulk COPY, a restore): until
    marked, the rollups do not know about them.
    """
    row = connection.execute("SELECT coverage_invalidate(%s, %s)", (start, end)).fetchone()
    return int(row[0]) if row else 0


def pending_hours(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT count(*) FROM rollup_dirty").fetchone()
    return int(row[0]) if row else 0


class RollupRefresher:
    """Refreshes the rollups in a background thread of its own, on its own connection."""

    def __init__(
        self,
        database_url: str,
        interval_s: float,
        metrics: IngestMetrics | None = None,
        *,
        connect_timeout_s: float = 10,
        batch_hours: int = BATCH_HOURS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.metrics = metrics or IngestMetrics()
        self.connect_timeout_s = connect_timeout_s
        self.batch_hours = batch_hours
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._rounds = 0

    def start(self) -> None:
        """Refresh now, then every ``interval_s`` seconds, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="rollup-refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            # Do not hold shutdown for a batch in progress: it rolls back, marks stay.
            with contextlib.suppress(Exception):
                connection.cancel_safe(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.refresh_once()
            except Exception:
                # Whatever went wrong, the refresher must outlive it: next round, again.
                logger.exception("unexpected error refreshing the rollups; trying again later")
            if self._stopping.wait(self.interval_s):
                return

    def refresh_once(self) -> RoundOutcome:
        """One round: every marked hour; logs and counts failures instead of raising them."""
        started = time.perf_counter()
        try:
            with psycopg.connect(
                self.database_url,
                autocommit=True,
                connect_timeout=int(self.connect_timeout_s),
                application_name="coverwatch-rollups",
            ) as connection:
                self._connection = connection
                try:
                    hours = refresh_all(
                        connection,
                        batch_hours=self.batch_hours,
                        should_stop=self._stopping.is_set,
                    )
                    pending = pending_hours(connection)
                finally:
                    self._connection = None
        except psycopg.Error as error:
            self.metrics.rollup_refreshes.labels("failed").inc()
            self._log_failure(error)
            return "failed"
        seconds = time.perf_counter() - started
        self.metrics.rollup_refreshes.labels("ok").inc()
        self.metrics.rollup_hours_refreshed.inc(hours)
        self.metrics.rollup_hours_pending.set(pending)
        self.metrics.rollup_refresh_seconds.set(seconds)
        self.metrics.rollup_refreshed_at.set(self.clock())
        self._rounds += 1
        # The first round at INFO (the database is reachable, this is what was pending),
        # later ones only when they had a backlog to work through.
        logger.log(
            logging.INFO if self._rounds == 1 or hours >= self.batch_hours else logging.DEBUG,
            "re-materialized %d probe-hours of the rollups in %.2fs (%d marked since)",
            hours,
            seconds,
            pending,
            extra={"hours": hours, "seconds": round(seconds, 3), "pending": pending},
        )
        return "refreshed"

    def _log_failure(self, error: psycopg.Error) -> None:
        if self._stopping.is_set():
            logger.info("refresh of the rollups interrupted by shutdown")
            return
        logger.warning(
            "cannot refresh the rollups (%s); trying again in %gs",
            (str(error).strip().splitlines() or [type(error).__name__])[0],
            self.interval_s,
            extra={"sqlstate": error.sqlstate},
        )
