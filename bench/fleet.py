"""Readings a simulated probe publishes, shared by the benchmarks.

One live cycle is 8 readings: 3 signal, 3 latency, 1 power, 1 system; values vary
with ``rng`` so that payloads are not all alike.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

from coverwatch import protocol

BOOT_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def readings_batch(
    probe_id: str, first_seq: int, size: int, taken_at: datetime, rng: random.Random
) -> protocol.ReadingsBatch:
    readings: list[protocol.Reading] = []
    for offset in range(size):
        seq = first_seq + offset
        common: dict[str, Any] = {
            "seq": seq,
            "boot_id": BOOT_ID,
            "taken_at": taken_at,
            "monotonic_ms": seq,
            "ntp_synced": True,
        }
        slot = offset % 8
        if slot < 3:
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
        elif slot < 6:
            rtts = sorted(rng.uniform(40, 400) for _ in range(10))
            readings.append(
                protocol.LatencyReading(
                    **common,
                    target=f"target-{slot}",
                    method="icmp",
                    packets_sent=10,
                    packets_received=10,
                    loss_pct=0.0,
                    rtt_min_ms=rtts[0],
                    rtt_avg_ms=sum(rtts) / 10,
                    rtt_median_ms=rtts[5],
                    rtt_max_ms=rtts[-1],
                    jitter_ms=rng.uniform(1, 40),
                )
            )
        elif slot == 6:
            readings.append(protocol.PowerReading(**common, uptime_s=float(seq), on_mains=True))
        else:
            readings.append(
                protocol.SystemReading(**common, cpu_temp_c=51.2, load_1m=0.3, outbox_pending=0)
            )
    # Every probe of this version names its outbox, which puts the collector's reading
    # ledger on the measured path.
    outbox_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"coverwatch-bench:{probe_id}"))
    return protocol.ReadingsBatch(v=1, probe_id=probe_id, readings=readings, outbox_id=outbox_id)
