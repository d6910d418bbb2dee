"""Mobile data of the end-to-end commit acknowledgements, measured on the probe's wire.

The probe deletes a reading only when the collector confirms its commit: after every
database commit the collector publishes a ``CommitAck`` (QoS 1, not retained) on
``coverwatch/v1/<probe_id>/ack``, which the probe receives and answers with a PUBACK.
This bench measures what that adds to a probe's prepaid SIM.

Everything is real: Mosquitto, PostgreSQL (embedded, or a throwaway database on
``--database-url``), the collector (``collector.ingest.Collector`` in a thread, default
options) and the agent's scheduler, SQLite outbox and publisher with bench/agent.py's
simulated sensors (realistic readings) at the default cadence of
``agent.config.DEFAULT_INTERVALS_S``, ``--speedup`` times faster. The probe connects
to the broker through a TCP relay on 127.0.0.1 that counts the bytes, reads and writes
in each direction and parses every MQTT packet's fixed header (and a PUBLISH's topic
and packet id), so each packet is put in a category:

* **readings** (the baseline): the probe's readings PUBLISHes and the broker's PUBACKs;
* **acks** (the extra): the broker's PUBLISHes of commit acks and the probe's PUBACKs;
* per connection: the ack SUBSCRIBE/SUBACK (extra), the status birth/goodbye and the
  CONNECT/CONNACK/DISCONNECT (existed before);
* keepalive PINGREQ/PINGRESP (existed before). The keepalive is not accelerated: paho
  sends a PINGREQ every ``keepalive_s`` of wall time even while it publishes, so a run
  longer than the keepalive measures their real rate.

A 30-day month at the default (not accelerated) cadence is extrapolated per round: the
day's rounds (1,152 of signal + power, 288 with latency and system too) times the mean
measured size of a readings message of that many readings, and the measured acks per
readings message times the day's messages. IP bytes on a TLS link are estimated per
MQTT packet with the assumptions printed (TLS record overhead, TCP/IP headers, one
returning TCP ACK per data segment). The outbox's seq starts at ``--first-seq``
(default 100,000: six digits, as after a month) since seqs appear in readings and acks.

Last line: ``RESULT ack_bytes_per_month=… ack_ip_bytes_per_month=…
readings_bytes_per_month=… readings_ip_bytes_per_month=… ack_share_pct=…
ack_ip_share_pct=… acks_per_month=… ack_packet_bytes=… pings_per_month=…
ping_ip_bytes_per_month=…``

    python -m bench.ack_traffic [--duration-s 90] [--speedup 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import os
import socket
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.agent import (
    SIMULATED_SENSORS,
    production_stack,
    simulated_readings,
    simulated_sensors,
)
from coverwatch import protocol

LOOPBACK = "127.0.0.1"
MONTH_DAYS = 30
DAY_S = 86_400

# Assumptions of the IP estimate (a TLS connection over IPv4 on a 1,500-byte MTU).
# TLS 1.2 with AES-GCM: each MQTT packet is written by its own send(), so it is one TLS
# record of 5 B header + 8 B explicit nonce + 16 B tag (TLS 1.3 would be 22 B).
TLS_RECORD_BYTES = 29
# IPv4 (20 B) + TCP (20 B) + TCP timestamps option (12 B), per segment.
TCPIP_HEADER_BYTES = 52
# TCP payload per segment: MTU 1,500 minus those headers.
SEGMENT_PAYLOAD_BYTES = 1_500 - TCPIP_HEADER_BYTES
# Every data segment draws one pure TCP ACK segment back (none piggybacked, no
# delayed ACK covering two segments): the conservative case agent/README.md assumes.
RETURN_ACKS_PER_SEGMENT = 1

PACKET_TYPES = {
    1: "CONNECT",
    2: "CONNACK",
    3: "PUBLISH",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    8: "SUBSCRIBE",
    9: "SUBACK",
    10: "UNSUBSCRIBE",
    11: "UNSUBACK",
    12: "PINGREQ",
    13: "PINGRESP",
    14: "DISCONNECT",
    15: "AUTH",
}
UP, DOWN = "probe→broker", "broker→probe"


# --------------------------------------------------------------------------- MQTT on the wire


@dataclass(frozen=True, slots=True)
class Packet:
    """One MQTT packet seen by the relay; ``size`` counts the whole packet."""

    direction: str
    kind: str
    size: int
    read_no: int  # the relay's read (per direction) that completed it
    at: float = 0.0  # time.monotonic() when the relay read it
    topic: str | None = None
    packet_id: int | None = None
    payload_bytes: int = 0
    readings: int = 0


def _fixed_header(buffer: bytearray) -> tuple[int, int] | None:
    """(header length, remaining length) of the packet at the start, None if incomplete."""
    remaining = 0
    for index in range(1, 5):
        if index >= len(buffer):
            return None
        byte = buffer[index]
        remaining += (byte & 0x7F) << (7 * (index - 1))
        if not byte & 0x80:
            return index + 1, remaining
    raise ValueError("malformed MQTT remaining length (more than 4 bytes)")


def _describe(direction: str, raw: bytes, header_bytes: int, read_no: int) -> Packet:
    kind = PACKET_TYPES.get(raw[0] >> 4, f"type-{raw[0] >> 4}")
    body = raw[header_bytes:]
    if kind == "PUBLISH":
        qos = (raw[0] >> 1) & 0x03
        topic_bytes = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + topic_bytes].decode("utf-8", errors="replace")
        position = 2 + topic_bytes
        packet_id = None
        if qos:
            packet_id = int.from_bytes(body[position : position + 2], "big")
            position += 2
        payload = body[position:]
        return Packet(
            direction,
            kind,
            len(raw),
            read_no,
            topic=topic,
            packet_id=packet_id,
            payload_bytes=len(payload),
            readings=payload.count(b'"kind":'),
        )
    if kind in ("PUBACK", "SUBACK"):
        return Packet(direction, kind, len(raw), read_no, packet_id=int.from_bytes(body[:2], "big"))
    if kind == "SUBSCRIBE":
        topic_bytes = int.from_bytes(body[2:4], "big")
        topic = body[4 : 4 + topic_bytes].decode("utf-8", errors="replace")
        return Packet(
            direction,
            kind,
            len(raw),
            read_no,
            topic=topic,
            packet_id=int.from_bytes(body[:2], "big"),
        )
    return Packet(direction, kind, len(raw), read_no)


class MqttStream:
    """Cuts one direction of an MQTT connection into packets, whatever the read sizes."""

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self._buffer = bytearray()

    def feed(self, data: bytes, read_no: int) -> list[Packet]:
        self._buffer += data
        packets: list[Packet] = []
        while self._buffer:
            header = _fixed_header(self._buffer)
            if header is None:
                break
            header_bytes, remaining = header
            total = header_bytes + remaining
            if len(self._buffer) < total:
                break
            raw = bytes(self._buffer[:total])
            del self._buffer[:total]
            packet = _describe(self.direction, raw, header_bytes, read_no)
            packets.append(dataclasses.replace(packet, at=time.monotonic()))
        return packets

    @property
    def unparsed_bytes(self) -> int:
        return len(self._buffer)


@dataclass
class Flow:
    """What went one way through the relay."""

    bytes: int = 0
    reads: int = 0
    writes: int = 0


class CountingRelay:
    """A TCP relay 127.0.0.1:<port> → the broker that counts and parses both directions.

    One thread accepts, two threads per connection copy (``TCP_NODELAY`` on both sides,
    one ``sendall`` per read, so the relay neither merges nor splits what it forwards).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.flows = {UP: Flow(), DOWN: Flow()}
        self.packets: list[Packet] = []
        self.connections = 0
        self.unparsed_bytes = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        thread = threading.Thread(target=self._accept_loop, name="bench-relay-accept", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for sock in list(self._sockets):
            sock.close()
        for thread in list(self._threads):
            thread.join(5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self.upstream_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            with self._lock:
                self.connections += 1
            for source, target, direction in ((client, upstream, UP), (upstream, client, DOWN)):
                thread = threading.Thread(
                    target=self._copy,
                    args=(source, target, direction),
                    name=f"bench-relay-{'up' if direction == UP else 'down'}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def _copy(self, source: socket.socket, target: socket.socket, direction: str) -> None:
        stream = MqttStream(direction)
        flow = self.flows[direction]
        try:
            while True:
                data = source.recv(65_536)
                if not data:
                    break
                with self._lock:
                    flow.reads += 1
                    flow.bytes += len(data)
                    # Recorded before forwarding: an answer is always listed after its cause.
                    self.packets.extend(stream.feed(data, flow.reads))
                target.sendall(data)
                with self._lock:
                    flow.writes += 1
        except OSError:
            pass
        finally:
            with self._lock:
                self.unparsed_bytes += stream.unparsed_bytes
            for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
                with contextlib.suppress(OSError):
                    sock.shutdown(how)


# --------------------------------------------------------------------------- what is what


@dataclass
class Tally:
    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    reads: set[int] = field(default_factory=set)

    def add(self, packet: Packet) -> None:
        self.packets += 1
        self.bytes += packet.size
        self.payload_bytes += packet.payload_bytes
        self.reads.add(packet.read_no)

    @property
    def mean(self) -> float:
        return self.bytes / self.packets if self.packets else 0.0


def categorise(packets: Iterable[Packet], probe_id: str) -> list[tuple[Packet, str]]:
    """Each packet with its category: readings, acks, ack subscription, status, session."""
    by_topic = {
        protocol.readings_topic(probe_id): "readings",
        protocol.ack_topic(probe_id): "acks",
        protocol.status_topic(probe_id): "status",
    }
    # Packet ids of QoS 1 PUBLISHes awaiting their PUBACK, per sending direction.
    awaiting: dict[str, dict[int, str]] = {UP: {}, DOWN: {}}
    subscribing: dict[int, str] = {}
    result: list[tuple[Packet, str]] = []
    for packet in packets:
        if packet.kind == "PUBLISH":
            category = by_topic.get(packet.topic or "", "other")
            if packet.packet_id is not None:
                awaiting[packet.direction][packet.packet_id] = category
        elif packet.kind == "PUBACK":
            sender = DOWN if packet.direction == UP else UP
            category = awaiting[sender].pop(packet.packet_id or 0, "other")
        elif packet.kind == "SUBSCRIBE":
            category = (
                "ack subscription" if packet.topic == protocol.ack_topic(probe_id) else "other"
            )
            subscribing[packet.packet_id or 0] = category
        elif packet.kind == "SUBACK":
            category = subscribing.pop(packet.packet_id or 0, "other")
        else:
            category = "session"
        result.append((packet, category))
    return result


def rounds_per_day(intervals_s: dict[str, int], readings_per_run: dict[str, int]) -> Counter[int]:
    """How many rounds of each size (readings per round) a day has at these intervals."""
    step = math.gcd(*intervals_s.values())
    period = math.lcm(*intervals_s.values())
    rounds: Counter[int] = Counter()
    for t in range(0, period, step):
        size = sum(readings_per_run[name] for name, every in intervals_s.items() if t % every == 0)
        if size:
            rounds[size] += DAY_S // period
    return rounds


def ip_bytes(mqtt_packet_bytes: float, *, return_acks: int = RETURN_ACKS_PER_SEGMENT) -> float:
    """Estimated IP bytes of one MQTT packet sent alone in a TLS record over TCP/IPv4."""
    record = mqtt_packet_bytes + TLS_RECORD_BYTES
    segments = math.ceil(record / SEGMENT_PAYLOAD_BYTES)
    return record + segments * (1 + return_acks) * TCPIP_HEADER_BYTES


def _count_stored(database_url: str, probe_id: str) -> int:
    import psycopg
    from psycopg import sql

    counts = sql.SQL(" + ").join(
        sql.SQL("(SELECT count(*) FROM {} WHERE probe_id = %(probe)s)").format(
            sql.Identifier(f"readings_{kind}")
        )
        for kind in ("signal", "latency", "power", "system")
    )
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            sql.SQL("SELECT {}").format(counts), {"probe": probe_id}
        ).fetchone()
    return int(row[0]) if row else 0


def _mb(value: float) -> str:
    return f"{value / 1e6:,.2f} MB"


# --------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=90.0, help="wall time of the run")
    parser.add_argument(
        "--speedup", type=float, default=30.0, help="cadence factor (30: a round every 2 s)"
    )
    parser.add_argument("--first-seq", type=int, default=100_000, help="the outbox's first seq")
    parser.add_argument(
        "--keepalive-s",
        type=int,
        default=0,
        help="the probe's MQTT keepalive (default: probe.toml's, not accelerated)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("COVERWATCH_BENCH_DATABASE_URL"),
        help="a PostgreSQL server to create a throwaway database on "
        "(default: $COVERWATCH_BENCH_DATABASE_URL, else an embedded PostgreSQL)",
    )
    args = parser.parse_args()

    from agent.clock import Clock
    from agent.config import DEFAULT_INTERVALS_S, MqttSection
    from agent.outbox import Outbox
    from agent.publisher import Publisher, PublisherOptions
    from agent.scheduler import Agent

    probe_id = "bench-ack-001"
    intervals = {name: DEFAULT_INTERVALS_S[name] for name in SIMULATED_SENSORS}
    clock = Clock(ntp_synced=lambda: True)
    makers = simulated_readings()
    per_run = {name: len(make(clock.stamp())) for name, make in makers.items()}
    day = rounds_per_day(intervals, per_run)
    default_keepalive_s = next(
        f.default for f in dataclasses.fields(MqttSection) if f.name == "keepalive_s"
    )
    assert isinstance(default_keepalive_s, int)
    keepalive_s = args.keepalive_s or default_keepalive_s

    with (
        tempfile.TemporaryDirectory(prefix="cw-bench-ack-") as scratch,
        production_stack(
            Path(scratch), database_url=args.database_url, require_mosquitto=True
        ) as stack,
    ):
        relay = CountingRelay(stack.broker.port)
        relay.start()
        outbox_path = Path(scratch) / "probe" / "outbox.sqlite3"
        Outbox(outbox_path).close()  # create it, then start its seq where a probe's is
        with contextlib.closing(sqlite3.connect(outbox_path)) as db, db:
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)",
                (args.first_seq - 1,),
            )
        outbox = Outbox(outbox_path)
        publisher = Publisher(
            PublisherOptions(
                probe_id=probe_id,
                url=dataclasses.replace(stack.broker_url, host=LOOPBACK, port=relay.port),
                boot_id=clock.boot_id,
                keepalive_s=keepalive_s,
            ),
            outbox,
        )
        agent = Agent(
            simulated_sensors(args.speedup),
            clock=clock,
            outbox=outbox,
            on_stored=publisher.notify_live,
            unsent_readings=publisher.unsent_readings,
        )
        publisher.start()
        if not publisher.connected.wait(15):
            raise SystemExit(f"the probe could not connect: {publisher.last_error}")
        stop = threading.Event()
        started = time.monotonic()
        runner = threading.Thread(target=agent.run, args=(stop,), name="bench-agent")
        runner.start()
        time.sleep(args.duration_s)
        stop.set()
        runner.join()
        confirmed_all = publisher.wait_idle(timeout_s=30)
        wall_s = time.monotonic() - started
        publisher.stop(reason="benchmark over")
        time.sleep(0.5)  # the relay sees the DISCONNECT and the close
        relay.stop()
        outbox.close()
        stored = _count_stored(stack.database_url, probe_id)
        acks_published = stack.collector.metrics.registry.get_sample_value(
            "coverwatch_commit_acks_total"
        )
        broker_name = stack.broker.name

    packets = categorise(relay.packets, probe_id)
    # ------------------------------------------------------------------ the run itself
    print(
        f"services: {broker_name} and PostgreSQL "
        f"({'throwaway database on --database-url' if args.database_url else 'embedded'}), "
        "collector.ingest.Collector in a thread (default options)"
    )
    print(
        f"probe {probe_id} → relay 127.0.0.1:{relay.port} → {broker_name}: "
        f"{wall_s:.0f} s at {args.speedup:g}x the default cadence "
        f"({wall_s * args.speedup / 60:.0f} simulated minutes), seq from {args.first_seq:,}, "
        f"keepalive {keepalive_s} s (not accelerated); "
        f"{relay.connections} connection(s)"
    )
    print(
        f"agent: {agent.readings_taken} readings in {agent.rounds} rounds, "
        f"{publisher.published_messages} readings messages; collector stored {stored}, "
        f"published {acks_published or 0:.0f} commit acks; probe confirmed "
        f"{publisher.confirmed_readings}, re-sent {publisher.resent_readings}"
        + ("" if confirmed_all else " — WARNING: not everything was confirmed")
        + ("" if stored == agent.readings_taken else " — WARNING: stored != taken")
    )
    for direction in (UP, DOWN):
        flow = relay.flows[direction]
        parsed = sum(p.size for p, _ in packets if p.direction == direction)
        print(
            f"wire {direction}: {flow.bytes:,} B in {flow.reads} reads / {flow.writes} writes "
            f"({parsed:,} B parsed into MQTT packets)"
        )
    if relay.unparsed_bytes:
        print(f"WARNING: {relay.unparsed_bytes} B at the end were not a whole MQTT packet")

    tallies: dict[tuple[str, str, str], Tally] = {}
    for packet, category in packets:
        tallies.setdefault((packet.direction, packet.kind, category), Tally()).add(packet)
    print(f"\n{'direction':<13} {'packet':<11} {'category':<17} {'count':>6} {'bytes':>8}", end="")
    print(f" {'mean B':>7} {'reads':>6}")
    for (direction, kind, category), tally in sorted(tallies.items()):
        print(
            f"{direction:<13} {kind:<11} {category:<17} {tally.packets:>6} {tally.bytes:>8,} "
            f"{tally.mean:>7.1f} {len(tally.reads):>6}"
        )

    # ------------------------------------------------------------------ per round and message
    readings_publish = [p for p, c in packets if c == "readings" and p.kind == "PUBLISH"]
    readings_puback = tallies.get((DOWN, "PUBACK", "readings"), Tally())
    ack_publish = tallies.get((DOWN, "PUBLISH", "acks"), Tally())
    ack_puback = tallies.get((UP, "PUBACK", "acks"), Tally())
    subscription = [
        tallies.get((UP, "SUBSCRIBE", "ack subscription"), Tally()),
        tallies.get((DOWN, "SUBACK", "ack subscription"), Tally()),
    ]
    if not readings_publish or not ack_publish.packets:
        raise SystemExit("no readings or no acks went over the relay: nothing to measure")
    # The probe subscribes to its acks at QoS 0, so it answers them with no PUBACK; a
    # QoS 1 subscription would add one each.
    ack_puback_mean = ack_puback.mean if ack_puback.packets else 0.0
    ack_puback_ip = ip_bytes(ack_puback_mean) if ack_puback.packets else 0.0
    by_size: dict[int, list[Packet]] = {}
    for packet in readings_publish:
        by_size.setdefault(packet.readings, []).append(packet)
    missing = sorted(set(day) - set(by_size))
    if missing:
        raise SystemExit(f"no readings message of {missing} readings seen: run longer")
    mean_publish = {n: sum(p.size for p in ps) / len(ps) for n, ps in by_size.items()}
    mean_payload = {n: sum(p.payload_bytes for p in ps) / len(ps) for n, ps in by_size.items()}
    acks_per_message = ack_publish.packets / len(readings_publish)
    ack_payload = ack_publish.payload_bytes / ack_publish.packets
    ack_topic_bytes = len(protocol.ack_topic(probe_id).encode())
    print(
        "\nreadings messages (baseline): "
        + "; ".join(
            f"{len(by_size[n])} of {n} readings: {mean_publish[n]:,.0f} B "
            f"(payload {mean_payload[n]:,.0f} B)"
            for n in sorted(by_size)
        )
        + f"; broker PUBACK {readings_puback.mean:.0f} B"
    )
    print(
        f"commit acks (extra): {ack_publish.packets} ack PUBLISHes for "
        f"{len(readings_publish)} readings messages ({acks_per_message:.2f} per message), "
        f"{ack_publish.mean:.1f} B each (payload {ack_payload:.1f} B, "
        f"topic {ack_topic_bytes} B), arriving in {len(ack_publish.reads)} reads; "
        f"probe PUBACK {ack_puback_mean:.0f} B (QoS 0 subscription: none)"
    )
    per_connection = sum(t.bytes for t in subscription)
    print(
        f"per (re)connect: ack SUBSCRIBE {subscription[0].mean:.0f} B + SUBACK "
        f"{subscription[1].mean:.0f} B = {per_connection} B (not in the monthly figures)"
    )

    pings = tallies.get((UP, "PINGREQ", "session"), Tally())
    pongs = tallies.get((DOWN, "PINGRESP", "session"), Tally())
    # Keepalive pings go by the wall clock (paho sends PINGREQ every keepalive_s even
    # while it publishes), so they are counted in real seconds, not simulated ones.
    connect_at = next(p.at for p in relay.packets if p.kind == "CONNECT")
    ping_at = [p.at for p in relay.packets if p.kind == "PINGREQ"]
    ping_gaps = [b - a for a, b in itertools.pairwise([connect_at, *ping_at])]
    before_first_ping = (
        [p.at for p in relay.packets if p.direction == UP and connect_at <= p.at < ping_at[0]]
        if ping_at
        else []
    )
    longest_silence = max(
        (b - a for a, b in itertools.pairwise(before_first_ping)),
        default=0.0,
    )

    # ------------------------------------------------------------------ a month
    messages_day = sum(day.values())
    readings_month = MONTH_DAYS * sum(n * count for n, count in day.items())
    messages_month = MONTH_DAYS * messages_day
    readings_mqtt = MONTH_DAYS * sum(
        count * (mean_publish[n] + readings_puback.mean) for n, count in day.items()
    )
    readings_payload = MONTH_DAYS * sum(count * mean_payload[n] for n, count in day.items())
    readings_ip = MONTH_DAYS * sum(
        count * (ip_bytes(mean_publish[n]) + ip_bytes(readings_puback.mean))
        for n, count in day.items()
    )
    readings_ip_low = MONTH_DAYS * sum(
        count * (ip_bytes(mean_publish[n], return_acks=0) + ip_bytes(readings_puback.mean))
        for n, count in day.items()
    )
    acks_month = acks_per_message * messages_month
    ack_mqtt = acks_month * (ack_publish.mean + ack_puback_mean)
    ack_ip = acks_month * (ip_bytes(ack_publish.mean) + ack_puback_ip)
    # Lower bound: the TCP acknowledgement of the ack PUBLISH rides on the next segment
    # the probe sends anyway.
    ack_ip_low = acks_month * (ip_bytes(ack_publish.mean, return_acks=0) + ack_puback_ip)
    pings_month = MONTH_DAYS * DAY_S / (sum(ping_gaps) / len(ping_gaps)) if ping_gaps else 0.0
    ping_mqtt = pings_month * (pings.mean + pongs.mean) if pings.packets else 0.0
    ping_ip = pings_month * (ip_bytes(pings.mean) + ip_bytes(pongs.mean)) if pings.packets else 0.0
    share = 100 * ack_mqtt / readings_mqtt
    ip_share = 100 * ack_ip / readings_ip
    rounds_text = " + ".join(f"{count:,} rounds of {n}" for n, count in sorted(day.items()))
    cadence = ", ".join(f"{name} {every} s" for name, every in intervals.items())
    print(
        f"\na {MONTH_DAYS}-day month at the default cadence ({cadence}):"
        f" {rounds_text} readings a day = {messages_month:,} messages, {readings_month:,} readings"
    )
    print(f"{'':<28} {'MQTT bytes':>12} {'IP bytes, TLS (est.)':>22}")
    print(f"{'readings (baseline)':<28} {_mb(readings_mqtt):>12} {_mb(readings_ip):>22}")
    print(f"{'commit acks (extra)':<28} {_mb(ack_mqtt):>12} {_mb(ack_ip):>22}")
    print(f"{'acks / readings':<28} {share:>11.1f}% {ip_share:>21.1f}%")
    print(f"{'keepalive pings (not acks)':<28} {_mb(ping_mqtt):>12} {_mb(ping_ip):>22}")
    print(
        f"acks: {acks_month:,.0f} a month ({acks_per_message:.2f} per readings message); "
        f"per ack {ack_publish.mean + ack_puback_mean:.0f} B of MQTT "
        f"(PUBLISH {ack_publish.mean:.0f} + PUBACK {ack_puback_mean:.0f}), "
        f"~{ip_bytes(ack_publish.mean) + ack_puback_ip:.0f} B of IP"
    )
    print(
        (
            f"keepalive: {pings.packets} PINGREQ/PINGRESP, one every "
            f"{sum(ping_gaps) / len(ping_gaps):.1f} s of wall time (keepalive {keepalive_s} s) "
            f"although the probe sent a packet at least every {longest_silence:.1f} s: "
            f"{pings_month:,.0f} a month, whatever the cadence; the acks change nothing there"
        )
        if ping_gaps
        else f"keepalive: no PINGREQ in a run shorter than the keepalive ({keepalive_s} s)"
    )
    print(
        f"readings payload (JSON) alone: {_mb(readings_payload)} a month; "
        f"if every PUBLISH's TCP ACK rode on the answer instead: readings "
        f"{_mb(readings_ip_low)}, acks {_mb(ack_ip_low)} of IP"
    )
    print(
        f"assumptions: one TLS record per MQTT packet, +{TLS_RECORD_BYTES} B "
        "(TLS 1.2 AES-GCM: 5 header + 8 explicit nonce + 16 tag; TLS 1.3: 22); "
        f"TCP/IPv4 headers {TCPIP_HEADER_BYTES} B per segment (20 IP + 20 TCP + 12 timestamps), "
        f"segments of at most {SEGMENT_PAYLOAD_BYTES:,} B (MTU 1,500), each answered by "
        f"{RETURN_ACKS_PER_SEGMENT} pure TCP ACK of {TCPIP_HEADER_BYTES} B; reconnects and "
        "TLS handshakes not counted"
    )
    print(
        f"RESULT ack_bytes_per_month={ack_mqtt:.0f} ack_ip_bytes_per_month={ack_ip:.0f} "
        f"readings_bytes_per_month={readings_mqtt:.0f} "
        f"readings_ip_bytes_per_month={readings_ip:.0f} ack_share_pct={share:.1f} "
        f"ack_ip_share_pct={ip_share:.1f} acks_per_month={acks_month:.0f} "
        f"ack_packet_bytes={ack_publish.mean:.0f} pings_per_month={pings_month:.0f} "
        f"ping_ip_bytes_per_month={ping_ip:.0f}"
    )


if __name__ == "__main__":
    main()
