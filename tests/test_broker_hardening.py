"""Broker hardening against a real Mosquitto run with the deployment's own files.

The broker is started as in tests/test_provisioning_broker.py: the committed
``deploy/mosquitto/mosquitto.conf`` and the secrets, password file and ACL written by
``coverwatch deploy init``, ``deploy add-collector`` and ``probes add``. Checked here:

* client ids are bound to users (``use_username_as_clientid``): a probe's login using the
  collector's client id cannot take the collector's persistent session, and one using
  another probe's client id does not disconnect that probe; collectors sharing a
  subscription each have a user, hence a session, of their own;
* ``max_packet_size``: a 20 MiB publish is refused and its connection dropped, while the
  largest message the protocol allows passes;
* the ACL of the commit acknowledgements: a probe reads its own ack topic and no other,
  publishes to no ack topic, and collectors publish acks.

The ``weakened`` broker runs the same files without ``use_username_as_clientid`` and
``max_packet_size``: there the bug report's attacks succeed, which shows that the tests
above fail when the settings are missing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from collector.ingest import Collector as IngestCollector
from collector.ingest import IngestOptions
from collector.storage import Store
from coverwatch import protocol
from coverwatch.localservices.broker import MAX_PACKET_BYTES, MAX_PROBE_ID_LENGTH
from coverwatch.settings import MqttUrl
from provisioning import deploy
from tests.helpers import Collector, signal
from tests.test_provisioning_broker import (
    DEPLOY,
    HOST,
    Stack,
    close,
    connect,
    provision,
    running_broker,
    subscribe,
)

pytestmark = pytest.mark.mosquitto

# The longest probe id the protocol allows: its topics make the largest headers.
LONG_ID = "l" * MAX_PROBE_ID_LENGTH
# Client ids a probe's login might borrow: what the collector and the agent send.
COLLECTOR_CLIENT_ID = "coverwatch-collector"
HARDENING = ("use_username_as_clientid true", "max_packet_size ")


@dataclass
class Deployment:
    stack: Stack
    collector_2_password: str


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> deploy.DeployLayout:
    layout = provision(tmp_path_factory.mktemp("hardening"), LONG_ID)
    deploy.add_collector(layout.root)
    return layout


@pytest.fixture(scope="module")
def hardened(layout: deploy.DeployLayout) -> Iterator[Deployment]:
    env = deploy.read_env(layout.env_file)
    with running_broker(layout, layout.root.parent / "hardened") as stack:
        yield Deployment(stack, env["COLLECTOR_2_MQTT_PASSWORD"])


@pytest.fixture(scope="module")
def weakened(layout: deploy.DeployLayout) -> Iterator[Stack]:
    """The deployment's broker without client id binding and packet size limit."""
    lines = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    kept = [line for line in lines if not line.startswith(HARDENING)]
    assert len(lines) - len(kept) == len(HARDENING), "mosquitto.conf lost a hardening line"
    with running_broker(
        layout, layout.root.parent / "weakened", config="\n".join(kept) + "\n"
    ) as stack:
        yield stack


# ------------------------------------------------------------------------- helpers


@dataclass
class Client:
    mqtt: mqtt.Client
    inbox: Collector
    dropped: threading.Event

    def publish(self, topic: str, payload: bytes, timeout_s: float = 10) -> bool:
        """Publish at QoS 1; whether the broker acknowledged it (before dropping us)."""
        info = self.mqtt.publish(topic, payload, qos=1)

        def acknowledged() -> bool:
            try:
                return info.is_published()
            except (RuntimeError, ValueError):  # paho: not sent, we were not connected
                return False

        deadline = time.monotonic() + timeout_s
        while not acknowledged() and time.monotonic() < deadline:
            if self.dropped.wait(0.02):
                break
        return acknowledged()


@contextmanager
def login(
    stack: Stack,
    username: str,
    password: str | None = None,
    *,
    client_id: str | None = None,
    clean_session: bool = True,
    will: tuple[str, bytes] | None = None,
) -> Iterator[Client]:
    """A logged-in client that does not reconnect, so a dropped connection stays dropped."""
    inbox = Collector()
    client, reason = connect(
        stack,
        username,
        stack.password(username) if password is None else password,
        inbox=inbox,
        client_id=client_id,
        clean_session=clean_session,
        reconnect=False,
        will=will,
    )
    dropped = threading.Event()
    client.on_disconnect = lambda *_args: dropped.set()
    try:
        assert not reason.is_failure, f"{username} could not log in: {reason}"
        yield Client(client, inbox, dropped)
    finally:
        close(client)


def collector_login(stack: Stack, **options: Any) -> Any:
    return login(stack, deploy.COLLECTOR_USER, stack.collector_password, **options)


def batch(probe_id: str, seq: int, *, size: int | None = None) -> bytes:
    """A readings batch of one reading, padded with JSON whitespace to ``size`` bytes."""
    body = json.dumps({"v": 1, "probe_id": probe_id, "readings": [signal(seq)]}).encode()
    return body if size is None else body + b" " * (size - len(body))


def ack(probe_id: str, first: int, last: int) -> bytes:
    return protocol.encode(
        protocol.CommitAck(
            v=1, probe_id=probe_id, outbox_id=str(uuid.uuid4()), committed=[(first, last)]
        )
    )


# -------------------------------------------- client ids bound to users: sessions


def collectors_queue_after_a_takeover_attempt(stack: Stack) -> list[int]:
    """The bug report: the collector is away with 5 readings queued; a probe's login
    connects with the collector's client id (clean session). Which seqs reach the
    collector when it comes back?"""
    readings = protocol.readings_topic("cb-001")
    with collector_login(stack, client_id=COLLECTOR_CLIENT_ID, clean_session=False) as away:
        subscribe(away.mqtt, protocol.READINGS_TOPIC_FILTER)
    with login(stack, "cb-001") as probe:
        for seq in range(5):
            assert probe.publish(readings, batch("cb-001", seq))
    # The id the collector sends, and the id it has on the deployment's broker.
    for borrowed in (COLLECTOR_CLIENT_ID, deploy.COLLECTOR_USER):
        with login(stack, "cb-003", client_id=borrowed, clean_session=True):
            pass
    with collector_login(stack, client_id=COLLECTOR_CLIENT_ID, clean_session=False) as back:
        # As the collector does on every connect (a wiped session has no subscription).
        subscribe(back.mqtt, protocol.READINGS_TOPIC_FILTER)
        with login(stack, "cb-001") as probe:
            assert probe.publish(readings, batch("cb-001", 99))  # a marker, sent last
        messages = back.inbox.wait_for(1, topic=readings)
        deadline = time.monotonic() + 10
        while messages[-1].payload != batch("cb-001", 99) and time.monotonic() < deadline:
            time.sleep(0.05)
            messages = back.inbox.messages
    seqs = [
        protocol.decode_readings(m.topic, m.payload).batch.readings[0].seq
        for m in back.inbox.messages
    ]
    assert seqs[-1] == 99, f"the marker never arrived: {seqs}"
    return seqs[:-1]


def test_a_probe_cannot_take_the_collectors_session(hardened: Deployment) -> None:
    assert collectors_queue_after_a_takeover_attempt(hardened.stack) == [0, 1, 2, 3, 4]


def test_without_the_binding_a_probe_wipes_the_collectors_session(weakened: Stack) -> None:
    """The bug report reproduced: 0 of 5 queued messages reach the collector."""
    assert collectors_queue_after_a_takeover_attempt(weakened) == []


def victim_survives_a_login_with_its_client_id(stack: Stack) -> bool:
    """cb-001 is connected with the client id the agent sends; cb-003's login uses it
    (and cb-001's user name). Is cb-001 still connected and publishing afterwards?"""
    agent_client_id = f"coverwatch-probe-cb-001-{uuid.uuid4().hex[:4]}"
    with login(stack, "cb-001", client_id=agent_client_id) as victim:
        for borrowed in (agent_client_id, "cb-001"):
            with login(stack, "cb-003", client_id=borrowed):
                pass
        published = victim.publish(protocol.status_topic("cb-001"), b"still here", 5)
        return published and not victim.dropped.is_set()


def test_a_probe_cannot_disconnect_another_probe(hardened: Deployment) -> None:
    assert victim_survives_a_login_with_its_client_id(hardened.stack)


def test_without_the_binding_a_probe_disconnects_another(weakened: Stack) -> None:
    assert not victim_survives_a_login_with_its_client_id(weakened)


def test_a_second_login_of_the_same_user_replaces_the_first(hardened: Deployment) -> None:
    """Why each collector needs a user of its own: one user is one session."""
    stack = hardened.stack
    with (
        collector_login(stack, client_id="coverwatch-collector-a") as first,
        collector_login(stack, client_id="coverwatch-collector-b"),
    ):
        assert first.dropped.wait(5), "the same user's second login must take over"


def test_collectors_share_a_subscription_each_with_its_own_user(hardened: Deployment) -> None:
    stack = hardened.stack
    shared = f"$share/collectors/{protocol.READINGS_TOPIC_FILTER}"
    readings = protocol.readings_topic("cb-002")
    with (
        collector_login(stack, clean_session=False) as first,
        login(stack, "collector-2", hardened.collector_2_password, clean_session=False) as second,
    ):
        assert [code.value for code in subscribe(first.mqtt, shared)] == [1]
        assert [code.value for code in subscribe(second.mqtt, shared)] == [1]
        with login(stack, "cb-002") as probe:
            for seq in range(20):
                assert probe.publish(readings, batch("cb-002", seq))
        deadline = time.monotonic() + 10
        while len(first.inbox.messages) + len(second.inbox.messages) < 20:
            assert time.monotonic() < deadline, "the shared subscription lost messages"
            time.sleep(0.05)
        time.sleep(0.3)  # a message delivered to both would show up now
        assert len(first.inbox.messages) + len(second.inbox.messages) == 20
        assert first.inbox.messages, "each member gets a share"
        assert second.inbox.messages, "each member gets a share"
        assert not first.dropped.is_set()
        assert not second.dropped.is_set()
        # The generated ACL has a block for collector-2 too: it acknowledges commits.
        with login(stack, "cb-002") as probe:
            subscribe(probe.mqtt, protocol.ack_topic("cb-002"))
            assert second.publish(protocol.ack_topic("cb-002"), ack("cb-002", 0, 19))
            (received,) = probe.inbox.wait_for(1)
        assert protocol.decode_ack(received.topic, received.payload).committed == [(0, 19)]
    # Leave no persistent session queueing for later tests.
    with collector_login(stack), login(stack, "collector-2", hardened.collector_2_password):
        pass


# ------------------------------------------------------------------ packet size


def a_20_mib_publish(stack: Stack) -> tuple[bool, bool, bool]:
    """(acknowledged, connection dropped, delivered to the collector) for a 20 MiB
    publish by cb-002; a normal batch from cb-001 follows as a control."""
    big_topic, control_topic = protocol.readings_topic("cb-002"), protocol.readings_topic("cb-001")
    with collector_login(stack) as collector:
        subscribe(collector.mqtt, protocol.READINGS_TOPIC_FILTER)
        with login(stack, "cb-002") as probe:
            acknowledged = probe.publish(big_topic, b"x" * (20 * 1024 * 1024), timeout_s=30)
            dropped = probe.dropped.wait(10 if not acknowledged else 0.5)
        with login(stack, "cb-001") as control:
            assert control.publish(control_topic, batch("cb-001", 1))
        collector.inbox.wait_for(1, topic=control_topic, timeout_s=30)
        delivered = any(m.topic == big_topic for m in collector.inbox.messages)
    return acknowledged, dropped, delivered


def test_a_20_mib_publish_is_refused_and_the_connection_dropped(hardened: Deployment) -> None:
    assert a_20_mib_publish(hardened.stack) == (False, True, False)


def test_without_max_packet_size_a_20_mib_publish_goes_through(weakened: Stack) -> None:
    assert a_20_mib_publish(weakened) == (True, False, True)


def test_the_largest_message_the_protocol_allows_passes(hardened: Deployment) -> None:
    """MAX_PAYLOAD_BYTES of a valid batch on the longest topic: the broker's limit leaves
    room for the header; one packet-limit's worth of payload is refused."""
    stack = hardened.stack
    topic = protocol.readings_topic(LONG_ID)
    largest = batch(LONG_ID, 1, size=protocol.MAX_PAYLOAD_BYTES)
    assert len(largest) == protocol.MAX_PAYLOAD_BYTES
    with collector_login(stack) as collector:
        subscribe(collector.mqtt, protocol.READINGS_TOPIC_FILTER)
        with login(stack, LONG_ID) as probe:
            assert probe.publish(topic, largest)
            assert not probe.dropped.is_set()
        (received,) = collector.inbox.wait_for(1, topic=topic)
        assert received.payload == largest
        assert protocol.decode_readings(topic, received.payload).batch.readings[0].seq == 1
        with login(stack, LONG_ID) as probe:
            assert not probe.publish(topic, b" " * MAX_PACKET_BYTES)
            assert probe.dropped.wait(10)


# ----------------------------------------------------------------- ack topics


def test_a_probe_reads_its_own_ack_topic_and_no_other(hardened: Deployment) -> None:
    stack = hardened.stack
    with login(stack, "cb-001") as owner, login(stack, "cb-003") as snoop:
        assert [c.value for c in subscribe(owner.mqtt, protocol.ack_topic("cb-001"))] == [1]
        # Mosquitto grants subscriptions and checks read access per message delivered.
        for topic in (protocol.ack_topic("cb-001"), f"{protocol.TOPIC_PREFIX}/+/ack", "#"):
            subscribe(snoop.mqtt, topic)
        with collector_login(stack) as collector:
            assert collector.publish(protocol.ack_topic("cb-001"), ack("cb-001", 1, 5))
            assert collector.publish(protocol.ack_topic("cb-003"), ack("cb-003", 7, 7))
        (own,) = owner.inbox.wait_for(1)
        assert protocol.decode_ack(own.topic, own.payload).committed == [(1, 5)]
        snoop.inbox.wait_for(1, topic=protocol.ack_topic("cb-003"))  # its own: a control
        time.sleep(0.3)
        assert {m.topic for m in snoop.inbox.messages} == {protocol.ack_topic("cb-003")}


def test_a_probe_cannot_publish_to_any_ack_topic(hardened: Deployment) -> None:
    stack = hardened.stack
    with login(stack, "cb-001") as first, login(stack, "cb-002") as second:
        subscribe(first.mqtt, protocol.ack_topic("cb-001"))
        subscribe(second.mqtt, protocol.ack_topic("cb-002"))
        # Mosquitto acknowledges a denied QoS 1 publish and drops it (MQTT 3.1.1 has no
        # way to say no), so what counts is that nothing arrives.
        for probe_id in ("cb-001", "cb-002"):
            first.publish(protocol.ack_topic(probe_id), ack(probe_id, 0, 10**6))
        with collector_login(stack) as collector:
            for probe_id in ("cb-001", "cb-002"):
                assert collector.publish(protocol.ack_topic(probe_id), ack(probe_id, 3, 4))
        for probe in (first, second):
            probe.inbox.wait_for(1)
            time.sleep(0.3)
            (only,) = probe.inbox.messages
            assert protocol.decode_ack(only.topic, only.payload).committed == [(3, 4)]


def test_a_probe_publishes_its_readings_status_and_last_will_only(hardened: Deployment) -> None:
    """The narrower write patterns still let a probe do all it needs (the last will too,
    which Mosquitto checks against the ACL when it publishes it), and no more."""
    stack = hardened.stack
    status = protocol.status_topic("cb-001")
    with collector_login(stack) as collector:
        subscribe(collector.mqtt, protocol.STATUS_TOPIC_FILTER)
        subscribe(collector.mqtt, protocol.READINGS_TOPIC_FILTER)
        with login(stack, "cb-001", will=(status, b"last will")) as probe:
            probe.publish(protocol.status_topic("cb-002"), b"denied")
            assert probe.publish(status, b"birth")
            assert probe.publish(protocol.readings_topic("cb-001"), b"readings")
            collector.inbox.wait_for(1, topic=protocol.readings_topic("cb-001"))
            connection = probe.mqtt.socket()
            assert connection is not None
            connection.close()  # vanish without a DISCONNECT: the broker sends the will
            collector.inbox.wait_for(2, topic=status)
        time.sleep(0.3)
        assert [(m.topic, m.payload) for m in collector.inbox.messages] == [
            (status, b"birth"),
            (protocol.readings_topic("cb-001"), b"readings"),
            (status, b"last will"),
        ]
    with login(stack, "cb-001") as probe:  # clear the retained status for later tests
        probe.mqtt.publish(status, b"", qos=1, retain=True).wait_for_publish(5)


# ------------------------------------------------------------ collector start-up


def test_a_refused_subscription_is_an_error_not_silence(caplog: pytest.LogCaptureFixture) -> None:
    """Mosquitto grants every subscription and filters on delivery (checked: 2.0.11 answers
    granted QoS for a topic the ACL does not allow), but a broker may answer 0x80; then the
    collector must say so rather than run without ever receiving a reading."""
    url = MqttUrl(host=HOST, port=1, tls=False)
    ingest = IngestCollector(url, Store("postgresql://unused.invalid/none"), IngestOptions())
    ingest._subscribe_mid = 7
    failure = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
    granted = ReasonCode(PacketTypes.SUBACK, identifier=1)
    ingest._on_subscribe(ingest._client, None, 7, [failure, granted], None)
    assert ingest._subscribed.is_set()
    assert ingest._refusal is not None
    assert "coverwatch/v1/+/readings" in ingest._refusal
    assert "refused the subscription to coverwatch/v1/+/readings;" in caplog.text


def test_a_collector_with_its_own_credentials_is_subscribed_when_connect_returns(
    hardened: Deployment,
) -> None:
    """connect() returns only after the SUBACK: a batch published right after it arrives."""
    stack = hardened.stack
    url = MqttUrl(
        host=HOST,
        port=stack.port,
        tls=True,
        username=deploy.COLLECTOR_USER,
        password=stack.collector_password,
    )
    options = IngestOptions(
        client_id=deploy.COLLECTOR_USER, ca_file=str(stack.layout.ca_certificate)
    )
    received: list[str] = []
    ingest = IngestCollector(url, Store("postgresql://unused.invalid/none"), options)
    ingest._client.on_message = lambda _c, _u, message: received.append(message.topic)
    ingest.connect(timeout_s=10)
    try:
        with login(stack, "cb-002") as probe:
            assert probe.publish(protocol.readings_topic("cb-002"), batch("cb-002", 1))
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == [protocol.readings_topic("cb-002")]
    finally:
        ingest._client.disconnect()
        ingest._client.loop_stop()
    # Leave no persistent session queueing for later tests.
    with collector_login(stack):
        pass
