"""The console scripts, run as a user runs them (real processes)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

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


# ------------------------------------- hostile input, as a user would pass it (issue item 3)


def one_paragraph(stderr: str) -> str:
    """The error as a user sees it: no traceback, one block of text without blank lines."""
    assert "Traceback" not in stderr, stderr
    assert stderr.strip(), "no message"
    assert "\n\n" not in stderr.strip(), stderr
    return stderr


def hostile_message(kind: str) -> bytes:
    good = json.dumps({"v": 1, "probe_id": "cb-001", "readings": [signal(1), signal(2)]})
    payload = good.encode()
    with_value = payload.replace(b'"monotonic_ms": 1001', b'"monotonic_ms": %s')
    return {
        "deep array": b"[" * 1000 + b"]" * 1000,
        "deep envelope": b'{"v": 1, "probe_id": "cb-001", "readings": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        "1e400": with_value % b"1e400",
        "10**5000": with_value % (b"1" + b"0" * 5000),
        "NUL byte": payload[:20] + b"\x00" + payload[20:],
        "Windows-1258": payload.replace(
            b'"home"', '"home", "operator_name": "Đi\u00ean"'.encode("cp1258")
        ),
        "UTF-16": good.encode("utf-16"),
        "lone surrogate": payload.replace(b'"home"', b'"home", "operator_name": "\\ud800"'),
        "truncated gzip": gzip.compress(payload)[:30],
        "empty": b"",
        "10 MB line": b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}',
    }[kind]


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("deep array", 2, "is nested too deeply to read"),
        ("deep envelope", 2, "rejected: JSON is nested too deeply to decode"),
        ("1e400", 1, "rejected: readings[0].monotonic_ms: Number out of range"),
        ("10**5000", 1, "rejected: readings[0].monotonic_ms: Integer value out of range"),
        ("NUL byte", 2, "contains a NUL byte at line 1, column 21 (byte 20)"),
        ("Windows-1258", 2, "is not UTF-8 text: byte 0xd0 at line 1, column"),
        ("UTF-16", 2, "is UTF-16 text"),
        ("lone surrogate", 2, "\\ud800 at line 1, column"),
        ("truncated gzip", 2, "is gzip-compressed: decompress it first"),
        ("empty", 2, "is empty: expected one message"),
        ("10 MB line", 2, "is 10485769 bytes: a message may be at most 1048576 bytes"),
    ],
)
def test_validate_explains_hostile_input_without_a_traceback(
    tmp_path: Path, kind: str, status: int, words: str
) -> None:
    message = tmp_path / "message.json"
    message.write_bytes(hostile_message(kind))
    result = run(
        "coverwatch",
        "protocol",
        "validate",
        "--topic",
        "coverwatch/v1/cb-001/readings",
        str(message),
    )
    stderr = one_paragraph(result.stderr)
    assert result.returncode == status, stderr
    assert words in stderr
    if status == 2:
        assert stderr.startswith((f"error: {message} ", "rejected: ")), stderr
        assert stderr.count("\n") == 1


def test_validate_reads_a_bounded_amount_of_stdin_and_refuses_a_directory(tmp_path: Path) -> None:
    piped = subprocess.run(
        [str(BIN / "coverwatch"), "protocol", "validate", "--topic", "coverwatch/v1/cb-001/status"],
        input=b"{" * (20 * 1024 * 1024),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 2
    assert one_paragraph(piped.stderr.decode()) == (
        "error: standard input is more than 1048576 bytes: a message may be at most 1048576 "
        "bytes (1 MiB); send at most 2000 readings per message\n"
    )
    result = run(
        "coverwatch",
        "protocol",
        "validate",
        "--topic",
        "coverwatch/v1/cb-001/status",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert one_paragraph(result.stderr) == f"error: cannot read {tmp_path}: Is a directory\n"


PROBE_TOML = '[probe]\nid = "cb-001"\n\n[mqtt]\nurl = "mqtt://cb-001:pw@127.0.0.1:1883"\n'


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (PROBE_TOML.encode() + b"# Vi\xd2t\n", "byte 0xd2 on line 6 is not UTF-8"),
        (PROBE_TOML.encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
        (PROBE_TOML.encode() + b"x = " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (PROBE_TOML.encode() + b"[outbox]\nmax_readings = 1" + b"0" * 5000, "thousands of digits"),
        (PROBE_TOML.encode() + b"[outbox]\nmax_age_days = 1" + b"0" * 400, "max_age_days"),
        (
            PROBE_TOML.replace("[mqtt]\n", '[mqtt]\nca_file = "/etc/ca\\u0000.pem"\n').encode(),
            "[mqtt] ca_file: contains a NUL character",
        ),
        (
            PROBE_TOML.encode() + b"[sensors.latency]\ninterval_s = 300\ninterval_s = 0.2\n",
            "is now packet_interval_s",
        ),
        (b"", "[probe] id is required"),
    ],
)
def test_config_check_explains_a_hostile_probe_toml(
    tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "probe.toml"
    path.write_bytes(content)
    result = run("coverwatch-probe", "config", "check", "--config", str(path))
    stderr = one_paragraph(result.stderr)
    assert result.returncode == 2
    assert stderr.startswith(f"error: {path} has ")
    assert words in stderr


def test_config_check_refuses_a_directory_and_a_binary_password_file(tmp_path: Path) -> None:
    result = run("coverwatch-probe", "config", "check", "--config", str(tmp_path))
    assert result.returncode == 2
    assert "cannot read it: Is a directory" in one_paragraph(result.stderr)
    secret = tmp_path / "password"
    secret.write_bytes(b"\xff\xfe\x00\x01")
    path = tmp_path / "probe.toml"
    path.write_text(PROBE_TOML.replace("cb-001:pw@", "cb-001@") + f'password_file = "{secret}"\n')
    result = run("coverwatch-probe", "config", "check", "--config", str(path))
    assert result.returncode == 2
    assert "[mqtt] password_file: " in one_paragraph(result.stderr)
