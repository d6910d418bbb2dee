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
from datetime import UTC, datetime

from bench.fleet import readings_batch
from coverwatch import protocol


def realistic_batch(probe_id: str, first_seq: int, size: int, rng: random.Random) -> bytes:
    start = datetime(2026, 11, 22, tzinfo=UTC)
    return protocol.encode(readings_batch(probe_id, first_seq, size, start, rng))


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
