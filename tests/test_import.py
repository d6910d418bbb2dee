"""`coverwatch import FILE`: offline export files through the collector's own write path."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from collector import schema
from coverwatch.localservices import AmqttBroker
from tests.collector_harness import (
    batch_payload,
    publish_batches,
    running_collector,
    stored_counts,
    wait_for_rows,
)
from tests.helpers import PROTOCOL_DOC, signal

BIN = Path(sys.executable).parent


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def coverwatch_import(path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "coverwatch"), "import", str(path), "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ,
    )


def query(database_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(sql.encode(), params).fetchall()


def export_lines(probe_id: str, seqs: range, per_line: int) -> list[bytes]:
    """What coverwatch-probe export writes: one readings batch per line."""
    return [
        batch_payload(probe_id, range(start, min(start + per_line, seqs.stop)))
        for start in range(seqs.start, seqs.stop, per_line)
    ]


def write_export(path: Path, lines: list[bytes], *, compress: bool = False) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_a_good_file_is_stored(schema_url: str, probe_id: str, tmp_path: Path) -> None:
    export = write_export(tmp_path / "cb.jsonl", export_lines(probe_id, range(25), 10))
    result = coverwatch_import(export, schema_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "cb.jsonl: 3 lines, 25 readings stored, 0 duplicates skipped, 0 rejected"
    )
    assert result.stderr == ""
    assert stored_counts(schema_url, probe_id) == (25, 25)
    status = query(schema_url, "SELECT last_taken_at IS NOT NULL FROM probe_status")
    assert status == [(True,)]


def test_a_gzip_file_is_recognised_by_its_magic_bytes(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    lines = export_lines(probe_id, range(30), 7)
    export = write_export(tmp_path / "from-the-usb-stick", lines, compress=True)
    result = coverwatch_import(export, schema_url)
    assert result.returncode == 0, result.stderr
    assert "5 lines, 30 readings stored" in result.stdout
    assert stored_counts(schema_url, probe_id) == (30, 30)


def test_bad_lines_are_reported_and_dead_lettered_and_good_ones_kept(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    partly_bad = {
        "v": 1,
        "probe_id": probe_id,
        "readings": [signal(10), signal(11, rsrp_dbm="abc"), signal(12)],
    }
    lines = [
        batch_payload(probe_id, range(5)),
        b"this line was cut when the stick was pulled",
        json.dumps(partly_bad).encode(),
        b"",  # blank lines are skipped, but still counted for line numbers
        b'{"v": 2, "probe_id": "%s", "readings": []}' % probe_id.encode(),
        json.dumps({"v": 1, "readings": [signal(30)]}).encode(),
        batch_payload(probe_id, range(20, 25)),
    ]
    export = write_export(tmp_path / "mixed.jsonl", lines)
    result = coverwatch_import(export, schema_url)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mixed.jsonl:2: rejected: payload is not valid UTF-8 JSON (JSON is malformed: "
        "invalid character (byte 4))",
        "mixed.jsonl:3: rejected: readings[1].rsrp_dbm: expected number between -160 and -20, "
        'got "abc"',
        "mixed.jsonl:5: rejected: v: unsupported protocol version 2: this collector understands "
        "version 1; upgrade the collector before the probes",
        "mixed.jsonl:6: rejected: probe_id: required field is missing (probe id of 1-64 "
        "lowercase letters, digits, '-' or '_' (e.g. cb-001))",
    ]
    assert result.stdout.strip() == (
        "mixed.jsonl: 6 lines, 12 readings stored, 0 duplicates skipped, 4 rejected "
        "(kept in dead_letters)"
    )
    assert stored_counts(schema_url, probe_id) == (12, 12)
    letters = query(
        schema_url,
        "SELECT topic, probe_id, field, reading_index, payload FROM dead_letters ORDER BY id",
    )
    assert [row[:4] for row in letters] == [
        ("import:mixed.jsonl:3", probe_id, "readings[1].rsrp_dbm", 1),
        ("import:mixed.jsonl:5", probe_id, "v", None),
        ("import:mixed.jsonl:2", None, None, None),
        ("import:mixed.jsonl:6", None, "probe_id", None),
    ]
    assert letters[2][4] == lines[1]


def test_importing_twice_or_after_mqtt_stores_nothing_twice(
    schema_url: str, amqtt_broker: AmqttBroker, probe_id: str, tmp_path: Path
) -> None:
    with running_collector(schema_url, amqtt_broker.url):
        publish_batches(amqtt_broker.url, probe_id, 1, 10)  # seq 0-9 arrive over MQTT
        assert wait_for_rows(schema_url, probe_id, 10) == (10, 10)
    export = write_export(tmp_path / "cb.jsonl", export_lines(probe_id, range(5, 20), 4))
    first = coverwatch_import(export, schema_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        "cb.jsonl: 4 lines, 10 readings stored, 5 duplicates skipped, 0 rejected"
    )
    again = coverwatch_import(export, schema_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        "cb.jsonl: 4 lines, 0 readings stored, 15 duplicates skipped, 0 rejected"
    )
    assert stored_counts(schema_url, probe_id) == (20, 20)


def test_a_missing_file_or_one_that_is_not_json_is_refused(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    missing = coverwatch_import(tmp_path / "nope.jsonl", schema_url)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    )
    photo = tmp_path / "IMG_0001.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    csv = write_export(tmp_path / "readings.csv", [b"probe_id,seq", b"cb-001,1"])
    for path in (photo, csv):
        result = coverwatch_import(path, schema_url)
        assert result.returncode == 2
        assert result.stderr.startswith(
            f"error: {path.name} is not a coverwatch export file: line 1 is not JSON"
        )
        assert "coverwatch-probe export" in result.stderr
    assert query(schema_url, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_a_truncated_gzip_file_keeps_the_lines_before_the_damage(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    lines = export_lines(probe_id, range(2000), 100)
    whole = gzip.compress(b"".join(line + b"\n" for line in lines))
    export = tmp_path / "pulled-too-soon.jsonl.gz"
    export.write_bytes(whole[: len(whole) // 2])
    result = coverwatch_import(export, schema_url)
    assert result.returncode == 2
    assert "error: cannot read pulled-too-soon.jsonl.gz past line" in result.stderr
    rows, distinct = stored_counts(schema_url, probe_id)
    assert 0 < rows < 2000
    assert rows == distinct
    assert rows % 100 == 0  # whole lines only


def test_an_unprepared_database_is_refused(
    database_url: str, probe_id: str, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "cb.jsonl", export_lines(probe_id, range(3), 3))
    result = coverwatch_import(export, database_url)
    assert result.returncode == 2
    assert "lacks migrations 001_initial, 002_rollups" in result.stderr
    assert "run coverwatch db upgrade first" in result.stderr


def test_the_documented_example_file_imports(schema_url: str, tmp_path: Path) -> None:
    section = PROTOCOL_DOC.read_text().split("## Offline export files", 1)[1]
    example = re.findall(r"```text\n(.*?)```", section, flags=re.DOTALL)[0]
    export = tmp_path / "cb-001.jsonl"
    export.write_text(example)
    result = coverwatch_import(export, schema_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "cb-001.jsonl: 2 lines, 2 readings stored, 0 duplicates skipped, 0 rejected"
    )
