"""A village with no connectivity: export the outbox to a file, import it on the server."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest

from agent.cli import main as probe_main
from agent.outbox import Outbox
from collector import schema
from coverwatch import protocol
from coverwatch.cli import main as server_main
from coverwatch.settings import MqttUrl
from tests.agent_harness import power_reading, write_probe_config


def stored_power_rows(database_url: str, probe_id: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*), count(DISTINCT seq) FROM readings_power WHERE probe_id = %s",
            (probe_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("compress", [False, True])
def test_export_then_import_stores_every_reading_once(
    database_url: str, probe_id: str, tmp_path: Path, compress: bool
) -> None:
    schema.upgrade(database_url)
    state = tmp_path / "state"
    outbox = Outbox(state / "outbox.sqlite3")
    outbox.add([power_reading(uptime_s=float(i)) for i in range(1234)])
    outbox.close()
    config = write_probe_config(
        tmp_path / "probe.toml",
        probe_id=probe_id,
        url=MqttUrl.parse("mqtt://127.0.0.1:1"),  # never contacted
        state_dir=state,
    )
    exported = tmp_path / "usb" / "cb-export.jsonl"
    exported.parent.mkdir()
    arguments = ["export", "--config", str(config), "-o", str(exported)]
    assert probe_main([*arguments, *(["--gzip"] if compress else [])]) == 0
    raw = exported.read_bytes()
    lines = (gzip.decompress(raw) if compress else raw).splitlines()
    assert len(lines) == 3  # 500 + 500 + 234 readings, one protocol message per line
    outbox_id = Outbox(state / "outbox.sqlite3").outbox_id
    for line in lines:
        decoded = protocol.decode_readings(protocol.readings_topic(probe_id), line)
        assert decoded.batch.outbox_id == outbox_id  # the identity travels with the file
    assert Outbox(state / "outbox.sqlite3").stats().pending == 1234  # export keeps them

    assert server_main(["import", str(exported), "--database-url", database_url]) == 0
    assert stored_power_rows(database_url, probe_id) == (1234, 1234)
    # The same file again (or the same readings later over MQTT): nothing doubles.
    assert server_main(["import", str(exported), "--database-url", database_url]) == 0
    assert stored_power_rows(database_url, probe_id) == (1234, 1234)
    # Later over MQTT with their time corrected after NTP sync: still stored once.
    from collector.storage import InboundMessage, Store

    store = Store(database_url)
    try:
        corrected = [
            msgspec.structs.replace(reading, taken_at=reading.taken_at + timedelta(hours=9))
            for reading in Outbox(state / "outbox.sqlite3").pending(limit=100)
        ]
        resent = protocol.ReadingsBatch(
            v=1, probe_id=probe_id, readings=corrected, outbox_id=outbox_id
        )
        result = store.write(
            [
                InboundMessage(
                    protocol.readings_topic(probe_id),
                    protocol.encode(resent),
                    datetime.now(UTC),
                )
            ]
        )
    finally:
        store.close()
    assert (result.stored_total, result.duplicates) == (0, 100)
    assert stored_power_rows(database_url, probe_id) == (1234, 1234)


def test_export_can_free_the_outbox_and_select_by_date(probe_id: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    outbox = Outbox(state / "outbox.sqlite3")
    outbox.add([power_reading()] * 10)
    outbox.close()
    config = write_probe_config(
        tmp_path / "probe.toml",
        probe_id=probe_id,
        url=MqttUrl.parse("mqtt://127.0.0.1:1"),
        state_dir=state,
    )
    future = tmp_path / "none.jsonl"
    assert (
        probe_main(["export", "--config", str(config), "-o", str(future), "--since", "2999-01-01"])
        == 0
    )
    assert future.read_bytes() == b""
    everything = tmp_path / "all.jsonl"
    assert (
        probe_main(["export", "--config", str(config), "-o", str(everything), "--delete-exported"])
        == 0
    )
    assert len(everything.read_bytes().splitlines()) == 1
    assert Outbox(state / "outbox.sqlite3").stats().pending == 0
    with pytest.raises(SystemExit):
        probe_main(["export", "--config", str(config), "-o", "x", "--since", "yesterday"])
