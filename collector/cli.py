"""``coverwatch db upgrade``, ``coverwatch collector run`` and ``coverwatch import``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import psycopg

from collector import config, importer, logs, schema
from collector.ingest import Collector, IngestOptions
from collector.metrics import IngestMetrics
from collector.rollups import RollupRefresher
from collector.storage import Store
from coverwatch.errors import ConfigError
from coverwatch.settings import DATABASE_URL_ENV, MqttUrl, database_url, redact_url

logger = logging.getLogger("coverwatch.collector")


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="apply schema migrations (idempotent; TimescaleDB when available)"
    )
    upgrade.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    upgrade.set_defaults(handler=_upgrade)

    collector = commands.add_parser("collector", help="MQTT → PostgreSQL ingest")
    collector_commands = collector.add_subparsers(
        dest="collector_command", metavar="ACTION", required=True
    )
    run = collector_commands.add_parser(
        "run",
        help="subscribe and store readings until stopped (SIGINT/SIGTERM)",
        description="Settings come from --config (TOML, [collector] table), then "
        "COVERWATCH_* environment variables, then flags; see collector/README.md.",
    )
    config.add_arguments(run)
    run.set_defaults(handler=_run)

    import_ = commands.add_parser(
        "import",
        help="store readings from an offline export file (coverwatch-probe export)",
        description="Store a probe's exported outbox (JSON Lines of readings batches, "
        "optionally gzip-compressed) exactly as if it had arrived over MQTT: readings "
        "already stored are skipped, bad lines are dead-lettered and reported. Exit status "
        "1 when anything was rejected. The schema must be upgraded (coverwatch db upgrade).",
    )
    import_.add_argument("file", type=Path, help="export file (.jsonl, or gzip-compressed)")
    import_.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    import_.set_defaults(handler=_import)


def check_database(url: str) -> None:
    """Connect once, turning libpq's error into a start-up message that says what to fix."""
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as error:
        raise ConfigError(
            DATABASE_URL_ENV,
            f"cannot connect to {redact_url(url)}: {str(error).strip().splitlines()[0]}",
            "check host, port, database name, user and password, and that PostgreSQL is running",
        ) from None


def _upgrade(args: argparse.Namespace) -> int:
    url = database_url(args.database_url)
    check_database(url)
    applied = schema.upgrade(url)
    with psycopg.connect(url) as connection:
        storage = schema.storage_in_use(connection)
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none (up to date)"
    print(f"schema upgraded ({storage}): applied {names}")
    return 0


def _run(args: argparse.Namespace) -> int:
    values = config.resolve(args)
    logs.configure(values["log_level"], values["log_format"])
    mqtt_url = MqttUrl.parse(values["mqtt_url"], setting="--mqtt-url")
    database_url = values["database_url"]
    check_database(database_url)
    schema.upgrade(database_url)
    metrics = IngestMetrics()
    if values["metrics_port"]:
        from prometheus_client import start_http_server

        start_http_server(values["metrics_port"], values["metrics_host"], registry=metrics.registry)
    options = IngestOptions(
        client_id=values["client_id"],
        shared_group=values["shared_group"],
        batch_readings=values["batch_readings"],
        batch_age_s=values["batch_age_s"],
        max_unacked_messages=values["max_unacked_messages"],
        ca_file=values["mqtt_ca_file"],
    )
    collector = Collector(mqtt_url, Store(database_url), options, metrics)
    signal.signal(signal.SIGTERM, lambda *_: collector.stop())
    signal.signal(signal.SIGINT, lambda *_: collector.stop())
    collector.connect()
    http = _start_http(values, database_url)
    refresher = None
    if values["rollup_refresh_s"]:
        refresher = RollupRefresher(database_url, values["rollup_refresh_s"], metrics)
        refresher.start()
    logger.info(
        "collector running: database=%s broker=%s metrics=%s rollups=%s",
        redact_url(database_url),
        mqtt_url.redacted(),
        f"http://{values['metrics_host']}:{values['metrics_port']}/metrics"
        if values["metrics_port"]
        else "off",
        f"every {values['rollup_refresh_s']:g}s" if refresher else "off",
    )
    try:
        collector.run()
    finally:
        if refresher is not None:
            refresher.stop()
        if http is not None:
            http.stop()
    logger.info("collector stopped cleanly")
    return 0


def _start_http(values: dict[str, Any], database_url: str) -> Any:
    """The geo HTTP API and map in this process, when ``http_port`` is set."""
    if not values["http_port"]:
        return None
    from geo.web import create_app, serve_in_thread

    token = None
    if values["http_write_token_file"]:
        path = Path(values["http_write_token_file"])
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                "http_write_token_file",
                f"cannot read {path}: {error.strerror}",
                "point it at a file holding the token (coverwatch deploy init writes one)",
            ) from None
    handle = serve_in_thread(
        create_app(database_url, write_token=token), values["http_host"], values["http_port"]
    )
    logger.info("HTTP API and map at http://%s:%d/map", values["http_host"], handle.port)
    return handle


def _import(args: argparse.Namespace) -> int:
    logs.configure("WARNING")
    with importer.open_export(args.file) as stream:
        url = database_url(args.database_url)
        check_database(url)
        importer.require_schema(url)
        store = Store(url)
        try:
            summary = importer.import_export(stream, args.file.name, store)
        finally:
            store.close()
    for rejection in summary.rejections:
        print(f"{args.file.name}:{rejection.line}: rejected: {rejection.reason}", file=sys.stderr)
    print(summary.describe())
    if summary.read_error:
        print(f"error: {summary.read_error}", file=sys.stderr)
        return 2
    return 1 if summary.rejections else 0
