"""Survey points: walk and drive tests imported from field teams' phone logs.

Two formats are read, told apart by their header line:

**Tower Collector** (the open-source Android app's "CSV" export)::

    mcc,mnc,lac,cell_id,psc,asu,dbm,ta,lat,lon,accuracy,speed,bearing,altitude,measured_at,
    net_type,neighboring,device[,rsrp,rsrq,rssi,rssnr,cqi,rscp,csi_rsrp,csi_rsrq,csi_sinr,
    ss_rsrp,ss_rsrq,ss_sinr,cdma_dbm,cdma_ecio,evdo_dbm,evdo_ecio,evdo_snr]

one row per cell the phone saw (``neighboring`` false: the serving cell), ``measured_at``
in UTC (``"2024-05-01T03:04:05.123Z"``), ``net_type`` GSM/UMTS/LTE/NR. ``dbm`` is the
phone's level for the technology (GSM RSSI, UMTS RSCP, LTE RSRP, NR SS-RSRP); the newer
columns, when present, say which. Tower Collector logs only cells: it never records "no
service" — a walk through a dead zone shows as a gap, not as "none".

**coverwatch survey CSV**, for any other app whose log a team maps to it, and for
points written down by hand (``,`` ``;`` or tab, header names matched without case or
accents)::

    time,lon,lat,accuracy_m,operator,technology,service,cell_id,tac,pci,
    rsrp_dbm,rsrq_db,sinr_db,rssi_dbm,rscp_dbm,device

``time`` in ISO 8601 (an offset or ``Z``; without one it is read in ``--timezone``,
Asia/Ho_Chi_Minh by default), ``operator`` a name or MCC-MNC, ``technology`` 2G…5G,
``service`` serving (default), neighbour, or none: **a point with no service**, which is
what a dead-zone survey needs.

Every row is checked on its own (time present, not in the future; position in Vietnam;
accuracy ≥ 0; signal levels in range, out-of-range levels stored as unknown with a
warning) and reported with its line; the good rows are stored. Points are kept apart
from probe readings; importing the same log again stores nothing twice.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

import psycopg

from coverwatch.errors import CoverwatchError
from geo import registry
from geo.operators import parse_operator, parse_technology
from geo.registry import Problem, RowError
from geo.text import normalise_key
from geo.thresholds import METRIC_OF, SignalClass, Thresholds

SourceFormat: TypeAlias = Literal["towercollector", "coverwatch"]
Service: TypeAlias = Literal["serving", "neighbour", "none"]

LOCAL_TIMEZONE: Final = "Asia/Ho_Chi_Minh"
# A phone's clock a little ahead is common; a day ahead is a wrong date.
MAX_CLOCK_AHEAD: Final = timedelta(hours=1)
POOR_ACCURACY_M: Final = 500.0
MAX_ACCURACY_M: Final = 100_000.0
TOWER_COLLECTOR_HEAD: Final = ("mcc", "mnc", "lac", "cell_id", "psc", "asu", "dbm", "ta", "lat")
TOWER_COLLECTOR_TECHNOLOGY: Final[dict[str, str | None]] = {
    "GSM": "gsm",
    "UMTS": "umts",
    "LTE": "lte",
    "NR": "nr5g",
    "UNKNOWN": None,
}
TOWER_COLLECTOR_SKIPPED: Final = frozenset({"CDMA", "TD-SCDMA"})
# Where the generic dBm of each technology belongs.
LEVEL_OF: Final[dict[str | None, str]] = {
    "gsm": "rssi_dbm",
    "umts": "rscp_dbm",
    "lte": "rsrp_dbm",
    "nr5g": "rsrp_dbm",
    None: "rssi_dbm",
}
# Plausible ranges (3GPP reporting ranges, rounded out); outside them a value is unknown.
RANGES: Final[dict[str, tuple[float, float]]] = {
    "rsrp_dbm": (-156.0, -31.0),
    "rsrq_db": (-43.0, 20.0),
    "sinr_db": (-23.0, 40.0),
    "rssi_dbm": (-120.0, -10.0),
    "rscp_dbm": (-125.0, -20.0),
}
GENERIC_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "time": ("time", "timestamp", "taken_at", "measured_at", "date_time", "thoi_gian"),
    "lon": ("lon", "lng", "longitude", "x", "kinh_do"),
    "lat": ("lat", "latitude", "y", "vi_do"),
    "accuracy_m": ("accuracy_m", "accuracy", "gps_accuracy", "do_chinh_xac"),
    "operator": ("operator", "operator_code", "mcc_mnc", "plmn", "network", "nha_mang"),
    "technology": ("technology", "tech", "network_tech", "networktech", "rat", "cong_nghe"),
    "service": ("service", "serving", "state", "dich_vu"),
    "cell_id": ("cell_id", "cellid", "cid", "ci", "eci", "nci"),
    "tac": ("tac", "lac", "area"),
    "pci": ("pci", "psc"),
    "rsrp_dbm": ("rsrp_dbm", "rsrp"),
    "rsrq_db": ("rsrq_db", "rsrq"),
    "sinr_db": ("sinr_db", "sinr", "snr", "rssnr"),
    "rssi_dbm": ("rssi_dbm", "rssi"),
    "rscp_dbm": ("rscp_dbm", "rscp"),
    "device": ("device", "phone", "thiet_bi"),
}
_GENERIC_FIELD: Final[dict[str, str]] = {
    alias: canonical for canonical, aliases in GENERIC_ALIASES.items() for alias in aliases
}
_SERVICE: Final[dict[str, Service]] = {
    **dict.fromkeys(("", "serving", "registered", "connected", "1", "true", "yes"), "serving"),
    **dict.fromkeys(("neighbour", "neighbor", "neighbouring", "neighboring"), "neighbour"),
    **dict.fromkeys(
        ("none", "no_service", "no", "0", "false", "searching", "emergency_only", "mat_song"),
        "none",
    ),
}


@dataclass(frozen=True, slots=True)
class SurveyPoint:
    taken_at: datetime
    lon: float
    lat: float
    accuracy_m: float | None
    service: Service
    operator_code: str | None
    technology: str | None
    cell_id: int | None = None
    tac: int | None = None
    pci: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    rscp_dbm: float | None = None
    device: str = ""
    where: str = ""


@dataclass
class ParsedSurvey:
    source_format: SourceFormat
    points: list[SurveyPoint] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: int = 0
    skipped: int = 0


def _number(value: str | None, field_name: str) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        number = float(text.replace(",", ".") if "," in text and "." not in text else text)
    except ValueError:
        raise RowError(field_name, f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(number):
        raise RowError(field_name, f"expected a finite number, got {text[:40]!r}")
    return number


# How Android and Tower Collector write "unknown": -1, Integer.MAX_VALUE, Long.MAX_VALUE.
UNKNOWN_IDS: Final = frozenset({-1, 2**31 - 1, 2**63 - 1})


def _whole(value: str | None, field_name: str, high: int) -> int | None:
    """A non-negative identifier, None when unknown."""
    text = (value or "").strip()
    if text.lstrip("-").isdigit() and int(text) in UNKNOWN_IDS:  # exact: no float rounding
        return None
    number = _number(value, field_name)
    if number is None or number in UNKNOWN_IDS:
        return None
    if number != int(number) or not 0 <= number <= high:
        raise RowError(field_name, f"{(value or '').strip()[:40]!r} is not a whole number 0-{high}")
    return int(number)


def _time(value: str | None, zone: tzinfo, now: datetime) -> datetime:
    text = (value or "").strip().strip('"')
    if not text:
        raise RowError("time", "is missing")
    try:
        taken = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RowError(
            "time", f"{text[:40]!r} is not ISO 8601 (e.g. 2026-11-30T09:15:00+07:00)"
        ) from None
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=zone)
    if taken > now + MAX_CLOCK_AHEAD:
        raise RowError("time", f"{text[:40]!r} is in the future (the phone's date is wrong?)")
    if taken.year < 2000:
        raise RowError("time", f"{text[:40]!r} is before 2000 (the phone had no date?)")
    return taken.astimezone(UTC)


def _levels(
    values: Mapping[str, float | None], where: str, problems: list[Problem]
) -> dict[str, float | None]:
    """Each level within its plausible range, or unknown with a warning."""
    kept: dict[str, float | None] = {}
    for name, value in values.items():
        low, high = RANGES[name]
        if value is not None and not low <= value <= high:
            problems.append(
                Problem(where, f"{value:g} is outside {low:g}…{high:g}; stored as unknown",
                        "warning", name)
            )  # fmt: skip
            value = None
        kept[name] = value
    return kept


def _position(
    lon: float | None, lat: float | None, where: str, problems: list[Problem], allow: bool
) -> tuple[float, float]:
    if lon is None:
        raise RowError("lon", "is missing")
    if lat is None:
        raise RowError("lat", "is missing")
    if lon == 0 and lat == 0:
        raise RowError("lon/lat", "0, 0 is the phone's 'no GPS fix' (the point has no position)")
    registry.check_position(lon, lat, where, problems, allow_outside=allow)
    return lon, lat


def _accuracy(value: float | None, where: str, problems: list[Problem]) -> float | None:
    if value is None:
        return None
    if value < 0:
        raise RowError("accuracy_m", f"{value:g} is negative")
    if value > MAX_ACCURACY_M:
        raise RowError(
            "accuracy_m", f"{value:g} m is not a GPS accuracy (at most {MAX_ACCURACY_M:g})"
        )
    if value < 0.01:
        return 0.0  # below what the column (real) or any receiver resolves
    if value > POOR_ACCURACY_M:
        problems.append(
            Problem(where, f"{value:g} m: the position is too rough to place a village's "
                    "service; kept, shown with its accuracy", "warning", "accuracy_m")
        )  # fmt: skip
    return value


def _tower_collector_row(
    row: Mapping[str, str], where: str, parsed: ParsedSurvey, now: datetime, allow: bool
) -> SurveyPoint | None:
    net_type = (row.get("net_type") or "").strip().strip('"').upper()
    if net_type in TOWER_COLLECTOR_SKIPPED:
        parsed.skipped += 1
        return None
    if net_type not in TOWER_COLLECTOR_TECHNOLOGY:
        raise RowError("net_type", f"expected GSM, UMTS, LTE or NR, got {net_type[:40]!r}")
    technology = TOWER_COLLECTOR_TECHNOLOGY[net_type]
    problems: list[Problem] = []
    mcc = _whole(row.get("mcc"), "mcc", 999)
    mnc = _whole(row.get("mnc"), "mnc", 999)
    operator = f"{mcc:03d}{mnc:02d}" if mcc is not None and mnc is not None else None
    lon, lat = _position(
        _number(row.get("lon"), "lon"), _number(row.get("lat"), "lat"), where, problems, allow
    )
    generic = _number(row.get("dbm"), "dbm")
    level_values: dict[str, float | None] = dict.fromkeys(RANGES)
    level_values[LEVEL_OF[technology]] = generic
    specific = {
        "rsrp_dbm": row.get("ss_rsrp") if technology == "nr5g" else row.get("rsrp"),
        "rsrq_db": row.get("ss_rsrq") if technology == "nr5g" else row.get("rsrq"),
        "sinr_db": row.get("ss_sinr") if technology == "nr5g" else row.get("rssnr"),
        "rssi_dbm": row.get("rssi"),
        "rscp_dbm": row.get("rscp"),
    }
    for name, text in specific.items():
        value = _number(text, name)
        if value is not None:
            level_values[name] = value
    levels = _levels(level_values, where, problems)
    point = SurveyPoint(
        taken_at=_time(row.get("measured_at"), UTC, now),
        lon=lon,
        lat=lat,
        accuracy_m=_accuracy(_number(row.get("accuracy"), "accuracy"), where, problems),
        service="neighbour"
        if (row.get("neighboring") or "").strip().lower() == "true"
        else "serving",
        operator_code=operator,
        technology=technology,
        cell_id=_whole(row.get("cell_id"), "cell_id", 2**36 - 1),
        tac=_whole(row.get("lac"), "lac", 2**24 - 1),
        pci=_whole(row.get("psc"), "psc", 1007),
        device=registry.text_field(row.get("device"), "device"),
        where=where,
        **levels,
    )
    parsed.problems.extend(problems)
    return point


def _generic_row(
    row: Mapping[str, str], where: str, parsed: ParsedSurvey, now: datetime, zone: tzinfo,
    allow: bool,
) -> SurveyPoint:  # fmt: skip
    problems: list[Problem] = []
    service_text = normalise_key(row.get("service") or "")
    service = _SERVICE.get(service_text)
    if service is None:
        raise RowError("service", f"expected serving, neighbour or none, got {service_text!r}")
    try:
        operator = parse_operator(row["operator"]) if (row.get("operator") or "").strip() else None
    except ValueError as error:
        raise RowError("operator", str(error)) from None
    try:
        technology = (
            parse_technology(row["technology"]) if (row.get("technology") or "").strip() else None
        )
    except ValueError as error:
        raise RowError("technology", str(error)) from None
    if service != "none" and operator is None:
        raise RowError("operator", "is missing (needed unless service is none)")
    lon, lat = _position(
        _number(row.get("lon"), "lon"), _number(row.get("lat"), "lat"), where, problems, allow
    )
    levels = _levels({name: _number(row.get(name), name) for name in RANGES}, where, problems)
    if service == "none" and any(value is not None for value in levels.values()):
        raise RowError("service", "is none, yet the row has a signal level")
    point = SurveyPoint(
        taken_at=_time(row.get("time"), zone, now),
        lon=lon,
        lat=lat,
        accuracy_m=_accuracy(_number(row.get("accuracy_m"), "accuracy_m"), where, problems),
        service=service,
        operator_code=operator,
        technology=technology,
        cell_id=_whole(row.get("cell_id"), "cell_id", 2**36 - 1),
        tac=_whole(row.get("tac"), "tac", 2**24 - 1),
        pci=_whole(row.get("pci"), "pci", 1007),
        device=registry.text_field(row.get("device"), "device"),
        where=where,
        **levels,
    )
    parsed.problems.extend(problems)
    return point


def parse_survey(
    text: str,
    *,
    timezone: str = LOCAL_TIMEZONE,
    allow_outside_vietnam: bool = False,
    now: datetime | None = None,
) -> ParsedSurvey:
    """Points from a Tower Collector export or a coverwatch survey CSV (by the header)."""
    now = now or datetime.now(UTC)
    try:
        zone: tzinfo = ZoneInfo(timezone)
    except (KeyError, ValueError):
        raise CoverwatchError(
            f"--timezone {timezone!r} is not a time zone; e.g. Asia/Ho_Chi_Minh or UTC"
        ) from None
    # Sniffed from the header alone: a survey's rows hold commas in quoted device names.
    reader, header = registry.open_csv(text, text.split("\n", 1)[0])
    lowered = [column.strip().lower() for column in header]
    source: SourceFormat
    if tuple(lowered[: len(TOWER_COLLECTOR_HEAD)]) == TOWER_COLLECTOR_HEAD:
        source, names = "towercollector", lowered
    else:
        source = "coverwatch"
        names = [_GENERIC_FIELD.get(normalise_key(column), "") for column in header]
        missing = {"time", "lon", "lat"} - set(names)
        if missing:
            raise CoverwatchError(
                f"the header has no {', '.join(sorted(missing))} column: expected a Tower "
                "Collector CSV export (mcc,mnc,lac,cell_id,…) or coverwatch survey columns "
                "time,lon,lat,accuracy_m,operator,technology,service,cell_id,tac,pci,rsrp_dbm,"
                "rsrq_db,sinr_db,rssi_dbm,rscp_dbm,device (see geo/README.md)"
            )
    parsed = ParsedSurvey(source)
    if source == "coverwatch":
        parsed.problems.extend(
            Problem("line 1", f"column {column!r} is not used", "warning")
            for column, name in zip(header, names, strict=True)
            if not name
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            line = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit()
                parsed.problems.append(Problem(f"line {line}", f"unreadable CSV: {error}"))
                parsed.rejected += 1
                continue
            yield line, values

    for line, values in rows():
        if not any(value.strip() for value in values):
            continue
        where = f"line {line}"
        row: dict[str, str] = {}
        for name, value in zip(names, values, strict=False):
            if name:
                row.setdefault(name, value)
        try:
            if source == "towercollector":
                point = _tower_collector_row(row, where, parsed, now, allow_outside_vietnam)
            else:
                point = _generic_row(row, where, parsed, now, zone, allow_outside_vietnam)
        except RowError as error:
            parsed.problems.append(Problem(where, error.message, "error", error.field))
            parsed.rejected += 1
            continue
        if point is not None:
            parsed.points.append(point)
    return parsed


def read_survey(
    path: Path, *, timezone: str = LOCAL_TIMEZONE, allow_outside_vietnam: bool = False
) -> ParsedSurvey:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            # Vietnamese Windows spreadsheets save CSV in Windows-1258.
            text = data.decode("cp1258")
        except UnicodeDecodeError:
            raise CoverwatchError(
                f"{path} is neither UTF-8 nor Windows-1258 text (save it as CSV UTF-8)"
            ) from None
    return parse_survey(text, timezone=timezone, allow_outside_vietnam=allow_outside_vietnam)


@dataclass(frozen=True, slots=True)
class StoredSurvey:
    stored: int
    already: int


def store_survey(
    connection: psycopg.Connection[Any], parsed: ParsedSurvey, *, survey: str
) -> StoredSurvey:
    """Insert the points; those already imported (same device, time, cell, place) are kept."""
    if not parsed.points:
        return StoredSurvey(0, 0)
    stored = 0
    with connection.cursor() as cursor:
        for start in range(0, len(parsed.points), 5000):
            chunk = parsed.points[start : start + 5000]
            columns = list(zip(*((
                p.device, p.taken_at, p.lon, p.lat, p.accuracy_m, p.service, p.operator_code,
                p.technology, p.cell_id, p.tac, p.pci, p.rsrp_dbm, p.rsrq_db, p.sinr_db,
                p.rssi_dbm, p.rscp_dbm,
            ) for p in chunk), strict=True))  # fmt: skip
            cursor.execute(
                """INSERT INTO survey_points (survey, source_format, device, taken_at, lon, lat,
                                              accuracy_m, service, operator_code, technology,
                                              cell_id, tac, pci, rsrp_dbm, rsrq_db, sinr_db,
                                              rssi_dbm, rscp_dbm)
                   SELECT %s, %s, t.*
                   FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[],
                               %s::real[], %s::text[], %s::text[], %s::text[], %s::bigint[],
                               %s::int[], %s::int[], %s::real[], %s::real[], %s::real[],
                               %s::real[], %s::real[]) AS t
                   ON CONFLICT DO NOTHING""",
                (survey, parsed.source_format, *(list(column) for column in columns)),
            )
            stored += cursor.rowcount
    return StoredSurvey(stored, len(parsed.points) - stored)


@dataclass(frozen=True, slots=True)
class SurveySummary:
    survey: str
    source_format: str
    points: int
    no_service: int
    first: datetime
    last: datetime


def list_surveys(connection: psycopg.Connection[Any]) -> list[SurveySummary]:
    rows = connection.execute(
        """SELECT survey, source_format, count(*), count(*) FILTER (WHERE service = 'none'),
                  min(taken_at), max(taken_at)
           FROM survey_points GROUP BY 1, 2 ORDER BY min(taken_at), 1"""
    ).fetchall()
    return [SurveySummary(*row) for row in rows]


# ------------------------------------------------------------------------- on the map

MAP_POINTS_MAX: Final = 20_000  # the most recent ones; a map of more is unreadable anyway


@dataclass(frozen=True, slots=True)
class MapPoint:
    """A survey point as the map shows it: where the phone had service (or none), and how."""

    lon: float
    lat: float
    taken_at: datetime
    operator_code: str | None
    technology: str | None
    service: Service
    signal_class: SignalClass
    signal_dbm: float | None
    accuracy_m: float | None
    survey: str


def map_points(
    connection: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    thresholds: Thresholds,
    *,
    bounds: tuple[float, float, float, float] | None = None,
) -> list[MapPoint]:
    """Serving and no-service points in the window (neighbours are cells heard, not
    service), classed by the database's thresholds like every measurement."""
    rows = connection.execute(
        """SELECT lon, lat, taken_at, operator_code, technology, service, rsrp_dbm, rscp_dbm,
                  rssi_dbm, accuracy_m, survey
           FROM survey_points
           WHERE taken_at >= %(start)s AND taken_at < %(end)s AND service <> 'neighbour'
             AND (%(min_lon)s::float8 IS NULL
                  OR point(lon, lat) <@ box(point(%(min_lon)s, %(min_lat)s),
                                            point(%(max_lon)s, %(max_lat)s)))
           ORDER BY taken_at DESC LIMIT %(limit)s""",
        {
            "start": start,
            "end": end,
            "limit": MAP_POINTS_MAX,
            **dict(
                zip(
                    ("min_lon", "min_lat", "max_lon", "max_lat"), bounds or (None,) * 4, strict=True
                )
            ),
        },
    ).fetchall()
    points = []
    for lon, lat, taken_at, operator, technology, service, rsrp, rscp, rssi, accuracy, name in rows:
        levels = {"rsrp_dbm": rsrp, "rscp_dbm": rscp, "rssi_dbm": rssi}
        signal = levels.get(METRIC_OF.get(technology or "", ""))
        registered = service != "none"
        points.append(
            MapPoint(
                lon=lon,
                lat=lat,
                taken_at=taken_at,
                operator_code=operator,
                technology=technology,
                service=service,
                signal_class=thresholds.classify(technology, signal, registered=registered),
                signal_dbm=signal,
                accuracy_m=accuracy,
                survey=name,
            )
        )
    points.reverse()  # oldest first: the newest drawn on top
    return points
