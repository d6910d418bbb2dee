"""No message can stop ingest: hostile payloads are dead-lettered and acknowledged, an
unexpected failure on one message is retried a bounded number of times and then
quarantined, and the messages of every other probe keep flowing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence

import psycopg
import pytest

from collector import schema
from collector.ingest import Collector, IngestOptions
from collector.storage import DecodedBatch, InboundMessage, Store, WriteResult
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.collector_harness import batch_payload, running_collector, wait_for_rows
from tests.helpers import publish, signal

DEEP = b"[" * 1000 + b"]" * 1000


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def dead_letters(database_url: str, topic_like: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as connection:
        return [
            (str(topic), str(reason))
            for topic, reason in connection.execute(
                "SELECT topic, reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
                (topic_like,),
            )
        ]


def wait_for_letters(database_url: str, topic_like: str, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 30
    letters = dead_letters(database_url, topic_like)
    while len(letters) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        letters = dead_letters(database_url, topic_like)
    return letters


def test_deeply_nested_json_on_any_topic_is_dead_lettered_and_ingest_goes_on(
    schema_url: str, broker_url: MqttUrl
) -> None:
    attacker, neighbour = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    nested_reading = json.dumps(
        {"v": 1, "probe_id": attacker, "readings": [signal(1, operator_name="x")]}
    ).encode()
    nested_reading = nested_reading.replace(b'"x"', DEEP)
    nested_status = b'{"v":1,"probe_id":"%s","state":"online","extra":%s}' % (
        attacker.encode(),
        DEEP,
    )
    options = IngestOptions(client_id=f"c-{uuid.uuid4().hex[:8]}", batch_age_s=0.1)
    with running_collector(schema_url, broker_url, options=options):
        publish(broker_url, protocol.readings_topic(attacker), nested_reading)
        publish(broker_url, protocol.status_topic(attacker), nested_status)
        publish(broker_url, protocol.readings_topic(neighbour), batch_payload(neighbour, range(5)))
        assert wait_for_rows(schema_url, neighbour, 5) == (5, 5)
        letters = wait_for_letters(schema_url, f"%{attacker}%", 2)
    assert len(letters) == 2
    assert all("nested too deeply" in reason for _, reason in letters)
    # Acknowledged: a collector with the same session gets nothing back after a restart.
    with running_collector(schema_url, broker_url, options=options):
        publish(broker_url, protocol.readings_topic(neighbour), batch_payload(neighbour, [9]))
        assert wait_for_rows(schema_url, neighbour, 6) == (6, 6)
    assert len(dead_letters(schema_url, f"%{attacker}%")) == 2


class _StoreFailingOn(Store):
    """The real store, except that one payload marker raises an unexpected error — the
    stand-in for a bug we do not know yet (the database is real)."""

    def __init__(self, database_url: str, marker: bytes) -> None:
        super().__init__(database_url)
        self.marker = marker
        self.failures = 0

    def write(
        self, messages: Sequence[InboundMessage], decoded: DecodedBatch | None = None
    ) -> WriteResult:
        if any(self.marker in message.payload for message in messages):
            self.failures += 1
            raise RuntimeError("an unexpected bug")
        return super().write(messages, decoded)


def test_an_unexpected_error_on_one_message_is_retried_then_quarantined(
    schema_url: str, broker_url: MqttUrl
) -> None:
    victim, neighbour = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    store = _StoreFailingOn(schema_url, marker=b'"boom"')
    options = IngestOptions(
        client_id=f"c-{uuid.uuid4().hex[:8]}",
        batch_age_s=0.5,
        retry_initial_s=0.05,
        max_message_attempts=3,
    )
    collector = Collector(broker_url, store, options)
    collector.connect()
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    try:
        bad = {"v": 1, "probe_id": victim, "readings": [signal(1, operator_name="boom")]}
        publish(broker_url, protocol.readings_topic(neighbour), batch_payload(neighbour, range(3)))
        publish(broker_url, protocol.readings_topic(victim), json.dumps(bad).encode())
        publish(broker_url, protocol.readings_topic(neighbour), batch_payload(neighbour, [7, 8]))
        assert wait_for_rows(schema_url, neighbour, 5) == (5, 5)
        letters = wait_for_letters(schema_url, f"%{victim}%", 1)
    finally:
        collector.stop()
        thread.join(30)
    assert len(letters) == 1
    assert "failed on this message 3 times" in letters[0][1]
    assert "RuntimeError: an unexpected bug" in letters[0][1]
    # Tried as part of a batch (maybe), then alone: a bounded number of times.
    assert 3 <= store.failures <= 4


def test_a_decoder_that_fails_costs_only_a_second_decode(
    schema_url: str, broker_url: MqttUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder thread should never fail (any bytes decode to readings or dead letters),
    but if it did, the writer decodes the batch again itself: nothing is lost, nothing
    stops, and the decoder thread keeps serving the batches behind it."""
    from collector import ingest, storage

    probe_id = f"t-{uuid.uuid4().hex[:8]}"
    calls = {"decoder": 0}

    def fails_in_the_decoder_thread(messages: Sequence[InboundMessage]) -> DecodedBatch:
        if threading.current_thread().name == "collector-decoder":
            calls["decoder"] += 1
            if calls["decoder"] == 1:
                raise RuntimeError("a decoder bug")
        return storage.decode_messages(messages)

    monkeypatch.setattr(ingest, "decode_messages", fails_in_the_decoder_thread)
    with running_collector(schema_url, broker_url):
        publish(broker_url, protocol.readings_topic(probe_id), batch_payload(probe_id, range(3)))
        assert wait_for_rows(schema_url, probe_id, 3) == (3, 3)
        publish(broker_url, protocol.readings_topic(probe_id), batch_payload(probe_id, [5, 6]))
        assert wait_for_rows(schema_url, probe_id, 5) == (5, 5)
    # Other tests' retained status messages on the shared broker reach this collector
    # too, so count decoder calls rather than messages.
    assert calls["decoder"] >= 2, "the decoder thread went on after its failure"
