"""The village registry and administrative boundaries: read files, validate, upsert, load.

Villages come as CSV (one village a row) or GeoJSON (a FeatureCollection of Point or
Polygon features with properties); boundaries as GeoJSON Polygon/MultiPolygon features.
Every row is checked on its own: a bad row is reported with where it is (``line 7`` of
a CSV, ``features[3]`` of GeoJSON), the field and what is wrong, and the good rows are
still imported. Re-importing a village (same province, district, commune and name)
updates it in place.

Column names are matched loosely: case, accents, spaces and dashes do not matter, and
common English and Vietnamese names are understood (``village``/``thôn``/``bản`` for
``name``, ``xã`` for ``commune``, ``dân số`` for ``population``, ``lng``/``x`` for
``lon``, …; see ``ALIASES``).

Coordinates outside Vietnam's bounding box (lon 102-110 °E, lat 8-24 °N) are an
**error** by default — in this project they are nearly always a typo or swapped
columns — and a warning with ``allow_outside_vietnam=True``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import psycopg
import shapely
from psycopg.types.json import Jsonb

from coverwatch.errors import CoverwatchError
from geo.params import text_allowed, text_problem
from geo.text import clean_text, normalise_key

GridPower: TypeAlias = Literal["yes", "no", "unknown"]
BoundaryLevel: TypeAlias = Literal["province", "district", "commune"]
Severity: TypeAlias = Literal["error", "warning"]

VIETNAM_BBOX: Final = (102.0, 8.0, 110.0, 24.0)  # min lon, min lat, max lon, max lat

# Canonical field → accepted spellings after normalisation (see normalise_key).
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "name": ("name", "village", "village_name", "ten", "ten_thon", "thon", "ban", "thon_ban"),
    "commune": ("commune", "commune_name", "xa", "ten_xa", "ward", "phuong"),
    "district": ("district", "district_name", "huyen", "ten_huyen"),
    "province": ("province", "province_name", "tinh", "ten_tinh"),
    "lon": ("lon", "lng", "long", "longitude", "x", "kinh_do"),
    "lat": ("lat", "latitude", "y", "vi_do"),
    "population": ("population", "pop", "dan_so", "so_dan", "nhan_khau"),
    "households": ("households", "hh", "so_ho", "ho"),
    "grid_power": ("grid_power", "grid", "electricity", "dien_luoi", "co_dien"),
    "level": ("level", "admin_level", "cap"),
    "parent": ("parent", "parent_name", "thuoc"),
}
_FIELD_OF: Final[dict[str, str]] = {
    alias: canonical for canonical, aliases in ALIASES.items() for alias in aliases
}
_GRID_POWER: Final[dict[str, GridPower]] = {
    **dict.fromkeys(("yes", "y", "true", "1", "co", "on_grid", "grid"), "yes"),
    **dict.fromkeys(("no", "n", "false", "0", "khong", "off_grid"), "no"),
    **dict.fromkeys(("", "unknown", "?", "na", "n_a", "khong_ro"), "unknown"),
}
_LEVELS: Final[dict[str, BoundaryLevel]] = {
    **dict.fromkeys(("province", "tinh", "4"), "province"),
    **dict.fromkeys(("district", "huyen", "6"), "district"),
    **dict.fromkeys(("commune", "xa", "ward", "phuong", "8"), "commune"),
}
_PARENT_FIELD: Final[dict[str, str]] = {"district": "province", "commune": "district"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one row: ``line 7: lat: 123.4 is not between -90 and 90``."""

    where: str
    message: str
    severity: Severity = "error"
    field: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.where}: {self.field}: " if self.field else f"{self.where}: "
        return f"{self.severity}: {prefix}{self.message}"


@dataclass(frozen=True, slots=True)
class VillageRecord:
    name: str
    commune: str
    district: str
    province: str
    lon: float
    lat: float
    population: int | None = None
    households: int | None = None
    grid_power: GridPower = "unknown"
    area: dict[str, Any] | None = None
    where: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.province, self.district, self.commune, self.name)


@dataclass(frozen=True, slots=True)
class BoundaryRecord:
    level: BoundaryLevel
    name: str
    parent: str
    geometry: dict[str, Any]
    bounds: tuple[float, float, float, float]
    where: str = ""


@dataclass
class Parsed:
    """What a file held: the rows that passed, every problem, and how many were rejected."""

    villages: list[VillageRecord] = field(default_factory=list)
    boundaries: list[BoundaryRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


class RowError(Exception):
    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


# ------------------------------------------------------------------------ normalising


def text_field(value: Any, field_name: str) -> str:
    """A name as it is stored: clean text of at most MAX_TEXT_CHARS, no control characters.

    PostgreSQL text cannot hold NUL, and the four names of a village must fit in one
    entry of the unique index on them.
    """
    text = clean_text(value)
    if not text:
        return text
    problem = text_problem(text)
    if problem is not None:
        raise RowError(field_name, f"{problem}; allowed: {text_allowed()}")
    return text


def _canonical_fields(
    properties: Mapping[str, Any], where: str, problems: list[Problem], *, warn_unknown: bool
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in properties.items():
        canonical = _FIELD_OF.get(normalise_key(str(key)))
        if canonical is None:
            if warn_unknown:
                problems.append(Problem(where, f"column {key!r} is not used", "warning"))
            continue
        fields.setdefault(canonical, value)
    return fields


def _number(value: Any, field_name: str) -> float:
    if isinstance(value, bool):
        raise RowError(field_name, f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = clean_text(value)
        if not text:
            raise RowError(field_name, "is missing")
        if "," in text and "." not in text:
            text = text.replace(",", ".")  # decimal comma, as Vietnamese spreadsheets write
        try:
            number = float(text)
        except ValueError:
            raise RowError(field_name, f"expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise RowError(field_name, f"expected a finite number, got {value!r}")
    return number


def _count(value: Any, field_name: str) -> int | None:
    """A non-negative whole number (``1,234``, ``1 234`` and ``120.0`` are accepted)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(field_name, f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float):
        number = value
    else:
        text = re.sub(r"[\s_,.](?=\d{3}(?:\D|$))", "", clean_text(value))
        try:
            number = float(text)
        except ValueError:
            raise RowError(
                field_name, f"expected a whole number, got {clean_text(value)!r}"
            ) from None
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise RowError(field_name, f"expected a whole number ≥ 0, got {value!r}")
    if number > 2**31 - 1:
        raise RowError(field_name, f"{value!r} is too large")
    return int(number)


def _grid_power(value: Any) -> GridPower:
    key = normalise_key(str(value)) if value is not None and not isinstance(value, bool) else ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in _GRID_POWER:
        return _GRID_POWER[key]
    raise RowError("grid_power", f"expected yes, no or unknown, got {clean_text(value)!r}")


def check_position(
    lon: float, lat: float, where: str, problems: list[Problem], *, allow_outside: bool
) -> None:
    if not -180 <= lon <= 180:
        raise RowError("lon", f"{lon} is not between -180 and 180")
    if not -90 <= lat <= 90:
        hint = " (lon and lat swapped?)" if in_vietnam(lat, lon) else ""
        raise RowError("lat", f"{lat} is not between -90 and 90{hint}")
    if in_vietnam(lon, lat):
        return
    message = f"({lon}, {lat}) is outside Vietnam (lon 102-110, lat 8-24)"
    if in_vietnam(lat, lon):
        message += "; lon and lat look swapped"
    if not allow_outside:
        raise RowError("lon/lat", message)
    problems.append(Problem(where, message, "warning", "lon/lat"))


def in_vietnam(lon: float, lat: float) -> bool:
    min_lon, min_lat, max_lon, max_lat = VIETNAM_BBOX
    return min_lon <= lon <= max_lon and min_lat <= lat <= max_lat


def polygon_of(geometry: Mapping[str, Any], where: str, problems: list[Problem]) -> Any:
    """A valid shapely (Multi)Polygon from a GeoJSON geometry, or a RowError."""
    kind = geometry.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise RowError("geometry", f"expected Polygon or MultiPolygon, got {kind!r}")
    try:
        shape = shapely.from_geojson(json.dumps(geometry))
    except (shapely.errors.GEOSException, ValueError, TypeError) as error:
        raise RowError("geometry", f"unreadable {kind}: {error}") from None
    if shape.is_empty:
        raise RowError("geometry", f"empty {kind}")
    if not shape.is_valid:
        reason = shapely.is_valid_reason(shape)
        problems.append(
            Problem(where, f"repaired invalid {kind} ({reason})", "warning", "geometry")
        )
        shape = shapely.make_valid(shape)
        shape = shapely.union_all(
            shapely.get_parts(shape)[np.isin(shapely.get_type_id(shapely.get_parts(shape)), (3, 6))]
        )
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise RowError("geometry", "coordinates out of range (expected lon/lat in degrees)")
    return shape


# ---------------------------------------------------------------------------- parsing


def _village_from(
    fields: Mapping[str, Any],
    where: str,
    problems: list[Problem],
    *,
    position: tuple[float, float] | None = None,
    area: dict[str, Any] | None = None,
    allow_outside: bool = False,
) -> VillageRecord:
    name = text_field(fields.get("name"), "name")
    if not name:
        raise RowError("name", "is missing")
    if position is None or "lon" in fields or "lat" in fields:
        lon = _number(fields.get("lon"), "lon")
        lat = _number(fields.get("lat"), "lat")
    else:
        lon, lat = position
    check_position(lon, lat, where, problems, allow_outside=allow_outside)
    return VillageRecord(
        name=name,
        commune=text_field(fields.get("commune"), "commune"),
        district=text_field(fields.get("district"), "district"),
        province=text_field(fields.get("province"), "province"),
        lon=lon,
        lat=lat,
        population=_count(fields.get("population"), "population"),
        households=_count(fields.get("households"), "households"),
        grid_power=_grid_power(fields.get("grid_power")),
        area=area,
        where=where,
    )


def _collect(rows: Iterable[tuple[str, Any]], parsed: Parsed, build: Any, key_of: Any) -> None:
    """Run ``build`` on each row, recording errors and duplicates (case-insensitive)."""
    seen: dict[tuple[str, ...], str] = {}
    for where, row in rows:
        try:
            record = build(where, row)
        except RowError as error:
            parsed.problems.append(Problem(where, error.message, "error", error.field))
            parsed.rejected += 1
            continue
        key = tuple(part.casefold() for part in key_of(record))
        if key in seen:
            parsed.problems.append(
                Problem(where, f"duplicate of {seen[key]} ({' / '.join(key_of(record))})")
            )
            parsed.rejected += 1
            continue
        seen[key] = where
        if isinstance(record, VillageRecord):
            parsed.villages.append(record)
        else:
            parsed.boundaries.append(record)


def open_csv(text: str, sample: str) -> tuple[Any, list[str]]:
    """A CSV reader of ``text`` (``,`` ``;`` or tab, sniffed from ``sample``) past its
    header line, and that header; an empty or unreadable first line is an error."""
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise CoverwatchError(f"line 1: unreadable CSV: {error}") from None
    if not header:
        raise CoverwatchError("the CSV file is empty (expected a header line first)")
    return reader, header


def parse_villages_csv(text: str, *, allow_outside_vietnam: bool = False) -> Parsed:
    parsed = Parsed()
    reader, header = open_csv(text, text[:8192])
    header_fields = [_FIELD_OF.get(normalise_key(column)) for column in header]
    for column, canonical in zip(header, header_fields, strict=True):
        if canonical is None:
            parsed.problems.append(Problem("line 1", f"column {column!r} is not used", "warning"))
    missing = {"name", "lon", "lat"} - set(filter(None, header_fields))
    if missing:
        raise CoverwatchError(
            f"the CSV header has no {', '.join(sorted(missing))} column; expected columns "
            "name, commune, district, province, lon, lat, population, households, grid_power"
        )

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            line = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit()
                raise CoverwatchError(f"line {line}: unreadable CSV: {error}") from None
            if not any(value.strip() for value in values):
                continue
            fields: dict[str, Any] = {}
            for canonical, value in zip(header_fields, values, strict=False):
                if canonical is not None:
                    fields.setdefault(canonical, value)
            yield f"line {line}", fields

    def build(where: str, fields: dict[str, Any]) -> VillageRecord:
        return _village_from(fields, where, parsed.problems, allow_outside=allow_outside_vietnam)

    _collect(rows(), parsed, build, lambda record: record.key)
    return parsed


def features_of(data: Any) -> list[Any]:
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise CoverwatchError("expected a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise CoverwatchError("the GeoJSON FeatureCollection has no features list")
    return features


def feature_parts(feature: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise RowError(None, "not a GeoJSON Feature")
    properties = feature.get("properties") or {}
    geometry = feature.get("geometry")
    if not isinstance(properties, dict):
        raise RowError("properties", "expected an object")
    if geometry is not None and not isinstance(geometry, dict):
        raise RowError("geometry", "expected a GeoJSON geometry object")
    return properties, geometry


def parse_villages_geojson(data: Any, *, allow_outside_vietnam: bool = False) -> Parsed:
    parsed = Parsed()

    def build(where: str, feature: Any) -> VillageRecord:
        properties, geometry = feature_parts(feature)
        fields = _canonical_fields(properties, where, parsed.problems, warn_unknown=False)
        position: tuple[float, float] | None = None
        area: dict[str, Any] | None = None
        kind = geometry.get("type") if geometry else None
        if kind == "Point" and geometry is not None:
            coordinates = geometry.get("coordinates")
            if not isinstance(coordinates, list) or len(coordinates) < 2:
                raise RowError("geometry", "a Point needs [lon, lat] coordinates")
            position = (_number(coordinates[0], "lon"), _number(coordinates[1], "lat"))
        elif kind in ("Polygon", "MultiPolygon") and geometry is not None:
            shape = polygon_of(geometry, where, parsed.problems)
            inside = shapely.point_on_surface(shape)
            position = (float(inside.x), float(inside.y))
            area = json.loads(shapely.to_geojson(shape))
        elif geometry is not None:
            raise RowError("geometry", f"expected Point, Polygon or MultiPolygon, got {kind!r}")
        return _village_from(
            fields,
            where,
            parsed.problems,
            position=position,
            area=area,
            allow_outside=allow_outside_vietnam,
        )

    rows = ((f"features[{index}]", feature) for index, feature in enumerate(features_of(data)))
    _collect(rows, parsed, build, lambda record: record.key)
    return parsed


def parse_boundaries_geojson(data: Any, *, level: BoundaryLevel | None = None) -> Parsed:
    """Boundary polygons; ``level`` applies to features without a ``level`` property."""
    parsed = Parsed()

    def build(where: str, feature: Any) -> BoundaryRecord:
        properties, geometry = feature_parts(feature)
        fields = _canonical_fields(properties, where, parsed.problems, warn_unknown=False)
        name = text_field(fields.get("name"), "name")
        if not name:
            raise RowError("name", "is missing")
        raw_level = fields.get("level")
        found = _LEVELS.get(normalise_key(str(raw_level))) if raw_level is not None else level
        if found is None:
            raise RowError(
                "level",
                f"expected province, district or commune, got {raw_level!r}"
                if raw_level is not None
                else "is missing (give a level property or --level)",
            )
        if geometry is None:
            raise RowError("geometry", "is missing")
        shape = polygon_of(geometry, where, parsed.problems)
        parent = text_field(
            fields.get("parent") or fields.get(_PARENT_FIELD.get(found, "")), "parent"
        )
        bounds = tuple(float(b) for b in shape.bounds)
        return BoundaryRecord(
            level=found,
            name=name,
            parent=parent,
            geometry=json.loads(shapely.to_geojson(shape)),
            bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
            where=where,
        )

    rows = ((f"features[{index}]", feature) for index, feature in enumerate(features_of(data)))
    _collect(rows, parsed, build, lambda record: (record.level, record.parent, record.name))
    return parsed


def json_of(text: str, source: str) -> Any:
    """The JSON document in ``text``, or a CoverwatchError that says what is wrong with
    it (where it breaks, a number too long, nesting too deep for GeoJSON)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CoverwatchError(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno}"
        ) from None
    except ValueError as error:  # e.g. a number of more than 4,300 digits
        raise CoverwatchError(f"{source} is not valid JSON: {error}") from None
    except RecursionError:
        raise CoverwatchError(f"{source} nests too deeply to be GeoJSON") from None


def read_geojson(path: Path) -> Any:
    """A GeoJSON file's document (UTF-8, a byte-order mark allowed), or a clear error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CoverwatchError(f"{path} is not UTF-8 text (GeoJSON is UTF-8)") from None
    return json_of(text, str(path))


def read_file(
    path: Path,
    *,
    boundaries: bool = False,
    level: BoundaryLevel | None = None,
    allow_outside_vietnam: bool = False,
) -> Parsed:
    """Parse a villages CSV/GeoJSON file, or (``boundaries``) a boundaries GeoJSON file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CoverwatchError(f"{path} is not UTF-8 text (save it as CSV UTF-8)") from None
    is_json = path.suffix.lower() in (".geojson", ".json") or text.lstrip().startswith("{")
    if boundaries or is_json:
        data = json_of(text, str(path))
        if boundaries:
            return parse_boundaries_geojson(data, level=level)
        return parse_villages_geojson(data, allow_outside_vietnam=allow_outside_vietnam)
    return parse_villages_csv(text, allow_outside_vietnam=allow_outside_vietnam)


# ---------------------------------------------------------------------------- storing


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: int
    updated: int


def store_villages(
    connection: psycopg.Connection[Any], villages: list[VillageRecord], *, source: str = ""
) -> Stored:
    """Upsert in one statement; a village already known (same key) is updated in place."""
    if not villages:
        return Stored(0, 0)
    columns = list(zip(*((
        v.name, v.commune, v.district, v.province, v.lon, v.lat,
        Jsonb(v.area) if v.area is not None else None,
        v.population, v.households, v.grid_power,
    ) for v in villages), strict=True))  # fmt: skip
    rows = connection.execute(
        """INSERT INTO villages (name, commune, district, province, lon, lat, area,
                                 population, households, grid_power, source, updated_at)
           SELECT n, c, d, p, lon, lat, area, pop, hh, gp, %s, now()
           FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                       %s::float8[], %s::float8[], %s::jsonb[], %s::int[], %s::int[], %s::text[])
                AS t(n, c, d, p, lon, lat, area, pop, hh, gp)
           ON CONFLICT (province, district, commune, name) DO UPDATE
           SET lon = excluded.lon, lat = excluded.lat, area = excluded.area,
               population = excluded.population, households = excluded.households,
               grid_power = excluded.grid_power, source = excluded.source,
               updated_at = now()
           RETURNING (xmax = 0)""",
        (source, *(list(column) for column in columns)),
    ).fetchall()
    inserted = sum(1 for (new,) in rows if new)
    return Stored(inserted, len(rows) - inserted)


def store_boundaries(
    connection: psycopg.Connection[Any], boundaries: list[BoundaryRecord], *, source: str = ""
) -> Stored:
    inserted = updated = 0
    for b in boundaries:
        row = connection.execute(
            """INSERT INTO boundaries (level, name, parent, geometry,
                                       min_lon, min_lat, max_lon, max_lat, source)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (level, parent, name) DO UPDATE
               SET geometry = excluded.geometry, min_lon = excluded.min_lon,
                   min_lat = excluded.min_lat, max_lon = excluded.max_lon,
                   max_lat = excluded.max_lat, source = excluded.source, updated_at = now()
               RETURNING (xmax = 0)""",
            (b.level, b.name, b.parent, Jsonb(b.geometry), *b.bounds, source),
        ).fetchone()
        if row and row[0]:
            inserted += 1
        else:
            updated += 1
    return Stored(inserted, updated)


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class Village:
    village_id: int
    name: str
    commune: str
    district: str
    province: str
    lon: float
    lat: float
    population: int | None
    households: int | None
    grid_power: GridPower


def unknown_province(connection: psycopg.Connection[Any], province: str | None) -> str | None:
    """None when ``province`` has villages (or none is asked for); otherwise the provinces
    that do, for the error (at most 20 named, then how many in all)."""
    if province is None:
        return None
    rows = connection.execute("SELECT DISTINCT province FROM villages ORDER BY 1").fetchall()
    known = [row[0] for row in rows]
    if province in known:
        return None
    shown = ", ".join(known[:20]) + (f", … ({len(known)} in all)" if len(known) > 20 else "")
    return shown or "(no villages yet)"


def load_villages(
    connection: psycopg.Connection[Any], *, province: str | None = None
) -> list[Village]:
    rows = connection.execute(
        """SELECT village_id, name, commune, district, province, lon, lat, population,
                  households, grid_power
           FROM villages WHERE %(province)s::text IS NULL OR province = %(province)s
           ORDER BY village_id""",
        {"province": province},
    ).fetchall()
    return [Village(*row) for row in rows]


def load_boundary(
    connection: psycopg.Connection[Any], name: str, *, level: BoundaryLevel = "province"
) -> Any:
    """The (multi)polygon of one named unit, as shapely geometry in lon/lat."""
    rows = connection.execute(
        "SELECT geometry FROM boundaries WHERE level = %s AND name = %s", (level, name)
    ).fetchall()
    if not rows:
        raise CoverwatchError(
            f"no {level} boundary named {name!r}; import one with "
            "`coverwatch villages import FILE --boundaries`"
        )
    return shapely.union_all([shapely.from_geojson(json.dumps(row[0])) for row in rows])
