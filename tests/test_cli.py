"""The console scripts, run as a user runs them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from coverwatch import __version__
from tests.helpers import argument_after, doc_mosquitto_pub_commands, signal

BIN = Path(sys.executable).parent


def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_versions() -> None:
    assert run("coverwatch", "--version").stdout.strip() == f"coverwatch {__version__}"
    assert run("coverwatch-probe", "--version").stdout.strip() == f"coverwatch-probe {__version__}"


def test_validate_accepts_the_documented_example(tmp_path: Path) -> None:
    argv = next(a for a in doc_mosquitto_pub_commands() if "readings" in argument_after(a, "-t"))
    message = tmp_path / "message.json"
    message.write_text(argument_after(argv, "-m"))
    result = run(
        "coverwatch", "protocol", "validate", "--topic", argument_after(argv, "-t"), str(message)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "ok: probe cb-001, 4 valid readings (1 latency, 1 power, 2 signal), 0 rejected"
    )


def test_validate_reports_each_bad_reading_and_fails() -> None:
    body = {"v": 1, "probe_id": "cb-001", "readings": [signal(1), signal(2, rsrp_dbm="abc")]}
    result = run(
        "coverwatch",
        "protocol",
        "validate",
        "--topic",
        "coverwatch/v1/cb-001/readings",
        stdin=json.dumps(body).encode(),
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'rejected: readings[1].rsrp_dbm: expected number between -160 and -20, got "abc"'
    )
    assert "partly rejected: probe cb-001, 1 valid readings" in result.stdout


def test_validate_rejects_a_whole_message_with_reason() -> None:
    result = run(
        "coverwatch",
        "protocol",
        "validate",
        "--topic",
        "coverwatch/v1/cb-001/status",
        stdin=b'{"v": 1, "probe_id": "cb-002", "state": "online"}',
    )
    assert result.returncode == 1
    assert "probe_id: probe id 'cb-002' does not match the topic's probe id 'cb-001'" in (
        result.stderr
    )


def test_missing_file_is_a_clear_error() -> None:
    result = run(
        "coverwatch",
        "protocol",
        "validate",
        "--topic",
        "coverwatch/v1/cb-001/readings",
        "/nonexistent/message.json",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: cannot read /nonexistent/message.json: No such file or directory"
    )


def test_bad_topic_is_a_clear_error() -> None:
    result = run("coverwatch", "protocol", "validate", "--topic", "readings", stdin=b"{}")
    assert result.returncode == 1
    assert "topic: topic 'readings' is not of the form coverwatch/v1/<probe_id>/" in result.stderr
