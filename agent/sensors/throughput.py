"""Throughput: a speedtest.net test, rarely, within the SIM's monthly data budget.

Off by default: one test moves tens of megabytes, which a village SIM pays for. When
enabled it runs at most every ``interval_hours`` and only while this calendar month's
(UTC) spend plus what the last test cost stays within ``monthly_budget_mb``. The spend
is estimated from speedtest-cli's own byte counters and kept in the state directory,
so a restart does not reset it.

When a test is due but the budget cannot pay for it, the sensor emits a
:class:`ThroughputReading` with ``skipped_reason`` (once per interval), so the
dashboard shows why there is no figure. When a test is merely not due yet it emits
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.sensors._system import within
from agent.sensors.base import Sensor, SensorContext, SensorError, SensorPlugin, Stamp, register
from agent.sensors.power import write_atomically
from coverwatch.protocol import Reading, ThroughputReading

STATE_FILE = "throughput-state.json"
_MB = 1_000_000


@dataclass(frozen=True)
class Settings:
    interval_hours: float = field(
        default=24.0, metadata={"help": "Run a speed test at most this often."}
    )
    monthly_budget_mb: int = field(
        default=500,
        metadata={
            "help": "Mobile data (MB, 10^6 bytes) speed tests may use per calendar month (UTC)."
        },
    )
    retry_after_failure_minutes: int = field(
        default=60, metadata={"help": "Wait this long after a failed test before the next."}
    )
    timeout_s: float = field(
        default=60.0, metadata={"help": "speedtest-cli's timeout for each HTTP request."}
    )


@dataclass(frozen=True)
class SpeedtestResult:
    download_bps: float
    upload_bps: float
    ping_ms: float
    server_name: str | None
    bytes_received: int
    bytes_sent: int


SpeedtestRunner = Callable[[float], SpeedtestResult]


def run_speedtest(timeout_s: float) -> SpeedtestResult:
    """One test with speedtest-cli in secure (HTTPS) mode against the nearest server."""
    import speedtest

    try:
        tester = speedtest.Speedtest(secure=True, timeout=timeout_s)
        tester.get_best_server()
        tester.download()
        tester.upload(pre_allocate=False)  # a Pi 3 has little RAM to spare
    except speedtest.SpeedtestException as error:
        raise SensorError(f"speed test failed: {type(error).__name__}: {error}") from error
    results = tester.results
    server: dict[str, Any] = results.server or {}
    name = ", ".join(str(server[key]) for key in ("sponsor", "name") if server.get(key))
    return SpeedtestResult(
        download_bps=float(results.download),
        upload_bps=float(results.upload),
        ping_ms=float(results.ping),
        server_name=name or None,
        bytes_received=int(results.bytes_received),
        bytes_sent=int(results.bytes_sent),
    )


@dataclass
class BudgetState:
    """What survives restarts: when the last attempt was, and this month's spend."""

    month: str = ""
    bytes_used: int = 0
    last_attempt_at: datetime | None = None
    last_attempt_failed: bool = False
    last_test_bytes: int = 0

    @classmethod
    def load(cls, path: Path) -> BudgetState:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            last = document.get("last_attempt_at")
            return cls(
                month=str(document.get("month", "")),
                bytes_used=int(document.get("bytes_used", 0)),
                last_attempt_at=datetime.fromisoformat(last) if last else None,
                last_attempt_failed=bool(document.get("last_attempt_failed", False)),
                last_test_bytes=int(document.get("last_test_bytes", 0)),
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as error:
            # Starting from zero could overspend the SIM; refuse and say how to fix it.
            raise SensorError(
                f"cannot read the data budget state {path} ({error}); delete the file to "
                f"start counting afresh"
            ) from error

    def save(self, path: Path) -> None:
        write_atomically(
            path,
            {
                "month": self.month,
                "bytes_used": self.bytes_used,
                "last_attempt_at": self.last_attempt_at.isoformat()
                if self.last_attempt_at
                else None,
                "last_attempt_failed": self.last_attempt_failed,
                "last_test_bytes": self.last_test_bytes,
            },
        )


class ThroughputSensor:
    name = "throughput"

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        *,
        speedtest: SpeedtestRunner = run_speedtest,
    ) -> None:
        self.settings = settings
        self._state_path = state_dir / STATE_FILE
        self._speedtest = speedtest

    def read(self, stamp: Stamp) -> list[Reading]:
        now = stamp.taken_at.astimezone(UTC)
        state = BudgetState.load(self._state_path)
        month = now.strftime("%Y-%m")
        if state.month != month:
            state.month, state.bytes_used = month, 0
        if not self._due(state, now):
            return []
        budget_bytes = self.settings.monthly_budget_mb * _MB
        reason = self._over_budget(state, budget_bytes)
        if reason is not None:
            state.last_attempt_at, state.last_attempt_failed = now, False
            state.save(self._state_path)
            return [ThroughputReading(**stamp.base(), skipped_reason=reason[:255])]
        state.last_attempt_at = now
        try:
            result = self._speedtest(self.settings.timeout_s)
        except Exception:
            state.last_attempt_failed = True
            state.save(self._state_path)
            raise
        used = max(0, result.bytes_received) + max(0, result.bytes_sent)
        state.bytes_used += used
        state.last_test_bytes = used
        state.last_attempt_failed = False
        state.save(self._state_path)
        return [
            ThroughputReading(
                **stamp.base(),
                download_bps=within(result.download_bps, 0, float("inf")),
                upload_bps=within(result.upload_bps, 0, float("inf")),
                ping_ms=within(result.ping_ms, 0, 600_000),
                server_name=result.server_name[:255] if result.server_name else None,
                bytes_used=used,
            )
        ]

    def _due(self, state: BudgetState, now: datetime) -> bool:
        last = state.last_attempt_at
        if last is None or last > now:
            # Never ran, or the clock went back (no RTC before NTP): better to measure.
            return True
        wait = (
            timedelta(minutes=self.settings.retry_after_failure_minutes)
            if state.last_attempt_failed
            else timedelta(hours=self.settings.interval_hours)
        )
        return now - last >= wait

    def _over_budget(self, state: BudgetState, budget_bytes: int) -> str | None:
        budget_mb = self.settings.monthly_budget_mb
        used_mb = round(state.bytes_used / _MB)
        if state.bytes_used >= budget_bytes:
            return (
                f"monthly data budget of {budget_mb} MB spent: {used_mb} MB used in {state.month}"
            )
        if state.bytes_used + state.last_test_bytes > budget_bytes:
            return (
                f"monthly data budget of {budget_mb} MB nearly spent: {used_mb} MB used in "
                f"{state.month} and a test takes about {round(state.last_test_bytes / _MB)} MB"
            )
        return None


def create(settings: Settings, context: SensorContext) -> Sensor:
    return ThroughputSensor(settings, context.state_dir)


register(
    SensorPlugin(name="throughput", settings_type=Settings, create=create, enabled_by_default=False)
)
