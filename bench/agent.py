"""Footprint of the probe agent: memory, CPU and SD-card writes per reading.

Runs the real agent (scheduler, SQLite outbox, paho publisher) in a child process
against a real local broker, with simulated sensors that return realistic readings
instantly (so the figures are the agent's own cost, not the modem's or ping's), at
the default cadence and at an accelerated one. A real collector (in a thread of the
parent process) stores the readings in a throwaway PostgreSQL and publishes the commit
acknowledgements, so the agent receives confirmations and deletes confirmed readings
from its outbox as in production. Prints, for each run:

- peak RSS (``VmHWM`` of ``/proc/self/status``) against the same interpreter with the
  same imports idling. (Not ``ru_maxrss``: Linux carries a process's peak over
  ``execve``, so a child spawned by a bigger parent — this one runs the collector —
  would report the parent's peak.)
- CPU as % of one core (user + system time / wall time);
- bytes the kernel wrote to disk per reading (``/proc/self/io`` write_bytes, i.e.
  after the page cache: outbox inserts, WAL, fsyncs, deletes), against the reading's
  JSON size — the outbox's write amplification. The power sensor's outage heartbeat,
  written every power round on a real probe, is written here too, as each version
  writes it (one sector in place, or today's JSON file replaced whole).

Deletes: confirmed readings are deleted every ``REMOVE_EVERY_S`` (10 min) or 500
readings. The accelerated run divides that period by its speed-up, so it deletes as
often per simulated minute as a probe does. A default-cadence run shorter than 10 min
deletes nothing while it measures; its figure then adds the cost of the delete done
at the clean stop (measured separately), pro rata of the run's length over 10 min.

Wire: the agent talks to the broker through a TCP relay in the parent process that
counts every byte of the MQTT connection both ways (readings, PUBACKs, the collector's
acks, PINGs, status messages), inside the measuring window (the child marks its start
and end on stdout). That is MQTT over TCP: the TCP/IP headers (~52 B per segment) and,
on a production link, TLS records are not counted.

Each configuration runs twice in the same run: **today's** (``encoding = "json"``,
``round_log = false``: the settings of the previous version) and the **cheap probe's**
defaults (compact encoding, round log), so the figures compare like with like.

Last line: ``RESULT rss_mb=… cpu_pct=… disk_bytes_per_reading=… wire_bytes_per_reading=…``
(default cadence, default settings) plus the same for today's settings (``json_…``).
Targets (issue #4): RSS <= 40 MB, <= 2 % of one core at the default cadence; (issue 13
item 6) <= 1 KB of disk and <= 150 B on the wire per reading at the default cadence.

Both configurations are measured on the steady state: the window opens once the first
round (every sensor at start) and the boot's clock anchor are stored and confirmed —
costs paid once per boot, not per reading. A 300-s window then holds one cadence period:
four one-minute rounds and one five-minute round (14 readings).

    python -m bench.agent [--default-s 300] [--accelerated-s 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.scheduler import ScheduledSensor
    from agent.sensors.base import Stamp
    from collector.ingest import Collector
    from coverwatch import protocol
    from coverwatch.localservices import LocalBroker
    from coverwatch.settings import MqttUrl

ROOT = Path(__file__).resolve().parent.parent

# The simulated sensors of a probe with a good LTE signal, one function per sensor.
SIMULATED_SENSORS = ("cellular", "latency", "power", "system")


def simulated_readings() -> dict[str, Callable[[Stamp], list[protocol.Reading]]]:
    """Realistic readings for each simulated sensor, by sensor name."""
    from coverwatch import protocol

    def signal(stamp: Stamp) -> list[protocol.Reading]:
        return [
            protocol.SignalReading(
                **stamp.base(),
                registration="home",
                technology="lte",
                operator_code="45204",
                operator_name="Viettel",
                cell_id=27447297,
                tac=12010,
                rsrp_dbm=-101.0,
                rsrq_db=-12.0,
                sinr_db=4.5,
                rssi_dbm=-71.0,
            )
        ]

    def latency(stamp: Stamp) -> list[protocol.Reading]:
        return [
            protocol.LatencyReading(
                **stamp.base(),
                target=target,
                method="icmp",
                packets_sent=10,
                packets_received=9,
                loss_pct=10.0,
                rtt_min_ms=48.1,
                rtt_avg_ms=63.4,
                rtt_median_ms=60.2,
                rtt_max_ms=121.7,
                jitter_ms=11.3,
                dns_ms=35.0,
            )
            for target in ("1.1.1.1", "8.8.8.8", "vnexpress.net")
        ]

    def power(stamp: Stamp) -> list[protocol.Reading]:
        return [
            protocol.PowerReading(
                **stamp.base(),
                uptime_s=stamp.monotonic_ms / 1000,
                undervoltage_now=False,
                undervoltage_since_boot=False,
            )
        ]

    def system(stamp: Stamp) -> list[protocol.Reading]:
        return [
            protocol.SystemReading(
                **stamp.base(),
                cpu_temp_c=51.2,
                load_1m=0.12,
                memory_used_pct=31.0,
                disk_free_bytes=20_000_000_000,
            )
        ]

    makers: dict[str, Callable[[Stamp], list[protocol.Reading]]] = {
        "cellular": signal,
        "latency": latency,
        "power": power,
        "system": system,
    }
    assert tuple(makers) == SIMULATED_SENSORS
    return makers


def simulated_sensors(
    speedup: float = 1.0, *, heartbeat: Callable[[Stamp], None] | None = None
) -> list[ScheduledSensor]:
    """The simulated sensors on the default cadence (agent.config), ``speedup`` times faster.

    ``heartbeat`` is called with each power round's stamp: the real power sensor writes
    its outage heartbeat to the SD card every round, and that write belongs in the
    probe's disk figures."""
    from agent.config import DEFAULT_INTERVALS_S
    from agent.scheduler import ScheduledSensor

    class Simulated:
        def __init__(self, name: str, make: Callable[[Stamp], list[protocol.Reading]]) -> None:
            self.name = name
            self._make = make

        def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
            if self.name == "power" and heartbeat is not None:
                heartbeat(stamp)
            return self._make(stamp)

    return [
        ScheduledSensor(Simulated(name, make), DEFAULT_INTERVALS_S[name] / speedup)
        for name, make in simulated_readings().items()
    ]


@dataclass(frozen=True)
class Stack:
    """A broker, a database and a collector confirming commits, as in production."""

    broker: LocalBroker
    database_url: str
    collector: Collector

    @property
    def broker_url(self) -> MqttUrl:
        return self.broker.url


@contextmanager
def production_stack(
    scratch: Path, *, database_url: str | None = None, require_mosquitto: bool = False
) -> Iterator[Stack]:
    """Mosquitto (else amqtt), PostgreSQL and a collector thread, stopped at the end.

    PostgreSQL is a throwaway embedded server, or, with ``database_url`` (a role that
    may create databases), a throwaway database on that server, dropped at the end.
    """
    import psycopg
    from psycopg import sql

    from collector import schema
    from collector.ingest import Collector, IngestOptions
    from collector.storage import Store
    from coverwatch.localservices import LocalPostgres, mosquitto_binary, start_local_broker

    if require_mosquitto and mosquitto_binary() is None:
        raise SystemExit("this benchmark needs Mosquitto: apt-get install mosquitto")
    postgres: LocalPostgres | None = None
    throwaway: str | None = None
    if database_url:
        throwaway = f"cw_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(throwaway)))
        url = psycopg.conninfo.make_conninfo(database_url, dbname=throwaway)
    else:
        postgres = LocalPostgres(scratch / "pg")
        postgres.start()
        url = postgres.url()
    broker: LocalBroker | None = None
    try:
        schema.upgrade(url)
        broker = start_local_broker(scratch / "broker")
        collector = Collector(
            broker.url,
            Store(url),
            IngestOptions(client_id=f"bench-collector-{uuid.uuid4().hex[:8]}"),
        )
        collector.connect()
        thread = threading.Thread(target=collector.run, name="bench-collector", daemon=True)
        thread.start()
        try:
            yield Stack(broker, url, collector)
        finally:
            collector.stop()
            thread.join(30)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
        if throwaway is not None and database_url:
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(throwaway)
                    )
                )


class CountingRelay:
    """A TCP relay to the broker that counts the bytes each way (one connection at a time)."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.to_broker = 0
        self.to_agent = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="bench-relay", daemon=True).start()

    def counted(self) -> int:
        with self._lock:
            return self.to_broker + self.to_agent

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                agent_side, _ = self._listener.accept()
            except OSError:
                return
            broker_side = socket.create_connection(self._upstream)
            for source, sink, upward in (
                (agent_side, broker_side, True),
                (broker_side, agent_side, False),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, upward), daemon=True
                ).start()

    def _pump(self, source: Any, sink: Any, upward: bool) -> None:
        import socket

        try:
            while data := source.recv(65536):
                with self._lock:
                    if upward:
                        self.to_broker += len(data)
                    else:
                        self.to_agent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def _child(args: argparse.Namespace) -> None:
    import msgspec

    import agent.publisher
    from agent.clock import Clock
    from agent.outbox import Outbox
    from agent.publisher import Publisher, PublisherOptions
    from agent.scheduler import Agent
    from coverwatch.settings import MqttUrl

    if args.idle:
        time.sleep(2)
        print(json.dumps({"maxrss_kb": _peak_rss_kb()}))
        return

    # Delete confirmed readings as often per simulated minute as a probe does.
    agent.publisher.REMOVE_EVERY_S = agent.publisher.REMOVE_EVERY_S / args.speedup
    state = Path(args.state_dir)
    sensors = simulated_sensors(args.speedup, heartbeat=_heartbeat_writer(state, args))
    outbox = Outbox(state / "outbox.sqlite3", round_log=not args.no_round_log)
    clock = Clock(ntp_synced=lambda: True)
    publisher = Publisher(
        PublisherOptions(
            probe_id=args.probe_id,
            url=MqttUrl.parse(args.broker_url),
            boot_id=clock.boot_id,
            encoding=args.encoding,
        ),
        outbox,
    )
    agent_ = Agent(
        sensors,
        clock=clock,
        outbox=outbox,
        on_stored=publisher.notify_live,
        unsent_readings=publisher.unsent_readings,
    )
    publisher.start()
    if not publisher.connected.wait(10):
        raise SystemExit(f"the agent could not connect: {publisher.last_error}")
    stop = threading.Event()
    runner = threading.Thread(target=agent_.run, args=(stop,), name="bench-agent")
    runner.start()
    # Warm-up: the first round (every sensor once at start), the boot's clock anchor and
    # their confirmation are once per boot; the window opens on the steady state after it.
    deadline = time.monotonic() + 30
    while agent_.rounds < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    publisher.wait_idle(timeout_s=10)
    warm_readings, warm_rounds = agent_.readings_taken, agent_.rounds
    print("WINDOW start", flush=True)
    io_before = _write_bytes()
    cpu_before = os.times()
    started = time.monotonic()
    time.sleep(args.duration)
    stop.set()
    runner.join()
    idle = publisher.wait_idle(timeout_s=10)  # the last round confirmed by the collector
    print("WINDOW end", flush=True)
    wall = time.monotonic() - started
    cpu_after = os.times()
    io_after = _write_bytes()
    pending = outbox.stats().pending
    # The clean stop deletes every confirmed reading still in the outbox: one delete,
    # measured on its own (with the goodbye message, which writes nothing to disk).
    publisher.stop()
    io_stopped = _write_bytes()
    sample = simulated_readings()["cellular"](clock.stamp())[0]
    print(
        json.dumps(
            {
                "readings": agent_.readings_taken - warm_readings,
                "rounds": agent_.rounds - warm_rounds,
                "warm_up_readings": warm_readings,
                "messages": publisher.published_messages,
                "confirmed": publisher.confirmed_readings,
                "resent": publisher.resent_readings,
                "idle": idle,
                "pending": pending,
                "pending_after_stop": outbox.stats().pending,
                "wall_s": wall,
                "cpu_s": (cpu_after.user - cpu_before.user)
                + (cpu_after.system - cpu_before.system),
                "write_bytes": io_after - io_before,
                "stop_delete_bytes": io_stopped - io_after,
                "remove_every_s": agent.publisher.REMOVE_EVERY_S,
                "maxrss_kb": _peak_rss_kb(),
                "reading_json_bytes": len(msgspec.json.encode(sample)),
                "encoding": args.encoding,
                "round_log": not args.no_round_log,
                "direct_io": bool(outbox.round_log and outbox.round_log.direct),
            }
        )
    )
    outbox.close()


def _heartbeat_writer(state: Path, args: argparse.Namespace) -> Callable[[Stamp], None]:
    """The power sensor's heartbeat as the version under test writes it: in place, one
    sector (agent.heartbeat), or, with today's settings, the JSON file replaced whole
    every round as before."""
    from agent.heartbeat import Heartbeat, HeartbeatFile
    from agent.sensors.power import HEARTBEAT_FILE, LEGACY_HEARTBEAT_FILE, write_atomically

    if args.no_round_log:
        legacy = state / LEGACY_HEARTBEAT_FILE
        return lambda stamp: write_atomically(
            legacy, {"boot_id": stamp.boot_id, "wall_time": stamp.taken_at.isoformat()}
        )
    slots = HeartbeatFile(state / HEARTBEAT_FILE)
    return lambda stamp: slots.write(Heartbeat(stamp.boot_id, stamp.taken_at))


def _mount_of(path: Path) -> str:
    """The file system and mount options the outboxes live on (from /proc/self/mounts)."""
    best = ("", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, fstype, options, *_ = line.split()
        inside = resolved == target or resolved.startswith(target.rstrip("/") + "/")
        if inside and len(target) >= len(best[0]):
            best = (target, f"{target} {fstype} ({options})")
    return best[1]


def _peak_rss_kb() -> int:
    """Peak resident set of this process since its ``execve`` (``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _run_child(extra: list[str], relay: CountingRelay | None = None) -> dict[str, Any]:
    """Run a child; with a relay, add the bytes it counted inside the child's window."""
    with (
        tempfile.TemporaryFile(mode="w+") as errors,
        subprocess.Popen(
            [sys.executable, "-m", "bench.agent", "--child", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as child,
    ):
        assert child.stdout is not None
        window: list[int] = []
        lines: list[str] = []
        for line in child.stdout:
            if line.startswith("WINDOW") and relay is not None:
                window.append(relay.counted())
            else:
                lines.append(line)
        if child.wait() != 0:
            errors.seek(0)
            raise SystemExit(f"bench.agent child failed:\n{errors.read()}")
    result = dict(json.loads(lines[-1]))
    if relay is not None:
        result["wire_bytes"] = window[1] - window[0]
        result["wire_bytes_session"] = relay.counted()
    return result


def disk_per_reading(run: dict[str, Any]) -> tuple[float, float]:
    """Disk bytes per reading, and the share of them that is the amortised stop delete.

    A run that deleted while measuring carries its deletes already; one that did not
    (shorter than the removal period) is charged the delete measured at its clean stop,
    pro rata of its length over the removal period.
    """
    readings = max(run["readings"], 1)
    deleted_while_measuring = run["readings"] + run.get("warm_up_readings", 0) - run["pending"]
    extra = 0.0
    if deleted_while_measuring == 0:
        extra = run["stop_delete_bytes"] * min(1.0, run["wall_s"] / run["remove_every_s"])
    return (run["write_bytes"] + extra) / readings, extra / readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--default-s",
        type=float,
        default=300.0,
        help="run at default cadence after the first round (300 s: one of each round)",
    )
    parser.add_argument("--accelerated-s", type=float, default=30.0)
    parser.add_argument("--speedup", type=float, default=60.0, help="accelerated cadence factor")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("COVERWATCH_BENCH_DATABASE_URL"),
        help="a PostgreSQL server to create a throwaway database on "
        "(default: $COVERWATCH_BENCH_DATABASE_URL, else an embedded PostgreSQL)",
    )
    parser.add_argument(
        "--state-root",
        type=Path,
        default=None,
        help="where the agents' outboxes live (default: the scratch directory); e.g. a "
        "file system mounted like a Pi's state directory (ext4 with lazytime)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--broker-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--probe-id", default="bench-001", help=argparse.SUPPRESS)
    parser.add_argument("--encoding", default="compact", help=argparse.SUPPRESS)
    parser.add_argument("--no-round-log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    with (
        tempfile.TemporaryDirectory(prefix="cw-bench-agent-") as scratch,
        production_stack(Path(scratch), database_url=args.database_url) as stack,
    ):
        idle = _run_child(["--idle"])
        runs = {}
        for settings, flags in (("json", ["--encoding", "json", "--no-round-log"]), ("", [])):
            for cadence, speedup, duration in (
                ("default", 1.0, args.default_s),
                ("accelerated", args.speedup, args.accelerated_s),
            ):
                label = f"{settings}_{cadence}" if settings else cadence
                state = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=args.state_root or scratch))
                relay = CountingRelay(stack.broker_url.host, stack.broker_url.port)
                url = dataclasses.replace(stack.broker_url, port=relay.port).with_credentials()
                try:
                    runs[label] = _run_child(
                        [
                            *flags,
                            "--speedup",
                            str(speedup),
                            "--duration",
                            str(duration),
                            "--broker-url",
                            url,
                            "--state-dir",
                            str(state),
                            "--probe-id",
                            f"bench-{label.replace('_', '-')}",
                        ],
                        relay,
                    )
                finally:
                    relay.close()
        broker_name = stack.broker.name

    print(f"broker: {broker_name}; collector and PostgreSQL confirm every commit")
    state_fs = _mount_of(args.state_root or Path(tempfile.gettempdir()))
    print(f"outboxes on: {state_fs}")
    print(f"baseline: same interpreter and imports, idle: {idle['maxrss_kb'] / 1024:.1f} MB RSS")
    print(
        "today = encoding json, round_log false (the previous version's settings); "
        "default and accelerated = the defaults (encoding compact, round_log true)"
    )
    for label, run in runs.items():
        readings = max(run["readings"], 1)
        per_reading, amortised = disk_per_reading(run)
        deleted = run["readings"] + run.get("warm_up_readings", 0) - run["pending"]
        print(
            f"{label:>11}: {run['readings']} readings in {run['rounds']} rounds, "
            f"{run['wall_s']:.0f} s ({run['readings'] / run['wall_s']:.2f}/s); "
            f"confirmed {run['confirmed']}, re-sent {run['resent']}, "
            f"deleted while measuring {deleted} (every {run['remove_every_s']:.0f} s), "
            f"pending {run['pending']}; "
            f"peak RSS {run['maxrss_kb'] / 1024:.1f} MB "
            f"(+{(run['maxrss_kb'] - idle['maxrss_kb']) / 1024:.1f} over idle); "
            f"CPU {100 * run['cpu_s'] / run['wall_s']:.2f} % of one core; "
            f"disk {per_reading:.0f} B written per reading "
            f"({run['write_bytes'] / readings:.0f} measuring"
            + (
                f" + {amortised:.0f} for the delete at stop, {run['stop_delete_bytes']} B, "
                f"x {min(1.0, run['wall_s'] / run['remove_every_s']):.2f} of a removal period"
                if amortised
                else ""
            )
            + f"; reading JSON {run['reading_json_bytes']} B, "
            f"amplification {per_reading / run['reading_json_bytes']:.1f}x); "
            f"wire {run['wire_bytes'] / readings:.0f} B per reading "
            f"({run['wire_bytes']} B of MQTT both ways in the window, "
            f"{run['wire_bytes_session']} B in the whole session); "
            f"encoding {run['encoding']}, round log {run['round_log']}"
            + (f" (O_DIRECT {run['direct_io']})" if run["round_log"] else "")
        )
        if not run["idle"] or run["confirmed"] < run["readings"]:
            print(f"{label:>11}: WARNING: not every reading was confirmed by the collector")
    default, fast = runs["default"], runs["accelerated"]
    today, today_fast = runs["json_default"], runs["json_accelerated"]
    print(
        f"RESULT rss_mb={default['maxrss_kb'] / 1024:.1f} "
        f"cpu_pct={100 * default['cpu_s'] / default['wall_s']:.2f} "
        f"disk_bytes_per_reading={disk_per_reading(default)[0]:.0f} "
        f"accelerated_cpu_pct={100 * fast['cpu_s'] / fast['wall_s']:.2f} "
        f"accelerated_disk_bytes_per_reading={disk_per_reading(fast)[0]:.0f} "
        f"json_disk_bytes_per_reading={disk_per_reading(today)[0]:.0f} "
        f"json_wire_bytes_per_reading={today['wire_bytes'] / max(today['readings'], 1):.0f} "
        f"json_accelerated_disk_bytes_per_reading={disk_per_reading(today_fast)[0]:.0f} "
        f"wire_bytes_per_reading={default['wire_bytes'] / max(default['readings'], 1):.0f}"
    )


if __name__ == "__main__":
    main()
