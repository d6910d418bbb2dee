"""Structured logs: one JSON object per line for journald/Loki, and never a password."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from collector.logs import JsonFormatter, TextFormatter, scrub
from coverwatch.localservices import AmqttBroker
from tests.collector_harness import CollectorProcess

BIN = Path(sys.executable).parent


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"coverwatch.test.{uuid.uuid4().hex[:8]}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def test_a_json_line_has_the_fields_and_the_extras() -> None:
    logger, stream = capture(JsonFormatter())
    logger.warning(
        "cannot refresh %s (%s)",
        "signal_hourly",
        "timeout",
        extra={"view": "signal_hourly", "seconds": 1.5, "kinds": ("signal", "latency")},
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it broke")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.pop("ts").endswith("Z")
    assert first == {
        "level": "WARNING",
        "logger": logger.name,
        "msg": "cannot refresh signal_hourly (timeout)",
        "view": "signal_hourly",
        "seconds": 1.5,
        "kinds": ["signal", "latency"],
    }
    assert second["msg"] == "it broke"
    assert second["level"] == "ERROR"
    assert second["exc"].startswith("Traceback")
    assert "RuntimeError: boom" in second["exc"]


def test_passwords_are_scrubbed_wherever_they_hide() -> None:
    logger, stream = capture(JsonFormatter())
    url = "postgresql://cw:hunter2@db:5432/cw"
    logger.info("connecting to %s", url, extra={"dsn": url, "nested": {"urls": [url]}})
    logger.info("libpq said: host=db password=hunter2 dbname=cw")
    try:
        raise ConnectionError(f"cannot connect to {url}")
    except ConnectionError:
        logger.exception("database down")
    text_logger, text_stream = capture(TextFormatter())
    text_logger.info("broker mqtts://cb-001:hunter2@broker:8883 and password='hunter 2'")

    output = stream.getvalue() + text_stream.getvalue()
    assert "hunter2" not in output
    assert "hunter 2" not in output
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "connecting to postgresql://cw:***@db:5432/cw"
    assert lines[0]["nested"] == {"urls": ["postgresql://cw:***@db:5432/cw"]}
    assert lines[1]["msg"] == "libpq said: host=db password=*** dbname=cw"
    assert "postgresql://cw:***@db:5432/cw" in lines[2]["exc"]
    assert "level=INFO" in text_stream.getvalue()
    assert "mqtts://cb-001:***@broker:8883 and password=***" in text_stream.getvalue()
    assert scrub("https://example.org/x?a=1") == "https://example.org/x?a=1"


def url_with_password(conninfo: str) -> tuple[str, str]:
    """The test database as a URL with a password (trust auth ignores an unknown one)."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    password = str(parts.get("password") or "hunter2-" + uuid.uuid4().hex[:6])
    url = (
        f"postgresql://{parts.get('user', 'postgres')}:{password}@{parts.get('host')}:"
        f"{parts.get('port', 5432)}/{parts['dbname']}"
    )
    return url, password


def test_collector_run_logs_json_lines_without_the_database_password(
    database_url: str, amqtt_broker: AmqttBroker, tmp_path: Path
) -> None:
    url, password = url_with_password(database_url)
    log = tmp_path / "collector.log"
    collector = CollectorProcess(
        url,
        amqtt_broker.url,
        log,
        client_id=f"j-{uuid.uuid4().hex[:8]}",
        extra=["--log-format", "json", "--rollup-refresh-s", "60"],
    )
    collector.start()
    # The rollup refresher's first round is logged (the database is reached by then).
    awaited = "re-materialized 0 probe-hours of the rollups"
    deadline = time.monotonic() + 20
    while awaited not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert collector.stop() == 0
    output = log.read_text()
    assert password not in output
    assert amqtt_broker.url.password
    assert amqtt_broker.url.password not in output
    records = [json.loads(line) for line in output.splitlines()]
    messages = [record["msg"] for record in records]
    running = next(m for m in messages if m.startswith("collector running:"))
    assert ":***@" in running
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert messages[-1] == "collector stopped cleanly"


def test_an_unknown_log_format_is_refused_with_a_hint() -> None:
    result = subprocess.run(
        [
            str(BIN / "coverwatch"),
            "collector",
            "run",
            "--database-url",
            "postgresql://x/y",
            "--mqtt-url",
            "mqtt://h",
            "--log-format",
            "yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ,
    )
    assert result.returncode == 2
    assert "--log-format: expected one of text, json, got 'yaml'" in result.stderr
    assert "Hint: text (key=value lines for a terminal) or json" in result.stderr
