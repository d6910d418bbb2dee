"""Publishing the outbox over MQTT (paho-mqtt 2.x), QoS 1, deleted on the collector's word.

Two threads, both named: the *network* thread owns the connection (connect, keepalive,
reconnect with jittered exponential backoff — full jitter, so a village of probes that
lost the same tower does not reconnect in lock-step), the *pump* thread moves readings
from the outbox to the broker.

End-to-end acknowledgement: the broker's PUBACK only says the broker has the message,
and a broker that dies before its next autosave loses what it acknowledged. So a
reading leaves the outbox only when the collector says it is committed to the
database: the collector publishes the committed seq ranges on
``coverwatch/v1/<probe_id>/ack`` (only this probe may read it), the probe subscribes
to it on every connect. A reading the broker acknowledged but the collector has not
confirmed is sent again

* ``confirm_grace_s`` after a reconnect (acks published while we were away are not
  queued for us) or after a reading sent *later* was confirmed (evidence that the
  collector is working and this one was lost, e.g. in a broker crash);
* otherwise ``confirm_timeout_s`` after it was sent, doubling per attempt up to
  ``confirm_timeout_max_s``, so an absent collector costs little traffic.

Re-sends are harmless: the collector's ledger of committed (outbox_id, seq) stores
each reading once and confirms it again. At most ``max_unconfirmed_readings`` backlog
readings wait for confirmation at a time, which bounds memory and the traffic wasted
while the collector is away.

Live readings go first: each new round is published as soon as it is stored. A backlog
left by an outage is sent oldest-first in batches of ``batch_readings`` in the gaps,
with at most ``max_inflight_messages`` messages awaiting PUBACK, so a week of backlog
never delays the current signal reading by more than a few batches.

Status: a retained "online" birth after every connect, a retained "offline" last will
the broker publishes if the probe vanishes, and a retained "offline" on clean stop.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.outbox import Outbox
from coverwatch import __version__, protocol
from coverwatch.backoff import Backoff
from coverwatch.settings import MqttUrl

logger = logging.getLogger("coverwatch.agent")

# Confirmed readings are deleted from the outbox in batches of this many, or at
# least this often: one WAL page per batch instead of one per confirmation spares the
# SD card, and a confirmed reading that comes back after a power cut is only re-sent.
REMOVE_BATCH_READINGS = 500
REMOVE_EVERY_S = 600.0

# The defaults of PublisherOptions, which probe.toml's [mqtt] section takes as its own
# (agent/config.py): each declared once, here.
KEEPALIVE_S = 60
# Reconnects: capped exponential backoff with full jitter (coverwatch.backoff).
BACKOFF_MIN_S = 2.0
BACKOFF_MAX_S = 300.0
BATCH_READINGS = 500
MAX_INFLIGHT_MESSAGES = 4
# When readings the broker has but the collector has not confirmed go out again (see the
# docstring).
CONFIRM_GRACE_S = 30.0
CONFIRM_TIMEOUT_S = 600.0
CONFIRM_TIMEOUT_MAX_S = 6 * 3600.0
MAX_UNCONFIRMED_READINGS = 10_000
# Live notices kept while the broker is away; older ones are left to the backlog pass,
# which finds every reading in the outbox anyway.
LIVE_QUEUE_MAX = 2000


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    probe_id: str
    url: MqttUrl
    boot_id: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = KEEPALIVE_S
    backoff_min_s: float = BACKOFF_MIN_S
    backoff_max_s: float = BACKOFF_MAX_S
    batch_readings: int = BATCH_READINGS
    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES
    confirm_grace_s: float = CONFIRM_GRACE_S
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    confirm_timeout_max_s: float = CONFIRM_TIMEOUT_MAX_S
    max_unconfirmed_readings: int = MAX_UNCONFIRMED_READINGS
    # How readings batches travel: "compact" (DEFLATE, docs/protocol.md) or "json" for
    # collectors older than the compact encoding.
    encoding: str = protocol.DEFAULT_ENCODING

    @property
    def client_id(self) -> str:
        return f"coverwatch-probe-{self.probe_id}"


@dataclass(frozen=True, slots=True)
class _Sent:
    seqs: list[int]
    sent_at: float
    attempt: int


@dataclass(slots=True)
class _Awaiting:
    sent_at: float
    due_at: float
    attempt: int


class _RangeSet:
    """Sorted, merged, inclusive integer ranges with a fast membership test."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __contains__(self, value: int) -> bool:
        index = bisect.bisect_right(self.starts, value) - 1
        return index >= 0 and value <= self.ends[index]

    def add(self, first: int, last: int) -> None:
        low = bisect.bisect_left(self.ends, first - 1)
        high = bisect.bisect_right(self.starts, last + 1)
        if low < high:
            first = min(first, self.starts[low])
            last = max(last, self.ends[high - 1])
        self.starts[low:high] = [first]
        self.ends[low:high] = [last]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def size(self) -> int:
        return sum(last - first + 1 for first, last in zip(self.starts, self.ends, strict=True))


class Publisher:
    """Keeps a connection to the broker and drains the outbox into it."""

    def __init__(self, options: PublisherOptions, outbox: Outbox) -> None:
        self.options = options
        self.outbox = outbox
        self.topic = protocol.readings_topic(options.probe_id)
        self.status_topic = protocol.status_topic(options.probe_id)
        self.last_error: str | None = None
        self.connected = threading.Event()
        self.ack_topic = protocol.ack_topic(options.probe_id)
        self.published_messages = 0
        self.acknowledged_readings = 0  # by the broker (PUBACK)
        self.confirmed_readings = 0  # by the collector (commit ack)
        self.resent_readings = 0
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._backoff = Backoff(options.backoff_min_s, options.backoff_max_s)
        self._state_lock = threading.Lock()
        self._live: deque[int] = deque(maxlen=LIVE_QUEUE_MAX)
        self._inflight: dict[int, _Sent] = {}  # message id -> what it carries
        self._inflight_seqs: set[int] = set()
        self._acked: deque[int] = deque()  # PUBACKed message ids (network thread)
        self._confirmations: deque[list[tuple[int, int]]] = deque()  # from the collector
        self._reconnected = False
        # PUBACKed, not yet confirmed by the collector: seq -> when it was sent, when it
        # is due again, and how many times it went.
        self._awaiting: dict[int, _Awaiting] = {}
        self._resend: deque[int] = deque()
        self._resend_queued: set[int] = set()
        # Re-sends clock themselves on confirmations: while none has come since the last
        # re-sent batch (the collector is away), the next waits until this time.
        self._confirmed_since_resend = True
        self._resend_paused_until = 0.0
        self._backlog_cursor = 0
        # Confirmed, awaiting deletion (sorted, merged, inclusive): never sent again.
        self._confirmed = _RangeSet()
        self._last_removal = time.monotonic()
        self._client = self._make_client()
        self._threads: list[threading.Thread] = []
        self._socket_open = False
        self._next_attempt_at = 0.0

    # ------------------------------------------------------------------ setup

    def _make_client(self) -> mqtt.Client:
        options = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=mqtt.MQTTv311,
            # Nothing need survive in the broker for the probe: unconfirmed readings live
            # in the outbox, and acks missed while away are made up by re-sending.
            clean_session=True,
        )
        client.enable_logger(logging.getLogger("coverwatch.agent.mqtt"))
        if options.url.username:
            client.username_pw_set(options.url.username, options.url.password)
        if options.url.tls:
            client.tls_set(
                ca_certs=str(options.ca_file) if options.ca_file else None,
                certfile=str(options.cert_file) if options.cert_file else None,
                keyfile=str(options.key_file) if options.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(
            self.status_topic,
            self._status("offline", reason="connection lost", with_time=False),
            qos=1,
            retain=True,
        )
        # Let paho hold everything the pump hands over; the pump bounds it itself.
        client.max_inflight_messages_set(max(20, options.max_inflight_messages))
        # Only the network thread writes to the socket: without a registered writer,
        # paho's publish() writes from the calling (pump) thread too, and two threads
        # writing one socket can interleave a large backlog PUBLISH with a live one.
        client.on_socket_register_write = lambda *_: None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(options.url.host, options.url.port, keepalive=options.keepalive_s)
        return client

    def _status(self, state: str, *, reason: str | None = None, with_time: bool = True) -> bytes:
        return protocol.encode(
            protocol.ProbeStatus(
                v=1,
                probe_id=self.options.probe_id,
                state="online" if state == "online" else "offline",
                at=datetime.now(UTC) if with_time else None,
                boot_id=self.options.boot_id,
                agent_version=__version__,
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for name, target in (
            ("coverwatch-mqtt-network", self._network_loop),
            ("coverwatch-outbox-pump", self._pump_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, drain_timeout_s: float = 5.0, reason: str = "stopped") -> None:
        """Give in-flight messages a moment, say goodbye, disconnect."""
        self.wait_idle(timeout_s=drain_timeout_s)
        if self.connected.is_set():
            info = self._client.publish(
                self.status_topic, self._status("offline", reason=reason), qos=1, retain=True
            )
            if self._threads:
                # If the connection went away meanwhile, the last will says the same.
                with contextlib.suppress(RuntimeError):
                    info.wait_for_publish(timeout=2.0)
            else:  # stepped by a simulator: turn the network ourselves
                deadline = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < deadline:
                    self.network_step(0.0)  # no select(): fds may be above 1024 here
                    time.sleep(0.01)
            self._client.disconnect()
            if not self._threads:
                self.network_step(0.0)
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._settle_acks(force_removal=True)

    def notify_live(self, seqs: Sequence[int]) -> None:
        """A new round is in the outbox: send it ahead of any backlog."""
        with self._state_lock:
            self._live.extend(seqs)
        self._wake.set()

    def unsent_readings(self) -> int:
        """Readings in the outbox the collector has not confirmed yet."""
        with self._state_lock:
            confirmed = self._confirmed.ranges()
        return self.outbox.stats().pending - self.outbox.count_in_ranges(confirmed)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every reading is confirmed by the collector, or the connection is
        down with nothing in flight (tests, stop)."""
        deadline = threading.Event()
        waited = 0.0
        while waited < timeout_s:
            with self._state_lock:
                busy = bool(
                    self._inflight
                    or self._live
                    or self._acked
                    or self._confirmations
                    or self._awaiting
                )
            if not busy and (not self.connected.is_set() or self.unsent_readings() == 0):
                return True
            deadline.wait(0.05)
            waited += 0.05
        return False

    # ------------------------------------------------------------------ network thread

    def _network_loop(self) -> None:
        while not self._stopping.is_set():
            self.network_step(timeout_s=1.0)
            if not self._socket_open:
                self._stopping.wait(max(0.0, self._next_attempt_at - time.monotonic()))
        if self._client.socket() is not None:  # flush the goodbye and DISCONNECT
            with contextlib.suppress(OSError):
                self._client.loop(timeout=0.2)

    def network_step(self, timeout_s: float = 0.0) -> None:
        """One turn of the connection: (re)connect when due, else read and write.

        The network thread calls this in a loop; a simulator driving thousands of
        probes from one thread calls it for each probe in turn (with ``start`` not
        called), together with :meth:`pump_step`.
        """
        client = self._client
        if not self._socket_open:
            if time.monotonic() < self._next_attempt_at:
                return
            try:
                client.reconnect()
                self._socket_open = True
            except (OSError, ValueError) as error:
                self._set_error(f"cannot reach broker {self.options.url.redacted()}: {error}")
                self._next_attempt_at = time.monotonic() + self._backoff.next_delay()
                return
        if timeout_s > 0:
            result = client.loop(timeout=timeout_s)
        else:
            # Non-blocking turn without select(): select() cannot watch descriptors
            # above 1024, which a process stepping hundreds of probes soon has.
            result = client.loop_read()
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
                result = client.loop_write()
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                result = client.loop_misc()
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.debug("connection ended: %s", result)
            self._socket_open = False
            self.connected.clear()
            self._next_attempt_at = time.monotonic() + self._backoff.next_delay()

    def drop_connection(self) -> None:
        """Vanish without a goodbye, as when the power goes: the broker sends the will."""
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._socket_open = False
        self.connected.clear()

    def _set_error(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("%s", message)
        self.last_error = message

    def _on_connect(
        self, client: mqtt.Client, _: Any, __: Any, reason: ReasonCode, ___: Any
    ) -> None:
        if reason.is_failure:
            self._set_error(
                f"broker {self.options.url.redacted()} refused the connection: {reason}"
                + (
                    " (check the username/password or certificate in probe.toml)"
                    if "authori" in str(reason).lower() or "password" in str(reason).lower()
                    else ""
                )
            )
            return
        self._backoff.reset()
        self.last_error = None
        # QoS 0: with a clean session an ack lost on the way is not redelivered at any QoS
        # (a re-send makes it up); QoS 1 would only add a PUBACK per ack (~6 MB a month).
        client.subscribe(self.ack_topic, qos=0)
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self._reconnected = True
        self.connected.set()
        logger.info("connected to %s", self.options.url.redacted())
        self._wake.set()

    def _on_disconnect(
        self, _: mqtt.Client, __: Any, ___: Any, reason: ReasonCode, ____: Any
    ) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            logger.info("disconnected from broker: %s", reason)

    def _on_publish(self, _: mqtt.Client, __: Any, mid: int, ___: Any, ____: Any) -> None:
        # Called by paho with its outgoing-message lock held: touch nothing that takes
        # our lock (the pump holds it around publish(), which takes paho's).
        self._acked.append(mid)
        self._wake.set()

    def _on_message(self, _: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.ack_topic:
            return
        try:
            ack = protocol.decode_ack(message.topic, bytes(message.payload))
        except protocol.ProtocolError as error:
            logger.warning("ignoring a malformed commit ack: %s", error)
            return
        if ack.outbox_id != self.outbox.outbox_id:
            logger.debug("ack for outbox %s, ours is %s: ignored", ack.outbox_id, self.outbox)
            return
        self._confirmations.append(list(ack.committed))
        self._wake.set()

    # ------------------------------------------------------------------ pump thread

    def _pump_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            try:
                self.pump_step()
            except Exception:  # the pump must outlive any one bad moment
                logger.exception("outbox pump failed; retrying")
                self._stopping.wait(1.0)

    def pump_step(self) -> None:
        """Settle acknowledgements and hand the broker what the window allows."""
        self._settle_acks()
        if self.connected.is_set():
            self._send_what_fits()

    def _confirm_delay(self, attempt: int) -> float:
        options = self.options
        return min(
            options.confirm_timeout_max_s, options.confirm_timeout_s * 2.0 ** min(attempt, 30)
        )

    def _settle_acks(self, *, force_removal: bool = False) -> None:
        now = time.monotonic()
        mids: list[int] = []
        while self._acked:
            mids.append(self._acked.popleft())
        confirmations: list[tuple[int, int]] = []
        while self._confirmations:
            confirmations.extend(self._confirmations.popleft())
        with self._state_lock:
            for mid in mids:
                sent = self._inflight.pop(mid, None)
                if sent is None:
                    continue
                self._inflight_seqs.difference_update(sent.seqs)
                self.acknowledged_readings += len(sent.seqs)
                due_at = sent.sent_at + self._confirm_delay(sent.attempt)
                for seq in sent.seqs:
                    if seq not in self._confirmed:
                        self._awaiting[seq] = _Awaiting(sent.sent_at, due_at, sent.attempt)
            if confirmations:
                self._apply_confirmations(confirmations, now)
            if self._reconnected:
                # Acks published while we were away were not kept for us.
                self._reconnected = False
                self._pull_due_dates_in(now + self.options.confirm_grace_s)
            due = sorted(
                seq
                for seq, state in self._awaiting.items()
                if state.due_at <= now and seq not in self._resend_queued
            )
            self._resend.extend(due)
            self._resend_queued.update(due)
        # Deleting in batches spares the SD card a WAL page per confirmation; the
        # confirmed set keeps these rows from being sent again meanwhile. The periodic
        # delete waits for a moment when everything sent is confirmed (at the default
        # cadence, right after a round's ack): the outbox's round log then only starts a
        # new generation (one sector), where an unconfirmed round would have to move
        # into SQLite first (~12 KB). It waits at most one more period.
        since_removal = time.monotonic() - self._last_removal
        with self._state_lock:
            settled = not (self._inflight or self._awaiting or self._live or self._resend)
        if self._confirmed and (
            force_removal
            or self._confirmed.size() >= REMOVE_BATCH_READINGS
            or (since_removal >= REMOVE_EVERY_S and settled)
            or since_removal >= 2 * REMOVE_EVERY_S
        ):
            with self._state_lock:
                removing = self._confirmed.ranges()
            self.outbox.remove_ranges(removing)
            with self._state_lock:
                self._confirmed = _RangeSet()
            self._last_removal = time.monotonic()

    def _apply_confirmations(self, confirmations: list[tuple[int, int]], now: float) -> None:
        """Mark committed seqs (state lock held); pull in what was evidently lost."""
        awaiting_puback = [seq for seq in self._inflight_seqs if seq not in self._confirmed]
        for first, last in confirmations:
            self._confirmed.add(first, last)
        self._confirmed_since_resend = True
        # PUBACK still on its way for these: it is skipped when it comes.
        self.confirmed_readings += sum(1 for seq in awaiting_puback if seq in self._confirmed)
        newest_confirmed_send = None
        for seq in [seq for seq in self._awaiting if seq in self._confirmed]:
            state = self._awaiting.pop(seq)
            self.confirmed_readings += 1
            if newest_confirmed_send is None or state.sent_at > newest_confirmed_send:
                newest_confirmed_send = state.sent_at
        if newest_confirmed_send is not None:
            # Something sent later is committed while these are not: they were lost
            # (a broker crash), or a parallel collector is a little behind.
            grace_until = now + self.options.confirm_grace_s
            for state in self._awaiting.values():
                if state.sent_at < newest_confirmed_send and state.due_at > grace_until:
                    state.due_at = grace_until
        if self._resend:
            self._resend = deque(seq for seq in self._resend if seq not in self._confirmed)
            self._resend_queued = set(self._resend)

    def _pull_due_dates_in(self, due_at: float) -> None:
        for state in self._awaiting.values():
            state.due_at = min(state.due_at, due_at)

    def _send_what_fits(self) -> None:
        while self.connected.is_set():
            attempt = 0
            now = time.monotonic()
            with self._state_lock:
                if len(self._inflight) >= self.options.max_inflight_messages:
                    return
                unconfirmed = len(self._awaiting) + len(self._inflight_seqs)
                if unconfirmed >= self.options.max_unconfirmed_readings and not self._resend:
                    # The collector has a lot to confirm first (or is away): live rounds
                    # wait in the outbox too, found again by the backlog pass later.
                    return
                popped = (
                    [self._live.popleft() for _ in range(min(len(self._live), 2000))]
                    if unconfirmed < self.options.max_unconfirmed_readings
                    else []
                )
                # The backlog may have got there first (e.g. right after connecting):
                # whatever it already sent is not sent twice.
                live = [
                    seq
                    for seq in popped
                    if seq > self._backlog_cursor
                    and seq not in self._inflight_seqs
                    and seq not in self._awaiting
                    and seq not in self._confirmed
                ]
                resend: list[int] = []
                may_resend = self._confirmed_since_resend or now >= self._resend_paused_until
                if not popped and may_resend:
                    while self._resend and len(resend) < self.options.batch_readings:
                        seq = self._resend.popleft()
                        self._resend_queued.discard(seq)
                        state = self._awaiting.get(seq)
                        if state is not None and seq not in self._inflight_seqs:
                            resend.append(seq)
                            attempt = max(attempt, state.attempt + 1)
                    if resend:
                        # The next re-sent batch waits for a confirmation (the collector
                        # is there: go on at its pace) or, if none comes, for a timeout
                        # growing per attempt: one batch then tests whether it is back.
                        self._resend_paused_until = now + self._confirm_delay(attempt)
                        self._confirmed_since_resend = False
            if popped and not live:
                continue
            if live:
                readings = self.outbox.get(live)
            elif resend:
                readings = self.outbox.get(resend)
                self._forget_vanished(resend, readings)
                self.resent_readings += len(readings)
            elif unconfirmed < self.options.max_unconfirmed_readings:
                readings = self._next_backlog_batch()
            else:
                return
            if not readings:
                if resend:
                    continue
                return
            self._publish(readings, attempt=attempt)

    def _forget_vanished(self, seqs: list[int], found: list[protocol.Reading]) -> None:
        """Readings no longer in the outbox (confirmed and deleted) wait for nothing."""
        present = {reading.seq for reading in found}
        with self._state_lock:
            for seq in seqs:
                if seq not in present:
                    self._awaiting.pop(seq, None)

    def _next_backlog_batch(self) -> list[protocol.Reading]:
        # The cursor only passes readings that are in this batch or already in flight
        # (sent live), so nothing is skipped; after a restart it starts again at 0.
        size = self.options.batch_readings
        batch: list[protocol.Reading] = []
        while len(batch) < size:
            candidates = self.outbox.pending(after_seq=self._backlog_cursor, limit=size)
            if not candidates:
                break
            with self._state_lock:
                for reading in candidates:
                    if len(batch) == size:
                        break
                    self._backlog_cursor = reading.seq
                    if (
                        reading.seq not in self._inflight_seqs
                        and reading.seq not in self._awaiting
                        and reading.seq not in self._confirmed
                    ):
                        batch.append(reading)
        return batch

    def _publish(self, readings: list[protocol.Reading], *, attempt: int = 0) -> None:
        payload = protocol.encode(
            protocol.ReadingsBatch(
                v=1,
                probe_id=self.options.probe_id,
                readings=readings,
                sent_at=datetime.now(UTC),
                outbox_id=self.outbox.outbox_id,
            )
        )
        if len(payload) > protocol.MAX_PAYLOAD_BYTES and len(readings) > 1:
            # The collector refuses a message over the limit whole (long sensor errors
            # can get a batch there), compact ones by their inflated size: halve it until
            # each half fits.
            half = len(readings) // 2
            self._publish(readings[:half], attempt=attempt)
            self._publish(readings[half:], attempt=attempt)
            return
        if self.options.encoding == "compact":
            payload = protocol.compress(payload)
        seqs = [reading.seq for reading in readings]
        with self._state_lock:
            # A re-sent reading is in flight again, no longer awaiting its old send.
            for seq in seqs:
                self._awaiting.pop(seq, None)
        info = self._client.publish(self.topic, payload, qos=1)
        with self._state_lock:
            self._inflight[info.mid] = _Sent(seqs, time.monotonic(), attempt)
            self._inflight_seqs.update(seqs)
        self.published_messages += 1
