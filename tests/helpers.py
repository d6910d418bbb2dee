"""Small real-service helpers shared by the tests (no mocks: a real MQTT client)."""

from __future__ import annotations

import re
import shlex
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from coverwatch.settings import MqttUrl

REPO = Path(__file__).resolve().parent.parent
PROTOCOL_DOC = REPO / "docs" / "protocol.md"

BOOT_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def reading_fields(seq: int, **fields: object) -> dict[str, object]:
    """A reading's JSON object: the common fields plus ``fields``."""
    return {
        "seq": seq,
        "boot_id": BOOT_ID,
        "taken_at": "2026-11-22T08:15:00Z",
        "monotonic_ms": 1000 + seq,
        "ntp_synced": True,
        **fields,
    }


def signal(seq: int, **fields: object) -> dict[str, object]:
    return reading_fields(
        seq, **{"kind": "signal", "registration": "home", "technology": "lte", **fields}
    )


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Collector:
    """Messages a subscriber has received, waitable from the test thread."""

    messages: list[Received] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def add(self, message: Received) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def wait_for(
        self, count: int, timeout_s: float = 10, *, topic: str | None = None
    ) -> list[Received]:
        """The messages so far, once ``count`` have arrived (on ``topic``, if given).

        amqtt has been seen handing a fresh subscriber a stray retained last will of
        another topic, so tests that expect one topic say which.
        """
        deadline = time.monotonic() + timeout_s

        def matching() -> list[Received]:
            return [m for m in self.messages if topic is None or m.topic == topic]

        with self._arrived:
            while len(matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} messages within {timeout_s}s, got {len(matching())}"
                    )
                self._arrived.wait(remaining)
            return matching()


def connect_client(
    url: MqttUrl,
    *,
    client_id: str | None = None,
    clean_session: bool = True,
    inbox: Collector | None = None,
) -> mqtt.Client:
    """A connected paho client speaking MQTT 3.1.1 (both test brokers serve it).

    With ``inbox``, messages are collected from the first packet on: a persistent
    session's queued messages arrive right after CONNACK.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
        clean_session=clean_session,
    )
    if inbox is not None:
        client.on_message = lambda _c, _u, message: inbox.add(
            Received(message.topic, bytes(message.payload), bool(message.retain))
        )
    if url.username:
        client.username_pw_set(url.username, url.password)
    connected = threading.Event()
    outcome: list[object] = []

    def on_connect(*args: object) -> None:
        outcome.append(args[3])  # (client, userdata, flags, reason_code, properties)
        connected.set()

    client.on_connect = on_connect
    client.connect(url.host, url.port, keepalive=30)
    client.loop_start()
    if not connected.wait(10) or getattr(outcome[0], "is_failure", True):
        client.loop_stop()
        raise AssertionError(f"could not connect to {url.redacted()}: {outcome}")
    return client


@contextmanager
def subscribed(
    url: MqttUrl,
    topic: str,
    *,
    client_id: str | None = None,
    clean_session: bool = True,
) -> Iterator[Collector]:
    # amqtt (the pure-Python test broker) has been seen leaving a SUBSCRIBE unanswered on
    # a loaded machine (once in a CI run); a fresh connection gets an answer. Three tries,
    # each on its own connection, before the test fails.
    for _attempt in range(3):
        collector = Collector()
        client = connect_client(
            url, client_id=client_id, clean_session=clean_session, inbox=collector
        )
        done = threading.Event()
        client.on_subscribe = lambda *_args, done=done: done.set()
        result, _mid = client.subscribe(topic, qos=1)
        if result == mqtt.MQTT_ERR_SUCCESS and done.wait(10):
            break
        client.disconnect()
        client.loop_stop()
    else:
        raise AssertionError(f"subscription to {topic} was not acknowledged, three times")
    try:
        yield collector
    finally:
        client.disconnect()
        client.loop_stop()


def publish(url: MqttUrl, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client = connect_client(url)
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def doc_mosquitto_pub_commands() -> list[list[str]]:
    """The ``mosquitto_pub`` command lines of docs/protocol.md, split as a shell would."""
    blocks = re.findall(r"```sh\n(.*?)```", PROTOCOL_DOC.read_text(), flags=re.DOTALL)
    return [shlex.split(block) for block in blocks if block.startswith("mosquitto_pub")]


def argument_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]
