"""``coverwatch villages import``, ``report uncovered``, ``map`` and ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from coverwatch.errors import ConfigError
from coverwatch.settings import DATABASE_URL_ENV, database_url
from geo import database, registry, report, thresholds
from geo.cache import DEFAULT_CACHE_S
from geo.coverage import TimeWindow
from geo.params import parse_window
from geo.status import DEFAULT_RADIUS_M


def register(commands: Any) -> None:
    """Add geo's sub-commands to the ``coverwatch`` parser."""
    villages = commands.add_parser("villages", help="village registry and boundaries")
    villages_commands = villages.add_subparsers(
        dest="villages_command", metavar="ACTION", required=True
    )
    imp = villages_commands.add_parser(
        "import",
        help="import villages (CSV or GeoJSON) or boundaries (GeoJSON, --boundaries)",
        description="Valid rows are stored (re-import updates in place); each invalid row is "
        "reported with its line (CSV) or feature index (GeoJSON). Exit status 1 when any "
        "row was rejected. See geo/README.md for the columns.",
    )
    imp.add_argument("file", type=Path, help="a .csv, .geojson or .json file")
    imp.add_argument(
        "--boundaries",
        action="store_true",
        help="the file holds province/district/commune boundary polygons",
    )
    imp.add_argument(
        "--level",
        choices=("province", "district", "commune"),
        help="boundary level for features without a 'level' property",
    )
    imp.add_argument(
        "--allow-outside-vietnam",
        action="store_true",
        help="accept coordinates outside lon 102-110, lat 8-24 with a warning (default: reject)",
    )
    imp.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    imp.set_defaults(handler=_import)

    rep = commands.add_parser("report", help="coverage reports")
    rep_commands = rep.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    unc = rep_commands.add_parser(
        "uncovered",
        help="villages without coverage, ranked by uncovered population x time",
        description="Ranked by population x (1 - best-operator availability) over the "
        "window; hours without readings (e.g. power cuts) are unmeasured, not gaps.",
    )
    unc.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _analysis_options(unc, province_help="only villages of this province")
    unc.add_argument("--all", action="store_true", help="include villages with full availability")
    unc.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    unc.set_defaults(handler=_uncovered)

    mp = commands.add_parser(
        "map",
        help="write the coverage map as one HTML file that works offline",
        description="Villages by coverage class, probes with status, dead zones, unmeasured "
        "areas and power outages. Leaflet and its plugins are inlined: the file needs no "
        "internet. No base map unless --tiles points at a tile server.",
    )
    mp.add_argument("-o", "--output", type=Path, default=Path("coverage.html"))
    _analysis_options(mp, province_help="only this province (villages, boundary, dead zones)")
    _tile_options(mp)
    mp.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    mp.set_defaults(handler=_map)

    thr = commands.add_parser(
        "thresholds",
        help="the signal thresholds that define coverage (map, reports, API, Grafana)",
        description="Coverage classes come from one table of thresholds in the database, so "
        "that every view of coverage agrees. `set` changes them and marks every hour of "
        "readings for re-aggregation (the collector re-materializes them; reads are exact "
        "meanwhile, only slower).",
    )
    thr_commands = thr.add_subparsers(dest="thresholds_command", metavar="ACTION", required=True)
    show = thr_commands.add_parser("show", help="print the thresholds in use")
    show.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    show.set_defaults(handler=_thresholds_show)
    put = thr_commands.add_parser(
        "set", help="set a technology's good, fair and poor lower bounds (dBm)"
    )
    put.add_argument(
        "bands",
        nargs="+",
        metavar="TECH=GOOD,FAIR,POOR",
        help="e.g. lte=-95,-105,-115 (technologies: gsm, lte, nr5g, umts)",
    )
    put.add_argument("--source", default="", help="where the values come from (kept with them)")
    put.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    put.set_defaults(handler=_thresholds_set)

    srv = commands.add_parser(
        "serve",
        help="serve the HTTP API and the map (/map, /api/..., OpenAPI at /schema)",
        description="Reads are public. Writes (POST /api/villages) need the bearer token "
        "read from --write-token-file; without it writes are disabled.",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="port (8080)")
    srv.add_argument(
        "--write-token-file", type=Path, help="file holding the bearer token for writes"
    )
    srv.add_argument(
        "--cache-s",
        type=_cache_seconds,
        default=DEFAULT_CACHE_S,
        help="serve a computed map or village list for this many seconds before computing "
        f"it again (0: always compute; default {DEFAULT_CACHE_S:g}, the rollups' refresh "
        "period); concurrent requests share one computation",
    )
    _tile_options(srv)
    srv.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    srv.set_defaults(handler=_serve)


def _cache_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds; e.g. --cache-s 60, or 0 to always compute"
        ) from None
    if not 0 <= value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"{text} is out of range: give 0 to 3600 seconds (0 always computes)"
        )
    return value


def _analysis_options(parser: argparse.ArgumentParser, *, province_help: str) -> None:
    """Window, radius and province: what every coverage computation takes."""
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", help="start of the window, ISO 8601 (e.g. 2026-11-01)")
    when.add_argument("--window", default="30d", help="window up to now: 12h, 30d, 4w (30d)")
    parser.add_argument(
        "--radius-km",
        type=float,
        default=DEFAULT_RADIUS_M / 1000,
        help=f"probes within this distance speak for a village ({DEFAULT_RADIUS_M / 1000:g})",
    )
    parser.add_argument("--province", help=province_help)
    # Kept only to say where thresholds went: one definition for map, API and Grafana.
    parser.add_argument("--threshold", action="append", default=[], help=argparse.SUPPRESS)


def _tile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tiles",
        metavar="URL",
        help="base map from an office tile server, e.g. http://tiles.local/{z}/{x}/{y}.png "
        "(default: none; boundaries and villages are drawn as vectors)",
    )
    parser.add_argument("--tiles-attribution", help="attribution shown for --tiles")


def _import(args: argparse.Namespace) -> int:
    parsed = registry.read_file(
        args.file,
        boundaries=args.boundaries,
        level=args.level,
        allow_outside_vietnam=args.allow_outside_vietnam,
    )
    for problem in parsed.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    with database.connect(database_url(args.database_url)) as connection:
        if args.boundaries:
            stored = registry.store_boundaries(connection, parsed.boundaries, source=args.file.name)
            what = "boundaries"
        else:
            stored = registry.store_villages(connection, parsed.villages, source=args.file.name)
            what = "villages"
    warnings = len(parsed.problems) - len(parsed.errors)
    print(
        f"imported {stored.inserted + stored.updated} {what} ({stored.inserted} new, "
        f"{stored.updated} updated), rejected {parsed.rejected}, warnings {warnings}"
    )
    return 1 if parsed.rejected else 0


def _analysis_values(args: argparse.Namespace) -> TimeWindow:
    """Read what ``_analysis_options`` declared: the window (and check the radius)."""
    if args.threshold:
        raise ConfigError(
            "--threshold",
            "thresholds are no longer chosen per command: they are part of the database's "
            "one definition of coverage, which the map, the reports, the API and Grafana share",
            f"set them once with `coverwatch thresholds set {args.threshold[0]}`",
        )
    window = parse_window(args.since, None if args.since else args.window)
    if args.radius_km <= 0:
        raise ConfigError("--radius-km", f"{args.radius_km} is not positive", "e.g. 3")
    return window


def _uncovered(args: argparse.Namespace) -> int:
    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        rows = report.uncovered_villages(
            connection,
            window,
            radius_m=args.radius_km * 1000,
            province=args.province,
            include_all=args.all,
        )
    sys.stdout.write(report.render(rows, args.format, window))
    return 0


def _map(args: argparse.Namespace) -> int:
    from geo import maps

    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        data = maps.collect(
            connection,
            window,
            radius_m=args.radius_km * 1000,
            province=args.province,
        )
    page = maps.render(data, tiles=args.tiles, tiles_attribution=args.tiles_attribution)
    try:
        args.output.write_text(page, encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            "--output",
            f"cannot write {args.output}: {error.strerror}",
            "check that the directory exists and is writable",
        ) from None
    print(
        f"wrote {args.output} ({len(page.encode()) / 1e6:.2f} MB): {len(data.villages)} villages, "
        f"{sum(1 for p in data.probes if p.lon is not None)} probes"
    )
    return 0


def _thresholds_show(args: argparse.Namespace) -> int:
    with database.connect(database_url(args.database_url)) as connection:
        current = thresholds.load_thresholds(connection)
    print(f"{'technology':<11}{'good':>7}{'fair':>7}{'poor':>7}  source")
    for technology, band in sorted(current.bands.items()):
        print(
            f"{technology:<11}{band.good_dbm:>7g}{band.fair_dbm:>7g}{band.poor_dbm:>7g}  "
            f"{band.source}"
        )
    return 0


def _thresholds_set(args: argparse.Namespace) -> int:
    bands = {}
    for text in args.bands:
        technology, band = thresholds.parse_threshold(text)
        bands[technology] = dataclasses.replace(
            band, source=args.source or "coverwatch thresholds set"
        )
    with database.connect(database_url(args.database_url)) as connection:
        marked = thresholds.store_thresholds(connection, bands)
        connection.commit()
    print(
        f"set {', '.join(sorted(bands))}; {marked} probe-hours marked for re-aggregation "
        "(the collector re-materializes them; map, reports, API and Grafana use the new "
        "thresholds from now on)"
    )
    return 0


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(
            "--write-token-file", f"cannot read {path}: {error.strerror}", "give a readable file"
        ) from None
    if len(token) < 16:
        raise ConfigError(
            "--write-token-file",
            f"the token in {path} is {'empty' if not token else 'shorter than 16 characters'}",
            "put a long random string in it, e.g. `openssl rand -hex 32 > FILE`",
        )
    return token


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from geo import web

    url = database_url(args.database_url)
    token = read_token_file(args.write_token_file) if args.write_token_file else None
    app = web.create_app(
        url,
        write_token=token,
        tiles=args.tiles,
        tiles_attribution=args.tiles_attribution,
        cache_s=args.cache_s,
    )
    print(
        f"serving http://{args.host}:{args.port}/map (API /api, OpenAPI /schema); "
        f"writes {'need the bearer token' if token else 'disabled'}",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
