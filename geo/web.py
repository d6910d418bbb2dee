"""The HTTP API and the map page: litestar on uvicorn, OpenAPI documented at ``/schema``.

Read endpoints are public; writes (``POST /api/villages``) need ``Authorization: Bearer
<token>`` — 401 without one, 403 with a wrong one, and with no token configured writes
are disabled (403 with a hint). A database that cannot be reached is 503.

No input is answered 5xx. Every parameter is checked against its rule in ``geo.params``
(400 with what is wrong and what is allowed); bodies are bounded in size (413) and in
JSON depth (400), and of a declared type (415). Errors are always JSON. The OpenAPI
document (``/schema/openapi.json``) is written from the same rules: patterns, bounds,
enums, the bearer scheme, every status and media type the server answers with —
``tests/test_api_fuzz.py`` holds the server to it with schemathesis.

Connections come from a psycopg_pool ``ConnectionPool`` opened at start-up (without
waiting: the server starts, and ``/api/health`` says when the database is not there).
Handlers are synchronous and run in litestar's thread pool.

``serve_in_thread`` runs the same app in a background thread, for a process (the
collector) that hosts the API beside its own work.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import anyio
import msgspec
import psycopg
import uvicorn
from litestar import HttpMethod, Litestar, MediaType, Request, Response, get, post, route
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, Operation, SecurityScheme
from litestar.params import FromPath, HeaderParameter, Parameter, QueryParameter
from litestar.response import File
from psycopg_pool import ConnectionPool, PoolTimeout

from coverwatch import __version__
from coverwatch.errors import ConfigError, CoverwatchError, ServiceError
from coverwatch.settings import redact_url
from geo import maps, params, registry, report
from geo import sites as geo_sites
from geo.analysis import analyse
from geo.assessment import assess
from geo.assets import STATIC_DIR
from geo.cache import DEFAULT_CACHE_S, AnswerCache
from geo.claims_check import by_commune, compare_claims
from geo.compression import Encoded, accepts_gzip
from geo.coverage import TimeWindow, by_probe, probe_coverage
from geo.deadzones import probe_dead_zones
from geo.evidence import EVIDENCE_KINDS
from geo.operators import CODE_OF_NAME, OPERATOR_NAMES
from geo.probes import PROBE_STATES, probe_health
from geo.status import DEFAULT_RADIUS_M, VillageStatus, refresh_nearby
from geo.thresholds import COVERAGE_CLASSES

logger = logging.getLogger("coverwatch.geo.web")

STATIC_URL: Final = "/static"
GEOJSON: Final = "application/geo+json"
DEAD_CHOICES: Final = ("none", "none,poor")
UNCOVERED_FORMATS: Final = ("json", "csv", "table")
BEARER_SCHEME: Final = "bearer"
CSV_TYPES: Final = ("text/csv", "text/plain")
JSON_TYPES: Final = ("application/geo+json", "application/json")

# ------------------------------------------------------------------ query parameters
#
# The type litestar reads is only the first check (a number, a boolean); each value is
# then checked by the function named beside it, against the rule in geo.params that
# ``schema_extra`` puts in the OpenAPI document.


def _text_schema(**extra: Any) -> dict[str, Any]:
    return {
        "pattern": params.TEXT_PATTERN,
        "minLength": 1,
        "maxLength": params.MAX_TEXT_CHARS,
        **extra,
    }


Window = Annotated[
    str,
    Parameter(
        description="time window of readings up to now: a positive number and s, m, h, d or "
        f"w (12h, 30d, 4w), at most {params.MAX_WINDOW_DAYS}d; ignored when since is given",
        schema_extra={"pattern": params.DURATION_PATTERN, "examples": ["30d", "12h", "4w"]},
    ),
]  # _window
Since = Annotated[
    str | None,
    Parameter(
        description="start of the window, ISO 8601 (2026-11-01, 2026-11-01T08:00:00+07:00; "
        f"UTC without an offset), in the past and at most {params.MAX_WINDOW_DAYS} days ago",
        schema_extra={"pattern": params.SINCE_PATTERN, "examples": ["2026-11-01"]},
    ),
]  # _window
RadiusKm = Annotated[
    float,
    Parameter(
        description="probes within this distance speak for a village (km), "
        f"0 < radius_km ≤ {params.MAX_RADIUS_KM:g}",
        schema_extra={"exclusiveMinimum": 0, "maximum": params.MAX_RADIUS_KM},
    ),
]  # _radius_m
Province = Annotated[
    str | None,
    Parameter(
        description="only this province's villages (a province that has villages)",
        schema_extra=_text_schema(examples=["Cao Bằng"]),
    ),
]  # _province
Operator = Annotated[
    str | None,
    Parameter(
        description="operator name (any case) or MCC-MNC code: "
        + ", ".join(f"{name} ({code})" for code, name in OPERATOR_NAMES.items()),
        schema_extra={"pattern": params.OPERATOR_PATTERN, "examples": ["Viettel", "45204"]},
    ),
]  # _operator


def bad_parameter(name: str, problem: str, allowed: str) -> ValidationException:
    return ValidationException(
        detail=f"{name}: {problem}; allowed: {allowed}",
        extra={"parameter": name, "allowed": allowed},
    )


def _from_config_error(error: ConfigError) -> ValidationException:
    """A rule of geo.params broken: the CLI's ``--window`` is the API's ``window``."""
    return bad_parameter(error.setting.lstrip("-"), error.problem, error.hint)


def _window(window: str, since: str | None) -> TimeWindow:
    try:
        return params.parse_window(since, None if since is not None else window)
    except ConfigError as error:
        raise _from_config_error(error) from None


def _radius_m(radius_km: float) -> float:
    if not 0 < radius_km <= params.MAX_RADIUS_KM:  # also NaN
        raise bad_parameter(
            "radius_km",
            f"{radius_km:g} is out of range",
            f"0 < radius_km ≤ {params.MAX_RADIUS_KM:g}",
        )
    return radius_km * 1000


def _operator(value: str | None) -> str | None:
    """A name (any case) or MCC-MNC code → the code readings carry."""
    if value is None:
        return None
    if not re.fullmatch(params.OPERATOR_PATTERN, value):
        allowed = ", ".join(f"{name} ({code})" for code, name in OPERATOR_NAMES.items())
        raise bad_parameter(
            "operator", f"unknown operator {value!r}", f"{allowed}, or any 5-6 digit MCC-MNC code"
        )
    return CODE_OF_NAME.get(value.lower(), value)


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise bad_parameter(name, f"unknown value {value!r}", ", ".join(allowed))
    return value


def _text(name: str, value: str | None) -> str | None:
    """Free text (a province, a source): short, without control characters."""
    if value is not None:
        problem = params.text_problem(value)
        if problem is not None:
            raise bad_parameter(name, f"{value[:40]!r} {problem}", params.text_allowed())
    return value


def _limit(value: str | None) -> int | None:
    """A whole number in range (read here: litestar reads ``limit=null`` as no limit)."""
    if value is None:
        return None
    allowed = f"a whole number, 1 ≤ limit ≤ {params.MAX_LIMIT}"
    if not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise bad_parameter("limit", f"{value[:40]!r} is not a whole number", allowed)
    limit = int(value)
    if not 1 <= limit <= params.MAX_LIMIT:
        raise bad_parameter("limit", f"{limit} is out of range", allowed)
    return limit


# -------------------------------------------------------------------------- OpenAPI
#
# litestar documents parameters from the handlers' signatures (with the rules above in
# schema_extra); what it cannot see is written here as JSON Schema and put in by the
# handlers' operation class: each response the server really gives (status, media
# type, body), the request body of the import, and optional parameters as plain
# strings rather than "string or null" (a query string has no null).


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_CLASS = {"enum": list(COVERAGE_CLASSES)}

ERROR_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["status_code", "detail"],
    "properties": {
        "status_code": _INTEGER,
        "detail": {"type": "string", "description": "what is wrong, and what is allowed"},
        "extra": {
            "type": ["object", "array"],
            "description": "for a bad parameter: its name and what it allows",
        },
        "hint": {"type": "string", "description": "how to put it right"},
    },
}
_WINDOW_PROPERTIES: Final = {"since": _TIMESTAMP, "until": _TIMESTAMP}
_OPERATOR_COVERAGE: Final = {
    "type": "object",
    "required": ["operator", "coverage_class", "availability_pct"],
    "properties": {
        "operator": _STRING,
        "operator_name": _STRING,
        "coverage_class": _CLASS,
        "availability_pct": _NUMBER,
        "readings": _INTEGER,
        "probes": _INTEGER,
        "technologies": {"type": "array", "items": {"type": "object"}},
        "evidence": {
            "const": "probe",
            "description": "measured by nearby probes (villages): the only evidence of coverage",
        },
    },
}
_SCAN_EVIDENCE: Final = {
    "type": "object",
    "description": "an operator no nearby probe measured that a nearby probe's network scan "
    "heard: on air there, never a coverage class",
    "required": ["operator", "evidence", "probes", "last_scan_at"],
    "properties": {
        "operator": _STRING,
        "operator_name": _STRING,
        "evidence": {"const": "scan"},
        "technologies": {"type": "array", "items": _STRING},
        "statuses": {
            "type": "array",
            "items": {"enum": ["available", "current", "forbidden", "unknown"]},
        },
        "best_rsrp_dbm": _nullable(_NUMBER),
        "best_rssi_dbm": _nullable(_NUMBER),
        "probes": _INTEGER,
        "nearest_probe_m": _NUMBER,
        "last_scan_at": _TIMESTAMP,
    },
}
HEALTH_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["version", "database", "status"],
    "properties": {
        "version": _STRING,
        "database": {"enum": ["reachable", "unreachable"]},
        "schema_version": _nullable(_INTEGER),
        "villages_table": {"type": "boolean"},
        "status": {"type": "string", "description": "ok, or what is wrong"},
        "error": _STRING,
    },
}
PROBES_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["since", "until", "probes"],
    "properties": {
        **_WINDOW_PROPERTIES,
        "probes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["probe_id", "status", "coverage_class", "operators"],
                "properties": {
                    "probe_id": _STRING,
                    "village": _nullable(_STRING),
                    "lon": _nullable(_NUMBER),
                    "lat": _nullable(_NUMBER),
                    "status": {"enum": list(PROBE_STATES)},
                    "coverage_class": _CLASS,
                    "measured_pct": _NUMBER,
                    "rtt_ms": _nullable(_NUMBER),
                    "loss_pct": _nullable(_NUMBER),
                    "latency_rounds": _INTEGER,
                    "outages": _INTEGER,
                    "outage_s": _NUMBER,
                    "last_seen": _nullable(_TIMESTAMP),
                    "state_changed_at": _nullable(_TIMESTAMP),
                    "operators": {"type": "array", "items": _OPERATOR_COVERAGE},
                },
            },
        },
    },
}
_POINT: Final = {
    "type": "object",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"const": "Point"},
        "coordinates": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
    },
}
VILLAGES_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "a GeoJSON FeatureCollection of Points, one a village",
    "required": ["type", "since", "until", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        **_WINDOW_PROPERTIES,
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "id", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "id": _INTEGER,
                    "geometry": _POINT,
                    "properties": {
                        "type": "object",
                        "required": ["village_id", "name", "status", "availability_pct"],
                        "properties": {
                            "village_id": _INTEGER,
                            "name": _STRING,
                            "commune": _STRING,
                            "district": _STRING,
                            "province": _STRING,
                            "status": _CLASS,
                            "availability_pct": _nullable(_NUMBER),
                            "nearest_probe_id": _nullable(_STRING),
                            "nearest_probe_m": _nullable(_NUMBER),
                            "nearby_probes": {"type": "array", "items": {"type": "object"}},
                            "operators": {"type": "array", "items": _OPERATOR_COVERAGE},
                            "scan_evidence": {"type": "array", "items": _SCAN_EVIDENCE},
                        },
                    },
                },
            },
        },
    },
}
DEADZONES_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "a GeoJSON FeatureCollection: the covered, dead and unmeasured areas",
    "required": ["type", "features", "area", "since", "until"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "area": {"type": "string", "description": "what the zones are clipped to"},
        **_WINDOW_PROPERTIES,
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "properties", "geometry"],
                "properties": {
                    "type": {"const": "Feature"},
                    "properties": {
                        "type": "object",
                        "required": ["state", "area_km2"],
                        "properties": {
                            "state": {"enum": ["covered", "dead", "unmeasured"]},
                            "area_km2": _NUMBER,
                        },
                    },
                    "geometry": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": _STRING},
                    },
                },
            },
        },
    },
}
_OPERATOR_VERDICT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["operator", "evidence", "p_usable", "rsrp_dbm", "sigma_db", "detail"],
    "properties": {
        "operator": _STRING,
        "evidence": {"enum": list(EVIDENCE_KINDS)},
        "p_usable": _nullable(_NUMBER),
        "rsrp_dbm": _nullable(_NUMBER),
        "sigma_db": _nullable(_NUMBER),
        "detail": _STRING,
    },
}
EVIDENCE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["since", "until", "villages"],
    "properties": {
        **_WINDOW_PROPERTIES,
        "villages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["village_id", "name", "evidence", "no_service", "p_no_service"],
                "properties": {
                    "village_id": _INTEGER,
                    "name": _STRING,
                    "evidence": {"enum": list(EVIDENCE_KINDS)},
                    "no_service": {"type": "boolean"},
                    "p_no_service": _nullable(_NUMBER),
                    "operators": {"type": "array", "items": _OPERATOR_VERDICT},
                },
            },
        },
    },
}
SITES_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "features", "since", "until", "candidates"],
    "properties": {
        **_WINDOW_PROPERTIES,
        "type": {"const": "FeatureCollection"},
        "candidates": _INTEGER,
        "expected_population_served": _NUMBER,
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"const": "Feature"},
                    "geometry": {"type": "object"},
                    "properties": {
                        "type": "object",
                        "required": ["rank", "candidate_id", "operator", "villages"],
                    },
                },
            },
        },
    },
}
CLAIM_GAPS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["since", "until", "villages", "communes"],
    "properties": {
        **_WINDOW_PROPERTIES,
        "villages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["operator", "direction", "village_id", "name", "evidence"],
                "properties": {
                    "operator": _STRING,
                    "direction": {"enum": ["claimed_not_served", "served_not_claimed"]},
                    "village_id": _INTEGER,
                    "name": _STRING,
                    "population": _nullable(_INTEGER),
                    "evidence": _OPERATOR_VERDICT,
                },
            },
        },
        "communes": {"type": "array", "items": {"type": "object"}},
    },
}
UNCOVERED_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["since", "until", "villages"],
    "properties": {
        **_WINDOW_PROPERTIES,
        "villages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rank", "name", "status", "uncovered_score"],
                "properties": {
                    "rank": _INTEGER,
                    "name": _STRING,
                    "commune": _STRING,
                    "district": _STRING,
                    "province": _STRING,
                    "population": _nullable(_INTEGER),
                    "households": _nullable(_INTEGER),
                    "status": _CLASS,
                    "best_operator": _nullable(_STRING),
                    "best_availability_pct": _nullable(_NUMBER),
                    "uncovered_score": _nullable(_NUMBER),
                    "nearest_probe_id": _nullable(_STRING),
                    "nearest_probe_km": _nullable(_NUMBER),
                    "measured_pct": _nullable(_NUMBER),
                    "grid_power": {"enum": ["yes", "no", "unknown"]},
                    "power_outages": _nullable(_INTEGER),
                    "outage_hours": _nullable(_NUMBER),
                    "availability_pct": {"type": "object", "additionalProperties": _NUMBER},
                },
            },
        },
    },
}
IMPORT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["inserted", "updated", "rejected", "warnings", "problems"],
    "properties": {
        "inserted": _INTEGER,
        "updated": _INTEGER,
        "rejected": _INTEGER,
        "warnings": _INTEGER,
        "problems": {"type": "array", "items": _STRING, "description": "one per row problem"},
    },
}
# What the import reads: a FeatureCollection (its features are checked one by one, a bad
# one is a rejected row), or one Feature.
GEOJSON_BODY_SCHEMA: Final[dict[str, Any]] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "features"],
            "properties": {
                "type": {"const": "FeatureCollection"},
                "features": {"type": "array", "items": {}},
            },
        },
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "Feature"}}},
    ],
}
VILLAGES_CSV_EXAMPLE: Final = (
    "name,commune,district,province,lon,lat,population\n"
    "Nà Pài,Quang Trung,Trùng Khánh,Cao Bằng,106.52,22.8301,420\n"
)


def _content(schema: dict[str, Any], *media_types: str) -> dict[str, Any]:
    return {media_type: {"schema": schema} for media_type in media_types}


def _response(description: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": content, **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return _response(description, _content(ERROR_SCHEMA, MediaType.JSON), **extra)


_BAD_REQUEST: Final = _error("a parameter breaks its rule: the detail names it and what is allowed")
_UNAVAILABLE: Final = _error("the database cannot be reached, or its schema is incomplete")


def _reading(ok: dict[str, Any]) -> dict[str, Any]:
    """The responses of a read endpoint: ``ok`` (200), 400 and 503."""
    return {"200": ok, "400": _BAD_REQUEST, "503": _UNAVAILABLE}


IMPORT_RESPONSES: Final[dict[str, Any]] = {
    "200": _response(
        "rows stored (inserted or updated) and rows rejected, each problem with its place",
        _content(IMPORT_SCHEMA, MediaType.JSON),
    ),
    "400": _error(
        "a bad parameter, or a body that cannot be read: not UTF-8, not CSV with a header "
        f"line, invalid JSON, JSON nested deeper than {params.MAX_JSON_DEPTH} levels, not a "
        "GeoJSON FeatureCollection or Feature"
    ),
    "401": _error(
        "no 'Authorization: Bearer <token>' header",
        headers={
            "WWW-Authenticate": {
                "description": 'Bearer realm="coverwatch"',
                "required": True,
                "schema": _STRING,
            }
        },
    ),
    "403": _error(
        "the bearer token is not the write token, or writes are disabled on this server "
        "(started without --write-token-file)"
    ),
    "413": _error(f"the body is larger than {params.MAX_BODY_BYTES} bytes"),
    "415": _error(f"the body is not one of {', '.join(CSV_TYPES + JSON_TYPES)}"),
    "503": _UNAVAILABLE,
}
IMPORT_REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": "a villages CSV (UTF-8, a header line first; `,` `;` or tab) or GeoJSON, "
    f"at most {params.MAX_BODY_BYTES} bytes; the columns of `coverwatch villages import` "
    "(geo/README.md). Without a Content-Type, a body starting with `{` is read as GeoJSON.",
    "content": {
        "text/csv": {"schema": _STRING, "example": VILLAGES_CSV_EXAMPLE},
        **_content(GEOJSON_BODY_SCHEMA, *JSON_TYPES),
    },
}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"oneOf": [{"type": "string"}, {"type": "null"}], …}`` → ``{"type": "string", …}``."""
    choices = schema.get("oneOf")
    if not isinstance(choices, list):
        return schema
    kept = [choice for choice in choices if choice != {"type": "null"}]
    if len(kept) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "oneOf"}
    return {**kept[0], **rest}


def documented(
    responses: dict[str, Any], request_body: dict[str, Any] | None = None
) -> type[Operation]:
    """An operation class whose OpenAPI form has these responses (and request body)."""

    class Documented(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            for parameter in schema.get("parameters", []):
                parameter["schema"] = _without_null(parameter["schema"])
            schema["responses"] = responses
            if request_body is not None:
                schema["requestBody"] = request_body
            return schema

    return Documented


# ------------------------------------------------------------------------- database


def _pool(state: State) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = state.pool
    return pool


def _cache(state: State) -> AnswerCache:
    cache: AnswerCache = state.cache
    return cache


def _cache_headers(state: State, age_s: float) -> dict[str, str]:
    """How long the answer may still be used: what is left of the cache's max age."""
    remaining = max(0, int(_cache(state).max_age_s - age_s))
    return {"Cache-Control": f"public, max-age={remaining}", "Age": str(int(age_s))}


def _encoded_response(
    state: State, encoded: Encoded, age_s: float, accept_encoding: str | None, media_type: str
) -> Response[bytes]:
    """The cached answer, gzipped when the client accepts it (compressed once, cached)."""
    headers = {**_cache_headers(state, age_s), "Vary": "Accept-Encoding"}
    if accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return Response(encoded.gzipped, media_type=media_type, headers=headers)
    return Response(encoded.identity, media_type=media_type, headers=headers)


AcceptEncoding = Annotated[
    str | None,
    HeaderParameter(
        name="Accept-Encoding",
        description="gzip: the answer comes gzipped (8-10x smaller for a province)",
        required=False,
    ),
]


@contextmanager
def _connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    try:
        with _pool(state).connection(timeout=state.connect_timeout_s) as connection:
            yield connection
    except PoolTimeout:
        raise HTTPException(
            status_code=503,
            detail=f"database unreachable: {redact_url(state.database_url)}",
            extra={"hint": "check that PostgreSQL is running; see GET /api/health"},
        ) from None


def _check_province(connection: psycopg.Connection[Any], province: str | None) -> None:
    known = registry.unknown_province(connection, province)
    if known is not None:
        raise bad_parameter("province", f"no villages in {province!r}", known)


# ---------------------------------------------------------------------------- handlers


@get(
    "/api/health",
    sync_to_thread=True,
    tags=["status"],
    operation_class=documented(
        {
            "200": _response(
                "the database is reachable and migrated", _content(HEALTH_SCHEMA, MediaType.JSON)
            ),
            "503": _response(
                "the database is unreachable, or its schema is missing",
                _content(HEALTH_SCHEMA, MediaType.JSON),
            ),
        }
    ),
)
def health(state: State) -> Response[dict[str, Any]]:
    """Is the database reachable, and which schema version does it have."""
    body: dict[str, Any] = {"version": __version__, "database": "unreachable"}
    try:
        with _pool(state).connection(timeout=state.connect_timeout_s) as connection:
            body["database"] = "reachable"
            migrations = connection.execute(
                "SELECT to_regclass('schema_migrations') IS NOT NULL"
            ).fetchone()
            version = None
            if migrations and migrations[0]:
                row = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()
                version = row[0] if row else None
            villages = connection.execute("SELECT to_regclass('villages') IS NOT NULL").fetchone()
            body["schema_version"] = version
            body["villages_table"] = bool(villages and villages[0])
    except (PoolTimeout, psycopg.OperationalError) as error:
        body["error"] = str(error).strip().splitlines()[0] if str(error) else "timeout"
        return Response(body | {"status": "unavailable"}, status_code=503)
    ok = body["villages_table"]
    body["status"] = "ok" if ok else "schema missing: run `coverwatch db upgrade`"
    return Response(body, status_code=200 if ok else 503)


@get(
    "/api/probes",
    sync_to_thread=True,
    tags=["probes"],
    operation_class=documented(
        _reading(
            _response(
                "every probe with its status and coverage", _content(PROBES_SCHEMA, MediaType.JSON)
            )
        )
    ),
)
def list_probes(
    state: State,
    window: Window = "30d",
    since: Since = None,
    status: Annotated[
        str | None,
        Parameter(description=", ".join(PROBE_STATES), schema_extra={"enum": list(PROBE_STATES)}),
    ] = None,
) -> dict[str, Any]:
    """Every probe with its status (from probe_health) and coverage over the window."""
    span = _window(window, since)
    wanted = _choice("status", status, PROBE_STATES)
    with _connection(state) as connection:
        probes = probe_coverage(connection, span)
        health_of = probe_health(connection)
    result = []
    for probe in probes:
        health_row = health_of.get(probe.probe_id)
        item = probe.to_dict() | (
            health_row.to_dict()
            if health_row
            else {"status": "unknown", "last_seen": None, "state_changed_at": None}
        )
        if wanted is None or item["status"] == wanted:
            result.append(item)
    return {"since": span.start.isoformat(), "until": span.end.isoformat(), "probes": result}


def _statuses(
    connection: psycopg.Connection[Any], span: TimeWindow, radius_m: float, province: str | None
) -> tuple[list[VillageStatus], list[Any]]:
    analysis = analyse(connection, span, radius_m=radius_m, province=province)
    return analysis.statuses, analysis.probes


def _village_feature(status: VillageStatus, operator: str | None) -> dict[str, Any]:
    properties = status.to_dict()
    lon, lat = properties.pop("lon"), properties.pop("lat")
    if operator is not None:
        mine = next((o for o in status.operators if o.operator == operator), None)
        properties["status"] = "unmeasured" if mine is None else mine.coverage_class
        properties["availability_pct"] = None if mine is None else round(mine.availability_pct, 1)
    else:
        best = status.best
        properties["availability_pct"] = None if best is None else round(best.availability_pct, 1)
    return {
        "type": "Feature",
        "id": status.village.village_id,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": properties,
    }


@get(
    "/api/villages",
    tags=["villages"],
    media_type=GEOJSON,
    operation_class=documented(
        _reading(
            _response(
                "villages with their coverage status (GeoJSON)", _content(VILLAGES_SCHEMA, GEOJSON)
            )
        )
    ),
)
async def list_villages(
    state: State,
    operator: Operator = None,
    province: Province = None,
    status: Annotated[
        str | None,
        Parameter(
            description="good, fair, poor, none or unmeasured (of operator when given)",
            schema_extra={"enum": list(COVERAGE_CLASSES)},
        ),
    ] = None,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
    accept_encoding: AcceptEncoding = None,
) -> Response[bytes]:
    """Villages as a GeoJSON FeatureCollection with their coverage status."""
    # async, with the work in a thread: litestar 2.25 wraps a sync handler twice when a
    # GET and a POST handler share a path, and the GET then returns a coroutine.
    return await anyio.to_thread.run_sync(
        functools.partial(
            _villages,
            state,
            operator,
            province,
            status,
            window,
            since,
            radius_km,
            accept_encoding,
        )
    )


def _villages(
    state: State,
    operator: str | None,
    province: str | None,
    status: str | None,
    window: str,
    since: str | None,
    radius_km: float,
    accept_encoding: str | None,
) -> Response[bytes]:
    code = _operator(operator)
    _text("province", province)
    wanted = _choice("status", status, COVERAGE_CLASSES)
    span = _window(window, since)
    radius_m = _radius_m(radius_km)

    def compute() -> Encoded:
        with _connection(state) as connection:
            refresh_nearby(connection, radius_m=radius_m)
            _check_province(connection, province)
            statuses, _ = _statuses(connection, span, radius_m, province)
        features = [_village_feature(s, code) for s in statuses]
        if wanted is not None:
            features = [f for f in features if f["properties"]["status"] == wanted]
        body = {
            "type": "FeatureCollection",
            "since": span.start.isoformat(),
            "until": span.end.isoformat(),
            "features": features,
        }
        return Encoded.of(msgspec.json.encode(body))

    key = ("villages", code, province, wanted, window, since, radius_m)
    content, age = _cache(state).get(key, compute)
    return _encoded_response(state, content, age, accept_encoding, GEOJSON)


@get(
    "/api/deadzones",
    sync_to_thread=True,
    tags=["coverage"],
    media_type=GEOJSON,
    operation_class=documented(
        _reading(
            _response(
                "covered, dead and unmeasured areas with their km² (GeoJSON)",
                _content(DEADZONES_SCHEMA, GEOJSON),
            )
        )
    ),
)
def deadzones(
    state: State,
    operator: Operator = None,
    province: Province = None,
    dead: Annotated[
        str,
        Parameter(
            description="classes counted as dead: none, or none,poor",
            schema_extra={"enum": list(DEAD_CHOICES)},
        ),
    ] = "none",
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> Response[dict[str, Any]]:
    """Covered, dead and unmeasured areas (GeoJSON), clipped to the province boundary."""
    code = _operator(operator)
    _text("province", province)
    if dead not in DEAD_CHOICES:
        raise bad_parameter("dead", f"cannot use {dead!r}", "none, or none,poor")
    dead_classes = set(dead.split(","))
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    with _connection(state) as connection:
        refresh_nearby(connection, radius_m=radius_m)
        _check_province(connection, province)
        statuses, probes = _statuses(connection, span, radius_m, province)
        boundaries = maps.load_boundaries(connection, province=province)
    shape, area = maps.zone_area(boundaries, statuses, probes, radius_m)
    if shape is None:
        body: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    else:
        zones = probe_dead_zones(
            probes, shape, operator=code, radius_m=radius_m, dead_classes=dead_classes
        )
        body = zones.to_geojson()
    body |= {"area": area, "since": span.start.isoformat(), "until": span.end.isoformat()}
    return Response(body, media_type=GEOJSON)


@get(
    "/api/uncovered",
    sync_to_thread=True,
    tags=["coverage"],
    operation_class=documented(
        _reading(
            _response(
                "the ranking: JSON, CSV or an aligned text table (format=)",
                _content(UNCOVERED_SCHEMA, MediaType.JSON)
                | _content(_STRING, "text/csv", MediaType.TEXT),
            )
        )
    ),
)
def uncovered(
    state: State,
    limit: Annotated[
        str | None,
        Parameter(
            description=f"at most this many rows (1 to {params.MAX_LIMIT})",
            schema_extra={"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT},
        ),
    ] = None,
    format: Annotated[
        str,
        Parameter(description="json, csv or table", schema_extra={"enum": list(UNCOVERED_FORMATS)}),
    ] = "json",
    province: Province = None,
    all_villages: Annotated[
        bool, QueryParameter(name="all", description="include villages with full availability")
    ] = False,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> Response[Any]:
    """Villages without coverage, ranked by population x unavailability (as the CLI report)."""
    fmt = _choice("format", format, UNCOVERED_FORMATS) or "json"
    rows_wanted = _limit(limit)
    _text("province", province)
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    with _connection(state) as connection:
        refresh_nearby(connection, radius_m=radius_m)
        _check_province(connection, province)
        statuses, probes = _statuses(connection, span, radius_m, province)
    rows = report.rank_uncovered(statuses, by_probe(probes), include_all=all_villages)
    if rows_wanted is not None:
        rows = rows[:rows_wanted]
    if fmt == "csv":
        return Response(report.to_csv(rows), media_type="text/csv; charset=utf-8")
    if fmt == "table":
        return Response(report.to_table(rows), media_type=MediaType.TEXT)
    return Response(
        {
            "since": span.start.isoformat(),
            "until": span.end.isoformat(),
            "villages": [row.to_dict() for row in rows],
        }
    )


@get(
    "/api/evidence",
    sync_to_thread=True,
    tags=["coverage"],
    operation_class=documented(
        _reading(
            _response(
                "every village's verdict and the evidence it rests on: probe, survey, "
                "predicted (with its probability) or unknown",
                _content(EVIDENCE_SCHEMA, MediaType.JSON),
            )
        )
    ),
)
def evidence(
    state: State, province: Province = None, window: Window = "30d", since: Since = None
) -> dict[str, Any]:
    """Measured where a probe stands in the village or a survey passed near it; elsewhere
    predicted from the tower registry, calibrated on the measurements (geo.prediction).
    Sorted by the probability of no service, highest first."""
    _text("province", province)
    span = _window(window, since)
    with _connection(state) as connection:
        refresh_nearby(connection)
        _check_province(connection, province)
        assessment = assess(connection, span, province=province)
    ordered = sorted(
        assessment.verdicts,
        key=lambda v: (-(v.p_no_service or 0.0), -(v.village.population or 0), v.village.name),
    )
    return {
        "since": span.start.isoformat(),
        "until": span.end.isoformat(),
        "villages": [v.to_dict() for v in ordered],
    }


@get(
    "/api/claims/check",
    sync_to_thread=True,
    tags=["coverage"],
    operation_class=documented(
        _reading(
            _response(
                "villages where an operator's claimed 4G area and the evidence disagree",
                _content(CLAIM_GAPS_SCHEMA, MediaType.JSON),
            )
        )
    ),
)
def claims_check(
    state: State,
    operator: Operator = None,
    province: Province = None,
    window: Window = "30d",
    since: Since = None,
) -> dict[str, Any]:
    """Claimed as covered where the evidence finds no service, and served where nothing
    is claimed; per village (largest population first) and per commune."""
    code = _operator(operator)
    _text("province", province)
    span = _window(window, since)
    with _connection(state) as connection:
        refresh_nearby(connection)
        _check_province(connection, province)
        assessment = assess(connection, span, province=province)
        gaps = compare_claims(
            connection, assessment.verdicts, operators=None if code is None else [code]
        )
    communes = [c.to_dict() for c in by_commune(gaps)]
    return {
        "since": span.start.isoformat(),
        "until": span.end.isoformat(),
        "villages": [g.to_dict() for g in gaps],
        "communes": communes,
    }


@get(
    "/api/sites",
    sync_to_thread=True,
    tags=["coverage"],
    media_type=GEOJSON,
    operation_class=documented(
        _reading(
            _response(
                "recommended tower sites for an operator, ranked (GeoJSON points)",
                _content(SITES_SCHEMA, GEOJSON),
            )
        )
    ),
)
def recommended_sites(
    state: State,
    operator: Annotated[
        str,
        Parameter(
            description="whose towers: a name (any case) or MCC-MNC code",
            schema_extra={"pattern": params.OPERATOR_PATTERN, "examples": ["Viettel"]},
        ),
    ],
    sites: Annotated[
        int,
        Parameter(
            description="number of sites, 1 to 50", schema_extra={"minimum": 1, "maximum": 50}
        ),
    ] = 5,
    min_p: Annotated[
        float,
        Parameter(
            description="a site serves a village at this probability of usable service",
            schema_extra={"exclusiveMinimum": 0, "maximum": 1},
        ),
    ] = 0.8,
    province: Province = None,
    window: Window = "30d",
    since: Since = None,
) -> Response[dict[str, Any]]:
    """Grid candidates over the villages (2 km, within 5 km of a village), weighed with the
    operator's calibrated model against each village's p(no service), chosen greedily
    (geo.sites; `coverwatch sites recommend` has every option)."""
    code = _operator(operator)
    assert code is not None
    if not 1 <= sites <= 50:
        raise bad_parameter("sites", f"{sites} is out of range", "1 to 50")
    if not (0 < min_p <= 1):
        raise bad_parameter("min_p", f"{min_p} is out of range", "more than 0, at most 1")
    _text("province", province)
    span = _window(window, since)
    options = geo_sites.SiteOptions(operator=code, sites=sites, min_p=min_p)
    with _connection(state) as connection:
        refresh_nearby(connection)
        _check_province(connection, province)
        result = geo_sites.recommend(connection, span, options, province=province)
    body = geo_sites.to_geojson(result.rows) | {
        "since": span.start.isoformat(),
        "until": span.end.isoformat(),
        "candidates": result.candidates,
        "expected_population_served": round(result.selection.objective, 1),
    }
    return Response(body, media_type=GEOJSON)


@get(
    "/map",
    sync_to_thread=True,
    media_type=MediaType.HTML,
    tags=["map"],
    operation_class=documented(
        _reading(
            _response(
                "the coverage map page; its scripts and styles are under /static",
                _content(_STRING, MediaType.HTML),
            )
        )
    ),
)
def coverage_map(
    state: State,
    province: Province = None,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
    evidence: Annotated[
        bool,
        QueryParameter(
            description="add the evidence view (measured / predicted verdicts), shown first"
        ),
    ] = False,
    sites_operator: Annotated[
        str | None,
        Parameter(
            description="add a layer of proposed tower sites (5) for this operator",
            schema_extra={"pattern": params.OPERATOR_PATTERN, "examples": ["Viettel"]},
        ),
    ] = None,
    accept_encoding: AcceptEncoding = None,
) -> Response[bytes]:
    """The coverage map (HTML; its scripts and styles are served under /static)."""
    _text("province", province)
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    sites_code = _operator(sites_operator)
    site_options = None if sites_code is None else geo_sites.SiteOptions(operator=sites_code)

    def compute() -> Encoded:
        with _connection(state) as connection:
            refresh_nearby(connection, radius_m=radius_m)
            _check_province(connection, province)
            data = maps.collect(
                connection,
                span,
                radius_m=radius_m,
                province=province,
                evidence=evidence,
                sites=site_options,
            )
        page = maps.render(
            data,
            static_url=STATIC_URL,
            tiles=state.tiles,
            tiles_attribution=state.tiles_attribution,
        )
        return Encoded.of(page.encode("utf-8"))

    page, age = _cache(state).get(("map", province, window, since, radius_m, evidence), compute)
    return _encoded_response(state, page, age, accept_encoding, MediaType.HTML)


_STATIC_ROOT: Final = Path(STATIC_DIR).resolve()


@route(
    f"{STATIC_URL}/{{path:path}}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    include_in_schema=False,
    sync_to_thread=False,
)
def static_asset(path: FromPath[str]) -> File:
    """A vendored script, style or image of the map, from geo/static only.

    The path is checked before the file system sees it: a control character (NUL
    makes ``os.stat`` raise) is a 400, and ``..``, an empty segment, a link leading
    out of geo/static, a directory or a missing file are a 404 that names no server
    path.
    """
    relative = path.strip("/")
    for index, char in enumerate(relative):
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or char == "\\":
            raise bad_parameter(
                "path",
                f"has {'a backslash' if char == chr(92) else 'a control character'} "
                f"(U+{ord(char):04X}) at position {index}",
                f"the name of a file under {STATIC_URL}/",
            )
    parts = relative.split("/")
    missing = NotFoundException(detail=f"no file {STATIC_URL}/{relative[:200]}")
    if not relative or any(part in ("", ".", "..") for part in parts):
        raise missing
    try:
        resolved = _STATIC_ROOT.joinpath(*parts).resolve(strict=True)
        if not (resolved.is_relative_to(_STATIC_ROOT) and resolved.is_file()):
            raise missing
    except (OSError, ValueError):  # too long a name, unencodable, …
        raise missing from None
    return File(path=resolved, filename=resolved.name, content_disposition_type="inline")


def require_write_token(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard for writes: a Bearer token equal to the configured one."""
    expected: str | None = connection.app.state.write_token
    if not expected:
        raise PermissionDeniedException(
            detail="writes are disabled on this server",
            extra={"hint": "start it with `coverwatch serve --write-token-file FILE`"},
        )
    scheme, _space, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            detail="this endpoint needs an 'Authorization: Bearer <token>' header",
            headers={"WWW-Authenticate": 'Bearer realm="coverwatch"'},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise PermissionDeniedException(detail="the bearer token is not the write token")


def _body_kind(content_type: str | None) -> str | None:
    """``csv`` or ``json`` from the Content-Type; None without one (the body decides)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if not media_type:
        return None
    if media_type in CSV_TYPES:
        return "csv"
    if media_type in JSON_TYPES or media_type.endswith("+json"):
        return "json"
    allowed = ", ".join(CSV_TYPES + JSON_TYPES)
    raise HTTPException(
        status_code=415,
        detail=f"content-type: cannot import {media_type[:80]!r}; allowed: {allowed}",
        extra={"parameter": "content-type", "allowed": allowed},
    )


@post(
    "/api/villages",
    guards=[require_write_token],
    tags=["villages"],
    status_code=200,
    request_max_body_size=params.MAX_BODY_BYTES,
    security=[{BEARER_SCHEME: []}],
    operation_class=documented(IMPORT_RESPONSES, IMPORT_REQUEST_BODY),
)
async def import_villages(
    state: State,
    request: Request[Any, Any, Any],
    allow_outside_vietnam: Annotated[
        bool, QueryParameter(description="coordinates outside Vietnam are a warning, not an error")
    ] = False,
    source: Annotated[
        str,
        QueryParameter(description="recorded as the villages' source", schema_extra=_text_schema()),
    ] = "api",
) -> dict[str, Any]:
    """Import villages (upsert); each rejected row is reported with its line or feature.

    The body is a villages CSV (``text/csv``) or GeoJSON FeatureCollection
    (``application/geo+json``), with the columns of ``coverwatch villages import``.
    """
    _text("source", source)
    kind = _body_kind(request.headers.get("content-type"))
    data = await request.body()  # 413 past request_max_body_size
    return await anyio.to_thread.run_sync(
        functools.partial(_import, state, kind, data, allow_outside_vietnam, source)
    )


def _import(
    state: State, kind: str | None, data: bytes, allow_outside_vietnam: bool, source: str
) -> dict[str, Any]:
    if kind is None:
        kind = "json" if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{" else "csv"
    try:
        if kind == "json":
            parsed = registry.parse_villages_geojson(
                params.json_document(data), allow_outside_vietnam=allow_outside_vietnam
            )
        else:
            parsed = registry.parse_villages_csv(
                params.body_text(data), allow_outside_vietnam=allow_outside_vietnam
            )
    except ConfigError as error:
        raise _from_config_error(error) from None
    except CoverwatchError as error:
        raise bad_parameter("body", str(error), "CSV with a header line, or GeoJSON") from None
    with _connection(state) as connection:
        stored = registry.store_villages(connection, parsed.villages, source=source)
    _cache(state).clear()  # the villages changed: no answer computed before stays valid
    return {
        "inserted": stored.inserted,
        "updated": stored.updated,
        "rejected": parsed.rejected,
        "warnings": len(parsed.problems) - len(parsed.errors),
        "problems": [str(problem) for problem in parsed.problems],
    }


_VILLAGES_ALLOW: Final = ", ".join(
    sorted({*list_villages.http_methods, *import_villages.http_methods, "OPTIONS"})
)


@route(
    "/api/villages",
    http_method=[HttpMethod.OPTIONS],
    include_in_schema=False,
    sync_to_thread=False,
)
def villages_options() -> Response[None]:
    """OPTIONS of the path GET and POST share, with both in ``Allow``.

    litestar 2.25 builds the OPTIONS answer of a path with its first handler and keeps
    it when a second handler joins (``Allow: GET, OPTIONS``); an explicit handler,
    registered before both, says it right.
    """
    return Response(None, status_code=204, headers={"Allow": _VILLAGES_ALLOW})


# ------------------------------------------------------------------------------- app


# Handler arguments whose query parameter has another name (litestar reports the former).
_QUERY_NAMES: Final = {"all_villages": "all"}


def _http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    """Every refusal as JSON (also from /map, whose pages are HTML), naming the problem."""
    detail, extra = error.detail, error.extra
    if error.status_code == 413:
        allowed = f"at most {params.MAX_BODY_BYTES} bytes ({params.MAX_BODY_BYTES >> 20} MiB)"
        detail = f"body: too large; allowed: {allowed}; split the file"
        extra = {"parameter": "body", "allowed": allowed}
    elif isinstance(error, ValidationException) and isinstance(extra, list) and extra:
        # litestar's own parsing ("Expected `int`, got `str`"): say which parameter.
        detail = "; ".join(
            f"{_QUERY_NAMES.get(str(item.get('key')), item.get('key', '?'))}: "
            f"{item.get('message', 'invalid')}"
            for item in extra
            if isinstance(item, dict)
        )
    body: dict[str, Any] = {"status_code": error.status_code, "detail": detail}
    if extra:
        body["extra"] = extra
    return Response(
        body, status_code=error.status_code, headers=error.headers, media_type=MediaType.JSON
    )


def _internal_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """A bug: logged with its traceback, answered as JSON without the details."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return Response(
        {"status_code": 500, "detail": "internal server error (the server log has the details)"},
        status_code=500,
        media_type=MediaType.JSON,
    )


def _undefined_table(_: Request[Any, Any, Any], error: psycopg.Error) -> Response[Any]:
    return Response(
        {
            "status_code": 503,
            "detail": f"the database schema is incomplete: {str(error).splitlines()[0]}",
            "hint": "run `coverwatch db upgrade`",
        },
        status_code=503,
        media_type=MediaType.JSON,
    )


def _unreachable(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return Response(
        {
            "status_code": 503,
            "detail": f"database unreachable: {str(error).strip().splitlines()[0]}",
            "hint": "check that PostgreSQL is running; see GET /api/health",
        },
        status_code=503,
        media_type=MediaType.JSON,
    )


def create_app(
    database_url: str,
    *,
    write_token: str | None = None,
    tiles: str | None = None,
    tiles_attribution: str | None = None,
    pool_size: int = 4,
    connect_timeout_s: float = 10.0,
    cache_s: float = DEFAULT_CACHE_S,
) -> Litestar:
    """The API and map app; the connection pool opens at start-up and closes at shutdown."""
    if write_token is not None and not write_token.strip():
        raise ConfigError("write token", "is empty", "put a long random string in the file")
    pool: ConnectionPool[Any] = ConnectionPool(
        database_url,
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"connect_timeout": max(1, int(connect_timeout_s))},
        name="coverwatch-geo-web",
    )

    def open_pool() -> None:
        pool.open(wait=False)

    def close_pool() -> None:
        pool.close()

    return Litestar(
        route_handlers=[
            villages_options,  # before the GET and POST of its path (see there)
            health,
            list_probes,
            list_villages,
            deadzones,
            uncovered,
            evidence,
            claims_check,
            recommended_sites,
            coverage_map,
            import_villages,
            static_asset,
        ],
        state=State(
            {
                "pool": pool,
                "database_url": database_url,
                "write_token": write_token.strip() if write_token else None,
                "tiles": tiles,
                "tiles_attribution": tiles_attribution,
                "connect_timeout_s": connect_timeout_s,
                "cache": AnswerCache(cache_s),
            }
        ),
        on_startup=[open_pool],
        on_shutdown=[close_pool],
        exception_handlers={
            HTTPException: _http_error,
            psycopg.errors.UndefinedTable: _undefined_table,
            psycopg.OperationalError: _unreachable,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="coverwatch",
            version=__version__,
            description="Mobile coverage of villages: probes, village status, dead zones, "
            "villages without coverage. Reads are public; writes need a bearer token. Every "
            "parameter is checked (400 names it and what it allows); request bodies are at "
            f"most {params.MAX_BODY_BYTES} bytes (413) and JSON at most "
            f"{params.MAX_JSON_DEPTH} levels deep.",
            components=Components(
                security_schemes={
                    BEARER_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="the write token: the content of the file given to "
                        "`coverwatch serve --write-token-file` (at least 16 characters)",
                    )
                }
            ),
        ),
    )


# -------------------------------------------------------------------- in a thread


@dataclass
class ServerHandle:
    """A uvicorn server running in a background thread."""

    server: uvicorn.Server
    thread: threading.Thread
    port: int  # the bound port (useful when started with port 0)

    @property
    def url(self) -> str:
        host = self.server.config.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout_s)


def serve_in_thread(
    app: Litestar,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "warning",
    startup_timeout_s: float = 15.0,
) -> ServerHandle:
    """Start ``app`` on ``host:port`` in a daemon thread; returns once it is listening."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="coverwatch-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise ServiceError(f"the HTTP server could not start on {host}:{port} (see the log)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ServiceError(f"the HTTP server did not start on {host}:{port} in time")
        time.sleep(0.02)
    bound = next(
        (sock.getsockname()[1] for listener in server.servers for sock in listener.sockets), port
    )
    logger.info("HTTP API listening on http://%s:%d", host, bound)
    return ServerHandle(server, thread, int(bound))
