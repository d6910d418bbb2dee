"""Start-up errors of `coverwatch collector run` / `db upgrade` say what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coverwatch.localservices import AmqttBroker, free_port

BIN = Path(sys.executable).parent


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "coverwatch"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_wrong_database_url_is_named_without_its_password() -> None:
    port = free_port()
    url = f"postgresql://cw:hunter2@127.0.0.1:{port}/cw"
    result = run("db", "upgrade", "--database-url", url)
    assert result.returncode == 2
    assert f"cannot connect to postgresql://cw:***@127.0.0.1:{port}/cw" in result.stderr
    assert "Hint: check host, port" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_missing_settings_and_bad_values_are_refused(tmp_path: Path) -> None:
    result = run("collector", "run", env={"COVERWATCH_DATABASE_URL": "", "COVERWATCH_MQTT_URL": ""})
    assert result.returncode == 2
    assert "--database-url: is required" in result.stderr
    result = run("db", "upgrade", env={"COVERWATCH_DATABASE_URL": ""})
    assert result.returncode == 2
    assert (
        "--database-url: is required\nHint: pass --database-url, set COVERWATCH_DATABASE_URL"
        in (result.stderr)
    )
    config = tmp_path / "collector.toml"
    config.write_text(
        '[collector]\ndatabase_url = "postgresql://x/y"\nmqtt_url = "mqtt://h"\nbatch_size = 5\n'
    )
    result = run("collector", "run", "--config", str(config))
    assert result.returncode == 2
    assert "[collector] batch_size: unknown option" in result.stderr
    assert "known options: batch_age_s, batch_readings" in result.stderr
    result = run(
        "collector",
        "run",
        "--database-url",
        "postgresql://x/y",
        "--mqtt-url",
        "mqtt://h",
        "--batch-readings",
        "many",
    )
    assert "--batch-readings: expected int, got 'many'" in result.stderr


def test_unreachable_broker_and_bad_credentials(
    database_url: str, amqtt_broker: AmqttBroker
) -> None:
    port = free_port()
    result = run(
        "collector",
        "run",
        "--database-url",
        database_url,
        "--metrics-port",
        "0",
        "--mqtt-url",
        f"mqtt://127.0.0.1:{port}",
    )
    assert result.returncode == 2
    assert f"cannot reach the broker at mqtt://127.0.0.1:{port}" in result.stderr
    wrong = f"mqtt://coverwatch:wrong-password@127.0.0.1:{amqtt_broker.port}"
    result = run(
        "collector",
        "run",
        "--database-url",
        database_url,
        "--metrics-port",
        "0",
        "--mqtt-url",
        wrong,
    )
    assert result.returncode == 2
    assert "did not accept the connection" in result.stderr
    assert "Hint: check the username and password" in result.stderr
    assert "wrong-password" not in result.stderr
