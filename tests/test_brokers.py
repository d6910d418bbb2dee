"""Core MQTT behaviour coverwatch relies on, against each real broker.

Every test here runs on Mosquitto and on amqtt (MQTT 3.1.1), so both the
production broker and the pure-Python fallback are known to serve coverwatch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coverwatch import protocol
from coverwatch.localservices import AmqttBroker, MosquittoBroker
from coverwatch.settings import MqttUrl
from tests.helpers import publish, signal, subscribed


@pytest.fixture(scope="module")
def amqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqttBroker]:
    """A fresh amqtt for this module: these tests pin down broker behaviour, and amqtt
    0.12 has been seen handing new sessions retained messages and last wills of other
    clients' topics once many sessions (persistent ones included) share its one user."""
    broker = AmqttBroker(tmp_path_factory.mktemp("amqtt-brokers"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_batch_published_at_qos1_arrives_and_decodes(broker_url: MqttUrl, probe_id: str) -> None:
    topic = protocol.readings_topic(probe_id)
    payload = json.dumps(
        {"v": 1, "probe_id": probe_id, "readings": [signal(1, rsrp_dbm=-101), signal(2)]}
    ).encode()
    with subscribed(broker_url, protocol.READINGS_TOPIC_FILTER) as inbox:
        publish(broker_url, topic, payload)
        received = inbox.wait_for(1, topic=topic)
    decoded = protocol.decode_readings(received[0].topic, received[0].payload)
    assert [r.seq for r in decoded.batch.readings] == [1, 2]


def test_persistent_session_keeps_qos1_messages_while_subscriber_is_away(
    broker_url: MqttUrl, probe_id: str
) -> None:
    """What lets a collector restart without losing readings published meanwhile."""
    topic = protocol.readings_topic(probe_id)
    client_id = f"collector-{probe_id}"
    with subscribed(broker_url, topic, client_id=client_id, clean_session=False):
        pass  # subscribe, then go away
    for seq in range(5):
        body = {"v": 1, "probe_id": probe_id, "readings": [signal(seq)]}
        publish(broker_url, topic, json.dumps(body).encode())
    with subscribed(broker_url, topic, client_id=client_id, clean_session=False) as inbox:
        # Our own topic only: amqtt has been seen handing a new session retained messages
        # of other tests' topics.
        received = inbox.wait_for(5, topic=topic)
    seqs = sorted(
        protocol.decode_readings(m.topic, m.payload).batch.readings[0].seq for m in received
    )
    assert seqs == [0, 1, 2, 3, 4]


def test_retained_status_and_last_will(broker_url: MqttUrl, probe_id: str) -> None:
    topic = protocol.status_topic(probe_id)
    will = protocol.encode(
        protocol.ProbeStatus(v=1, probe_id=probe_id, state="offline", reason="connection lost")
    )
    probe = connect_client_with_will(broker_url, topic, will)
    birth = protocol.ProbeStatus(v=1, probe_id=probe_id, state="online")
    probe.publish(topic, protocol.encode(birth), qos=1, retain=True).wait_for_publish(10)
    with subscribed(broker_url, topic) as inbox:
        first = inbox.wait_for(1, topic=topic)[0]
        assert first.retain
        assert protocol.decode_status(first.topic, first.payload).state == "online"
        # Vanish without a DISCONNECT: the broker must publish the last will.
        connection = probe.socket()
        assert connection is not None
        connection.close()
        probe.loop_stop()
        last = inbox.wait_for(2, topic=topic, timeout_s=30)[1]
    status = protocol.decode_status(last.topic, last.payload)
    assert (status.state, status.reason) == ("offline", "connection lost")


def connect_client_with_will(url: MqttUrl, topic: str, will: bytes) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=topic.replace("/", "-"), protocol=mqtt.MQTTv311
    )
    if url.username:
        client.username_pw_set(url.username, url.password)
    client.will_set(topic, will, qos=1, retain=True)
    client.connect(url.host, url.port, keepalive=5)
    client.loop_start()
    return client


@pytest.mark.mosquitto
def test_shared_subscription_delivers_each_message_to_one_member(
    mosquitto_broker: MosquittoBroker, probe_id: str
) -> None:
    url = mosquitto_broker.url
    topic = protocol.readings_topic(probe_id)
    shared = f"$share/collectors-{probe_id}/{topic}"
    with subscribed(url, shared) as first, subscribed(url, shared) as second:
        for seq in range(40):
            body = {"v": 1, "probe_id": probe_id, "readings": [signal(seq)]}
            publish(url, topic, json.dumps(body).encode())
        first.wait_for(1)
        second.wait_for(1)
        deadline = time.monotonic() + 10
        while len(first.messages) + len(second.messages) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # a message delivered to both members would show up now
        total = len(first.messages) + len(second.messages)
        deadline_messages = first.messages + second.messages
    seqs = sorted(
        protocol.decode_readings(m.topic, m.payload).batch.readings[0].seq
        for m in deadline_messages
    )
    assert total == 40
    assert seqs == list(range(40))


@pytest.mark.mosquitto
def test_broker_restart_keeps_persistent_session(
    mosquitto_broker: MosquittoBroker, probe_id: str
) -> None:
    """Readings queued for an absent collector survive a Mosquitto restart (it
    persists sessions to disk; amqtt keeps them in memory only, so production and
    anything that must survive a broker restart use Mosquitto)."""
    broker = mosquitto_broker
    url = broker.url
    topic = protocol.readings_topic(probe_id)
    client_id = f"collector-{probe_id}"
    with subscribed(url, topic, client_id=client_id, clean_session=False):
        pass
    body = {"v": 1, "probe_id": probe_id, "readings": [signal(1)]}
    publish(url, topic, json.dumps(body).encode())
    broker.stop()
    broker.start()
    with subscribed(url, topic, client_id=client_id, clean_session=False) as inbox:
        message = inbox.wait_for(1)[0]
    assert protocol.decode_readings(message.topic, message.payload).batch.readings[0].seq == 1


@pytest.mark.mosquitto
def test_throwaway_mosquitto_refuses_packets_beyond_the_protocols_limit(
    mosquitto_broker: MosquittoBroker, probe_id: str
) -> None:
    """max_packet_size as in the deployment: the largest protocol message passes, a 20 MiB
    one disconnects its sender and reaches nobody. (amqtt has no such limit; see
    coverwatch/localservices/broker.py.)"""
    url = mosquitto_broker.url
    topic = protocol.readings_topic(probe_id)
    body = json.dumps({"v": 1, "probe_id": probe_id, "readings": [signal(1)]}).encode()
    largest = body + b" " * (protocol.MAX_PAYLOAD_BYTES - len(body))
    with subscribed(url, topic) as inbox:
        publish(url, topic, largest)
        assert inbox.wait_for(1)[0].payload == largest
        sender = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, reconnect_on_failure=False
        )
        dropped = threading.Event()
        sender.on_disconnect = lambda *_args: dropped.set()
        sender.connect(url.host, url.port, keepalive=30)
        sender.loop_start()
        try:
            sender.publish(topic, b"x" * (20 * 1024 * 1024), qos=1)
            assert dropped.wait(20), "a 20 MiB packet must cost the sender its connection"
        finally:
            sender.loop_stop()
        publish(url, topic, body)  # a control that does arrive
        inbox.wait_for(2)
        assert [len(m.payload) for m in inbox.messages] == [len(largest), len(body)]
