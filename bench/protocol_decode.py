"""How fast the collector's protocol decoder turns payloads into validated readings.

Baseline, measured in the same run on the same payloads: the standard library's
``json.loads``, which only parses and validates nothing. The decoder must stay
well ahead of the ingest target (20,000 readings/s) so that decoding is never the
collector's bottleneck.

Run: ``.venv/bin/python -m bench.protocol_decode [--batches 2000] [--batch-size 100]``
Last line: ``RESULT decode_readings_per_s=… json_loads_readings_per_s=… ratio=…``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from coverwatch import protocol

BOOT_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def realistic_batch(probe_id: str, first_seq: int, size: int, rng: random.Random) -> bytes:
    """A live-cycle mix: mostly signal and latency, some power and system readings."""
    start = datetime(2026, 11, 22, tzinfo=UTC)
    readings: list[protocol.Reading] = []
    for offset in range(size):
        seq = first_seq + offset
        common: dict[str, Any] = {
            "seq": seq,
            "boot_id": BOOT_ID,
            "taken_at": start + timedelta(seconds=seq),
            "monotonic_ms": seq * 1000,
            "ntp_synced": True,
        }
        roll = offset % 8
        if roll < 3:
            readings.append(
                protocol.SignalReading(
                    **common,
                    registration="home",
                    technology="lte",
                    operator_code="45204",
                    cell_id=rng.randrange(1, 2**28),
                    tac=rng.randrange(1, 2**16),
                    rsrp_dbm=rng.uniform(-125, -70),
                    rsrq_db=rng.uniform(-20, -3),
                    sinr_db=rng.uniform(-5, 25),
                    rssi_dbm=rng.uniform(-100, -50),
                )
            )
        elif roll < 6:
            rtts = sorted(rng.uniform(40, 400) for _ in range(10))
            readings.append(
                protocol.LatencyReading(
                    **common,
                    target="1.1.1.1",
                    method="icmp",
                    packets_sent=10,
                    packets_received=10,
                    loss_pct=0,
                    rtt_min_ms=rtts[0],
                    rtt_avg_ms=sum(rtts) / 10,
                    rtt_median_ms=rtts[5],
                    rtt_max_ms=rtts[-1],
                    jitter_ms=rng.uniform(1, 40),
                )
            )
        elif roll == 6:
            readings.append(protocol.PowerReading(**common, uptime_s=seq, on_mains=True))
        else:
            readings.append(
                protocol.SystemReading(**common, cpu_temp_c=51.2, load_1m=0.3, outbox_pending=0)
            )
    batch = protocol.ReadingsBatch(v=1, probe_id=probe_id, readings=readings)
    return protocol.encode(batch)


def measure(
    label: str,
    decode: Callable[[str, bytes], object],
    payloads: list[tuple[str, bytes]],
    readings: int,
) -> float:
    started = time.perf_counter()
    for topic, payload in payloads:
        decode(topic, payload)
    elapsed = time.perf_counter() - started
    rate = readings / elapsed
    print(f"{label:<34} {rate:>14,.0f} readings/s   ({elapsed:.3f} s)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(7)
    payloads = [
        (
            protocol.readings_topic(f"p-{n % 500}"),
            realistic_batch(f"p-{n % 500}", n * 1000, args.batch_size, rng),
        )
        for n in range(args.batches)
    ]
    readings = args.batches * args.batch_size
    size = sum(len(p) for _, p in payloads) / readings
    print(f"{args.batches} batches x {args.batch_size} readings, {size:.0f} bytes/reading")
    baseline = measure(
        "baseline: json.loads (no checks)", lambda _t, p: json.loads(p), payloads, readings
    )
    decoder = measure("coverwatch decode_readings", protocol.decode_readings, payloads, readings)
    print(
        f"RESULT decode_readings_per_s={decoder:.0f} json_loads_readings_per_s={baseline:.0f} "
        f"ratio={decoder / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
