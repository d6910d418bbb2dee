"""Helpers for agent tests: readings, probe configs and a real agent process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from coverwatch.protocol import PowerReading, SystemReading
from coverwatch.settings import MqttUrl
from tests.helpers import BOOT_ID, REPO


def power_reading(uptime_s: float = 100.0, *, monotonic_ms: int = 1000) -> PowerReading:
    return PowerReading(
        seq=0,
        boot_id=BOOT_ID,
        taken_at=datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
        monotonic_ms=monotonic_ms,
        ntp_synced=True,
        uptime_s=uptime_s,
    )


def system_reading(load: float = 0.5) -> SystemReading:
    return SystemReading(
        seq=0,
        boot_id=BOOT_ID,
        taken_at=datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
        monotonic_ms=1000,
        ntp_synced=True,
        load_1m=load,
    )


def write_probe_config(
    path: Path,
    *,
    probe_id: str,
    url: MqttUrl,
    state_dir: Path,
    interval_s: int = 1,
    extra: str = "",
    confirm_grace_s: float = 2.0,
) -> Path:
    """A probe.toml measuring only what works on any Linux box (power, system).

    Unconfirmed readings go out again ``confirm_grace_s`` after a reconnect (30 s in
    production), so tests that break the connection need not wait long.
    """
    path.write_text(
        f"""
[probe]
id = "{probe_id}"
state_dir = "{state_dir}"
log_level = "info"

[mqtt]
url = "{url.with_credentials()}"
backoff_min_s = 0.2
backoff_max_s = 1.0
keepalive_s = 10
confirm_grace_s = {confirm_grace_s}

[sensors.cellular]
enabled = false

[sensors.latency]
enabled = false

[sensors.power]
interval_s = {interval_s}

[sensors.system]
interval_s = {interval_s}
{extra}
""",
        encoding="utf-8",
    )
    return path


class AgentProcess:
    """``coverwatch-probe run`` as a real process that tests can kill -9."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        log.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(60)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
