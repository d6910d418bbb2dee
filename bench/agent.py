"""Footprint of the probe agent: memory, CPU and SD-card writes per reading.

Runs the real agent (scheduler, SQLite outbox, paho publisher) in a child process
against a real local broker, with simulated sensors that return realistic readings
instantly (so the figures are the agent's own cost, not the modem's or ping's), at
the default cadence and at an accelerated one. Prints, for each:

- peak RSS (``ru_maxrss``) against the same interpreter with the same imports idling;
- CPU as % of one core (user + system time / wall time);
- bytes the kernel wrote to disk per reading (``/proc/self/io`` write_bytes, i.e.
  after the page cache: outbox inserts, WAL, fsyncs, deletes), against the reading's
  JSON size — the outbox's write amplification.

Last line: ``RESULT rss_mb=… cpu_pct=… disk_bytes_per_reading=…`` (default cadence).
Targets (issue #4): RSS <= 40 MB, <= 2 % of one core at the default cadence.

    python -m bench.agent [--default-s 120] [--accelerated-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _child(args: argparse.Namespace) -> None:
    import msgspec

    from agent.clock import Clock
    from agent.config import DEFAULT_INTERVALS_S
    from agent.outbox import Outbox
    from agent.publisher import Publisher, PublisherOptions
    from agent.scheduler import Agent, ScheduledSensor
    from agent.sensors.base import Stamp
    from coverwatch import protocol
    from coverwatch.settings import MqttUrl

    if args.idle:
        time.sleep(2)
        print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
        return

    class Simulated:
        def __init__(self, name: str, make: Any) -> None:
            self.name = name
            self._make = make

        def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
            readings: list[protocol.Reading] = self._make(stamp)
            return readings

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

    makers = {"cellular": signal, "latency": latency, "power": power, "system": system}
    sensors = [
        ScheduledSensor(Simulated(name, make), DEFAULT_INTERVALS_S[name] / args.speedup)
        for name, make in makers.items()
    ]
    state = Path(args.state_dir)
    outbox = Outbox(state / "outbox.sqlite3")
    clock = Clock(ntp_synced=lambda: True)
    publisher = Publisher(
        PublisherOptions(
            probe_id="bench-001", url=MqttUrl.parse(args.broker_url), boot_id=clock.boot_id
        ),
        outbox,
    )
    agent = Agent(sensors, clock=clock, outbox=outbox, on_stored=publisher.notify_live)
    publisher.start()
    publisher.connected.wait(10)
    stop = threading.Event()
    io_before = _write_bytes()
    cpu_before = os.times()
    started = time.monotonic()
    runner = threading.Thread(target=agent.run, args=(stop,), name="bench-agent")
    runner.start()
    time.sleep(args.duration)
    stop.set()
    runner.join()
    publisher.wait_idle(timeout_s=10)
    wall = time.monotonic() - started
    cpu_after = os.times()
    io_after = _write_bytes()
    stats = outbox.stats()
    readings = agent.readings_taken
    sample = signal(clock.stamp())[0]
    print(
        json.dumps(
            {
                "readings": readings,
                "pending": stats.pending,
                "wall_s": wall,
                "cpu_s": (cpu_after.user - cpu_before.user)
                + (cpu_after.system - cpu_before.system),
                "write_bytes": io_after - io_before,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "reading_json_bytes": len(msgspec.json.encode(sample)),
            }
        )
    )
    publisher.stop()
    outbox.close()


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _run_child(extra: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.agent", "--child", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--default-s", type=float, default=120.0, help="run at default cadence")
    parser.add_argument("--accelerated-s", type=float, default=30.0)
    parser.add_argument("--speedup", type=float, default=60.0, help="accelerated cadence factor")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--broker-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from coverwatch.localservices import start_local_broker

    with tempfile.TemporaryDirectory(prefix="cw-bench-agent-") as scratch:
        broker = start_local_broker(Path(scratch) / "broker")
        try:
            url = broker.url.with_credentials()
            idle = _run_child(["--idle"])
            runs = {}
            for label, speedup, duration in (
                ("default", 1.0, args.default_s),
                ("accelerated", args.speedup, args.accelerated_s),
            ):
                state = Path(scratch) / label
                state.mkdir()
                runs[label] = _run_child(
                    [
                        "--speedup",
                        str(speedup),
                        "--duration",
                        str(duration),
                        "--broker-url",
                        url,
                        "--state-dir",
                        str(state),
                    ]
                )
        finally:
            broker.stop()

    print(f"baseline: same interpreter and imports, idle: {idle['maxrss_kb'] / 1024:.1f} MB RSS")
    for label, run in runs.items():
        readings = max(run["readings"], 1)
        print(
            f"{label:>11}: {run['readings']} readings in {run['wall_s']:.0f} s "
            f"({run['readings'] / run['wall_s']:.2f}/s), pending {run['pending']}; "
            f"peak RSS {run['maxrss_kb'] / 1024:.1f} MB "
            f"(+{(run['maxrss_kb'] - idle['maxrss_kb']) / 1024:.1f} over idle); "
            f"CPU {100 * run['cpu_s'] / run['wall_s']:.2f} % of one core; "
            f"disk {run['write_bytes'] / readings:.0f} B written per reading "
            f"(reading JSON {run['reading_json_bytes']} B, "
            f"amplification {run['write_bytes'] / readings / run['reading_json_bytes']:.1f}x)"
        )
    default, fast = runs["default"], runs["accelerated"]
    print(
        f"RESULT rss_mb={default['maxrss_kb'] / 1024:.1f} "
        f"cpu_pct={100 * default['cpu_s'] / default['wall_s']:.2f} "
        f"disk_bytes_per_reading={default['write_bytes'] / max(default['readings'], 1):.0f} "
        f"accelerated_cpu_pct={100 * fast['cpu_s'] / fast['wall_s']:.2f} "
        f"accelerated_disk_bytes_per_reading={fast['write_bytes'] / max(fast['readings'], 1):.0f}"
    )


if __name__ == "__main__":
    main()
