"""The throughput sensor's schedule and data budget, with the speed test itself replaced
by a recorded result (tests need no internet); the budget state lives in a real file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.sensors import registered
from agent.sensors.base import SensorContext, SensorError
from agent.sensors.throughput import STATE_FILE, Settings, SpeedtestResult, ThroughputSensor
from coverwatch.protocol import ThroughputReading
from tests.sensor_fakes import stamp

NOW = datetime(2026, 11, 22, 8, 15, tzinfo=UTC)
# Figures of a real speedtest-cli run over 4G (results.dict() fields).
RESULT = SpeedtestResult(
    download_bps=18_734_120.5,
    upload_bps=6_210_450.2,
    ping_ms=48.3,
    server_name="Viettel IDC, Hanoi",
    bytes_received=31_457_280,
    bytes_sent=9_437_184,
)
TEST_BYTES = RESULT.bytes_received + RESULT.bytes_sent


class RecordedSpeedtest:
    def __init__(self, result: SpeedtestResult | Exception = RESULT) -> None:
        self.result = result
        self.runs = 0

    def __call__(self, timeout_s: float) -> SpeedtestResult:
        self.runs += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_runs_and_reports_every_field(tmp_path: Path) -> None:
    speedtest = RecordedSpeedtest()
    [reading] = ThroughputSensor(Settings(), tmp_path, speedtest=speedtest).read(stamp(NOW))
    assert isinstance(reading, ThroughputReading)
    assert reading.download_bps == 18_734_120.5
    assert reading.upload_bps == 6_210_450.2
    assert reading.ping_ms == 48.3
    assert reading.server_name == "Viettel IDC, Hanoi"
    assert reading.bytes_used == TEST_BYTES
    assert reading.skipped_reason is None
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["month"] == "2026-11"
    assert state["bytes_used"] == TEST_BYTES


def test_too_soon_emits_nothing(tmp_path: Path) -> None:
    speedtest = RecordedSpeedtest()
    sensor = ThroughputSensor(Settings(interval_hours=24), tmp_path, speedtest=speedtest)
    sensor.read(stamp(NOW))
    assert list(sensor.read(stamp(NOW + timedelta(hours=23)))) == []
    assert len(list(sensor.read(stamp(NOW + timedelta(hours=24))))) == 1
    assert speedtest.runs == 2


def test_over_budget_is_a_skipped_reading_once_per_interval(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "month": "2026-11",
                "bytes_used": 512_000_000,
                "last_attempt_at": (NOW - timedelta(days=2)).isoformat(),
            }
        )
    )
    speedtest = RecordedSpeedtest()
    sensor = ThroughputSensor(Settings(monthly_budget_mb=500), tmp_path, speedtest=speedtest)
    [reading] = sensor.read(stamp(NOW))
    assert isinstance(reading, ThroughputReading)
    assert reading.skipped_reason == ("monthly data budget of 500 MB spent: 512 MB used in 2026-11")
    assert reading.download_bps is None
    assert reading.bytes_used is None
    assert speedtest.runs == 0
    assert list(sensor.read(stamp(NOW + timedelta(hours=1)))) == []


def test_a_test_that_would_overspend_is_skipped(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps({"month": "2026-11", "bytes_used": 480_000_000, "last_test_bytes": 40_000_000})
    )
    speedtest = RecordedSpeedtest()
    [reading] = ThroughputSensor(Settings(), tmp_path, speedtest=speedtest).read(stamp(NOW))
    assert isinstance(reading, ThroughputReading)
    assert reading.skipped_reason == (
        "monthly data budget of 500 MB nearly spent: 480 MB used in 2026-11 "
        "and a test takes about 40 MB"
    )
    assert speedtest.runs == 0


def test_new_month_resets_the_budget(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "month": "2026-10",
                "bytes_used": 600_000_000,
                "last_attempt_at": (NOW - timedelta(days=3)).isoformat(),
            }
        )
    )
    speedtest = RecordedSpeedtest()
    [reading] = ThroughputSensor(Settings(), tmp_path, speedtest=speedtest).read(stamp(NOW))
    assert isinstance(reading, ThroughputReading)
    assert reading.bytes_used == TEST_BYTES
    assert json.loads((tmp_path / STATE_FILE).read_text())["bytes_used"] == TEST_BYTES


def test_failure_raises_and_retries_after_the_failure_wait(tmp_path: Path) -> None:
    speedtest = RecordedSpeedtest(SensorError("speed test failed: ConfigRetrievalError"))
    sensor = ThroughputSensor(
        Settings(retry_after_failure_minutes=60), tmp_path, speedtest=speedtest
    )
    with pytest.raises(SensorError, match="ConfigRetrievalError"):
        sensor.read(stamp(NOW))
    assert list(sensor.read(stamp(NOW + timedelta(minutes=30)))) == []
    speedtest.result = RESULT
    assert len(list(sensor.read(stamp(NOW + timedelta(minutes=61))))) == 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    ThroughputSensor(Settings(), tmp_path, speedtest=RecordedSpeedtest()).read(stamp(NOW))
    restarted = RecordedSpeedtest()
    sensor = ThroughputSensor(Settings(), tmp_path, speedtest=restarted)
    assert list(sensor.read(stamp(NOW + timedelta(hours=1)))) == []
    assert restarted.runs == 0


def test_corrupt_state_refuses_rather_than_overspend(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    sensor = ThroughputSensor(Settings(), tmp_path, speedtest=RecordedSpeedtest())
    with pytest.raises(SensorError, match="delete the file to start counting afresh"):
        sensor.read(stamp(NOW))


def test_registered_but_off_by_default(tmp_path: Path) -> None:
    plugin = registered()["throughput"]
    assert not plugin.enabled_by_default
    assert plugin.create(plugin.settings_type(), SensorContext(tmp_path)).name == "throughput"
