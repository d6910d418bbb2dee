"""Keeps the hourly rollups fresh on plain PostgreSQL.

On plain PostgreSQL, ``signal_hourly`` and ``latency_hourly`` are materialized views
created ``WITH NO DATA`` (migration ``002_rollups_plain.sql``), and nothing but the
collector refreshes them. A :class:`RollupRefresher` thread of ``coverwatch collector
run`` does, every ``rollup_refresh_s`` seconds:

* the first refresh of a view is a plain ``REFRESH MATERIALIZED VIEW``, because
  ``CONCURRENTLY`` refuses a view that was never populated (readers get an error from
  an unpopulated view anyway, so its exclusive lock costs nothing);
* later ones are ``REFRESH MATERIALIZED VIEW CONCURRENTLY``, which lets dashboards keep
  reading the view meanwhile; it needs the unique indexes ``signal_hourly_key`` and
  ``latency_hourly_key`` that migration 002 creates;
* one collector refreshes at a time: collectors sharing a subscription try an advisory
  lock without waiting, and skip the round another collector is already doing;
* a failure is logged and counted, and the next round tries again; ingest runs on its
  own connection and never notices.

On TimescaleDB the same names are continuous aggregates refreshed by a TimescaleDB job
(``002_rollups_timescale.sql``), so the refresher does nothing there and its thread ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import psycopg
from psycopg import sql

from collector import schema
from collector.metrics import IngestMetrics

logger = logging.getLogger("coverwatch.collector")

VIEWS = ("signal_hourly", "latency_hourly")
# Two-key advisory locks live apart from the one-key lock schema.py takes for migrations.
LOCK_KEYS = (0x636F7665, 0x726F6C6C)  # "cove", "roll"

RoundOutcome = Literal["refreshed", "failed", "skipped", "timescale"]


class RollupRefresher:
    """Refreshes the rollup views in a background thread of its own, on its own connection."""

    def __init__(
        self,
        database_url: str,
        interval_s: float,
        metrics: IngestMetrics | None = None,
        *,
        connect_timeout_s: float = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.metrics = metrics or IngestMetrics()
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._storage: schema.Storage | None = None

    def start(self) -> None:
        """Refresh now, then every ``interval_s`` seconds, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="rollup-refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            # A refresh over years of readings can take minutes: do not hold shutdown for it.
            with contextlib.suppress(Exception):
                connection.cancel_safe(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                outcome = self.refresh_once()
            except Exception:
                # Whatever went wrong, the refresher must outlive it: next round, again.
                logger.exception("unexpected error refreshing the rollups; trying again later")
                outcome = "failed"
            if outcome == "timescale" or self._stopping.wait(self.interval_s):
                return

    def refresh_once(self) -> RoundOutcome:
        """One round over every view; logs and counts failures instead of raising them."""
        try:
            with psycopg.connect(
                self.database_url,
                autocommit=True,
                connect_timeout=int(self.connect_timeout_s),
                application_name="coverwatch-rollups",
            ) as connection:
                self._connection = connection
                try:
                    return self._refresh_locked(connection)
                finally:
                    self._connection = None
        except psycopg.Error as error:
            self._log_failure(None, error)
            return "failed"

    def _refresh_locked(self, connection: psycopg.Connection[Any]) -> RoundOutcome:
        if self._storage is None:
            self._storage = schema.storage_in_use(connection)
        if self._storage == "timescale":
            logger.info(
                "rollups are TimescaleDB continuous aggregates refreshed by TimescaleDB; "
                "the collector leaves them alone"
            )
            return "timescale"
        locked = connection.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS).fetchone()
        if not (locked and locked[0]):
            logger.debug("another collector is refreshing the rollups; skipping this round")
            for view in VIEWS:
                self.metrics.rollup_refreshes.labels(view, "skipped").inc()
            return "skipped"
        all_refreshed = True
        try:
            for view in VIEWS:
                if self._stopping.is_set():
                    return "failed"
                all_refreshed = self._refresh_view(connection, view) and all_refreshed
        finally:
            if not connection.broken:
                connection.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEYS)
        return "refreshed" if all_refreshed else "failed"

    def _refresh_view(self, connection: psycopg.Connection[Any], view: str) -> bool:
        try:
            populated = connection.execute(
                "SELECT relispopulated FROM pg_class WHERE oid = %s::regclass", (view,)
            ).fetchone()
            concurrently = bool(populated and populated[0])
            started = time.perf_counter()
            connection.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
                    sql.SQL("CONCURRENTLY " if concurrently else ""), sql.Identifier(view)
                )
            )
        except psycopg.Error as error:
            self.metrics.rollup_refreshes.labels(view, "failed").inc()
            self._log_failure(view, error)
            return False
        seconds = time.perf_counter() - started
        self.metrics.rollup_refreshes.labels(view, "ok").inc()
        self.metrics.rollup_refresh_seconds.labels(view).set(seconds)
        self.metrics.rollup_refreshed_at.labels(view).set(self.clock())
        mode = "concurrently" if concurrently else "first fill"
        logger.log(
            logging.DEBUG if concurrently else logging.INFO,
            "refreshed %s (%s) in %.2fs",
            view,
            mode,
            seconds,
            extra={"view": view, "mode": mode, "seconds": round(seconds, 3)},
        )
        return True

    def _log_failure(self, view: str | None, error: psycopg.Error) -> None:
        what = view or "the rollups"
        if self._stopping.is_set():
            logger.info("refresh of %s interrupted by shutdown", what)
            return
        logger.warning(
            "cannot refresh %s (%s); trying again in %gs",
            what,
            (str(error).strip().splitlines() or [type(error).__name__])[0],
            self.interval_s,
            extra={"view": view, "sqlstate": error.sqlstate},
        )
