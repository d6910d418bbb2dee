"""The publisher against real brokers and a real collector: readings leave the outbox
only once the collector has committed them; outages, lost acks, backlog, refusals."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from agent.outbox import Outbox
from agent.publisher import Publisher, PublisherOptions, _RangeSet
from collector import schema
from collector.ingest import IngestOptions
from coverwatch import protocol
from coverwatch.localservices import AmqttBroker, MosquittoBroker
from coverwatch.protocol import SensorErrorReading
from coverwatch.settings import MqttUrl
from tests.agent_harness import power_reading
from tests.collector_harness import running_collector
from tests.helpers import BOOT_ID, Received, publish, subscribed


def seqs_in(messages: list[Received]) -> list[int]:
    seqs: list[int] = []
    for message in messages:
        decoded = protocol.decode_readings(message.topic, message.payload)
        assert not decoded.rejected
        seqs.extend(reading.seq for reading in decoded.batch.readings)
    return seqs


def options(probe_id: str, url: MqttUrl, **overrides: object) -> PublisherOptions:
    values: dict[str, object] = {
        "probe_id": probe_id,
        "url": url,
        "boot_id": BOOT_ID,
        "backoff_min_s": 0.1,
        "backoff_max_s": 0.5,
        "keepalive_s": 10,
    }
    values.update(overrides)
    return PublisherOptions(**values)  # type: ignore[arg-type]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite3")
    yield box
    box.close()


def wait_until(condition: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def schema_url(database_url: str) -> str:
    schema.upgrade(database_url)
    return database_url


def stored_power(database_url: str, probe_id: str) -> list[int]:
    """Every stored power reading's seq, duplicates included."""
    with psycopg.connect(database_url) as connection:
        return [
            int(row[0])
            for row in connection.execute(
                "SELECT seq FROM readings_power WHERE probe_id = %s ORDER BY seq", (probe_id,)
            )
        ]


def collector_options() -> IngestOptions:
    import uuid

    return IngestOptions(client_id=f"c-{uuid.uuid4().hex[:8]}", batch_age_s=0.1)


def test_readings_leave_the_outbox_only_once_the_collector_committed_them(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    topic = protocol.readings_topic(probe_id)
    publisher = Publisher(options(probe_id, broker_url, confirm_grace_s=1.0), outbox)
    with subscribed(broker_url, topic) as inbox:
        seqs = outbox.add([power_reading(uptime_s=float(i)) for i in range(8)])
        publisher.start()
        publisher.notify_live(seqs)
        messages = inbox.wait_for(1, topic=topic)
        wait_until(lambda: publisher.acknowledged_readings == 8)
    # The broker has them (PUBACK), nobody has committed them: they stay.
    time.sleep(0.5)
    assert outbox.stats().pending == 8
    assert publisher.unsent_readings() == 8
    assert not publisher.wait_idle(timeout_s=0.2)
    with running_collector(schema_url, broker_url, options=collector_options()):
        # Not confirmed, so sent again after a reconnect or the confirm timeout; here
        # the collector was not subscribed when they were first sent (no persistent
        # session yet), so only a re-send brings them in.
        publisher.drop_connection()
        assert publisher.wait_idle(timeout_s=30)
    publisher.stop()
    assert seqs_in(messages) == seqs == list(range(1, 9))
    assert outbox.stats().pending == 0
    assert publisher.confirmed_readings == 8
    assert stored_power(schema_url, probe_id) == seqs


def test_a_confirmation_for_another_outbox_or_probe_deletes_nothing(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    publisher = Publisher(options(probe_id, broker_url), outbox)
    seqs = outbox.add([power_reading()] * 5)
    publisher.start()
    publisher.notify_live(seqs)
    wait_until(lambda: publisher.acknowledged_readings == 5)
    other_outbox = protocol.CommitAck(
        v=1, probe_id=probe_id, outbox_id=protocol.NIL_OUTBOX_ID, committed=[(1, 5)]
    )
    publish(broker_url, protocol.ack_topic(probe_id), protocol.encode(other_outbox))
    publish(broker_url, protocol.ack_topic(probe_id), b'{"v":1,"probe_id":' + b"[" * 5000)
    time.sleep(1.0)
    publisher.stop(drain_timeout_s=0.1)
    assert outbox.stats().pending == 5
    assert publisher.confirmed_readings == 0


def test_birth_is_retained_online_and_clean_stop_retained_offline(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    status_topic = protocol.status_topic(probe_id)
    publisher = Publisher(options(probe_id, broker_url), outbox)
    publisher.start()
    assert publisher.connected.wait(10)
    # "connected" is set when the birth is queued, not when the broker has it: a new
    # subscriber may get it live (not retained) first, so look until it is retained.
    birth = retained_message(broker_url, status_topic)
    publisher.stop(reason="maintenance")
    goodbye = retained_message(broker_url, status_topic, state="offline")
    online = protocol.decode_status(status_topic, birth.payload)
    offline = protocol.decode_status(status_topic, goodbye.payload)
    assert (birth.retain, online.state, online.boot_id) == (True, "online", BOOT_ID)
    assert (goodbye.retain, offline.state, offline.reason) == (True, "offline", "maintenance")


def retained_message(url: MqttUrl, topic: str, *, state: str = "online") -> Received:
    """The retained status on ``topic`` once it says ``state``, as a new subscriber sees it."""
    deadline = time.monotonic() + 15
    while True:
        with subscribed(url, topic) as inbox:
            # amqtt has been seen handing a new subscriber the retained message twice.
            with contextlib.suppress(AssertionError):
                inbox.wait_for(1, topic=topic, timeout_s=1)
            time.sleep(0.1)
            messages = [m for m in inbox.messages if m.topic == topic]
        for message in messages:
            if message.retain and protocol.decode_status(topic, message.payload).state == state:
                return message
        assert time.monotonic() < deadline, f"no retained {state!r} status on {topic}"


@pytest.mark.mosquitto
def test_broker_outage_keeps_readings_and_delivers_them_after_it_returns(
    tmp_path: Path, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    from coverwatch.localservices import mosquitto_binary

    if mosquitto_binary() is None:
        from tests.conftest import skip_unless_ci

        skip_unless_ci("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker")  # our own: this test restarts it
    broker.start()
    try:
        with running_collector(schema_url, broker.url, options=collector_options()):
            publisher = Publisher(options(probe_id, broker.url), outbox)
            publisher.start()
            assert publisher.connected.wait(10)
            broker.stop()
            wait_until(lambda: not publisher.connected.is_set())
            during_outage: list[int] = []
            for round_number in range(5):
                seqs = outbox.add([power_reading(uptime_s=float(round_number))] * 4)
                publisher.notify_live(seqs)
                during_outage.extend(seqs)
            time.sleep(0.5)
            assert outbox.stats().pending == 20  # kept, not lost, while the broker is away
            broker.start()
            assert publisher.connected.wait(20)
            wait_until(lambda: publisher.unsent_readings() == 0, timeout_s=60)
            publisher.stop()
        assert stored_power(schema_url, probe_id) == during_outage
        assert outbox.stats().pending == 0
    finally:
        broker.stop()


@pytest.mark.mosquitto
def test_a_broker_killed_before_its_autosave_loses_nothing(
    tmp_path: Path, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    """The broker acknowledges readings queued for an absent collector, then dies with
    kill -9 before writing its store: the probe still has them and sends them again."""
    from coverwatch.localservices import mosquitto_binary

    if mosquitto_binary() is None:
        from tests.conftest import skip_unless_ci

        skip_unless_ci("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker", extra_config="autosave_interval 3600")
    broker.start()
    collector_id = f"c-{probe_id}"
    try:
        # The collector's persistent session exists, then the collector goes away.
        with running_collector(
            schema_url, broker.url, options=IngestOptions(client_id=collector_id, batch_age_s=0.1)
        ):
            pass
        publisher = Publisher(options(probe_id, broker.url, confirm_grace_s=1.0), outbox)
        publisher.start()
        seqs = outbox.add([power_reading(uptime_s=float(i)) for i in range(40)])
        publisher.notify_live(seqs)
        wait_until(lambda: publisher.acknowledged_readings == 40)  # queued for the collector
        broker.kill()  # no autosave yet: the queue is gone
        broker.start()
        with running_collector(
            schema_url, broker.url, options=IngestOptions(client_id=collector_id, batch_age_s=0.1)
        ):
            wait_until(lambda: outbox.stats().pending == 0 or publisher.wait_idle(0.1), 60)
            assert publisher.wait_idle(timeout_s=30)
        publisher.stop()
        assert stored_power(schema_url, probe_id) == seqs
        assert publisher.resent_readings >= 40
    finally:
        broker.stop()


def test_a_backlog_flush_does_not_starve_live_readings(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    backlog = outbox.add([power_reading(uptime_s=1.0)] * 6000)
    topic = protocol.readings_topic(probe_id)
    with (
        running_collector(schema_url, broker_url, options=collector_options()),
        subscribed(broker_url, topic) as inbox,
    ):
        publisher = Publisher(
            options(probe_id, broker_url, batch_readings=500, max_inflight_messages=2), outbox
        )
        publisher.start()
        assert publisher.connected.wait(10)
        live = outbox.add([power_reading(uptime_s=2.0)] * 8)
        sent_before_notice = publisher.published_messages
        publisher.notify_live(live)
        messages = inbox.wait_for(13, topic=topic, timeout_s=30)
        assert publisher.wait_idle(timeout_s=60)
        publisher.stop()
    assert stored_power(schema_url, probe_id) == sorted(backlog + live)
    assert outbox.stats().pending == 0
    batches = [seqs_in([message]) for message in messages]
    live_position = next(i for i, batch in enumerate(batches) if batch == live)
    # Sent at the latest once the backlog messages already handed over when the notice
    # came (at most 2 in flight, plus one being built) are out: never behind the rest.
    waited = live_position - sent_before_notice
    assert waited <= 3, f"live round waited behind {waited} backlog batches after its notice"
    assert sorted(seq for batch in batches for seq in batch) == sorted(backlog + live)
    assert max(len(batch) for batch in batches) == 500


def test_a_refused_login_is_reported_and_retried_without_losing_readings(
    amqtt_broker: AmqttBroker, probe_id: str, outbox: Outbox
) -> None:
    wrong = MqttUrl(
        host=amqtt_broker.url.host,
        port=amqtt_broker.url.port,
        tls=False,
        username=amqtt_broker.url.username,
        password="not-the-password",
    )
    publisher = Publisher(options(probe_id, wrong), outbox)
    outbox.add([power_reading()])
    publisher.start()
    wait_until(lambda: publisher.last_error is not None)
    time.sleep(0.5)
    publisher.stop(drain_timeout_s=0.1)
    assert "refused" in str(publisher.last_error) or "cannot reach" in str(publisher.last_error)
    assert "not-the-password" not in str(publisher.last_error)
    assert not publisher.connected.is_set()
    assert outbox.stats().pending == 1


def test_a_round_the_backlog_already_sent_is_not_sent_again_as_live(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    """Right after connecting the backlog pass may pick up a round before its live notice."""
    topic = protocol.readings_topic(probe_id)
    with (
        running_collector(schema_url, broker_url, options=collector_options()),
        subscribed(broker_url, topic) as inbox,
    ):
        publisher = Publisher(options(probe_id, broker_url), outbox)
        seqs = outbox.add([power_reading()] * 8)
        publisher.start()
        assert publisher.connected.wait(10)
        inbox.wait_for(1, topic=topic)  # sent by the backlog pass
        assert publisher.wait_idle(timeout_s=10)
        publisher.notify_live(seqs)  # the live notice arrives late
        assert publisher.wait_idle(timeout_s=10)
        time.sleep(0.5)
        publisher.stop()
        messages = [m for m in inbox.messages if m.topic == topic]
    assert seqs_in(messages) == seqs


def test_range_set_merges_and_answers_membership() -> None:
    ranges = _RangeSet()
    for first, last in [(10, 12), (1, 3), (5, 5), (4, 4), (13, 20), (30, 31)]:
        ranges.add(first, last)
    assert ranges.ranges() == [(1, 5), (10, 20), (30, 31)]
    assert [value in ranges for value in (0, 1, 5, 6, 9, 10, 20, 21, 31, 32)] == [
        False, True, True, False, False, True, True, False, True, False,
    ]  # fmt: skip
    assert ranges.size() == 5 + 11 + 2
    ranges.add(0, 40)
    assert ranges.ranges() == [(0, 40)]


def test_while_the_collector_is_away_the_probe_holds_back(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    """No collector confirms: live rounds stop at max_unconfirmed_readings (the rest wait in
    the outbox), and re-sends clock themselves: one batch per growing timeout, not the
    whole unconfirmed set every time."""
    publisher = Publisher(
        options(
            probe_id,
            broker_url,
            max_unconfirmed_readings=100,
            batch_readings=50,
            confirm_timeout_s=0.5,
            confirm_grace_s=0.5,
        ),
        outbox,
    )
    publisher.start()
    assert publisher.connected.wait(10)
    for round_number in range(20):
        publisher.notify_live(outbox.add([power_reading(uptime_s=float(round_number))] * 50))
        time.sleep(0.05)
    time.sleep(4.0)
    publisher.stop(drain_timeout_s=0.1)
    assert outbox.stats().pending == 1000  # nothing confirmed, nothing deleted
    assert publisher.acknowledged_readings - publisher.resent_readings <= 100 + 50
    # Timeouts of 0.5, 1, 2 s: a few batches of 50 in 4 s, not 100 readings every 0.5 s.
    assert 0 < publisher.resent_readings <= 4 * 50


def test_a_round_over_the_size_limit_is_split_and_stored_whole(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox, schema_url: str
) -> None:
    """A failing modem's long errors can make a round bigger than the collector accepts
    (1 MiB): the probe splits it instead of losing it to a dead letter."""
    errors = [
        SensorErrorReading(
            seq=0,
            boot_id=BOOT_ID,
            taken_at=datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
            monotonic_ms=1000,
            ntp_synced=True,
            sensor="cellular",
            error="modem said: " + "x" * 1900,
        )
    ] * 1500
    seqs = outbox.add(errors)
    publisher = Publisher(options(probe_id, broker_url), outbox)
    with running_collector(schema_url, broker_url, options=collector_options()):
        publisher.start()
        publisher.notify_live(seqs)
        assert publisher.wait_idle(timeout_s=60)
        publisher.stop()
    with psycopg.connect(schema_url) as connection:
        stored = connection.execute(
            "SELECT count(DISTINCT seq) FROM readings_sensor_error WHERE probe_id = %s",
            (probe_id,),
        ).fetchone()
        letters = connection.execute(
            "SELECT count(*) FROM dead_letters WHERE probe_id = %s", (probe_id,)
        ).fetchone()
    assert stored == (1500,)
    assert letters == (0,)
    assert publisher.published_messages >= 3  # ~2.9 MB went as several messages
