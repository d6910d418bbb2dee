"""``make demo`` / ``coverwatch demo``: the whole system on one machine.

Starts a broker (Mosquitto if installed, else the embedded amqtt), a database
(``COVERWATCH_DATABASE_URL`` if set, else embedded PostgreSQL), applies the
migrations, imports a simulated province (boundary and villages, through geo's own
importer), registers a probe kit per village, starts ``coverwatch collector run``
with its HTTP server (the map at ``/map``), and runs the simulated fleet — the real
agent with simulated sensors — first replaying the ``--history-hours`` before ``--now``
(default: the real current time) as fast as it can, then in real time from there until
Ctrl-C or ``--duration``. At the end it writes the map and the uncovered-villages
report, prints a summary and scores coverwatch's "village without coverage" verdicts
against the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from collector import schema
from coverwatch.errors import CoverwatchError, ServiceError
from coverwatch.localservices import LocalPostgres, start_local_broker
from coverwatch.localservices.ports import LOOPBACK, free_port
from coverwatch.settings import DATABASE_URL_ENV, MqttUrl, redact_url
from geo import maps, registry
from geo import report as uncovered_report
from geo.analysis import analyse
from geo.coverage import TimeWindow
from simulator.fleet import SIGNAL_EVERY, Fleet, kit_config_text, kit_modems
from simulator.province import Province, Village, generate

TICK = timedelta(minutes=5)
# Backpressure for the replay: past this many readings waiting in the outboxes of probes
# that could send them, simulated time waits for the broker and collector.
MAX_UNSENT_WHILE_REPLAYING = 5000
READING_TABLES = (
    "readings_signal",
    "readings_latency",
    "readings_power",
    "readings_outage",
    "readings_system",
    "readings_sensor_error",
)


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float | None = None
    seed: int = 7
    villages: int = 320
    history_hours: float = 24.0
    out_dir: Path = Path("coverwatch-demo")
    http_port: int = 8080
    prefer_mosquitto: bool = True
    # The simulated moment the replay reaches (UTC); None: the real current time.
    now: datetime | None = None


def simulated_clock(
    now: datetime | None = None, *, monotonic: Callable[[], float] = time.monotonic
) -> Callable[[], datetime]:
    """The demo's "now": the real time, or ``now`` at this call running on in real time."""
    if now is None:
        return lambda: datetime.now(UTC)
    if now.utcoffset() is None:
        raise ValueError("the demo's now needs a UTC offset (a naive datetime is ambiguous)")
    start, started = now.astimezone(UTC), monotonic()
    return lambda: start + timedelta(seconds=monotonic() - started)


def parse_now(text: str) -> datetime:
    """``--now``: an ISO 8601 moment with its UTC offset, e.g. 2026-11-30T13:00:00Z."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; write e.g. 2026-11-30T13:00:00Z"
        ) from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; add Z (UTC) or +07:00 (Vietnam), "
            "e.g. 2026-11-30T13:00:00Z"
        )
    return moment.astimezone(UTC)


@dataclass
class Score:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    true_negative: int = 0
    unmeasured: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positive + self.false_positive
        if not found:  # no verdicts at all only counts as right when there was nothing to find
            return 1.0 if not self.false_negative else 0.0
        return self.true_positive / found

    @property
    def recall(self) -> float:
        real = self.true_positive + self.false_negative
        return self.true_positive / real if real else 1.0


@dataclass
class Summary:
    probes_online: int = 0
    probes_offline: int = 0
    readings_published: int = 0
    readings_stored: int = 0
    dead_letters: int = 0
    uncovered_villages: list[str] = field(default_factory=list)
    power_outage_villages: list[str] = field(default_factory=list)
    off_grid_without_coverage_verdict: int = 0
    score: Score = field(default_factory=Score)
    map_path: Path | None = None
    report_path: Path | None = None
    map_url: str = ""
    simulated_hours: float = 0.0


# ------------------------------------------------------------------------ services


@contextmanager
def _database(stack_dir: Path, console: Console) -> Iterator[str]:
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        console.print(f"database: {redact_url(configured)} (from {DATABASE_URL_ENV})")
        yield configured
        return
    with console.status("starting embedded PostgreSQL…"):
        server = LocalPostgres(stack_dir / "postgres")
        server.start()
    console.print(f"database: embedded PostgreSQL on {LOOPBACK}:{server.port}")
    try:
        yield server.url()
    finally:
        server.stop()


@contextmanager
def _broker(stack_dir: Path, console: Console, prefer_mosquitto: bool) -> Iterator[MqttUrl]:
    with console.status("starting MQTT broker…"):
        broker = start_local_broker(stack_dir / "broker", prefer_mosquitto=prefer_mosquitto)
    console.print(f"broker: {broker.name} on {broker.url.redacted()}")
    try:
        yield broker.url
    finally:
        broker.stop()


@contextmanager
def _collector(
    database_url: str, url: MqttUrl, http_port: int, log_path: Path, console: Console
) -> Iterator[str]:
    argv = [
        sys.executable,
        "-m",
        "coverwatch.cli",
        "collector",
        "run",
        "--client-id",
        "coverwatch-demo-collector",
        "--metrics-port",
        "0",
        "--http-port",
        str(http_port),
        "--batch-age-s",
        "0.5",
        "--rollup-refresh-s",
        "60",
    ]
    env = {
        **os.environ,
        DATABASE_URL_ENV: database_url,
        "COVERWATCH_MQTT_URL": url.with_credentials(),
    }
    with log_path.open("ab") as log:
        # Its own session: the terminal's Ctrl-C goes to the demo, which then stops the
        # collector after the last readings are stored, not before.
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with console.status("starting the collector and its HTTP server…"):
            deadline = time.monotonic() + 60
            while "collector running" not in log_path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(
                        "the collector did not start; its log:\n"
                        + log_path.read_text(errors="replace")[-2000:]
                    )
                time.sleep(0.1)
        map_url = f"http://{LOOPBACK}:{http_port}/map"
        console.print(f"collector: running (log {log_path}), map at {map_url}")
        yield map_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# ------------------------------------------------------------------------ province


def _import_province(
    province: Province, database_url: str, out_dir: Path, installed_at: datetime
) -> None:
    import json

    boundary_file = out_dir / "province-boundary.geojson"
    villages_file = out_dir / "villages.geojson"
    boundary_file.write_text(json.dumps(province.boundary_geojson()), encoding="utf-8")
    villages_file.write_text(json.dumps(province.villages_geojson()), encoding="utf-8")
    boundaries = registry.read_file(boundary_file, boundaries=True)
    villages = registry.read_file(villages_file)
    problems = [*boundaries.errors, *villages.errors]
    if problems:
        raise CoverwatchError("simulated province failed validation: " + str(problems[0]))
    with psycopg.connect(database_url) as connection:
        registry.store_boundaries(connection, boundaries.boundaries, source=boundary_file.name)
        registry.store_villages(connection, villages.villages, source=villages_file.name)
        with connection.cursor() as cursor:
            cursor.executemany(
                """INSERT INTO probes (probe_id, name, village, lon, lat, operator, hardware,
                                       installed_at, report_interval_s)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (probe_id) DO UPDATE SET village = excluded.village,
                       lon = excluded.lon, lat = excluded.lat""",
                [
                    (
                        v.probe_id,
                        f"kit {v.village_id}",
                        v.name,
                        v.lon,
                        v.lat,
                        "multi-SIM",
                        f"simulated Raspberry Pi 4 + {len(kit_modems(v))} LTE modems",
                        installed_at,
                        int(SIGNAL_EVERY.total_seconds()),
                    )
                    for v in province.villages
                ],
            )


def _write_example_kit(village: Village, url: MqttUrl, out_dir: Path) -> Path:
    """The first village's kit configuration, for a look (the password left out)."""
    path = out_dir / "kit-probe.toml"
    without_password = dataclasses.replace(url, password=None)
    path.write_text(
        kit_config_text(village, without_password, Path("/var/lib/coverwatch")), encoding="utf-8"
    )
    return path


def _stored_readings(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as connection:
        total = 0
        for table in READING_TABLES:
            row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
            total += int(row[0]) if row else 0
        dead = connection.execute("SELECT count(*) FROM dead_letters").fetchone()
    return total, int(dead[0]) if dead else 0


# ------------------------------------------------------------------------ the run


class _StatusLine:
    """A live line on a terminal; a plain line every few seconds elsewhere (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last_plain = 0.0
        self._status = console.status("") if console.is_terminal else None
        if self._status is not None:
            self._status.start()

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)
        elif time.monotonic() - self._last_plain >= 5:
            self.console.print(text)
            self._last_plain = time.monotonic()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()


def _run_fleet(
    fleet: Fleet,
    options: DemoOptions,
    database_url: str,
    stop: threading.Event,
    console: Console,
    *,
    replay_from: datetime,
    clock: Callable[[], datetime],
) -> datetime:
    """Replay from ``replay_from`` up to ``clock()`` at full speed, then follow ``clock``."""
    started = time.monotonic()
    simulated = replay_from
    fleet.start(simulated)
    status = _StatusLine(console)
    # Let the probes log in before the replay loads the broker (amqtt is slow to accept).
    connect_deadline = time.monotonic() + 30
    while time.monotonic() < connect_deadline and not stop.is_set():
        fleet.network()
        if fleet.online() >= 0.97 * fleet.powered():
            break
        time.sleep(0.01)
    stored, dead = 0, 0
    last_count = 0.0
    try:
        while not stop.is_set():
            if options.duration_s is not None and time.monotonic() - started >= options.duration_s:
                break
            now = clock()
            if fleet.reachable_unsent() > MAX_UNSENT_WHILE_REPLAYING:
                pass  # the broker is behind: let it catch up before taking more rounds
            elif simulated < now:
                simulated = min(simulated + TICK, now)  # replaying history, full speed
                fleet.advance_to(simulated)
            else:
                simulated = now  # caught up: real time from here on
                fleet.advance_to(simulated)
                stop.wait(0.2)
            fleet.network()
            if time.monotonic() - last_count > 2:
                stored, dead = _stored_readings(database_url)
                last_count = time.monotonic()
            phase = "replaying history" if simulated < now - TICK else "live"
            status.update(
                f"[bold]{phase}[/] {simulated:%d %b %H:%M} UTC · "
                f"{fleet.online()}/{len(fleet.probes)} online · "
                f"{fleet.stats.readings:,} taken · {stored:,} stored · {dead} dead letters"
            )
        # Let what the probes can still send reach the broker.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not stop.is_set():
            fleet.network()
            if fleet.reachable_unsent() == 0:
                break
            time.sleep(0.02)
    finally:
        status.stop()
    return simulated


def _wait_until_stored(database_url: str, timeout_s: float = 30) -> None:
    """The collector commits in batches: wait until the counts stop moving."""
    deadline = time.monotonic() + timeout_s
    previous = -1
    while time.monotonic() < deadline:
        stored, _ = _stored_readings(database_url)
        if stored == previous:
            return
        previous = stored
        time.sleep(2.0)


def _summarise(
    province: Province,
    fleet: Fleet,
    database_url: str,
    window: TimeWindow,
    options: DemoOptions,
    map_url: str,
) -> Summary:
    summary = Summary(map_url=map_url, readings_published=fleet.stats.readings)
    summary.readings_stored, summary.dead_letters = _stored_readings(database_url)
    by_name = {v.name: v for v in province.villages}
    by_probe = {v.probe_id: v for v in province.villages}
    with psycopg.connect(database_url) as connection:
        for state, count in connection.execute(
            "SELECT state, count(*) FROM probe_health GROUP BY state"
        ):
            if state == "online":
                summary.probes_online = int(count)
            else:
                summary.probes_offline += int(count)
        outage_probes = {
            row[0]
            for row in connection.execute(
                "SELECT DISTINCT probe_id FROM power_outages WHERE outage_ended_at >= %s",
                (window.start,),
            )
        }
        summary.power_outage_villages = sorted(
            by_probe[p].name for p in outage_probes if p in by_probe
        )
        statuses = analyse(connection, window).statuses
        score = summary.score
        for status in statuses:
            village = by_name.get(status.village.name)
            if village is None:
                continue
            verdict = status.status
            if verdict == "unmeasured":
                score.unmeasured += 1
                continue
            without = verdict == "none"
            if without:
                summary.uncovered_villages.append(village.name)
                if not village.grid_power:
                    summary.off_grid_without_coverage_verdict += 1
            if without and not village.covered:
                score.true_positive += 1
            elif without:
                score.false_positive += 1
            elif not village.covered:
                score.false_negative += 1
            else:
                score.true_negative += 1
        map_data = maps.collect(connection, window)
        rows = uncovered_report.uncovered_villages(connection, window)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    summary.map_path = options.out_dir / "coverage-map.html"
    summary.map_path.write_text(maps.render(map_data, title=province.name), encoding="utf-8")
    summary.report_path = options.out_dir / "uncovered-villages.csv"
    summary.report_path.write_text(uncovered_report.render(rows, "csv"), encoding="utf-8")
    return summary


def _print_summary(summary: Summary, province: Province, console: Console) -> None:
    score = summary.score
    truth_uncovered = sum(1 for v in province.villages if not v.covered)
    console.rule("coverwatch demo: summary")
    console.print(
        f"province [bold]{province.name}[/] (seed {province.seed}): "
        f"{len(province.villages)} villages, {len(province.towers)} towers of 3 operators, "
        f"{summary.simulated_hours:.0f} h simulated"
    )
    console.print(
        f"probes: {summary.probes_online} online, {summary.probes_offline} offline "
        "(off-grid kits are dark at night)"
    )
    console.print(
        f"readings: {summary.readings_published:,} taken, {summary.readings_stored:,} stored; "
        f"{summary.dead_letters} malformed payloads dead-lettered"
    )
    console.print(
        f"villages without coverage: {len(summary.uncovered_villages)} "
        f"(truth: {truth_uncovered}; {score.unmeasured} unmeasured)"
    )
    console.print(
        f"villages with power outages: {len(summary.power_outage_villages)} "
        "(reported as outages, not as coverage gaps)"
    )
    console.print(
        f"verdict 'village without coverage' vs ground truth: "
        f"precision {score.precision:.3f}, recall {score.recall:.3f} "
        f"(TP {score.true_positive}, FP {score.false_positive}, "
        f"FN {score.false_negative}, TN {score.true_negative})"
    )
    console.print(f"map: {summary.map_path}   report: {summary.report_path}")
    if summary.map_url:
        console.print(f"live map (while the demo runs): {summary.map_url}")


def run_demo(options: DemoOptions, console: Console | None = None) -> Summary:
    console = console or Console()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    options.out_dir.mkdir(parents=True, exist_ok=True)
    province = generate(options.seed, villages=options.villages)
    clock = simulated_clock(options.now)
    started = clock() - timedelta(hours=options.history_hours)
    try:
        with ExitStack() as stack:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-demo-")))
            if os.geteuid() == 0:
                scratch.chmod(0o755)  # the embedded PostgreSQL runs as its own user
            database_url = stack.enter_context(_database(scratch, console))
            url = stack.enter_context(_broker(scratch, console, options.prefer_mosquitto))
            with console.status("applying migrations and importing the province…"):
                schema.upgrade(database_url)
                _import_province(
                    province, database_url, options.out_dir, started - timedelta(days=30)
                )
            console.print(
                f"province: {province.name}, {len(province.villages)} villages, "
                f"{len(province.towers)} towers; one probe kit per village"
            )
            http_port = options.http_port or free_port()
            map_url = stack.enter_context(
                _collector(database_url, url, http_port, options.out_dir / "collector.log", console)
            )
            fleet = Fleet(province.villages, url, scratch / "probes", seed=options.seed)
            stack.callback(fleet.close)
            example = _write_example_kit(province.villages[0], url, options.out_dir)
            console.print(
                f"each kit runs the probe.toml a real one would ({example}: "
                f"{len(kit_modems(province.villages[0]))} [[sensors.cellular]] modems)"
            )
            if options.duration_s is None:
                console.print(f"[bold green]open {map_url}[/] — Ctrl-C stops the demo")
            reached = _run_fleet(
                fleet, options, database_url, stop, console, replay_from=started, clock=clock
            )
            _wait_until_stored(database_url)
            window = TimeWindow(start=started - timedelta(hours=1), end=reached + TICK)
            with console.status("classifying villages, drawing the map…"):
                summary = _summarise(province, fleet, database_url, window, options, map_url)
            summary.simulated_hours = (reached - started).total_seconds() / 3600
            _print_summary(summary, province, console)
            return summary
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(commands: Any) -> None:
    """``coverwatch demo`` (entry point ``coverwatch.commands``, see pyproject.toml)."""
    demo = commands.add_parser(
        "demo", help="the whole system on this machine with a simulated province"
    )
    add_arguments(demo)
    demo.set_defaults(handler=main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="run this long, then write the map and report and stop (default: until Ctrl-C)",
    )
    parser.add_argument("--seed", type=int, default=7, help="province seed (default 7)")
    parser.add_argument("--villages", type=int, default=320, help="villages (default 320)")
    parser.add_argument(
        "--history-hours",
        type=float,
        default=24.0,
        help="hours of readings replayed at full speed up to --now, before going live (default 24)",
    )
    parser.add_argument(
        "--now",
        type=parse_now,
        metavar="TIME",
        help="replay the --history-hours up to this moment, then run on in real time from "
        "it: ISO 8601 with a UTC offset, e.g. 2026-11-30T13:00:00Z or 2026-11-30T20:00+07:00 "
        "(default: the current time). Off-grid kits are dark 19:00-06:30 Vietnam time, "
        "12:00-23:30 UTC",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("coverwatch-demo"), help="where the map and report go"
    )
    parser.add_argument(
        "--http-port", type=int, default=8080, help="port of the map and API (0: any free)"
    )
    parser.add_argument(
        "--amqtt",
        action="store_true",
        help="use the embedded amqtt broker even if Mosquitto is there",
    )


def main(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise CoverwatchError("--duration must be more than 0 seconds")
    if args.villages < 10:
        raise CoverwatchError("--villages must be at least 10")
    if args.history_hours <= 0:
        raise CoverwatchError("--history-hours must be more than 0")
    run_demo(
        DemoOptions(
            duration_s=args.duration,
            seed=args.seed,
            villages=args.villages,
            history_hours=args.history_hours,
            out_dir=args.out,
            http_port=args.http_port,
            prefer_mosquitto=not args.amqtt,
            now=args.now,
        )
    )
    return 0
