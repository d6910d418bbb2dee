"""``coverwatch villages import`` and ``coverwatch report uncovered``.

``map`` and ``serve`` arrive with the maps/HTTP API part of issue #5.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coverwatch.errors import ConfigError
from coverwatch.settings import DATABASE_URL_ENV
from geo import database, registry, report
from geo.coverage import TimeWindow
from geo.status import DEFAULT_RADIUS_M
from geo.thresholds import DEFAULT_THRESHOLDS, parse_threshold

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
    when = unc.add_mutually_exclusive_group()
    when.add_argument("--since", help="start of the window, ISO 8601 (e.g. 2026-11-01)")
    when.add_argument("--window", default="30d", help="window up to now: 12h, 30d, 4w (30d)")
    unc.add_argument(
        "--radius-km",
        type=float,
        default=DEFAULT_RADIUS_M / 1000,
        help=f"probes within this distance speak for a village ({DEFAULT_RADIUS_M / 1000:g})",
    )
    unc.add_argument("--province", help="only villages of this province")
    unc.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="TECH=GOOD,FAIR,POOR",
        help="override a technology's dBm thresholds, e.g. lte=-95,-105,-115 (repeatable)",
    )
    unc.add_argument("--all", action="store_true", help="include villages with full availability")
    unc.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    unc.set_defaults(handler=_uncovered)


def parse_window(
    since: str | None, window: str | None, *, now: datetime | None = None
) -> TimeWindow:
    end = now or datetime.now(UTC)
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise ConfigError(
                "--since",
                f"cannot read {since!r} as a date",
                "write it as 2026-11-01 or 2026-11-01T08:00:00+07:00",
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if start >= end:
            raise ConfigError("--since", f"{since} is not in the past", "give an earlier date")
        return TimeWindow(start, end)
    match = _DURATION.match((window or "30d").strip())
    if not match or float(match[1]) <= 0:
        raise ConfigError(
            "--window", f"cannot read {window!r} as a duration", "write e.g. 12h, 30d or 4w"
        )
    return TimeWindow.last(timedelta(seconds=float(match[1]) * _UNIT_S[match[2]]), now=end)


def _import(args: argparse.Namespace) -> int:
    parsed = registry.read_file(
        args.file,
        boundaries=args.boundaries,
        level=args.level,
        allow_outside_vietnam=args.allow_outside_vietnam,
    )
    for problem in parsed.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    with database.connect(database.database_url(args.database_url)) as connection:
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


def _uncovered(args: argparse.Namespace) -> int:
    window = parse_window(args.since, None if args.since else args.window)
    if args.radius_km <= 0:
        raise ConfigError("--radius-km", f"{args.radius_km} is not positive", "e.g. 3")
    thresholds = DEFAULT_THRESHOLDS.with_overrides(
        dict(parse_threshold(text) for text in args.threshold)
    )
    with database.connect(database.database_url(args.database_url)) as connection:
        rows = report.uncovered_villages(
            connection,
            window,
            radius_m=args.radius_km * 1000,
            thresholds=thresholds,
            province=args.province,
            include_all=args.all,
        )
    sys.stdout.write(report.render(rows, args.format, window))
    return 0
