"""The publisher against real brokers: acknowledged deletes, outages, backlog, refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.publisher import Backoff, Publisher, PublisherOptions
from coverwatch import protocol
from coverwatch.localservices import AmqttBroker, MosquittoBroker
from coverwatch.settings import MqttUrl
from tests.agent_harness import power_reading
from tests.helpers import BOOT_ID, Received, subscribed


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


def test_readings_are_deleted_only_once_the_broker_acknowledged_them(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    topic = protocol.readings_topic(probe_id)
    with subscribed(broker_url, topic) as inbox:
        publisher = Publisher(options(probe_id, broker_url), outbox)
        seqs = outbox.add([power_reading(uptime_s=float(i)) for i in range(8)])
        publisher.start()
        publisher.notify_live(seqs)
        messages = inbox.wait_for(1, topic=topic)
        assert publisher.wait_idle(timeout_s=10)
        publisher.stop()
    assert seqs_in(messages) == seqs == list(range(1, 9))
    assert outbox.stats().pending == 0
    assert publisher.acknowledged_readings == 8


def test_birth_is_retained_online_and_clean_stop_retained_offline(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    status_topic = protocol.status_topic(probe_id)
    publisher = Publisher(options(probe_id, broker_url), outbox)
    publisher.start()
    assert publisher.connected.wait(10)
    with subscribed(broker_url, status_topic) as inbox:
        birth = inbox.wait_for(1, topic=status_topic)[-1]
    publisher.stop(reason="maintenance")
    with subscribed(broker_url, status_topic) as inbox:
        # amqtt has been seen handing a new subscriber the retained message twice.
        goodbye = inbox.wait_for(1, topic=status_topic)[-1]
    online = protocol.decode_status(status_topic, birth.payload)
    offline = protocol.decode_status(status_topic, goodbye.payload)
    assert (birth.retain, online.state, online.boot_id) == (True, "online", BOOT_ID)
    assert (goodbye.retain, offline.state, offline.reason) == (True, "offline", "maintenance")


@pytest.mark.mosquitto
def test_broker_outage_keeps_readings_and_delivers_them_after_it_returns(
    tmp_path: Path, probe_id: str, outbox: Outbox
) -> None:
    from coverwatch.localservices import mosquitto_binary

    if mosquitto_binary() is None:
        from tests.conftest import skip_unless_ci

        skip_unless_ci("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path / "broker")  # our own: this test restarts it
    broker.start()
    topic = protocol.readings_topic(probe_id)
    listener_id = f"listener-{probe_id}"
    try:
        # A persistent subscriber: the broker keeps its queue across the restart.
        with subscribed(broker.url, topic, client_id=listener_id, clean_session=False):
            pass
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
        wait_until(lambda: publisher.unsent_readings() == 0)
        publisher.stop()
        with subscribed(broker.url, topic, client_id=listener_id, clean_session=False) as inbox:
            inbox.wait_for(1, topic=topic)
            time.sleep(0.5)
            received = seqs_in(inbox.messages)
        assert sorted(set(received)) == during_outage
    finally:
        broker.stop()


def test_a_backlog_flush_does_not_starve_live_readings(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    backlog = outbox.add([power_reading(uptime_s=1.0)] * 6000)
    topic = protocol.readings_topic(probe_id)
    with subscribed(broker_url, topic) as inbox:
        publisher = Publisher(
            options(probe_id, broker_url, batch_readings=500, max_inflight_messages=2), outbox
        )
        publisher.start()
        assert publisher.connected.wait(10)
        live = outbox.add([power_reading(uptime_s=2.0)] * 8)
        publisher.notify_live(live)
        messages = inbox.wait_for(13, topic=topic, timeout_s=30)
        assert publisher.wait_idle(timeout_s=20)
        publisher.stop()
    batches = [seqs_in([message]) for message in messages]
    live_position = next(i for i, batch in enumerate(batches) if batch == live)
    assert live_position <= 3, f"live round waited behind {live_position} backlog batches"
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


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    import random

    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(1.0 <= delay <= 60.0 for delay in delays)
    assert max(delays[:2]) <= 2.0  # starts small...
    assert max(delays[8:]) > 8.0  # ...and grows
    assert len({round(d, 6) for d in delays}) == 12  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_a_round_the_backlog_already_sent_is_not_sent_again_as_live(
    broker_url: MqttUrl, probe_id: str, outbox: Outbox
) -> None:
    """Right after connecting the backlog pass may pick up a round before its live notice."""
    topic = protocol.readings_topic(probe_id)
    with subscribed(broker_url, topic) as inbox:
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
