"""The collector reads both encodings from a real broker into a real database: compact
batches are stored and acknowledged in the compact encoding, JSON ones in JSON, and a bad
compact payload is dead-lettered without holding up the messages behind it."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from collector import schema
from collector.ingest import IngestOptions
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.collector_harness import running_collector, wait_for_rows
from tests.helpers import publish, signal, subscribed

OUTBOX_ID = "0b9c6a52-4a63-4c8e-9d0f-6b7d1f2e3a4b"


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def batch(probe_id: str, seqs: range) -> bytes:
    document = {
        "v": 1,
        "probe_id": probe_id,
        "outbox_id": OUTBOX_ID,
        "readings": [signal(seq, rsrp_dbm=-90 - seq % 40) for seq in seqs],
    }
    return json.dumps(document).encode()


def dead_letter_reasons(database_url: str, probe_id: str) -> list[str]:
    with psycopg.connect(database_url) as connection:
        return [
            str(row[0])
            for row in connection.execute(
                "SELECT reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
                (f"%{probe_id}%",),
            )
        ]


def test_compact_and_json_batches_are_stored_and_acknowledged_in_their_encoding(
    schema_url: str, broker_url: MqttUrl
) -> None:
    compact_probe, json_probe = f"c-{uuid.uuid4().hex[:8]}", f"j-{uuid.uuid4().hex[:8]}"
    options = IngestOptions(client_id=f"c-{uuid.uuid4().hex[:8]}", batch_age_s=0.1)
    with (
        running_collector(schema_url, broker_url, options=options),
        subscribed(broker_url, protocol.ack_topic(compact_probe)) as compact_acks,
        subscribed(broker_url, protocol.ack_topic(json_probe)) as json_acks,
    ):
        publish(
            broker_url,
            protocol.readings_topic(compact_probe),
            protocol.compress(batch(compact_probe, range(1, 6))),
        )
        publish(broker_url, protocol.readings_topic(json_probe), batch(json_probe, range(1, 4)))
        assert wait_for_rows(schema_url, compact_probe, 5) == (5, 5)
        assert wait_for_rows(schema_url, json_probe, 3) == (3, 3)
        # By topic (amqtt has handed a fresh subscriber a stray retained message of
        # another topic), and every ack that came: a redelivered batch is confirmed again.
        compact_received = compact_acks.wait_for(1, topic=protocol.ack_topic(compact_probe))
        json_received = json_acks.wait_for(1, topic=protocol.ack_topic(json_probe))
    for compact_ack in compact_received:
        assert protocol.is_compact(compact_ack.payload)
        decoded = protocol.decode_ack(compact_ack.topic, compact_ack.payload)
        assert (decoded.outbox_id, decoded.committed) == (OUTBOX_ID, [(1, 5)])
    for json_ack in json_received:
        assert json_ack.payload.startswith(b"{")
        assert protocol.decode_ack(json_ack.topic, json_ack.payload).committed == [(1, 3)]


def test_bad_compact_payloads_are_dead_lettered_and_ingest_goes_on(
    schema_url: str, broker_url: MqttUrl
) -> None:
    attacker, neighbour = f"a-{uuid.uuid4().hex[:8]}", f"n-{uuid.uuid4().hex[:8]}"
    bomb = protocol.compress(b" " * (protocol.MAX_PAYLOAD_BYTES + 10))
    deep = protocol.compress(
        json.dumps({"v": 1, "probe_id": attacker, "readings": [signal(1, operator_name="x")]})
        .encode()
        .replace(b'"x"', b"[" * 5000 + b"]" * 5000)
    )
    bad_reading = protocol.compress(
        json.dumps(
            {"v": 1, "probe_id": attacker, "readings": [signal(7), signal(8, rsrp_dbm="abc")]}
        ).encode()
    )
    options = IngestOptions(client_id=f"c-{uuid.uuid4().hex[:8]}", batch_age_s=0.1)
    with running_collector(schema_url, broker_url, options=options):
        for payload in (b"\x02garbage", bomb, deep, bad_reading):
            publish(broker_url, protocol.readings_topic(attacker), payload)
        publish(
            broker_url,
            protocol.readings_topic(neighbour),
            protocol.compress(batch(neighbour, range(1, 4))),
        )
        assert wait_for_rows(schema_url, neighbour, 3) == (3, 3)
        assert wait_for_rows(schema_url, attacker, 1) == (1, 1)  # seq 7 of the mixed batch
        deadline = time.monotonic() + 30
        while len(dead_letter_reasons(schema_url, attacker)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    reasons = dead_letter_reasons(schema_url, attacker)
    assert len(reasons) == 4, reasons
    assert any("not valid DEFLATE" in reason for reason in reasons)
    assert any("inflates to more than" in reason for reason in reasons)
    assert any("nested too deeply" in reason for reason in reasons), reasons
    assert any("between -160 and -20" in reason for reason in reasons)
