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


# ------------------------------------------------ hostile files, end to end (issue item 3)


def one_reading(probe_id: str, seq: int, **fields: object) -> bytes:
    return json.dumps({"v": 1, "probe_id": probe_id, "readings": [signal(seq, **fields)]}).encode()


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    """A failure a technician can read: no traceback, no blank-line-separated essay."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "\n\n" not in result.stderr.strip()


def test_hostile_lines_are_rejected_one_by_one_and_the_good_ones_stored(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    pid = probe_id.encode()
    lines = [
        # line 1: nested 5,000 deep (a traceback before the fix, and the file refused)
        b'{"v": 1, "probe_id": "%s", "x": ' % pid + b"[" * 5000 + b"]" * 5000 + b"}",
        batch_payload(probe_id, range(5)),
        one_reading(probe_id, 5).replace(b'"monotonic_ms": 1005', b'"monotonic_ms": 1e400'),
        one_reading(probe_id, 6).replace(b'"monotonic_ms": 1006', b"1" + b"0" * 5000),
        b'{"v": 1, "probe_id": "%s",\x00}' % pid,
        one_reading(probe_id, 7, operator_name="Viettel\u0000"),
        one_reading(probe_id, 8).replace(
            b'"home"', '"home", "operator_name": "Đi\u00ean"'.encode("cp1258")
        ),
        one_reading(probe_id, 9).replace(b'"home"', b'"home", "operator_name": "\\ud800"'),
        b'{"v": 1, "probe_id": "%s", "x": "' % pid + b"a" * (10 * 1024 * 1024) + b'"}',
        b"[" * 100_000,
        batch_payload(probe_id, range(20, 25)),
    ]
    export = write_export(tmp_path / "hostile.jsonl", lines)
    result = coverwatch_import(export, schema_url)
    assert_clean_failure(result)
    assert result.returncode == 1, result.stderr
    rejected = [line for line in result.stderr.splitlines() if ": rejected: " in line]
    numbers = [int(line.split(":")[1]) for line in rejected]
    assert numbers == [1, 3, 4, 5, 6, 7, 8, 9, 10], result.stderr
    assert f"line is {len(lines[8])} bytes, the limit is 1048576" in rejected[7]
    assert "UTF-8" in rejected[5]
    assert result.stdout.strip() == (
        "hostile.jsonl: 11 lines, 10 readings stored, 0 duplicates skipped, 9 rejected "
        "(kept in dead_letters)"
    )
    assert stored_counts(schema_url, probe_id) == (10, 10)
    topics = query(schema_url, "SELECT topic FROM dead_letters ORDER BY topic")
    assert sorted(int(topic.rsplit(":", 1)[1]) for (topic,) in topics) == numbers


def test_a_gzip_bomb_line_is_skipped_and_the_lines_around_it_stored(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    bomb = b'{"probe_id": "%s", "x": "' % probe_id.encode() + b"0" * (128 * 1024 * 1024)
    data = b"\n".join([batch_payload(probe_id, range(3)), bomb, batch_payload(probe_id, [3])])
    export = tmp_path / "bomb.jsonl.gz"
    export.write_bytes(gzip.compress(data + b"\n", 1))
    assert export.stat().st_size < 1024 * 1024
    result = coverwatch_import(export, schema_url)
    assert_clean_failure(result)
    assert result.returncode == 1
    assert f"bomb.jsonl.gz:2: rejected: line is {len(bomb)} bytes, the limit is 1048576" in (
        result.stderr
    )
    assert stored_counts(schema_url, probe_id) == (4, 4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("utf-16", "line 1 is not JSON (it looks like UTF-16 text; save the file as UTF-8)"),
        ("deep array", "line 1 is not JSON (it is nested too deeply)"),
        ("not gzip", "cannot read damaged.jsonl: "),
        ("directory", "cannot read "),
    ],
)
def test_a_file_that_cannot_be_imported_says_why_in_one_paragraph(
    schema_url: str, probe_id: str, tmp_path: Path, content: str, message: str
) -> None:
    export = tmp_path / "damaged.jsonl"
    good = batch_payload(probe_id, range(3))
    if content == "utf-16":
        export.write_bytes((good.decode() + "\n").encode("utf-16"))
    elif content == "deep array":
        export.write_bytes(b"[" * 1000 + b"]" * 1000 + b"\n" + good + b"\n")
    elif content == "not gzip":
        export.write_bytes(b"\x1f\x8b" + bytes(range(256)))
    else:
        export.mkdir()
    result = coverwatch_import(export, schema_url)
    assert_clean_failure(result)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert stored_counts(schema_url, probe_id) == (0, 0)


def test_a_file_name_that_is_not_utf8_is_imported(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    name = b"cb-\xff.jsonl"
    export = Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + name))
    write_export(export, [batch_payload(probe_id, range(2)), b"not json"])
    result = coverwatch_import(export, schema_url)
    assert_clean_failure(result)
    assert result.returncode == 1
    assert result.stdout.startswith("cb-\\xff.jsonl: 2 lines, 2 readings stored")
    assert query(schema_url, "SELECT topic FROM dead_letters") == [("import:cb-\\xff.jsonl:2",)]


def test_the_largest_seq_the_protocol_allows_does_not_stop_an_import(
    schema_url: str, probe_id: str, tmp_path: Path
) -> None:
    lines = [one_reading(probe_id, 2**63 - 1, monotonic_ms=5), batch_payload(probe_id, [1])]
    result = coverwatch_import(write_export(tmp_path / "max-seq.jsonl", lines), schema_url)
    assert_clean_failure(result)
    assert result.returncode in (0, 1), result.stderr
    assert stored_counts(schema_url, probe_id)[0] >= 1
