"""The collector against a real broker and a real PostgreSQL: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from collector import schema
from collector.ingest import IngestOptions
from collector.storage import COLUMNS
from coverwatch import protocol
from coverwatch.localservices import LocalPostgres, MosquittoBroker
from coverwatch.localservices.broker import LocalBroker
from coverwatch.settings import MqttUrl
from tests.collector_harness import (
    CollectorProcess,
    batch_payload,
    publish_batches,
    running_collector,
    stored_counts,
    wait_for_rows,
)
from tests.conftest import Layout
from tests.helpers import BOOT_ID, publish, reading_fields, signal


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def query(database_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(sql.encode(), params).fetchall()


def test_migrations_are_idempotent_and_match_the_protocol(
    database_url: str, storage_layout: Layout
) -> None:
    first = schema.upgrade(database_url)
    again = schema.upgrade(database_url)
    shipped = [m.version for m in schema.migrations_for(storage_layout)]
    assert shipped[:2] == [1, 2]
    assert [m.version for m in first] == shipped
    assert again == []
    for kind, fields in COLUMNS.items():
        columns = {
            row[0]
            for row in query(
                database_url,
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                f"readings_{kind}",
            )
        }
        missing = {"probe_id", *fields} - columns
        assert not missing, f"readings_{kind} lacks columns {missing}: add a migration"
    assert query(database_url, "SELECT DISTINCT storage FROM schema_migrations") == [
        (storage_layout,)
    ]


def test_readings_stored_once_bad_input_dead_lettered(
    schema_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    topic = protocol.readings_topic(probe_id)
    with running_collector(schema_url, broker_url):
        publish(broker_url, topic, batch_payload(probe_id, range(10)))
        publish(broker_url, topic, b"\xff garbage")
        publish(
            broker_url, topic, b'{"v": 9, "probe_id": "%s", "readings": [1]}' % probe_id.encode()
        )
        publish(broker_url, protocol.readings_topic("someone-else"), batch_payload(probe_id, [99]))
        mixed = {
            "v": 1,
            "probe_id": probe_id,
            "readings": [signal(10), signal(11, rsrp_dbm="abc"), signal(12)],
        }
        publish(broker_url, topic, json.dumps(mixed).encode())
        publish(broker_url, topic, batch_payload(probe_id, range(10)))  # a re-send
        publish(broker_url, topic, batch_payload(probe_id, range(13, 20)))
        assert wait_for_rows(schema_url, probe_id, 19) == (19, 19)
        deadline = time.monotonic() + 20
        letters: list[tuple[object, ...]] = []
        while time.monotonic() < deadline and len(letters) < 4:
            letters = query(
                schema_url,
                "SELECT topic, field, reason, reading_index FROM dead_letters "
                "WHERE topic LIKE %s OR probe_id = %s ORDER BY id",
                f"%{probe_id}%",
                probe_id,
            ) + query(
                schema_url,
                "SELECT topic, field, reason, reading_index FROM dead_letters WHERE topic = %s",
                protocol.readings_topic("someone-else"),
            )
            time.sleep(0.1)
    reasons = {(row[1], row[3]): str(row[2]) for row in letters}
    assert reasons[(None, None)].startswith("payload is not valid UTF-8 JSON")
    assert reasons[("v", None)].startswith("unsupported protocol version 9")
    assert reasons[("probe_id", None)].startswith(f"probe id '{probe_id}' does not match")
    assert reasons[("readings[1].rsrp_dbm", 1)] == (
        'expected number between -160 and -20, got "abc"'
    )
    assert stored_counts(schema_url, probe_id) == (19, 19)


def test_status_and_reboot_are_tracked(schema_url: str, broker_url: MqttUrl, probe_id: str) -> None:
    status_topic = protocol.status_topic(probe_id)
    other_boot = str(uuid.uuid4())
    with running_collector(schema_url, broker_url):
        online = {
            "v": 1,
            "probe_id": probe_id,
            "state": "online",
            "at": "2026-11-22T08:00:00Z",
            "agent_version": "0.1.0",
        }
        publish(broker_url, status_topic, json.dumps(online).encode(), retain=True)
        publish(broker_url, protocol.readings_topic(probe_id), batch_payload(probe_id, [1]))
        after_reboot = reading_fields(
            2,
            kind="signal",
            registration="searching",
            boot_id=other_boot,
            taken_at="2026-11-22T09:00:00Z",
        )
        body = {"v": 1, "probe_id": probe_id, "readings": [after_reboot]}
        time.sleep(1.5)  # a later batch, as after a reboot
        publish(broker_url, protocol.readings_topic(probe_id), json.dumps(body).encode())
        wait_for_rows(schema_url, probe_id, 2)
        time.sleep(0.5)
        publish(broker_url, status_topic, b"", retain=True)  # clear the retained status
    health = query(
        schema_url,
        "SELECT state, agent_version, boot_id::text, last_taken_at IS NOT NULL, stale, registered "
        "FROM probe_health WHERE probe_id = %s",
        probe_id,
    )
    assert health == [("online", "0.1.0", other_boot, True, False, False)]
    events = query(
        schema_url,
        "SELECT event, detail->>'previous_boot_id' FROM probe_events "
        "WHERE probe_id = %s ORDER BY at",
        probe_id,
    )
    assert events == [("online", None), ("reboot", BOOT_ID)]


@pytest.mark.slow
def test_kill_9_of_the_collector_loses_and_doubles_nothing(
    schema_url: str, broker: LocalBroker, probe_id: str, tmp_path: Path
) -> None:
    url = broker.url
    collector = CollectorProcess(
        schema_url, url, tmp_path / "collector.log", client_id=f"k-{probe_id}"
    )
    collector.start()
    published = publish_batches(url, probe_id, 40, 25)
    time.sleep(0.3)
    collector.kill()  # mid-stream: some batches committed, some not, some not acked
    published += publish_batches(url, probe_id, 40, 25, first_seq=published)
    collector.start()
    published += publish_batches(url, probe_id, 20, 25, first_seq=published)
    counts = wait_for_rows(schema_url, probe_id, published)
    assert collector.stop() == 0
    assert counts == (published, published)


@pytest.mark.slow
@pytest.mark.mosquitto
def test_broker_restart_loses_and_doubles_nothing(
    schema_url: str, mosquitto_broker: MosquittoBroker, probe_id: str, tmp_path: Path
) -> None:
    url = mosquitto_broker.url
    collector = CollectorProcess(
        schema_url, url, tmp_path / "collector.log", client_id=f"b-{probe_id}"
    )
    collector.start()
    published = publish_batches(url, probe_id, 30, 20)
    collector.kill()  # let the broker hold queued messages for the session...
    published += publish_batches(url, probe_id, 30, 20, first_seq=published)
    mosquitto_broker.stop()  # ...across its own restart (persisted to disk)
    mosquitto_broker.start()
    collector.start()
    published += publish_batches(url, probe_id, 10, 20, first_seq=published)
    counts = wait_for_rows(schema_url, probe_id, published)
    assert collector.stop() == 0
    assert counts == (published, published)


@pytest.mark.slow
def test_database_restart_loses_and_doubles_nothing(
    mosquitto_broker: MosquittoBroker, probe_id: str, tmp_path: Path
) -> None:
    server = LocalPostgres(tmp_path / "pg")
    server.start()
    try:
        database_url = server.url()
        schema.upgrade(database_url)
        url = mosquitto_broker.url
        collector = CollectorProcess(
            database_url, url, tmp_path / "collector.log", client_id=f"d-{probe_id}"
        )
        collector.start()
        published = publish_batches(url, probe_id, 20, 25)
        server.kill()  # PostgreSQL crashes while readings keep coming
        published += publish_batches(url, probe_id, 20, 25, first_seq=published)
        time.sleep(2)  # the collector retries with backoff meanwhile
        server.start()
        published += publish_batches(url, probe_id, 10, 25, first_seq=published)
        counts = wait_for_rows(database_url, probe_id, published, timeout_s=90)
        assert collector.stop() == 0
        assert counts == (published, published)
        assert "database unavailable" in (tmp_path / "collector.log").read_text()
    finally:
        server.stop()


@pytest.mark.mosquitto
def test_two_collectors_share_one_subscription(
    schema_url: str, mosquitto_broker: MosquittoBroker, probe_id: str
) -> None:
    url = mosquitto_broker.url
    group = f"g-{probe_id}"
    first = IngestOptions(client_id=f"a-{probe_id}", shared_group=group, batch_age_s=0.1)
    second = IngestOptions(client_id=f"b-{probe_id}", shared_group=group, batch_age_s=0.1)
    with (
        running_collector(schema_url, url, options=first) as one,
        running_collector(schema_url, url, options=second) as two,
    ):
        published = publish_batches(url, probe_id, 60, 10)
        counts = wait_for_rows(schema_url, probe_id, published)
        shares = [
            one.metrics.messages.labels("stored")._value.get(),
            two.metrics.messages.labels("stored")._value.get(),
        ]
    assert counts == (published, published)
    assert all(share > 0 for share in shares), f"one collector got everything: {shares}"
    assert sum(shares) >= 60


def test_a_row_the_database_refuses_is_quarantined_alone(
    schema_url: str, broker_url: MqttUrl, probe_id: str
) -> None:
    """Valid JSON, valid protocol, but PostgreSQL text cannot hold NUL: a permanent error."""
    body = {
        "v": 1,
        "probe_id": probe_id,
        "readings": [signal(1), signal(2, operator_name="Viettel\u0000"), signal(3)],
    }
    with running_collector(schema_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), json.dumps(body).encode())
        assert wait_for_rows(schema_url, probe_id, 2) == (2, 2)
        deadline = time.monotonic() + 20
        letters: list[tuple[object, ...]] = []
        while time.monotonic() < deadline and not letters:
            letters = query(
                schema_url,
                "SELECT reason, payload, reading_index FROM dead_letters WHERE probe_id = %s",
                probe_id,
            )
            time.sleep(0.1)
    assert [(str(r).split(":")[0]) for r, _, _ in letters] == ["database refused the row"]
    assert letters[0][2] == 1  # the refused reading's place in its message is kept
    payload = letters[0][1]
    assert isinstance(payload, bytes)
    assert json.loads(payload)["seq"] == 2
