"""Operators' coverage claims: the service areas they publish, as GeoJSON polygons.

Operators publish where they say each technology is available (QCVN 81:2019/BTTTT,
Annex B service-area maps). A claims file is a GeoJSON FeatureCollection of Polygon or
MultiPolygon features; each feature says its operator and technology in its properties
(``operator``/``nha_mang``: a name such as ``Viettel`` or an MCC-MNC such as ``45204``;
``technology``/``cong_nghe``: ``2G``/``gsm``, ``3G``/``umts``, ``4G``/``lte``,
``5G``/``nr5g``) or takes them from ``--operator``/``--technology``; an optional
``name`` labels the area. Features are checked one by one, bad ones reported with their
index, good ones kept.

A claim is what an operator says, never a measurement: it is stored apart from every
reading and compared with them (claimed vs measured). Re-importing a file replaces
what that file (by its name) imported before for the same operator and technology, so
a corrected map replaces the old one while maps of other areas stay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
import shapely
from psycopg.types.json import Jsonb

from coverwatch.errors import CoverwatchError
from geo import registry
from geo.operators import parse_operator, parse_technology
from geo.registry import Problem, RowError
from geo.text import normalise_key

# Property names after normalise_key → the field they give.
FIELD_OF: Final[dict[str, str]] = {
    **dict.fromkeys(("operator", "nha_mang", "network", "carrier", "mccmnc", "plmn"), "operator"),
    **dict.fromkeys(("technology", "tech", "cong_nghe", "radio", "generation"), "technology"),
    **dict.fromkeys(("name", "area", "khu_vuc", "ten", "label"), "name"),
}


def operator_code(value: Any) -> str:
    """``Viettel``, ``VNPT VinaPhone`` or ``45204`` → the MCC-MNC code (a RowError if unknown)."""
    try:
        return parse_operator(value)
    except ValueError as error:
        raise RowError("operator", str(error)) from None


def technology_of(value: Any) -> str:
    """``4G``, ``LTE``, ``lte`` → ``lte`` (a RowError otherwise)."""
    try:
        return parse_technology(value)
    except ValueError as error:
        raise RowError("technology", str(error)) from None


@dataclass(frozen=True, slots=True)
class Claim:
    operator_code: str
    technology: str
    name: str
    geometry: dict[str, Any]
    bounds: tuple[float, float, float, float]
    where: str = ""


@dataclass
class ParsedClaims:
    claims: list[Claim] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: int = 0


def _fields(properties: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in properties.items():
        canonical = FIELD_OF.get(normalise_key(str(key)))
        if canonical is not None and value not in (None, ""):
            fields.setdefault(canonical, value)
    return fields


def parse_claims(
    data: Any, *, operator: str | None = None, technology: str | None = None
) -> ParsedClaims:
    """Claims from a GeoJSON FeatureCollection; ``operator``/``technology`` fill gaps."""
    default_operator = operator_code(operator) if operator else None
    default_technology = technology_of(technology) if technology else None
    parsed = ParsedClaims()
    for index, feature in enumerate(registry.features_of(data)):
        where = f"features[{index}]"
        try:
            properties, geometry = registry.feature_parts(feature)
            fields = _fields(properties)
            code = operator_code(fields["operator"]) if "operator" in fields else default_operator
            if code is None:
                raise RowError("operator", "is missing (give an operator property or --operator)")
            tech = (
                technology_of(fields["technology"])
                if "technology" in fields
                else default_technology
            )
            if tech is None:
                raise RowError(
                    "technology", "is missing (give a technology property or --technology)"
                )
            if geometry is None:
                raise RowError("geometry", "is missing")
            shape = registry.polygon_of(geometry, where, parsed.problems)
            min_lon, min_lat, max_lon, max_lat = (float(b) for b in shape.bounds)
            if not (
                registry.in_vietnam(min_lon, min_lat) and registry.in_vietnam(max_lon, max_lat)
            ):
                parsed.problems.append(
                    Problem(where, "the area reaches outside Vietnam (lon 102-110, lat 8-24)",
                            "warning", "geometry")
                )  # fmt: skip
            parsed.claims.append(
                Claim(
                    operator_code=code,
                    technology=tech,
                    name=registry.text_field(fields.get("name"), "name"),
                    geometry=json.loads(shapely.to_geojson(shape)),
                    bounds=(min_lon, min_lat, max_lon, max_lat),
                    where=where,
                )
            )
        except RowError as error:
            parsed.problems.append(Problem(where, error.message, "error", error.field))
            parsed.rejected += 1
    return parsed


def read_claims(
    path: Path, *, operator: str | None = None, technology: str | None = None
) -> ParsedClaims:
    data = registry.read_geojson(path)
    try:
        return parse_claims(data, operator=operator, technology=technology)
    except RowError as error:  # a bad --operator or --technology
        raise CoverwatchError(f"--{error.field}: {error.message}") from None


@dataclass(frozen=True, slots=True)
class StoredClaims:
    stored: int
    replaced: int


def store_claims(
    connection: psycopg.Connection[Any], claims: list[Claim], *, source: str
) -> StoredClaims:
    """Replace this source's earlier claims for the operators and technologies it holds."""
    if not claims:
        return StoredClaims(0, 0)
    pairs = sorted({(c.operator_code, c.technology) for c in claims})
    replaced = connection.execute(
        """DELETE FROM operator_claims
           WHERE source = %s
             AND (operator_code, technology) IN (SELECT * FROM unnest(%s::text[], %s::text[]))""",
        (source, [p[0] for p in pairs], [p[1] for p in pairs]),
    ).rowcount
    with connection.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO operator_claims (operator_code, technology, name, geometry,
                                            min_lon, min_lat, max_lon, max_lat, source)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                (c.operator_code, c.technology, c.name, Jsonb(c.geometry), *c.bounds, source)
                for c in claims
            ],
        )
    return StoredClaims(len(claims), replaced)


@dataclass(frozen=True, slots=True)
class ClaimSummary:
    operator_code: str
    technology: str
    source: str
    areas: int
    imported_at: Any


def list_claims(connection: psycopg.Connection[Any]) -> list[ClaimSummary]:
    rows = connection.execute(
        """SELECT operator_code, technology, source, count(*), max(imported_at)
           FROM operator_claims GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    ).fetchall()
    return [ClaimSummary(*row) for row in rows]


def load_claim_areas(connection: psycopg.Connection[Any], operator: str, technology: str) -> Any:
    """The union of what an operator claims for a technology, as shapely geometry (lon/lat)."""
    rows = connection.execute(
        "SELECT geometry FROM operator_claims WHERE operator_code = %s AND technology = %s",
        (operator, technology),
    ).fetchall()
    if not rows:
        return shapely.Polygon()
    return shapely.union_all([shapely.from_geojson(json.dumps(row[0])) for row in rows])
