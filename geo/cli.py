"""``coverwatch villages import``, ``report uncovered``, ``map`` and ``serve``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from coverwatch.errors import ConfigError
from coverwatch.settings import DATABASE_URL_ENV, database_url
from geo import claims, database, registry, report, survey, thresholds, towers
from geo.cache import DEFAULT_CACHE_S
from geo.coverage import TimeWindow
from geo.operators import operator_label, parse_operator, parse_technology
from geo.params import parse_window
from geo.status import DEFAULT_RADIUS_M

MAX_PROBLEMS_SHOWN = 200  # a world registry can hold millions of bad rows


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

    _register_evidence(commands)

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
    evi = rep_commands.add_parser(
        "evidence",
        help="every village's verdict and the evidence it rests on (probe, survey, predicted)",
        description="Measured where a probe stands in the village or a survey passed near "
        "it; elsewhere predicted from the tower registry (COST-231 Hata calibrated on the "
        "measurements, plus kriging) with the probability of no service. A prediction is "
        "always marked as one. See geo/README.md.",
    )
    evi.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _analysis_options(evi, province_help="only villages of this province")
    evi.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    evi.set_defaults(handler=_evidence)

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
    mp.add_argument(
        "--evidence",
        action="store_true",
        help="add the evidence view: every village's verdict, measured or predicted from the "
        "tower registry with its probability (shown first)",
    )
    mp.add_argument(
        "--sites-operator",
        help="add a layer of proposed tower sites for this operator (see `sites recommend`)",
    )
    mp.add_argument(
        "--sites", type=_positive_int, default=5, help="with --sites-operator: how many (5)"
    )
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


def _register_evidence(commands: Any) -> None:
    """``towers`` and ``claims``: evidence that is not a measurement."""
    towers_parser = commands.add_parser("towers", help="tower registry (OpenCelliD / MLS cells)")
    towers_commands = towers_parser.add_subparsers(
        dest="towers_command", metavar="ACTION", required=True
    )
    imp = towers_commands.add_parser(
        "import",
        help="import cells from an OpenCelliD or MLS CSV export (.csv or .csv.gz)",
        description="Columns radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,"
        "created,updated,averageSignal (the header line is optional, as in OpenCelliD's "
        "country files). Valid rows are stored (re-import updates in place); each invalid "
        "row is reported with its line. Exit status 1 when any row was rejected.",
    )
    imp.add_argument("file", type=Path, help="e.g. 452.csv.gz from OpenCelliD")
    imp.add_argument(
        "--mcc",
        type=_mcc,
        default=towers.VIETNAM_MCC,
        help=f"keep this country's cells, skip others ({towers.VIETNAM_MCC}; 'any' keeps all)",
    )
    imp.add_argument(
        "--allow-outside-vietnam",
        action="store_true",
        help="accept positions outside lon 102-110, lat 8-24 with a warning (default: reject)",
    )
    imp.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    imp.set_defaults(handler=_towers_import)
    links = towers_commands.add_parser(
        "links",
        help="which registry cell served each probe, and how far it is",
        description="Per probe and modem, the serving cells its readings named in the window, "
        "the registry site of each (or 'not in registry') and its distance from the probe.",
    )
    when = links.add_mutually_exclusive_group()
    when.add_argument("--since", help="start of the window, ISO 8601 (e.g. 2026-11-01)")
    when.add_argument("--window", default="30d", help="window up to now: 12h, 30d, 4w (30d)")
    links.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    links.set_defaults(handler=_towers_links)

    survey_parser = commands.add_parser(
        "survey", help="walk/drive-test logs from field teams (survey evidence)"
    )
    survey_commands = survey_parser.add_subparsers(
        dest="survey_command", metavar="ACTION", required=True
    )
    simp = survey_commands.add_parser(
        "import",
        help="import a survey log: Tower Collector CSV export or coverwatch survey CSV",
        description="The format is told by the header. Valid rows are stored as survey points "
        "(apart from probe readings; a log imported again stores nothing twice); each invalid "
        "row is reported with its line. Exit status 1 when any row was rejected. Columns of "
        "the coverwatch survey CSV: see geo/README.md.",
    )
    simp.add_argument("file", type=Path, help="a .csv file")
    simp.add_argument(
        "--timezone",
        default=survey.LOCAL_TIMEZONE,
        help=f"for times without an offset ({survey.LOCAL_TIMEZONE})",
    )
    simp.add_argument(
        "--allow-outside-vietnam",
        action="store_true",
        help="accept positions outside lon 102-110, lat 8-24 with a warning (default: reject)",
    )
    simp.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    simp.set_defaults(handler=_survey_import)
    slist = survey_commands.add_parser("list", help="the surveys imported, per log")
    slist.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    slist.set_defaults(handler=_survey_list)

    claims_parser = commands.add_parser(
        "claims", help="operators' claimed coverage (service-area GeoJSON)"
    )
    claims_commands = claims_parser.add_subparsers(
        dest="claims_command", metavar="ACTION", required=True
    )
    cimp = claims_commands.add_parser(
        "import",
        help="import an operator's claimed service areas (GeoJSON polygons)",
        description="Each Polygon/MultiPolygon feature is a claimed area; its operator and "
        "technology come from its properties or from --operator/--technology. Re-importing "
        "a file (same name) replaces what it imported before. Exit status 1 when any "
        "feature was rejected.",
    )
    cimp.add_argument("file", type=Path, help="a .geojson or .json file")
    cimp.add_argument("--operator", help="for features without one: Viettel, VinaPhone, 45204…")
    cimp.add_argument("--technology", help="for features without one: 2G, 3G, 4G or 5G")
    cimp.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    cimp.set_defaults(handler=_claims_import)
    clist = claims_commands.add_parser("list", help="what claims are stored, per file")
    clist.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    clist.set_defaults(handler=_claims_list)
    ccheck = claims_commands.add_parser(
        "check",
        help="villages where an operator's claims and the evidence disagree, by population",
        description="Claimed as covered but measured (or predicted with p(usable) <= 0.2) "
        "without service, and measured with service but not claimed; per village with its "
        "evidence, and per commune.",
    )
    ccheck.add_argument("--operator", help="only this operator: Viettel, VinaPhone, 45204…")
    ccheck.add_argument("--technology", default="4G", help="claims of this technology (4G)")
    ccheck.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _analysis_options(ccheck, province_help="only villages of this province")
    ccheck.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    ccheck.set_defaults(handler=_claims_check)

    sites_parser = commands.add_parser(
        "sites", help="tower-site recommendations: where a tower serves the most people without"
    )
    sites_commands = sites_parser.add_subparsers(
        dest="sites_command", metavar="ACTION", required=True
    )
    rec = sites_commands.add_parser(
        "recommend",
        help="rank candidate sites for one operator by the people without service they reach",
        description="Candidates from a grid over the villages (or --candidates FILE), weighed "
        "with the operator's calibrated coverage model against each village's probability of "
        "having no service today; selected greedily (or exactly with --exact, HiGHS) under "
        "--sites or --budget. See geo/README.md.",
    )
    rec.add_argument("--operator", required=True, help="Viettel, VinaPhone, MobiFone or MCC-MNC")
    limit = rec.add_mutually_exclusive_group()
    limit.add_argument("--sites", type=_positive_int, default=5, help="number of sites (5)")
    limit.add_argument(
        "--budget", type=_positive_float, help="total cost (candidates' cost column)"
    )
    rec.add_argument(
        "--min-p", type=_probability, default=0.8,
        help="a site serves a village when its probability of usable service reaches this (0.8)",
    )  # fmt: skip
    rec.add_argument("--weight", choices=("population", "households"), default="population")
    rec.add_argument("--grid-km", type=_positive_float, default=2.0, help="grid spacing (2 km)")
    rec.add_argument(
        "--max-village-km", type=_positive_float, default=5.0,
        help="grid sites within this distance of a village only: access (5 km)",
    )  # fmt: skip
    rec.add_argument(
        "--max-grid-power-km", type=_positive_float,
        help="grid sites within this distance of a village on grid power only",
    )  # fmt: skip
    rec.add_argument("--exclude", type=Path, help="GeoJSON polygons where no tower may stand")
    rec.add_argument(
        "--candidates",
        type=Path,
        help="candidate sites: CSV id,name,lon,lat[,cost] or GeoJSON points",
    )
    rec.add_argument(
        "--exact", action="store_true", help="the exact optimum (MILP, small instances)"
    )
    rec.add_argument("--format", choices=("table", "csv", "geojson"), default="table")
    rec.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    _analysis_options(rec, province_help="only villages of this province")
    rec.add_argument("--database-url", help=f"PostgreSQL URL; env {DATABASE_URL_ENV}")
    rec.set_defaults(handler=_sites_recommend)


def _mcc(text: str) -> int | None:
    if text.strip().lower() in ("any", "all"):
        return None
    if not text.strip().isdigit() or not 200 <= int(text) <= 799:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a country code: give an MCC such as 452 (Vietnam), or 'any'"
        )
    return int(text)


def _towers_import(args: argparse.Namespace) -> int:
    parsed = towers.read_cells(
        args.file, mcc=args.mcc, allow_outside_vietnam=args.allow_outside_vietnam
    )
    _print_problems(args.file, parsed.problems, parsed.problem_count)
    with database.connect(database_url(args.database_url)) as connection:
        stored = towers.store_cells(connection, list(parsed.cells.values()), source=args.file.name)
    skipped = []
    if parsed.other_countries:
        skipped.append(f"{parsed.other_countries} of other countries (--mcc any keeps them)")
    if parsed.unsupported_radio:
        skipped.append(f"{parsed.unsupported_radio} CDMA")
    print(
        f"imported {stored.inserted + stored.updated} cells ({stored.inserted} new, "
        f"{stored.updated} updated), rejected {parsed.rejected}"
        + (f", skipped {' and '.join(skipped)}" if skipped else "")
    )
    return 1 if parsed.rejected else 0


def _print_problems(file: Path, problems: list[registry.Problem], count: int) -> None:
    """Each problem with its place, at most MAX_PROBLEMS_SHOWN, then how many more."""
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"{file}: {problem}", file=sys.stderr)
    if count > MAX_PROBLEMS_SHOWN:
        print(f"{file}: … and {count - MAX_PROBLEMS_SHOWN} more problems", file=sys.stderr)


def _towers_links(args: argparse.Namespace) -> int:
    window = parse_window(args.since, None if args.since else args.window)
    with database.connect(database_url(args.database_url)) as connection:
        links = towers.tower_links(connection, window)
    if not links:
        print("(no signal readings named a serving cell in this window)")
        return 0
    print(
        f"{'probe':<20}{'modem':<10}{'network':<8}{'tech':<6}{'tac':>7}{'cell':>12}"
        f"{'readings':>9}  {'site':<26}{'km':>6}"
    )
    unknown = 0
    for link in links:
        if link.site is None:
            unknown += 1
        site = link.site or "not in registry"
        distance = f"{link.distance_m / 1000:6.1f}" if link.distance_m is not None else "     -"
        flag = (
            "  beyond its range: check the registry or the probe's position"
            if (link.beyond_range)
            else ""
        )
        print(
            f"{link.probe_id:<20}{link.modem or '-':<10}{link.operator_code:<8}"
            f"{link.technology or '-':<6}{link.tac if link.tac is not None else '-':>7}"
            f"{link.cell_id:>12}{link.readings:>9}  {site:<26}{distance}{flag}"
        )
    print(f"{len(links)} serving cells, {unknown} not in the tower registry")
    return 0


def _survey_import(args: argparse.Namespace) -> int:
    parsed = survey.read_survey(
        args.file, timezone=args.timezone, allow_outside_vietnam=args.allow_outside_vietnam
    )
    _print_problems(args.file, parsed.problems, len(parsed.problems))
    with database.connect(database_url(args.database_url)) as connection:
        stored = survey.store_survey(connection, parsed, survey=args.file.name)
    kind = "Tower Collector" if parsed.source_format == "towercollector" else "coverwatch survey"
    print(
        f"imported {stored.stored} survey points from a {kind} log ({stored.already} already "
        f"imported), rejected {parsed.rejected}"
        + (f", skipped {parsed.skipped} CDMA/TD-SCDMA" if parsed.skipped else "")
    )
    return 1 if parsed.rejected else 0


def _survey_list(args: argparse.Namespace) -> int:
    with database.connect(database_url(args.database_url)) as connection:
        summaries = survey.list_surveys(connection)
    zone = ZoneInfo(survey.LOCAL_TIMEZONE)
    if not summaries:
        print("(no surveys imported; `coverwatch survey import FILE` adds one)")
        return 0
    for summary in summaries:
        print(
            f"{summary.survey}  ({summary.source_format}): {summary.points} points, "
            f"{summary.no_service} without service, {summary.first.astimezone(zone):%Y-%m-%d %H:%M}"
            f" to {summary.last.astimezone(zone):%Y-%m-%d %H:%M} ({survey.LOCAL_TIMEZONE})"
        )
    return 0


def _claims_import(args: argparse.Namespace) -> int:
    parsed = claims.read_claims(args.file, operator=args.operator, technology=args.technology)
    for problem in parsed.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    with database.connect(database_url(args.database_url)) as connection:
        stored = claims.store_claims(connection, parsed.claims, source=args.file.name)
    print(
        f"imported {stored.stored} claimed areas (replacing {stored.replaced} from an earlier "
        f"import of {args.file.name}), rejected {parsed.rejected}"
    )
    return 1 if parsed.rejected else 0


def _claims_list(args: argparse.Namespace) -> int:
    with database.connect(database_url(args.database_url)) as connection:
        summaries = claims.list_claims(connection)
    if not summaries:
        print("(no claims imported; `coverwatch claims import FILE` adds them)")
        return 0
    for summary in summaries:
        print(
            f"{operator_label(summary.operator_code):<14}{summary.technology:<6}"
            f"{summary.areas:>5} areas  {summary.source}  "
            f"(imported {summary.imported_at:%Y-%m-%d %H:%M %Z})"
        )
    return 0


def _check_province(connection: Any, province: str | None) -> None:
    """An unknown --province is an error that lists the known ones (never an empty
    report that reads as "all covered")."""
    known = registry.unknown_province(connection, province)
    if known is not None:
        raise ConfigError("--province", f"no villages in {province!r}", f"known: {known}")


def _evidence(args: argparse.Namespace) -> int:
    from geo.assessment import assess
    from geo.evidence_report import render_verdicts

    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        _check_province(connection, args.province)
        assessment = assess(
            connection, window, province=args.province, radius_m=args.radius_km * 1000
        )
    sys.stdout.write(render_verdicts(assessment.verdicts, args.format))
    return 0


def _claims_check(args: argparse.Namespace) -> int:
    from geo.assessment import assess
    from geo.claims_check import compare_claims
    from geo.evidence_report import render_claim_gaps

    try:
        operator = parse_operator(args.operator) if args.operator else None
    except ValueError as error:
        raise ConfigError("--operator", str(error), "e.g. --operator Viettel or 45204") from None
    try:
        technology = parse_technology(args.technology)
    except ValueError as error:
        raise ConfigError("--technology", str(error), "e.g. --technology 4G") from None
    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        if not claims.list_claims(connection):
            print("(no claims imported; `coverwatch claims import FILE` adds them)")
            return 0
        _check_province(connection, args.province)
        assessment = assess(
            connection, window, province=args.province, radius_m=args.radius_km * 1000
        )
        gaps = compare_claims(
            connection,
            assessment.verdicts,
            technology=technology,
            operators=None if operator is None else [operator],
        )
    sys.stdout.write(render_claim_gaps(gaps, args.format))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is out of range: give 1 to 1000")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a positive number")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give more than 0, at most 1")
    return value


def _sites_recommend(args: argparse.Namespace) -> int:
    import json

    from geo import sites

    try:
        operator = parse_operator(args.operator)
    except ValueError as error:
        raise ConfigError("--operator", str(error), "e.g. --operator Viettel or 45204") from None
    exclusions = None
    if args.exclude is not None:
        exclusions, problems = sites.read_exclusions(args.exclude)
        _print_problems(args.exclude, problems, len(problems))
    candidates = None
    if args.candidates is not None:
        parsed = sites.read_candidates(args.candidates)
        _print_problems(args.candidates, parsed.problems, len(parsed.problems))
        if not parsed.candidates:
            raise ConfigError(
                "--candidates", f"{args.candidates} holds no usable candidate site",
                "give id,name,lon,lat[,cost] rows or GeoJSON points",
            )  # fmt: skip
        candidates = parsed.candidates
    options = sites.SiteOptions(
        operator=operator,
        sites=None if args.budget is not None else args.sites,
        budget=args.budget,
        min_p=args.min_p,
        weight=args.weight,
        rules=sites.CandidateRules(
            grid_km=args.grid_km,
            max_village_km=args.max_village_km,
            max_grid_power_km=args.max_grid_power_km,
            exclusions=exclusions,
        ),
        candidates=candidates,
        exact=args.exact,
    )
    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        _check_province(connection, args.province)
        result = sites.recommend(connection, window, options, province=args.province)
    if args.format == "geojson":
        text = json.dumps(sites.to_geojson(result.rows), ensure_ascii=False, indent=1) + "\n"
    elif args.format == "csv":
        text = sites.to_csv(result.rows)
    else:
        text = sites.to_table(result.rows, result.selection)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            "--output", f"cannot write {args.output}: {error.strerror}",
            "check that the directory exists and is writable",
        ) from None  # fmt: skip
    print(
        f"wrote {args.output}: {len(result.rows)} sites of {result.candidates} candidates, "
        f"{result.selection.objective:,.0f} people expected to gain service"
    )
    return 0


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
    from geo import maps, sites

    sites_options = None
    if args.sites_operator is not None:
        try:
            code = parse_operator(args.sites_operator)
        except ValueError as error:
            raise ConfigError(
                "--sites-operator", str(error), "e.g. --sites-operator Viettel or 45204"
            ) from None
        sites_options = sites.SiteOptions(operator=code, sites=args.sites)

    window = _analysis_values(args)
    with database.connect(database_url(args.database_url)) as connection:
        data = maps.collect(
            connection,
            window,
            radius_m=args.radius_km * 1000,
            province=args.province,
            evidence=args.evidence,
            sites=sites_options,
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
