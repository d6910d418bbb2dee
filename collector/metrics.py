"""The collector's counters, exported in Prometheus text format over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class IngestMetrics:
    """One registry per collector, so tests and several collectors never share state."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages = Counter(
            "coverwatch_messages", "MQTT messages handled, by outcome", ["outcome"], registry=r
        )
        self.readings = Counter(
            "coverwatch_readings_stored", "Readings newly stored, by kind", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "coverwatch_duplicate_readings",
            "Readings dropped because (probe_id, seq) was already stored",
            registry=r,
        )
        self.dead_letters = Counter(
            "coverwatch_dead_letters", "Messages or readings dead-lettered", registry=r
        )
        self.redeliveries = Counter(
            "coverwatch_redeliveries", "Messages the broker delivered again (DUP flag)", registry=r
        )
        self.commit_acks = Counter(
            "coverwatch_commit_acks",
            "Commit acknowledgements published to probes (coverwatch/v1/<probe>/ack)",
            registry=r,
        )
        self.database_retries = Counter(
            "coverwatch_database_retries", "Batches retried after a temporary error", registry=r
        )
        self.batch_seconds = Histogram(
            "coverwatch_batch_seconds",
            "Time to write and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.pending = Gauge(
            "coverwatch_pending_messages", "Messages received but not yet committed", registry=r
        )
        self.rollup_refreshes = Counter(
            "coverwatch_rollup_refreshes",
            "Rounds of the hourly rollups' refresher, by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )
        self.rollup_hours_refreshed = Counter(
            "coverwatch_rollup_hours_refreshed",
            "(probe, hour) pairs re-materialized in the hourly rollups",
            registry=r,
        )
        self.rollup_hours_pending = Gauge(
            "coverwatch_rollup_hours_pending",
            "(probe, hour) pairs marked for re-aggregation after the last round "
            "(read live meanwhile: exact, but slower to read when many)",
            registry=r,
        )
        self.rollup_refresh_seconds = Gauge(
            "coverwatch_rollup_refresh_seconds",
            "Duration of the last successful round of the rollups' refresher",
            registry=r,
        )
        self.rollup_refreshed_at = Gauge(
            "coverwatch_rollup_last_refresh_timestamp_seconds",
            "Unix time of the last successful round of the rollups' refresher (alert when old)",
            registry=r,
        )
