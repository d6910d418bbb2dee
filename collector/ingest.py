"""The collector's main loop: MQTT in, batches to PostgreSQL, acknowledgements out.

At-least-once from the broker, exactly-once in the database:

* the subscription is QoS 1 on a persistent session (``clean_session=False``) with a
  stable client id, so the broker keeps messages while the collector is away;
* paho's manual acknowledgement is on: a message is acknowledged only after the
  transaction holding its rows has committed. A crash before that makes the broker
  deliver it again, and the reading ledger (collector.storage) drops the copy;
* acknowledgements belong to one connection: after a reconnect the broker resends
  what was not acknowledged, so messages of an earlier connection are written
  (idempotently) but not acknowledged;
* after every commit the collector confirms to each probe, on
  ``coverwatch/v1/<probe_id>/ack``, the seq ranges now durable in the database; only
  then does the probe delete them from its outbox. The broker is a transport, not the
  store of record: if it dies and loses queued messages, the probes send them again.

No message can stop ingest: the decoder turns any bytes into readings or a dead letter,
and an unexpected error while storing a batch splits it into single messages; a message
that still fails unexpectedly ``max_message_attempts`` times is dead-lettered with the
error and acknowledged, so it never blocks the messages behind it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import DEFAULTS
from collector.metrics import IngestMetrics
from collector.storage import (
    DeadLetter,
    DecodedBatch,
    InboundMessage,
    Store,
    TemporaryStoreError,
    WriteResult,
    decode_messages,
)
from coverwatch import protocol
from coverwatch.backoff import Backoff
from coverwatch.errors import ConfigError
from coverwatch.settings import MqttUrl

logger = logging.getLogger("coverwatch.collector")


@dataclass(frozen=True)
class IngestOptions:
    """How the collector subscribes, batches and retries.

    What is also a collector setting defaults to that setting's declared default
    (collector/config.py ``SETTINGS``), so that ``IngestOptions()`` and ``coverwatch
    collector run`` without settings behave the same.
    """

    client_id: str = DEFAULTS["client_id"]
    shared_group: str | None = DEFAULTS["shared_group"]
    batch_readings: int = DEFAULTS["batch_readings"]
    batch_age_s: float = DEFAULTS["batch_age_s"]
    max_unacked_messages: int = DEFAULTS["max_unacked_messages"]
    # A database that is away: capped exponential backoff (coverwatch.backoff).
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    ca_file: str | None = DEFAULTS["mqtt_ca_file"]
    max_message_attempts: int = 3


@dataclass(frozen=True)
class _Pending:
    message: InboundMessage
    mid: int
    generation: int
    readings_hint: int


class Collector:
    """Subscribes, batches and stores until :meth:`stop` is called."""

    def __init__(
        self,
        mqtt_url: MqttUrl,
        store: Store,
        options: IngestOptions | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.store = store
        self.options = options or IngestOptions()
        self.metrics = metrics or IngestMetrics()
        self._inbox: queue.Queue[_Pending] = queue.Queue()
        # Decoded batches on their way from the decoder thread to the writer (run()).
        self._decoded: queue.Queue[tuple[list[_Pending], DecodedBatch | None] | None] = queue.Queue(
            maxsize=1
        )
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._answered = threading.Event()  # CONNACK received, accepted or not
        # SUBACK received: only then can nothing published from now on pass us by.
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._refusal: str | None = None
        self._generation = 0
        # The encoding each probe last sent its readings in: its acks go back in the same
        # one, so a probe that sends JSON (an older agent, or encoding = "json") gets JSON.
        self._ack_encoding: dict[str, str] = {}
        self._client = self._make_client()

    # ----------------------------------------------------------------- MQTT side

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.options.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        client.manual_ack_set(True)
        if self.mqtt_url.username:
            client.username_pw_set(self.mqtt_url.username, self.mqtt_url.password)
        if self.mqtt_url.tls:
            client.tls_set(ca_certs=self.options.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(self.options.max_unacked_messages)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _topics(self) -> list[str]:
        filters = [protocol.READINGS_TOPIC_FILTER, protocol.STATUS_TOPIC_FILTER]
        if self.options.shared_group:
            return [f"$share/{self.options.shared_group}/{topic}" for topic in filters]
        return filters

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection: %s", reason)
            self._refusal = str(reason)
            self._answered.set()
            return
        # Only paho's network thread writes this; the writer thread only reads it.
        self._generation += 1
        _result, self._subscribe_mid = client.subscribe([(topic, 1) for topic in self._topics()])
        logger.info(
            "connected to %s (session present: %s), subscribing to %s",
            self.mqtt_url.redacted(),
            flags.session_present,
            ", ".join(self._topics()),
        )
        self._connected.set()
        self._answered.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [
            topic
            for topic, reason in zip(self._topics(), reasons, strict=False)
            if reason.is_failure
        ]
        if refused:
            # The broker's ACL said no: readings would silently never arrive, so say it loudly.
            logger.error(
                "the broker refused the subscription to %s; check the collector's ACL "
                "(it must be allowed to read coverwatch/v1/+/readings and coverwatch/v1/+/status)",
                ", ".join(refused),
            )
            self._refusal = f"subscription refused for {', '.join(refused)}"
        else:
            logger.info("subscribed to %s", ", ".join(self._topics()))
        self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            logger.warning("lost the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if message.dup:
            self.metrics.redeliveries.inc()
        inbound = InboundMessage(
            message.topic, payload, datetime.now(UTC), redelivered=bool(message.dup)
        )
        if protocol.is_compact(payload):
            # A compact reading is some 50 bytes: a cheap estimate for the size trigger.
            hint = max(1, len(payload) // 50)
            encoding = "compact"
        else:
            # A cheap estimate of readings for the size trigger: one per "seq" key.
            hint = payload.count(b'"seq"') or 1
            encoding = "json"
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[3] == protocol.READINGS_CHANNEL:
            self._ack_encoding[parts[2]] = encoding
        self._inbox.put(_Pending(inbound, message.mid, self._generation, hint))
        self.metrics.pending.inc()

    # ---------------------------------------------------------------- main loop

    def connect(self, timeout_s: float = 30) -> None:
        """Connect to the broker, failing with a clear message if it cannot be reached."""
        try:
            self._client.connect(self.mqtt_url.host, self.mqtt_url.port, keepalive=30)
        except OSError as error:
            raise ConfigError(
                "COVERWATCH_MQTT_URL",
                f"cannot reach the broker at {self.mqtt_url.redacted()}: {error}",
                "check the host and port, and that the broker is running",
            ) from None
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        if not self._answered.wait(timeout_s) or not self._connected.is_set():
            self._client.loop_stop()
            answer = f" ({self._refusal})" if self._refusal else ""
            raise ConfigError(
                "COVERWATCH_MQTT_URL",
                f"the broker at {self.mqtt_url.redacted()} did not accept the connection{answer}",
                "check the username and password (or client certificate) and the broker's ACL",
            )
        # Return only once subscribed: a reading published after connect() returns must
        # reach this collector (SUBSCRIBE is written by paho's thread after on_connect).
        if not self._subscribed.wait(max(0.0, deadline - time.monotonic())) or self._refusal:
            self._client.disconnect()
            self._client.loop_stop()
            answer = f" ({self._refusal})" if self._refusal else " (no SUBACK)"
            raise ConfigError(
                "COVERWATCH_MQTT_URL",
                f"the broker at {self.mqtt_url.redacted()} did not accept the subscription{answer}",
                "check the collector's ACL: it must be allowed to read coverwatch/v1/+/readings "
                "and coverwatch/v1/+/status",
            )

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        """Batch and store until stopped; then flush what is pending and disconnect.

        Two stages overlap: a decoder thread batches the inbox and decodes each batch
        while this thread writes the one before (psycopg lets go of the GIL while it
        waits on PostgreSQL). One decoded batch waits between them, so at most three
        batches are unacknowledged at once.
        """
        decoder = threading.Thread(target=self._decode_batches, name="collector-decoder")
        decoder.start()
        try:
            while True:
                staged = self._decoded.get()
                if staged is None:  # the decoder stopped, after handing over the last batch
                    break
                batch, decoded = staged
                self._store_with_retry(
                    batch, decoded=decoded, give_up_when_stopping=self._stopping.is_set()
                )
        finally:
            self._stopping.set()
            # The decoder may be waiting to hand over a batch: take it (unacknowledged,
            # the broker delivers it again) so the thread can end.
            while decoder.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._decoded.get(timeout=0.1)
            self._client.disconnect()
            self._client.loop_stop()
            self.store.close()

    def _decode_batches(self) -> None:
        """The decoder stage: batch the inbox, decode, hand over; ``None`` at the end."""
        try:
            while not self._stopping.is_set():
                batch = self._collect_batch()
                if batch:
                    self._decoded.put((batch, self._decode(batch)))
            # Drain what already arrived so a clean stop commits (and acks) it.
            leftover = self._drain()
            if leftover:
                self._decoded.put((leftover, self._decode(leftover)))
        finally:
            self._decoded.put(None)

    @staticmethod
    def _decode(batch: list[_Pending]) -> DecodedBatch | None:
        try:
            return decode_messages([item.message for item in batch])
        except Exception:
            # The decoder turns any bytes into readings or dead letters; should it fail
            # anyway, the writer decodes again, where a failing message is isolated.
            logger.exception("unexpected error decoding a batch; the writer decodes it again")
            return None

    def _drain(self) -> list[_Pending]:
        items: list[_Pending] = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    def _collect_batch(self) -> list[_Pending]:
        options = self.options
        batch: list[_Pending] = []
        readings = 0
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return batch
        batch.append(first)
        readings += first.readings_hint
        deadline = time.monotonic() + options.batch_age_s
        while readings < options.batch_readings and len(batch) < options.max_unacked_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._inbox.get(timeout=remaining)
            except queue.Empty:
                break
            batch.append(item)
            readings += item.readings_hint
        return batch

    def _store_with_retry(
        self,
        batch: list[_Pending],
        *,
        decoded: DecodedBatch | None = None,
        give_up_when_stopping: bool = False,
    ) -> None:
        backoff = Backoff(self.options.retry_initial_s, self.options.retry_max_s)
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                result = self.store.write([item.message for item in batch], decoded)
            except TemporaryStoreError as error:
                self.metrics.database_retries.inc()
                if give_up_when_stopping:
                    logger.warning(
                        "database unavailable at shutdown (%s); %d messages stay with the broker",
                        error,
                        len(batch),
                    )
                    return
                delay = backoff.next_delay()
                logger.warning(
                    "database unavailable (%s); retrying in %.1fs",
                    error,
                    delay,
                    extra={"retry_in_s": round(delay, 1), "messages": len(batch)},
                )
                if self._stopping.wait(delay):
                    give_up_when_stopping = True
                continue
            except Exception as error:
                # Not a database error we know. One message must not hold up the others:
                # a batch is split, and a single message that keeps failing is
                # quarantined. Nothing is acknowledged that was not stored or kept.
                if len(batch) > 1:
                    logger.exception(
                        "unexpected error writing a batch of %d messages; storing them one by one",
                        len(batch),
                    )
                    for item in batch:
                        self._store_with_retry([item], give_up_when_stopping=give_up_when_stopping)
                    return
                failures += 1
                if failures < self.options.max_message_attempts:
                    logger.exception(
                        "unexpected error writing a message from %s (attempt %d of %d)",
                        batch[0].message.topic,
                        failures,
                        self.options.max_message_attempts,
                    )
                    if self._stopping.wait(backoff.next_delay()):
                        return
                    continue
                quarantined = self._quarantine(batch[0], error)
                if quarantined is None:
                    return  # the database went away meanwhile: the broker keeps it
                result = quarantined
            break
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self._confirm_to_probes(result)
        self._acknowledge(batch)
        self.metrics.pending.dec(len(batch))
        self.metrics.messages.labels("stored").inc(len(batch))
        for kind, count in result.stored.items():
            self.metrics.readings.labels(kind).inc(count)
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.dead_letters.inc(result.dead_letters)
        logger.debug(
            "batch messages=%d stored=%d duplicates=%d dead_letters=%d",
            len(batch),
            result.stored_total,
            result.duplicates,
            result.dead_letters,
            extra={
                "messages": len(batch),
                "stored": result.stored_total,
                "duplicates": result.duplicates,
                "dead_letters": result.dead_letters,
            },
        )

    def _quarantine(self, item: _Pending, error: Exception) -> WriteResult | None:
        message = item.message
        letter = DeadLetter(
            message.origin,
            None,
            f"the collector failed on this message {self.options.max_message_attempts} times "
            f"({type(error).__name__}: {error}); kept here instead of blocking ingest. "
            "Report it with the payload",
            None,
            message.payload,
            message.received_at,
        )
        try:
            return self.store.quarantine([letter])
        except Exception:
            logger.exception("could not quarantine a failing message; it stays with the broker")
            return None

    def _confirm_to_probes(self, result: WriteResult) -> None:
        """Tell each probe which of its readings are now durable in the database."""
        at = datetime.now(UTC)
        for (probe_id, outbox_id), seqs in result.committed.items():
            ranges = protocol.seq_ranges(seqs)
            topic = protocol.ack_topic(probe_id)
            for start in range(0, len(ranges), protocol.MAX_ACK_RANGES):
                encoding = self._ack_encoding.get(probe_id, "json")
                payload = protocol.encode_as(
                    protocol.CommitAck(
                        v=1,
                        probe_id=probe_id,
                        outbox_id=outbox_id,
                        committed=ranges[start : start + protocol.MAX_ACK_RANGES],
                        # A compact ack leaves out the optional time (~15 of its 50-65 bytes).
                        at=at if encoding == "json" else None,
                    ),
                    encoding,
                )
                # QoS 0: the probe takes acks at QoS 0 anyway, and one lost between the
                # collector and the broker only means a re-send; QoS 1 cost the collector
                # a fifth more CPU per reading in bench/ingest.py's live phase.
                self._client.publish(topic, payload, qos=0)
                self.metrics.commit_acks.inc()

    def _acknowledge(self, batch: list[_Pending]) -> None:
        generation = self._generation
        for item in batch:
            if item.generation == generation:
                self._client.ack(item.mid, 1)
