"""Province benchmark (issue #12, item 4): a month of a province's coverage, from the rollups.

**Data.** 10,000 villages and 2,000 probes in one province-sized box (Cao Bằng, lon
105.3 to 106.9, lat 22.3 to 23.1): a province outline with 2,000 vertices and its communes,
villages in clusters (some clusters remote: villages without any probe within 3 km),
probes at villages (a few villages with three). 30 days of readings are loaded into the
real schema (``collector.schema.upgrade``) of a throwaway database ``bench_geo_<random>``
created on each server and dropped at the end, also on failure or Ctrl-C:

- signal every 300 s (``report_interval_s`` 300): 2,000 x 8,640 ≈ 17 M rows; per probe
  a base signal with noise and a daily swing, on LTE, UMTS or GSM (each in its metric
  column); operators 45204 Viettel, 45202 VinaPhone, 45201 MobiFone (``probes.operator``
  the name); some probes also on a second network (roaming), some mostly unregistered
  (searching), some with power cuts (a gap, a reboot, a ``readings_outage`` row) or gone
  offline;
- latency every 900 s to one target: 2,000 x 2,880 ≈ 5.8 M rows.

They are loaded with ``INSERT … SELECT generate_series`` on parallel connections and
vacuumed (what autovacuum does after a bulk load; it is off on the test servers). Then —
as after any bulk load that bypassed the collector — ``coverage_invalidate(from, to)``
marks the (probe, hour) pairs and ``collector.rollups.refresh_all`` materializes them: the
**rollup build**, timed, with ``--refreshers`` connections at once sharing the marks as
several collectors would, and a VACUUM (ANALYZE) of ``rollup_dirty`` and the rollups after
each slice (again autovacuum's work; without it the dead marks slow every later call). It
goes a day of readings at a time (``--rollup-slice-hours 24``), as the collector's
refresher would have kept up while the month arrived: ``coverage_refresh`` reads every
outstanding mark on each call, so with the whole month marked at once
(``--rollup-slice-hours 0``) each call of 2,000 hours takes seconds and the build takes
hours (docs/benchmarks.md). The hourly rollups hold one row per probe and hour (and
operator and technology, or latency target), so they are the same size at the agent's
60 s default.

**Measured** through the real code, from the rollups, median of ``--repeat`` runs:
``classify_s`` — ``geo.analysis.analyse`` over the last 30 days (every probe's class and
every village's status); ``deadzones_s`` — the boundaries, ``geo.maps.zone_area`` and
``geo.deadzones.probe_dead_zones``, as ``geo.maps.collect`` does them; ``report_s`` —
``geo.report.rank_uncovered``; ``collect_s`` — ``geo.maps.collect`` whole; ``map_s`` —
``geo.maps.render`` (assets inlined, the page ``coverwatch map`` writes) and ``map_mb`` its
size (10⁶ bytes). ``classify_cold_s`` — one ``analyse`` right after the villages' nearby-probe
cache was invalidated (as any move, import or deletion of a village or probe does), so it
recomputes the pairs and rebuilds the cache; ``classify_s`` is the usual case, the cache valid.

**Baseline, same run**: the naive way — per village, the raw ``readings_signal`` rows of
the probes within 3 km over the 30 days, classified in Python
(``geo.thresholds.DEFAULT_THRESHOLDS``; per operator the lower median level), on a random
sample of ``--naive-sample`` villages, extrapolated to all of them;
``speedup_vs_naive`` = naive time for all villages / ``classify_s``.

**HTTP** under 20 concurrent clients: ``coverwatch serve`` as a separate process (the
honest figure: the server has its own interpreter) and the same app in a thread of this
process (``geo.web.serve_in_thread``), each endpoint on a fresh server: one request alone,
then ``wrk -t2 -c20 -d20s --latency`` on ``/api/villages`` and on ``/map``, asking for
gzip as browsers do (``--identity``: plain answers; the server compresses each answer once,
when it computes it); p50/p90/p99 and
requests/s from wrk's output, p95 and the count of answers per HTTP status from a Lua
script. wrk counts only the answers that arrive before it stops (the server's queries
still running then are terminated), and it times error answers too: when fewer requests
than clients got a 200 within the run, some of the first requests had none, and p95 is
given as a lower bound, the run's length (``>20000`` in the RESULT line).

``--keep`` keeps each loaded database and prints its URL; ``--loaded URL`` (once per
layout) measures such a database again instead of loading a new one, after applying any
newer migrations — for measuring a change of the analysis without the 15 to 25 minutes of
loading; its ``load_s`` and ``rollup_build_s`` are ``nan``.

``--profile`` adds, per layout, EXPLAIN (ANALYZE, BUFFERS) of ``coverage_by_probe``,
``coverage_by_village`` and ``coverage_probe_activity``, cProfile of ``maps.render`` and of
``analyse``, and ``analyse`` once with the session settings ``jit = off`` and
``work_mem = 256MB``.

**Targets** (issue #12): classify + deadzones + map ≤ 2 s; ``/api/villages`` p95 ≤ 150 ms
at 20 clients; map ≤ 3 MB.

**Requires** PostgreSQL servers whose role may create databases — by default plain
PostgreSQL on 5432 and TimescaleDB on 5433 (``pg_lsclusters``; TimescaleDB:
``bash ../shared/timescaledb/install.sh``) — and ``wrk`` (Debian package ``wrk``:
``apt-get install wrk``); the bench stops with a message when wrk is missing.

Run: ``make bench-geo`` (``python -m bench.geo``: both layouts on the default servers, one
after the other; ``BENCH_GEO_ARGS=--profile``), ``python -m bench.geo --layout plain``, or
``--database-url URL`` once per server (the layout is what the server provides). About
half an hour per layout on a 2-core machine: the load, the rollup build, the naive
baseline and the HTTP runs.

Last line: ``RESULT classify_s=… deadzones_s=… report_s=… map_s=… map_mb=… api_p95_ms=…
map_p95_ms=… speedup_vs_naive=… collect_s=… naive_s=… load_s=… rollup_build_s=…``; with
two layouts every key is suffixed ``_plain`` / ``_timescale``, still one line.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import logging
import math
import os
import pstats
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

import numpy as np
import psycopg
import shapely
from psycopg import sql
from psycopg.types.json import Jsonb

from collector import rollups, schema
from coverwatch.settings import DATABASE_URL_ENV, redact_url
from geo import maps, report, web
from geo.analysis import Analysis, analyse
from geo.coverage import TimeWindow
from geo.deadzones import probe_dead_zones
from geo.operators import CODE_OF_NAME, OPERATOR_NAMES
from geo.projection import haversine_m
from geo.status import DEFAULT_RADIUS_M
from geo.thresholds import DEFAULT_THRESHOLDS, LEVEL_OF, LEVELS, METRIC_OF

BIN: Final = Path(sys.executable).parent
THROWAWAY_PREFIX: Final = "bench_geo_"
DEFAULT_URLS: Final[dict[str, str]] = {
    "plain": "postgresql://postgres@127.0.0.1:5432/postgres",
    "timescale": "postgresql://postgres@127.0.0.1:5433/postgres",
}

BOX: Final = (105.3, 22.3, 106.9, 23.1)  # min lon, min lat, max lon, max lat: about Cao Bằng
PROVINCE: Final = "Cao Bằng"
SIGNAL_INTERVAL_S: Final = 300
LATENCY_INTERVAL_S: Final = 900
AGENT_DEFAULT_SIGNAL_S: Final = 60
# SIM operator of each probe: (code, share of probes).
OPERATORS: Final = (("45204", 0.55), ("45202", 0.25), ("45201", 0.20))
# Technology of each probe: (technology, share, mean and spread of its base signal, dBm).
TECHNOLOGIES: Final = (
    ("lte", 0.82, -101.0, 10.0),
    ("umts", 0.12, -99.0, 9.0),
    ("gsm", 0.06, -92.0, 8.0),
)
SIGNAL_RANGE_DBM: Final = {"lte": (-140, -44), "umts": (-120, -25), "gsm": (-113, -51)}
_SYLLABLE_TEXT = "Nà Pác Lũng Bản Khuổi Phja Cốc Slam Thôm Nặm Pò Sộc Kéo Tà Lạng"
SYLLABLES: Final = tuple(_SYLLABLE_TEXT.split())

TARGET_PIPELINE_S: Final = 2.0  # classify + deadzones + map
TARGET_API_P95_MS: Final = 150.0
TARGET_MAP_MB: Final = 3.0

WRK_SCRIPT: Final = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do counts[status] = (counts[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format("%d=%d", status, n)) end
  io.write("STATUS " .. table.concat(parts, " ") .. "\\n")
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p95_us=%d p99_us=%d max_us=%d " ..
    "status_errors=%d timeouts=%d connect_errors=%d read_errors=%d write_errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, summary.errors.status, summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write))
end
"""

T = TypeVar("T")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f}"


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Server:
    url: str  # an admin URL: the bench creates its database there
    layout: schema.Storage
    version: str
    settings: str  # the settings that matter here, as the server reports them

    @property
    def where(self) -> str:
        return redact_url(self.url)


def check_server(url: str, *, quiet: bool = False) -> Server | None:
    """Connect, check CREATEDB, and see which layout the server provides (None: unreachable)."""
    where = redact_url(url)
    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.ProgrammingError as error:
        raise SystemExit(
            f"--database-url {where}: not a PostgreSQL URL ({_first_line(error)})\n"
            "Hint: postgresql://user@host:port/database"
        ) from None
    except psycopg.OperationalError as error:
        if quiet:
            print(f"skipped {where}: cannot connect: {_first_line(error)}")
            return None
        raise SystemExit(
            f"{where}: cannot connect: {_first_line(error)}\nHint: check that the server "
            "is running (pg_lsclusters); TimescaleDB on port 5433: "
            "bash ../shared/timescaledb/install.sh"
        ) from None
    with connection:
        row = connection.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not row or not row[0]:
            raise SystemExit(
                f"{where}: role {connection.info.user!r} may not create databases, and the "
                f"bench creates a throwaway one\nHint: ALTER ROLE {connection.info.user} CREATEDB"
            )
        settings: dict[str, str] = dict(
            connection.execute(
                """SELECT name, current_setting(name) FROM pg_settings WHERE name IN
                   ('server_version', 'autovacuum', 'jit', 'shared_buffers', 'work_mem')"""
            ).fetchall()
        )
        layout = schema.available_storage(connection)
    version = str(settings.get("server_version", "?")).split()[0]
    shown = ", ".join(f"{k} {v}" for k, v in sorted(settings.items()) if k != "server_version")
    return Server(url, layout, version, shown)


def choose_servers(args: argparse.Namespace) -> list[Server]:
    if args.database_url:
        found = [check_server(url) for url in args.database_url]
        servers = [s for s in found if s is not None]
    else:
        wanted = ("plain", "timescale") if args.layout == "both" else (args.layout,)
        urls = {"plain": args.plain_url, "timescale": args.timescale_url}
        servers = []
        for layout in wanted:
            server = check_server(urls[layout], quiet=args.layout == "both")
            if server is None:
                continue
            if server.layout != layout:
                message = f"{server.where} provides the {server.layout} layout, not {layout}" + (
                    "\nHint: TimescaleDB needs timescaledb in shared_preload_libraries "
                    "(bash ../shared/timescaledb/install.sh: cluster 15/ts on port 5433)"
                    if layout == "timescale"
                    else ""
                )
                if args.layout == "both":
                    print(f"skipped: {message}")
                    continue
                raise SystemExit(message)
            servers.append(server)
    layouts = [s.layout for s in servers]
    if len(set(layouts)) != len(layouts):
        raise SystemExit("--database-url: give one server per layout")
    if not servers:
        raise SystemExit("no server to run on (see above)")
    return servers


@contextmanager
def throwaway_database(server: Server, *, keep: bool = False) -> Iterator[str]:
    """A new, empty database on the server (from template0), dropped at the end unless
    ``keep`` (then its URL is printed, for ``--loaded``)."""
    name = f"{THROWAWAY_PREFIX}{secrets.token_hex(4)}"
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server.url, dbname=name)
    if keep:
        yield url
        print(f"kept database {name}: measure it again with --loaded {url} (drop it when done)")
        return
    try:
        yield url
    finally:
        # FORCE also ends the HTTP server's connections and TimescaleDB's workers.
        with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        print(f"dropped database {name}")


# --------------------------------------------------------------------------- the province


@dataclass(frozen=True)
class ProbeSpec:
    probe_id: str
    village: str
    village_index: int
    lon: float
    lat: float
    operator: str  # SIM operator code
    technology: str
    base_dbm: float
    noise_db: float
    swing_db: float
    unregistered_p: float
    roam_code: str | None
    roam_p: float
    gap_from: int  # signal slots [gap_from, gap_to) without readings
    gap_to: int
    offline: bool  # the gap runs to the end: the probe is gone
    rtt_ms: float
    phase_s: int


@dataclass(frozen=True)
class Province:
    outline: Any  # shapely polygon, lon/lat
    communes: list[tuple[str, str, Any]]  # name, district, polygon
    villages: list[tuple[str, str, str, float, float, int, str, bool]]
    # name, commune, district, lon, lat, population, grid_power, remote
    probes: list[ProbeSpec]


def _outline(rng: np.random.Generator, vertices: int = 2000) -> Any:
    min_lon, min_lat, max_lon, max_lat = BOX
    cx, cy = (min_lon + max_lon) / 2, (min_lat + max_lat) / 2
    ax, ay = (max_lon - min_lon) / 2, (max_lat - min_lat) / 2
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = 0.9 * np.ones(vertices)
    for harmonic, amplitude in ((3, 0.05), (7, 0.035), (17, 0.015), (41, 0.006)):
        r += amplitude * np.sin(harmonic * theta + rng.uniform(0, 2 * np.pi))
    r += rng.normal(0, 0.002, vertices)
    r = np.minimum(r, 0.999)
    ring = np.column_stack([cx + ax * r * np.cos(theta), cy + ay * r * np.sin(theta)])
    return shapely.Polygon(ring)


def _inside(outline: Any, rng: np.random.Generator, count: int) -> np.ndarray[Any, Any]:
    min_lon, min_lat, max_lon, max_lat = BOX
    found: list[np.ndarray[Any, Any]] = []
    total = 0
    while total < count:
        xy = np.column_stack(
            [rng.uniform(min_lon, max_lon, count), rng.uniform(min_lat, max_lat, count)]
        )
        keep = xy[shapely.contains_xy(outline, xy[:, 0], xy[:, 1])]
        found.append(keep)
        total += len(keep)
    return np.concatenate(found)[:count]


def make_province(villages: int, probes: int, slots: int, seed: int) -> Province:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    outline = _outline(rng)
    min_lon, min_lat, max_lon, max_lat = BOX
    cols, rows = 12, 6
    cell_w, cell_h = (max_lon - min_lon) / cols, (max_lat - min_lat) / rows
    communes: dict[tuple[int, int], tuple[str, str, Any]] = {}
    used_names: set[str] = set()
    for row in range(rows):
        for col in range(cols):
            x0, y0 = min_lon + col * cell_w, min_lat + row * cell_h
            cell = shapely.intersection(outline, shapely.box(x0, y0, x0 + cell_w, y0 + cell_h))
            if shapely.is_empty(cell) or shapely.area(cell) < 1e-6:
                continue
            name = f"Xã {pick.choice(SYLLABLES)} {pick.choice(SYLLABLES)}"
            while name in used_names:
                name += f" {row * cols + col}"
            used_names.add(name)
            district = f"Huyện {SYLLABLES[(row // 3) * (cols // 2) + col // 2]}"
            communes[(col, row)] = (name, district, cell)

    # Villages in clusters along valleys; a share of the clusters is remote (no probe).
    centres = _inside(outline, rng, 500)
    # Remote: two upland areas (discs of 14 km) and a few scattered clusters.
    remote_cluster = rng.random(len(centres)) < 0.04
    for lon, lat in _inside(outline.buffer(-0.15), rng, 2):
        d = haversine_m(centres[:, 0], centres[:, 1], lon, lat)
        remote_cluster |= d < 14_000
    weights = rng.pareto(1.5, len(centres)) + 1
    weights /= weights.sum()
    km_lat = 1 / 111.32
    km_lon = 1 / (111.32 * math.cos(math.radians((min_lat + max_lat) / 2)))
    xy = np.empty((0, 2))
    cluster = np.empty(0, dtype=np.int64)
    while len(xy) < villages:
        n = villages - len(xy)
        which = rng.choice(len(centres), n, p=weights)
        spread = rng.normal(0, 1.6, (n, 2)) * np.array([km_lon, km_lat])
        candidate = centres[which] + spread
        keep = shapely.contains_xy(outline, candidate[:, 0], candidate[:, 1])
        xy = np.concatenate([xy, candidate[keep]])
        cluster = np.concatenate([cluster, which[keep]])
    population = np.clip(rng.lognormal(math.log(260), 0.75, villages), 20, 4000).astype(int)
    village_rows: list[tuple[str, str, str, float, float, int, str, bool]] = []
    names_in: dict[str, set[str]] = defaultdict(set)
    for i in range(villages):
        lon, lat = float(xy[i, 0]), float(xy[i, 1])
        col = min(int((lon - min_lon) / cell_w), cols - 1)
        row = min(int((lat - min_lat) / cell_h), rows - 1)
        commune, district, _ = communes[(col, row)]
        name = " ".join(pick.choice(SYLLABLES) for _ in range(pick.choice((2, 3))))
        if name in names_in[commune]:
            name = f"{name} {i}"
        names_in[commune].add(name)
        grid = pick.choices(("yes", "no", "unknown"), (0.8, 0.12, 0.08))[0]
        village_rows.append(
            (
                name,
                commune,
                district,
                lon,
                lat,
                int(population[i]),
                grid,
                bool(remote_cluster[cluster[i]]),
            )
        )

    # Probes at villages outside remote clusters; a few villages have three.
    hosts = [i for i, v in enumerate(village_rows) if not v[7]]
    pick.shuffle(hosts)
    triples = max(1, probes // 130)
    placed = hosts[: probes - 2 * triples]
    placed += [v for v in placed[:triples] for _ in range(2)]
    specs: list[ProbeSpec] = []
    codes = [code for code, _ in OPERATORS]
    for n, index in enumerate(placed):
        name, _, _, lon, lat, _, _, _ = village_rows[index]
        operator = pick.choices(codes, [share for _, share in OPERATORS])[0]
        technology, _, mean, spread = pick.choices(TECHNOLOGIES, [t[1] for t in TECHNOLOGIES])[0]
        mostly_searching = pick.random() < 0.07
        roaming = pick.random() < 0.05
        gap_from, gap_to, offline = slots, slots, False
        if pick.random() < 0.06:  # a power cut of 3 hours to 3 days, then a reboot
            length = pick.randint(min(36, slots // 4), min(864, slots // 2))
            gap_from = pick.randint(0, slots - length - 1)
            gap_to = gap_from + length
        elif pick.random() < 0.02:  # gone offline in the last week
            gap_from = pick.randint(max(0, slots - 2016), max(0, slots - 12))
            offline = True
        specs.append(
            ProbeSpec(
                probe_id=f"cb-{n:04d}",
                village=name,
                village_index=index,
                lon=lon + pick.gauss(0, 0.0015),
                lat=lat + pick.gauss(0, 0.0013),
                operator=operator,
                technology=technology,
                base_dbm=pick.gauss(mean, spread),
                noise_db=pick.uniform(2.5, 7.0),
                swing_db=pick.uniform(0.0, 4.0),
                unregistered_p=pick.uniform(0.55, 0.95)
                if mostly_searching
                else pick.uniform(0, 0.06),
                roam_code=pick.choice([c for c in codes if c != operator]) if roaming else None,
                roam_p=pick.uniform(0.2, 0.5) if roaming else 0.0,
                gap_from=gap_from,
                gap_to=gap_to,
                offline=offline,
                rtt_ms=pick.uniform(35, 220),
                phase_s=pick.randrange(SIGNAL_INTERVAL_S),
            )
        )
    return Province(outline, list(communes.values()), village_rows, specs)


def villages_without_probe(province: Province, radius_m: float) -> int:
    v = np.array([(row[3], row[4]) for row in province.villages])
    p = np.array([(s.lon, s.lat) for s in province.probes])
    tree = shapely.STRtree(np.asarray(shapely.points(p), dtype=object))
    # A box of the radius in degrees picks candidates; haversine decides.
    dlat = radius_m / 111_320 * 1.01
    dlon = dlat / math.cos(math.radians(BOX[3]))
    boxes = shapely.box(v[:, 0] - dlon, v[:, 1] - dlat, v[:, 0] + dlon, v[:, 1] + dlat)
    near = np.zeros(len(v), dtype=bool)
    pairs = tree.query(boxes)
    if pairs.size:
        d = haversine_m(v[pairs[0], 0], v[pairs[0], 1], p[pairs[1], 0], p[pairs[1], 1])
        near[pairs[0][d <= radius_m]] = True
    return int((~near).sum())


# --------------------------------------------------------------------------- loading

PARAMS_TABLE = """
CREATE TABLE bench_probe_params (
    n integer PRIMARY KEY, probe_id text NOT NULL, boot_id uuid NOT NULL,
    boot_id_after uuid NOT NULL, operator_code text NOT NULL, technology text NOT NULL,
    base_dbm float8 NOT NULL, noise_db float8 NOT NULL, swing_db float8 NOT NULL,
    unregistered_p float8 NOT NULL, roam_code text, roam_p float8 NOT NULL,
    gap_from integer NOT NULL, gap_to integer NOT NULL, rtt_ms float8 NOT NULL,
    phase_s integer NOT NULL, day_phase float8 NOT NULL, cell_id bigint NOT NULL,
    tac integer NOT NULL, low_dbm float8 NOT NULL, high_dbm float8 NOT NULL)
"""

# One row per probe and signal slot, outside the probe's gap. Random draws are made in
# the innermost query (volatile: evaluated per row), derived values one level up.
SIGNAL_INSERT = """
INSERT INTO readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms, ntp_synced,
    received_at, registration, technology, operator_code, cell_id, tac, rsrp_dbm, rsrq_db,
    sinr_db, rssi_dbm, rscp_dbm)
SELECT probe_id, k,
       CASE WHEN k >= gap_to THEN boot_id_after ELSE boot_id END,
       taken_at,
       (CASE WHEN k >= gap_to THEN k - gap_to ELSE k END)::bigint * %(interval_s)s * 1000 + 45000,
       true,
       taken_at + make_interval(secs => 0.5 + 20 * r_delay),
       CASE WHEN NOT registered THEN 'searching' WHEN roaming THEN 'roaming' ELSE 'home' END,
       CASE WHEN registered THEN technology END,
       CASE WHEN NOT registered THEN NULL WHEN roaming THEN roam_code ELSE operator_code END,
       CASE WHEN registered THEN cell_id + (CASE WHEN roaming THEN 7 ELSE 0 END) END,
       CASE WHEN registered THEN tac END,
       CASE WHEN registered AND technology = 'lte' THEN dbm END,
       CASE WHEN registered AND technology = 'lte' THEN greatest(-19.5, least(-3, -9 + 2 * z)) END,
       CASE WHEN registered AND technology = 'lte' THEN (dbm + 112) / 2.5 + 2 * z END,
       CASE WHEN registered AND technology = 'gsm' THEN dbm END,
       CASE WHEN registered AND technology = 'umts' THEN dbm END
FROM (
    SELECT d.*,
           greatest(low_dbm, least(high_dbm,
               base_dbm - CASE WHEN roaming THEN 6 ELSE 0 END + noise_db * z
               + swing_db * sin(2 * pi() * (k * %(interval_s)s + phase_s) / 86400 + day_phase)
           )) AS dbm
    FROM (
        SELECT p.*, k,
               %(start)s::timestamptz + make_interval(secs => p.phase_s + k * %(interval_s)s)
                   AS taken_at,
               random() >= p.unregistered_p AS registered,
               random() < p.roam_p AS roaming,
               (random() + random() + random() + random() - 2) * 1.7320508 AS z,
               random() AS r_delay
        FROM bench_probe_params p
        CROSS JOIN generate_series(0, %(slots)s - 1) AS k
        WHERE p.n >= %(lo)s AND p.n < %(hi)s AND NOT (k >= p.gap_from AND k < p.gap_to)
    ) d
) s
"""

# One ICMP round of 10 packets to one target per probe and latency slot; none get through
# while the modem is not registered.
LATENCY_INSERT = """
INSERT INTO readings_latency (probe_id, seq, boot_id, taken_at, monotonic_ms, ntp_synced,
    received_at, target, method, packets_sent, packets_received, loss_pct, rtt_min_ms,
    rtt_avg_ms, rtt_median_ms, rtt_max_ms, jitter_ms, dns_ms)
SELECT probe_id, 50000000 + k,
       CASE WHEN k * %(ratio)s >= gap_to THEN boot_id_after ELSE boot_id END,
       taken_at, k::bigint * %(interval_s)s * 1000 + 52000, true,
       taken_at + make_interval(secs => 0.5 + 20 * r_delay),
       '1.1.1.1', 'icmp', 10, received, 10.0 * (10 - received),
       CASE WHEN received > 0 THEN rtt * 0.8 END,
       CASE WHEN received > 0 THEN rtt * 1.05 END,
       CASE WHEN received > 0 THEN rtt END,
       CASE WHEN received > 0 THEN rtt * (1.3 + r_delay) END,
       CASE WHEN received > 0 THEN rtt * 0.1 END,
       CASE WHEN received > 0 THEN 15 + rtt * 0.3 END
FROM (
    SELECT p.probe_id, p.boot_id, p.boot_id_after, p.gap_to, k,
           %(start)s::timestamptz
               + make_interval(secs => p.phase_s + 20 + k * %(interval_s)s) AS taken_at,
           CASE WHEN random() < p.unregistered_p THEN 0
                ELSE 10 - floor(power(random(), 4) * 5)::integer END AS received,
           p.rtt_ms * (0.75 + 0.5 * random() + 0.5 * power(random(), 6)) AS rtt,
           random() AS r_delay
    FROM bench_probe_params p
    CROSS JOIN generate_series(0, %(slots)s - 1) AS k
    WHERE p.n >= %(lo)s AND p.n < %(hi)s
      AND NOT (k * %(ratio)s >= p.gap_from AND k * %(ratio)s < p.gap_to)
) s
"""


@dataclass
class LoadFigures:
    registry_s: float = 0.0
    signal_s: float = 0.0
    signal_rows: int = 0
    latency_s: float = 0.0
    latency_rows: int = 0
    vacuum_s: float = 0.0
    invalidate_s: float = 0.0
    marked_hours: int = 0
    refresh_s: float = 0.0
    refreshed_hours: int = 0
    store_vacuum_s: float = 0.0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # rows, bytes

    @property
    def load_s(self) -> float:
        return self.registry_s + self.signal_s + self.latency_s + self.vacuum_s

    @property
    def rollup_build_s(self) -> float:
        return self.invalidate_s + self.refresh_s + self.store_vacuum_s


def load_registry(url: str, province: Province, start: datetime, end: datetime, seed: int) -> None:
    """Boundaries, villages, probes and their status, outages, and the generator's table."""
    rng = random.Random(seed + 1)
    with psycopg.connect(url) as c:
        outline = json.loads(shapely.to_geojson(province.outline))
        min_lon, min_lat, max_lon, max_lat = shapely.bounds(province.outline).tolist()
        c.execute(
            """INSERT INTO boundaries (level, name, parent, geometry, min_lon, min_lat,
                                       max_lon, max_lat, source)
               VALUES ('province', %s, '', %s, %s, %s, %s, %s, 'bench')""",
            (PROVINCE, Jsonb(outline), min_lon, min_lat, max_lon, max_lat),
        )
        with c.cursor().copy(
            "COPY boundaries (level, name, parent, geometry, min_lon, min_lat, max_lon, "
            "max_lat, source) FROM STDIN"
        ) as copy:
            for name, district, polygon in province.communes:
                b = shapely.bounds(polygon).tolist()
                geometry = shapely.to_geojson(polygon)
                copy.write_row(("commune", name, district, geometry, *b, "bench"))
        with c.cursor().copy(
            "COPY villages (name, commune, district, province, lon, lat, population, "
            "households, grid_power, source) FROM STDIN"
        ) as copy:
            for name, commune, district, lon, lat, population, grid, _ in province.villages:
                copy.write_row(
                    (
                        name,
                        commune,
                        district,
                        PROVINCE,
                        lon,
                        lat,
                        population,
                        population // 5,
                        grid,
                        "bench",
                    )
                )
        with c.cursor().copy(
            "COPY probes (probe_id, name, village, lon, lat, operator, hardware, installed_at, "
            "report_interval_s) FROM STDIN"
        ) as copy:
            for p in province.probes:
                copy.write_row(
                    (
                        p.probe_id,
                        f"{p.village} ({p.probe_id})",
                        p.village,
                        p.lon,
                        p.lat,
                        OPERATOR_NAMES[p.operator],
                        "Raspberry Pi 4 + Quectel EC25",
                        start - timedelta(days=rng.randint(1, 200)),
                        SIGNAL_INTERVAL_S,
                    )
                )
        c.execute(PARAMS_TABLE)
        params: list[tuple[Any, ...]] = []
        status: list[tuple[Any, ...]] = []
        outages: list[tuple[Any, ...]] = []
        for n, p in enumerate(province.probes):
            boot, after = uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128))
            low, high = SIGNAL_RANGE_DBM[p.technology]
            params.append(
                (
                    n,
                    p.probe_id,
                    boot,
                    after,
                    p.operator,
                    p.technology,
                    p.base_dbm,
                    p.noise_db,
                    p.swing_db,
                    p.unregistered_p,
                    p.roam_code,
                    p.roam_p,
                    p.gap_from,
                    p.gap_to,
                    p.rtt_ms,
                    p.phase_s,
                    rng.uniform(0, 2 * math.pi),
                    rng.randint(10_000, 268_000_000),
                    rng.randint(1, 65_000),
                    low,
                    high,
                )
            )
            gap_start = start + timedelta(seconds=p.phase_s + p.gap_from * SIGNAL_INTERVAL_S)
            gap_end = start + timedelta(seconds=p.phase_s + p.gap_to * SIGNAL_INTERVAL_S)
            if p.offline:
                status.append((p.probe_id, "offline", gap_start, gap_start, gap_start, boot))
                continue
            seen = end - timedelta(seconds=rng.uniform(1, 200))
            if p.gap_from < p.gap_to:  # a power cut, then a reboot with a new boot id
                status.append((p.probe_id, "online", gap_end, seen, seen, after))
                outages.append(
                    (
                        p.probe_id,
                        90_000_000,
                        after,
                        gap_end,
                        1000,
                        True,
                        boot,
                        gap_start,
                        gap_end,
                        (gap_end - gap_start).total_seconds(),
                    )
                )
            else:
                status.append((p.probe_id, "online", start, seen, seen, boot))
        with c.cursor().copy(
            "COPY bench_probe_params (n, probe_id, boot_id, boot_id_after, operator_code, "
            "technology, base_dbm, noise_db, swing_db, unregistered_p, roam_code, roam_p, "
            "gap_from, gap_to, rtt_ms, phase_s, day_phase, cell_id, tac, low_dbm, high_dbm) "
            "FROM STDIN"
        ) as copy:
            for row in params:
                copy.write_row(row)
        with c.cursor().copy(
            "COPY probe_status (probe_id, state, state_changed_at, last_seen, last_taken_at, "
            "boot_id) FROM STDIN"
        ) as copy:
            for row in status:
                copy.write_row(row)
        with c.cursor().copy(
            "COPY readings_outage (probe_id, seq, boot_id, taken_at, monotonic_ms, ntp_synced, "
            "previous_boot_id, outage_started_at, outage_ended_at, outage_duration_s) FROM STDIN"
        ) as copy:
            for row in outages:
                copy.write_row(row)


def _parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run the jobs in threads (each on its own connection); re-raise the first failure."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,), name=f"bench-{i}") for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _insert_readings(
    url: str, statement: str, probes: int, workers: int, params: dict[str, Any], seed: int
) -> int:
    """The statement over all probes, split in probe ranges over ``workers`` connections."""
    step = 100  # probes per statement: a transaction of ~0.9 M signal rows

    def worker(w: int) -> int:
        rows = 0
        with psycopg.connect(url) as c:
            c.execute("SET synchronous_commit = off")
            c.execute("SELECT setseed(%s)", (((seed * 7919 + w) % 1000) / 1000,))
            for lo in range(w * step, probes, workers * step):
                cursor = c.execute(statement, {**params, "lo": lo, "hi": min(lo + step, probes)})
                rows += cursor.rowcount
                c.commit()
        return rows

    return sum(_parallel([functools.partial(worker, w) for w in range(workers)]))


def load_readings(
    url: str, province: Province, start: datetime, slots: int, workers: int, seed: int
) -> LoadFigures:
    figures = LoadFigures()
    probes = len(province.probes)
    began = time.perf_counter()
    figures.signal_rows = _insert_readings(
        url,
        SIGNAL_INSERT,
        probes,
        workers,
        {"start": start, "interval_s": SIGNAL_INTERVAL_S, "slots": slots},
        seed,
    )
    figures.signal_s = time.perf_counter() - began
    print(
        f"  signal:  {figures.signal_rows:>12,} rows in {figures.signal_s:6.1f} s "
        f"({figures.signal_rows / figures.signal_s:,.0f} rows/s, {workers} connections; {_load()})",
        flush=True,
    )
    ratio = LATENCY_INTERVAL_S // SIGNAL_INTERVAL_S
    began = time.perf_counter()
    figures.latency_rows = _insert_readings(
        url,
        LATENCY_INSERT,
        probes,
        workers,
        {"start": start, "interval_s": LATENCY_INTERVAL_S, "slots": slots // ratio, "ratio": ratio},
        seed + 1,
    )
    figures.latency_s = time.perf_counter() - began
    print(
        f"  latency: {figures.latency_rows:>12,} rows in {figures.latency_s:6.1f} s "
        f"({figures.latency_rows / figures.latency_s:,.0f} rows/s)",
        flush=True,
    )
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE bench_probe_params")
        # What autovacuum does after a bulk load (visibility map, statistics), done now so
        # that it neither runs during the measurements nor is missing from them.
        c.execute("VACUUM (ANALYZE)")
    figures.vacuum_s = time.perf_counter() - began
    print(f"  vacuum + analyze: {figures.vacuum_s:.1f} s", flush=True)
    return figures


def build_rollups(
    url: str,
    figures: LoadFigures,
    start: datetime,
    end: datetime,
    args: argparse.Namespace,
) -> None:
    """coverage_invalidate() and refresh_all, over the whole load or in slices of hours."""
    step = timedelta(hours=args.rollup_slice_hours)
    slices: list[tuple[datetime | None, datetime | None]] = [(None, None)]
    if args.rollup_slice_hours:
        first = start.replace(minute=0, second=0, microsecond=0)
        slices = [
            (first + i * step, first + (i + 1) * step) for i in range((end - first) // step + 1)
        ]

    def refresher() -> int:
        with psycopg.connect(url, autocommit=True, application_name="bench-geo-refresh") as c:
            return rollups.refresh_all(c, batch_hours=args.refresh_batch_hours)

    for n, (a, b) in enumerate(slices, start=1):
        began = time.perf_counter()
        with psycopg.connect(url) as c:
            figures.marked_hours += rollups.invalidate(c, a, b)
        figures.invalidate_s += time.perf_counter() - began
        began = time.perf_counter()
        figures.refreshed_hours += sum(_parallel([refresher] * args.refreshers))
        figures.refresh_s += time.perf_counter() - began
        began = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as c:
            # What autovacuum does meanwhile (off on some servers, e.g. for tests): the
            # marks refresh_all deleted are dead rows every later call would walk over.
            c.execute(
                "VACUUM (ANALYZE) rollup_dirty, rollup_dirty_day, signal_hourly_store, "
                "latency_hourly_store, probe_hourly_store, signal_daily_store, probe_daily_store"
            )
        figures.store_vacuum_s += time.perf_counter() - began
        if n % 10 == 0 and n < len(slices):
            print(f"    {n} of {len(slices)} slices: {_load()}", flush=True)
    what = (
        "all readings at once"
        if len(slices) == 1
        else f"{len(slices)} slices of {args.rollup_slice_hours} h of readings"
    )
    print(
        f"  {what}: coverage_invalidate() marked {figures.marked_hours:,} probe-hours in "
        f"{figures.invalidate_s:.1f} s; refresh_all materialized {figures.refreshed_hours:,} in "
        f"{figures.refresh_s:.1f} s ({figures.refreshed_hours / figures.refresh_s:,.0f}/s; "
        f"{args.refreshers} refreshers at once, batches of {args.refresh_batch_hours:,}; "
        f"{_load()}); vacuum + analyze of rollup_dirty and the rollups after each: "
        f"{figures.store_vacuum_s:.1f} s",
        flush=True,
    )
    with psycopg.connect(url) as c:
        left = rollups.pending_hours(c)
        days = c.execute("SELECT count(*) FROM rollup_dirty_day").fetchone()
    if left or (days and days[0]):
        raise SystemExit(
            f"{left} probe-hours and {days[0] if days else 0} probe-days still marked "
            "after refresh_all"
        )


def table_sizes(url: str, layout: str) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    with psycopg.connect(url) as c:
        for table in (
            "readings_signal",
            "readings_latency",
            "signal_hourly_store",
            "latency_hourly_store",
            "probe_hourly_store",
            "signal_daily_store",
            "probe_daily_store",
        ):
            rows = c.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            hyper = layout == "timescale" and table.startswith("readings_")
            size = c.execute(
                "SELECT hypertable_size(%s::regclass)"
                if hyper
                else "SELECT pg_total_relation_size(%s::regclass)",
                (table,),
            ).fetchone()
            sizes[table] = (int(rows[0]) if rows else 0, int(size[0]) if size and size[0] else 0)
    return sizes


# --------------------------------------------------------------------------- measuring


def _median_of(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    seconds: list[float] = []
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), result


@dataclass
class GeoFigures:
    classify_s: float
    cold_classify_s: float
    deadzones_s: float
    report_s: float
    collect_s: float
    map_s: float
    map_bytes: int
    linked_map_bytes: int
    parts: dict[str, float]
    analysis: Analysis
    summary: list[str]


def measure_geo(url: str, repeat: int) -> GeoFigures:
    def window() -> TimeWindow:
        return TimeWindow.last(timedelta(days=30))

    with psycopg.connect(url) as c:

        def classify() -> Analysis:
            try:
                return analyse(c, window())
            finally:
                c.rollback()

        # Once as after a village or probe moved: the nearby-probe cache (migration 014)
        # is rebuilt within this analysis; the median below reads it, as every analysis
        # does until a position changes again.
        c.execute("DELETE FROM coverage_nearby_built")
        c.commit()
        cold_classify_s, _ = _median_of(1, classify)
        classify_s, analysis = _median_of(repeat, classify)

        def deadzones() -> Any:
            try:
                boundaries = maps.load_boundaries(c)
            finally:
                c.rollback()
            shape, _ = maps.zone_area(
                boundaries, analysis.statuses, analysis.probes, analysis.radius_m
            )
            return probe_dead_zones(analysis.probes, shape, radius_m=analysis.radius_m)

        deadzones_s, zones = _median_of(repeat, deadzones)
        report_s, ranked = _median_of(
            repeat, lambda: report.rank_uncovered(analysis.statuses, analysis.probe_by_id)
        )

        def collect() -> maps.MapData:
            try:
                return maps.collect(c, window())
            finally:
                c.rollback()

        collect_s, data = _median_of(repeat, collect)
        # Where the classification's time goes, once: the parts analyse() calls.
        from geo.coverage import probe_coverage
        from geo.registry import load_villages
        from geo.status import village_status

        parts: dict[str, float] = {}
        span = window()
        began = time.perf_counter()
        probes = probe_coverage(c, span)
        parts["probe_coverage"] = time.perf_counter() - began
        began = time.perf_counter()
        villages = load_villages(c)
        parts["load_villages"] = time.perf_counter() - began
        began = time.perf_counter()
        village_status(c, villages, probes, span)
        parts["village_status"] = time.perf_counter() - began
        c.rollback()
    map_s, page = _median_of(repeat, lambda: maps.render(data))
    linked = maps.render(data, static_url=web.STATIC_URL)
    statuses: Counter[str] = Counter(s.status for s in analysis.statuses)
    classes: Counter[str] = Counter(p.coverage_class() for p in analysis.probes)
    summary = [
        "villages: "
        + ", ".join(f"{k} {statuses.get(k, 0):,}" for k in (*reversed(LEVELS), "unmeasured")),
        "probes:   "
        + ", ".join(f"{k} {classes.get(k, 0):,}" for k in (*reversed(LEVELS), "unmeasured")),
        f"dead zones: covered {zones.covered_km2:,.0f} km², dead {zones.dead_km2:,.0f} km², "
        f"unmeasured {zones.unmeasured_km2:,.0f} km² of {zones.area_km2:,.0f} km²; "
        f"ranked report: {len(ranked):,} villages below 100 %",
    ]
    return GeoFigures(
        classify_s,
        cold_classify_s,
        deadzones_s,
        report_s,
        collect_s,
        map_s,
        len(page.encode()),
        len(linked.encode()),
        parts,
        analysis,
        summary,
    )


@dataclass
class NaiveFigures:
    sample: int
    seconds: float  # for the sample
    villages: int
    rows_read: int
    agree: int
    measured: int

    @property
    def all_villages_s(self) -> float:
        return self.seconds / self.sample * self.villages


def _lower_median(levels: list[int]) -> int:
    levels.sort()
    return levels[(len(levels) - 1) // 2]


def measure_naive(url: str, analysis: Analysis, sample: int, seed: int) -> NaiveFigures:
    """Per village: raw readings of the probes within the radius, classified in Python."""
    rng = random.Random(seed + 2)
    chosen = rng.sample(range(len(analysis.statuses)), min(sample, len(analysis.statuses)))
    window = TimeWindow.last(timedelta(days=30))
    rows_read = agree = measured = 0
    began = time.perf_counter()
    with psycopg.connect(url) as c:
        registry = c.execute(
            "SELECT probe_id, lon, lat, operator FROM probes WHERE lon IS NOT NULL"
        ).fetchall()
        ids = [row[0] for row in registry]
        p_lon = np.array([row[1] for row in registry])
        p_lat = np.array([row[2] for row in registry])
        sim = {
            row[0]: CODE_OF_NAME.get(str(row[3]).lower(), row[3] or "unknown") for row in registry
        }
        for index in chosen:
            status = analysis.statuses[index]
            v = status.village
            distance = haversine_m(v.lon, v.lat, p_lon, p_lat)
            near = [ids[i] for i in np.flatnonzero(distance <= DEFAULT_RADIUS_M).tolist()]
            levels: dict[str, list[int]] = defaultdict(list)
            if near:
                rows = c.execute(
                    """SELECT probe_id, registration, technology, operator_code, rsrp_dbm,
                              rscp_dbm, rssi_dbm
                       FROM readings_signal
                       WHERE probe_id = ANY(%s) AND taken_at >= %s AND taken_at < %s""",
                    (near, window.start, window.end),
                ).fetchall()
                rows_read += len(rows)
                for probe_id, registration, technology, code, rsrp, rscp, rssi in rows:
                    metric = METRIC_OF.get(technology or "")
                    value = {"rsrp_dbm": rsrp, "rscp_dbm": rscp, "rssi_dbm": rssi}.get(metric or "")
                    if metric is None:
                        value = rsrp if rsrp is not None else rscp if rscp is not None else rssi
                    level = DEFAULT_THRESHOLDS.classify(
                        technology, value, registered=registration in ("home", "roaming")
                    )
                    levels[code or sim.get(probe_id, "unknown")].append(LEVEL_OF[level])
            c.rollback()
            best = max(
                (
                    (_lower_median(values), sum(x > 0 for x in values) / len(values))
                    for values in levels.values()
                ),
                default=None,
            )
            naive_class = "unmeasured" if best is None else LEVELS[best[0]]
            measured += best is not None
            agree += naive_class == status.status
    seconds = time.perf_counter() - began
    return NaiveFigures(len(chosen), seconds, len(analysis.statuses), rows_read, agree, measured)


# --------------------------------------------------------------------------- HTTP


@dataclass
class LoadTest:
    path: str
    mode: str  # "process" or "thread"
    requests: int  # completed within the run
    duration_s: float
    requests_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    answered: str  # count per HTTP status
    errors: str
    single_ms: float  # one request alone, before the load
    body_bytes: int
    lower_bound: bool  # fewer successes than clients: p95 > the run's duration

    @property
    def p95_text(self) -> str:
        if self.p95_ms is None:
            return "n/a"
        return f"{'>' if self.lower_bound else ''}{self.p95_ms:,.0f}"


_UNIT_MS: Final = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(output: str) -> dict[str, float]:
    """p50/p90/p99 and requests/s from wrk's --latency output, the rest from the Lua hook."""
    figures: dict[str, float] = {}
    for percent, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE):
        figures[f"p{percent}_ms"] = _to_ms(value)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.MULTILINE)
    figures["requests_per_s"] = float(rate[1]) if rate else 0.0
    hook = re.search(r"^BENCH (.*)$", output, re.MULTILINE)
    if not hook:
        raise ValueError(f"wrk printed no summary line:\n{output}")
    figures.update({k: float(v) for k, v in (pair.split("=") for pair in hook[1].split())})
    statuses = re.search(r"^STATUS ?(.*)$", output, re.MULTILINE)
    for pair in statuses[1].split() if statuses else ():
        code, count = pair.split("=")
        figures[f"http_{code}"] = float(count)
    return figures


def _get(url: str, timeout_s: float = 900) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (ours)
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def end_queries(url: str) -> int:
    """Terminate the server's queries still running (wrk does not wait for its answers)."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND backend_type = 'client backend'"""
        ).fetchall()
    return len(rows)


def load_test(base: str, path: str, mode: str, args: argparse.Namespace, script: Path) -> LoadTest:
    """One request alone, then wrk with ``--clients`` connections for the duration."""
    began = time.perf_counter()
    status, body = _get(base + path)
    single_ms = (time.perf_counter() - began) * 1000
    if status != 200:
        raise SystemExit(f"GET {path}: HTTP {status}: {body[:300]!r}")
    duration = args.http_duration_s
    command = [
        args.wrk,
        "-t2",
        f"-c{args.clients}",
        f"-d{duration}s",
        "--latency",
        # What a browser (or QGIS, or curl --compressed) sends; --identity measures
        # clients that do not take gzip.
        "-H",
        f"Accept-Encoding: {'identity' if args.identity else 'gzip, deflate, br'}",
        "--timeout",
        f"{duration + 60}s",  # slow answers are latency, not errors
        "-s",
        str(script),
        base + path,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    wrk = parse_wrk(done.stdout)
    completed = int(wrk["requests"])
    statuses = {k.removeprefix("http_"): int(v) for k, v in wrk.items() if k.startswith("http_")}
    answered = ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))
    errors = ", ".join(
        f"{name} {int(wrk[key])}"
        for key, name in (
            ("timeouts", "timeouts"),
            ("connect_errors", "connect"),
            ("read_errors", "read"),
            ("write_errors", "write"),
        )
        if wrk.get(key)
    )
    successes = statuses.get("200", 0)
    # wrk only counts answers that arrive before it stops, and times errors too. With
    # fewer successful answers than clients, some of the first requests (all sent at the
    # start) had no answer, or only an error, within the run: their latency is beyond
    # the run's length, which is all that is known (a lower bound); the percentiles of
    # the answers that did come would flatter.
    lower_bound = successes < args.clients
    measured = successes > 0 and not lower_bound

    def ms(key: str) -> float | None:
        return wrk.get(key) if measured else None

    return LoadTest(
        path=path,
        mode=mode,
        requests=completed,
        duration_s=wrk["duration_us"] / 1e6,
        requests_per_s=wrk["requests_per_s"],
        p50_ms=ms("p50_ms"),
        p90_ms=ms("p90_ms"),
        p95_ms=duration * 1000.0 if lower_bound else wrk["p95_us"] / 1000,
        p99_ms=ms("p99_ms"),
        max_ms=wrk["max_us"] / 1000 if completed else None,
        answered=answered or "none",
        errors=errors or "none",
        single_ms=single_ms,
        body_bytes=len(body),
        lower_bound=lower_bound,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(url: str, workdir: Path) -> Iterator[str]:
    """``coverwatch serve`` in a process of its own; its base URL."""
    port = _free_port()
    log_path = workdir / "serve.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "coverwatch"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, DATABASE_URL_ENV: url},  # not in argv
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"coverwatch serve exited ({process.returncode}):\n{tail}")
            try:
                if _get(base + "/api/health", timeout_s=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"coverwatch serve did not answer in 60 s; see {log_path}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def server_thread(url: str) -> Iterator[str]:
    """The same app in a thread of this process (``geo.web.serve_in_thread``)."""
    handle = web.serve_in_thread(web.create_app(url), "127.0.0.1", 0)
    try:
        yield handle.url
    finally:
        # The handlers still computing wrk's last requests fail now: not news.
        uvicorn_errors = logging.getLogger("uvicorn.error")
        level = uvicorn_errors.level
        uvicorn_errors.setLevel(logging.CRITICAL)
        try:
            end_queries(url)
            handle.stop()
        finally:
            uvicorn_errors.setLevel(level)


def measure_http(url: str, args: argparse.Namespace, workdir: Path) -> list[LoadTest]:
    """Each endpoint on a fresh server: what wrk left running is ended, not waited for."""
    script = workdir / "p95.lua"
    script.write_text(WRK_SCRIPT)
    servers: list[tuple[str, Callable[[], Any]]] = [
        ("process", lambda: server_process(url, workdir))
    ]
    if args.in_thread:
        servers.append(("thread", lambda: server_thread(url)))
    tests: list[LoadTest] = []
    for mode, start in servers:
        for path in ("/api/villages", "/map"):
            with start() as base:
                tests.append(load_test(base, path, mode, args, script))
            end_queries(url)
            _print_load_test(tests[-1])
    return tests


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _print_load_test(t: LoadTest) -> None:
    line = (
        f"  {t.path:<14} {t.mode:<7} alone {t.single_ms:7,.0f} ms ({t.body_bytes / 1e6:.2f} MB); "
        f"under load {t.requests:>4} answers in {t.duration_s:4.1f} s = "
        f"{t.requests_per_s:6.2f}/s; "
    )
    if t.lower_bound:
        line += (
            f"p95 > {t.p95_ms or 0:,.0f} ms (fewer successful answers than clients: some of "
            "the first requests had none within the run)"
        )
    else:
        line += (
            f"p50 {_fmt_ms(t.p50_ms)} p90 {_fmt_ms(t.p90_ms)} p95 {_fmt_ms(t.p95_ms)} "
            f"p99 {_fmt_ms(t.p99_ms)} max {_fmt_ms(t.max_ms)} ms"
        )
    print(f"{line}; answers: {t.answered}; socket errors: {t.errors}", flush=True)


# --------------------------------------------------------------------------- profiling


def profile(url: str, workdir: Path) -> None:
    """EXPLAIN ANALYZE of the coverage functions, and cProfile of the map, printed."""
    window = TimeWindow.last(timedelta(days=30))
    with psycopg.connect(url) as c:
        for statement in (
            "SELECT * FROM coverage_by_probe(%(start)s, %(end)s)",
            "SELECT * FROM coverage_by_village(%(start)s, %(end)s, 3000, 100)",
            "SELECT * FROM coverage_probe_activity(%(start)s, %(end)s)",
        ):
            plan = c.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + statement,
                {"start": window.start, "end": window.end},
            ).fetchall()
            print(f"\n-- EXPLAIN ANALYZE {statement}")
            for (line,) in plan:
                print(line)
        c.rollback()
        data = maps.collect(c, window)
    profiler = cProfile.Profile()
    profiler.enable()
    maps.render(data)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print("\n-- cProfile of maps.render (cumulative)\n" + out.getvalue())
    profiler = cProfile.Profile()
    with psycopg.connect(url) as c:
        profiler.enable()
        analyse(c, window)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
    print("\n-- cProfile of analyse (cumulative)\n" + out.getvalue())
    # What two server settings would change, in this session only (the bench does not
    # change the server): JIT compiles every large plan anew, and the 4 MB default
    # work_mem sends the grouping of ~2 M rollup rows to disk.
    print("-- analyse() with session settings (once each)")
    for label, settings in (
        ("server defaults", {}),
        ("jit off", {"jit": "off"}),
        ("work_mem 256MB", {"work_mem": "256MB"}),
        ("jit off + work_mem 256MB", {"jit": "off", "work_mem": "256MB"}),
    ):
        with psycopg.connect(url) as c:
            for name, value in settings.items():
                c.execute("SELECT set_config(%s, %s, false)", (name, value))
            began = time.perf_counter()
            analyse(c, TimeWindow.last(timedelta(days=30)))
            print(f"  {label:<26} {time.perf_counter() - began:7.2f} s", flush=True)


# --------------------------------------------------------------------------- one layout


@dataclass
class LayoutResult:
    layout: str
    load: LoadFigures
    geo: GeoFigures
    naive: NaiveFigures
    http: list[LoadTest]

    def http_of(self, path: str, mode: str = "process") -> LoadTest | None:
        return next((t for t in self.http if t.path == path and t.mode == mode), None)

    @property
    def pipeline_s(self) -> float:
        return self.geo.classify_s + self.geo.deadzones_s + self.geo.map_s

    @property
    def speedup(self) -> float:
        return self.naive.all_villages_s / self.geo.classify_s

    def result(self) -> list[tuple[str, str]]:
        api, page = self.http_of("/api/villages"), self.http_of("/map")

        def p95(test: LoadTest | None) -> str:
            # ">20000": no measure, a lower bound (fewer answers than clients in the run)
            return "nan" if test is None else test.p95_text.replace(",", "")

        return [
            ("classify_s", f"{self.geo.classify_s:.3f}"),
            ("deadzones_s", f"{self.geo.deadzones_s:.3f}"),
            ("report_s", f"{self.geo.report_s:.3f}"),
            ("map_s", f"{self.geo.map_s:.3f}"),
            ("map_mb", f"{self.geo.map_bytes / 1e6:.2f}"),
            ("api_p95_ms", p95(api)),
            ("map_p95_ms", p95(page)),
            ("speedup_vs_naive", f"{self.speedup:.1f}"),
            ("collect_s", f"{self.geo.collect_s:.3f}"),
            ("classify_cold_s", f"{self.geo.cold_classify_s:.3f}"),
            ("naive_s", f"{self.naive.all_villages_s:.1f}"),
            # nan: measured on a database loaded by an earlier run (--loaded)
            ("load_s", f"{self.load.load_s:.0f}" if self.load.load_s else "nan"),
            ("rollup_build_s", f"{self.load.rollup_build_s:.0f}" if self.load.load_s else "nan"),
        ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _layout_of(url: str) -> str:
    with psycopg.connect(url, connect_timeout=10) as c:
        return schema.storage_in_use(c) or "plain"


def _load_database(
    url: str, server: Server, args: argparse.Namespace, province: Province
) -> LoadFigures:
    """The schema, the province and its month of readings, and the rollups built."""
    schema.upgrade(url)
    with psycopg.connect(url) as c:
        layout = schema.storage_in_use(c) or "plain"
    if layout != server.layout:
        raise SystemExit(f"schema.upgrade chose {layout}, the server check {server.layout}")
    end = datetime.now(UTC).replace(microsecond=0)
    slots = args.days * 86_400 // SIGNAL_INTERVAL_S
    start = end - timedelta(seconds=slots * SIGNAL_INTERVAL_S)
    print(f"load ({_load()}):", flush=True)
    began = time.perf_counter()
    load_registry(url, province, start, end, args.seed)
    registry_s = time.perf_counter() - began
    print(
        f"  registry: {len(province.villages):,} villages, "
        f"{len(province.probes):,} probes, {len(province.communes)} communes + province "
        f"boundary, status, outages: {registry_s:.1f} s",
        flush=True,
    )
    load = load_readings(url, province, start, slots, args.load_workers, args.seed)
    load.registry_s = registry_s
    print(f"  load total: {load.load_s:.0f} s", flush=True)
    print("rollup build:", flush=True)
    build_rollups(url, load, start, end, args)
    print(f"  rollup build total: {load.rollup_build_s:.0f} s", flush=True)
    load.sizes = table_sizes(url, layout)
    for table, (rows, size) in load.sizes.items():
        print(f"  {table:<22} {rows:>12,} rows {size / 1e6:>9,.0f} MB")
    hours = load.sizes["probe_hourly_store"][0]
    print(
        f"  the rollups hold one row per probe and hour (signal: per operator and "
        f"technology too): the same {hours:,} probe-hours at the agent's "
        f"{AGENT_DEFAULT_SIGNAL_S} s default, which would put "
        f"{SIGNAL_INTERVAL_S // AGENT_DEFAULT_SIGNAL_S}x the signal rows "
        f"(~{load.signal_rows * SIGNAL_INTERVAL_S // AGENT_DEFAULT_SIGNAL_S / 1e6:.0f} M) "
        "in readings_signal",
        flush=True,
    )
    return load


def run_layout(server: Server, args: argparse.Namespace, province: Province) -> LayoutResult:
    workdir = Path(tempfile.mkdtemp(prefix="cw-bench-geo-"))
    try:
        loaded = next((u for u in args.loaded if _layout_of(u) == server.layout), None)
        database = (
            contextlib.nullcontext(loaded)
            if loaded is not None
            else throwaway_database(server, keep=args.keep)
        )
        with database as url:
            name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
            print(
                f"\n== layout {server.layout}: PostgreSQL {server.version} on {server.where} "
                f"({server.settings}), database {name}"
            )
            if loaded is not None:
                print(
                    f"load: skipped, {name} was loaded by an earlier run with --keep (the same "
                    "--villages, --probes, --days and --seed are assumed)",
                    flush=True,
                )
                schema.upgrade(url)  # migrations newer than the load, if any
                load = LoadFigures()
            else:
                load = _load_database(url, server, args, province)
            print(f"geo, from the rollups (median of {args.repeat}; {_load()}):", flush=True)
            geo_figures = measure_geo(url, args.repeat)
            for line in geo_figures.summary:
                print(f"  {line}")
            g = geo_figures
            print(
                f"  classify (analyse)    {g.classify_s:7.3f} s   [probe_coverage "
                f"{g.parts['probe_coverage']:.3f} s, load_villages "
                f"{g.parts['load_villages']:.3f} s, "
                f"village_status {g.parts['village_status']:.3f} s]\n"
                f"  classify, first after a position changed (nearby probes recomputed) "
                f"{g.cold_classify_s:.3f} s\n"
                f"  dead zones            {g.deadzones_s:7.3f} s\n"
                f"  ranked report         {g.report_s:7.3f} s\n"
                f"  maps.collect (whole)  {g.collect_s:7.3f} s\n"
                f"  maps.render           {g.map_s:7.3f} s   {g.map_bytes / 1e6:.2f} MB inlined "
                f"({g.linked_map_bytes / 1e6:.2f} MB as /map serves it, assets linked)",
                flush=True,
            )
            print(f"naive baseline ({args.naive_sample} random villages; {_load()}):", flush=True)
            naive = measure_naive(url, g.analysis, args.naive_sample, args.seed)
            print(
                f"  {naive.sample} villages in {naive.seconds:.1f} s "
                f"({naive.rows_read:,} raw rows; "
                f"{naive.measured} with a probe within 3 km) -> {naive.all_villages_s:,.0f} s "
                f"for all {naive.villages:,} (extrapolated); same class as "
                f"coverage_by_village for {naive.agree} of {naive.sample} (it pools the "
                "readings; the database weights each probe's class by distance)",
                flush=True,
            )
            print(
                f"HTTP: wrk -t2 -c{args.clients} -d{args.http_duration_s}s --latency ({_load()}):",
                flush=True,
            )
            http = measure_http(url, args, workdir)
            if args.profile:
                profile(url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = LayoutResult(server.layout, load, geo_figures, naive, http)
    _print_targets(result, args.clients)
    return result


def _print_targets(r: LayoutResult, clients: int) -> None:
    api = r.http_of("/api/villages")
    api_ok = api is not None and api.p95_ms is not None and api.p95_ms <= TARGET_API_P95_MS
    print(f"{r.layout}: against the naive baseline of this run and the targets:")
    print(
        f"  classify {r.geo.classify_s:.2f} s vs naive {r.naive.all_villages_s:,.0f} s: "
        f"{r.speedup:,.1f}x faster"
    )
    print(
        f"  classify + deadzones + map = {r.pipeline_s:.2f} s (target <= {TARGET_PIPELINE_S:g} s: "
        f"{_verdict(r.pipeline_s <= TARGET_PIPELINE_S)})"
    )
    print(
        f"  /api/villages p95 {'n/a' if api is None else api.p95_text} ms at {clients} "
        f"clients, coverwatch serve in its own process (target <= "
        f"{TARGET_API_P95_MS:g} ms: {_verdict(api_ok)})"
    )
    mb = r.geo.map_bytes / 1e6
    print(f"  map {mb:.2f} MB (target <= {TARGET_MAP_MB:g} MB: {_verdict(mb <= TARGET_MAP_MB)})")


# --------------------------------------------------------------------------- main


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: the databases are dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--layout",
        choices=("plain", "timescale", "both"),
        default="both",
        help="which default server(s) to run on (both: each that is available)",
    )
    parser.add_argument(
        "--plain-url", default=DEFAULT_URLS["plain"], help="plain PostgreSQL (admin URL)"
    )
    parser.add_argument(
        "--timescale-url", default=DEFAULT_URLS["timescale"], help="TimescaleDB (admin URL)"
    )
    parser.add_argument(
        "--database-url",
        action="append",
        default=[],
        metavar="URL",
        help="a server to run on instead (role with CREATEDB), once per layout; overrides --layout",
    )
    parser.add_argument("--villages", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each geo timing (median)")
    parser.add_argument(
        "--naive-sample", type=int, default=200, help="villages in the naive baseline"
    )
    parser.add_argument(
        "--load-workers", type=int, default=os.cpu_count() or 2, help="connections loading readings"
    )
    parser.add_argument(
        "--refreshers",
        type=int,
        default=os.cpu_count() or 2,
        help="refresh_all connections at once",
    )
    parser.add_argument(
        "--refresh-batch-hours",
        type=int,
        default=rollups.BATCH_HOURS,
        help=f"probe-hours per coverage_refresh call ({rollups.BATCH_HOURS}, the collector's)",
    )
    parser.add_argument(
        "--rollup-slice-hours",
        type=int,
        default=24,
        help="mark and materialize the rollups this many hours of readings at a time "
        "(0: all at once; see the docstring)",
    )
    parser.add_argument("--clients", type=int, default=20, help="wrk connections")
    parser.add_argument("--http-duration-s", type=int, default=20, help="wrk duration per endpoint")
    parser.add_argument(
        "--no-in-thread",
        dest="in_thread",
        action="store_false",
        help="skip the load test of the app in a thread of this process",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print EXPLAIN ANALYZE and cProfile at the end"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each loaded database (its URL is printed) instead of dropping it",
    )
    parser.add_argument(
        "--loaded",
        action="append",
        default=[],
        metavar="URL",
        help="measure a database an earlier --keep run loaded (same --villages, --probes, "
        "--days, --seed) instead of loading a new one; once per layout",
    )
    parser.add_argument(
        "--identity",
        action="store_true",
        help="wrk asks for uncompressed answers (default: Accept-Encoding gzip, as browsers)",
    )
    parser.add_argument("--wrk", default=shutil.which("wrk"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.wrk:
        raise SystemExit(
            "wrk is not installed, and the HTTP load test needs it\n"
            "Hint: apt-get install wrk (Debian package wrk)"
        )
    for option in (
        "villages",
        "probes",
        "days",
        "repeat",
        "naive_sample",
        "load_workers",
        "refreshers",
    ):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.probes > args.villages:
        parser.error("--probes must not exceed --villages")
    logging.getLogger("coverwatch.collector").setLevel(logging.ERROR)  # the layout is printed
    logging.getLogger("coverwatch.geo.web").setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # end_queries closes them
    signal.signal(signal.SIGTERM, _terminate)

    servers = choose_servers(args)
    slots = args.days * 86_400 // SIGNAL_INTERVAL_S
    province = make_province(args.villages, args.probes, slots, args.seed)
    remote = villages_without_probe(province, DEFAULT_RADIUS_M)
    at_shared = len(province.probes) - len({p.village_index for p in province.probes})
    searching = sum(p.unregistered_p > 0.5 for p in province.probes)
    probes = province.probes
    print(
        f"province: {len(province.villages):,} villages ({remote:,} without a probe within "
        f"3 km), {len(probes):,} probes ({at_shared} sharing a village with another, "
        f"{searching} mostly unregistered, {sum(p.roam_code is not None for p in probes)} "
        "also on a second network, "
        f"{sum(p.gap_from < p.gap_to and not p.offline for p in probes)} with a power cut, "
        f"{sum(p.offline for p in probes)} offline), {args.days} days: signal every "
        f"{SIGNAL_INTERVAL_S} s, latency every {LATENCY_INTERVAL_S} s; "
        f"{os.cpu_count()} cores, {_load()}"
    )
    results = [run_layout(server, args, province) for server in servers]

    if len(results) == 1:
        pairs = results[0].result()
    else:
        keys = [key for key, _ in results[0].result()]
        print(f"\n{'':<20}" + "".join(f"{r.layout:>14}" for r in results))
        for i, key in enumerate(keys):
            print(f"{key:<20}" + "".join(f"{r.result()[i][1]:>14}" for r in results))
        pairs = [(f"{key}_{r.layout}", value) for r in results for key, value in r.result()]
    print("RESULT " + " ".join(f"{key}={value}" for key, value in pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
