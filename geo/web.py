"""The HTTP API and the map page: litestar on uvicorn, OpenAPI documented at ``/schema``.

Read endpoints are public; writes (``POST /api/villages``) need ``Authorization: Bearer
<token>`` — 401 without one, 403 with a wrong one, and with no token configured writes
are disabled (403 with a hint). Bad query parameters are answered 400 with what is
wrong and what is allowed. A database that cannot be reached is 503.

Connections come from a psycopg_pool ``ConnectionPool`` opened at start-up (without
waiting: the server starts, and ``/api/health`` says when the database is not there).
Handlers are synchronous and run in litestar's thread pool.

``serve_in_thread`` runs the same app in a background thread, for a process (the
collector) that hosts the API beside its own work.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final

import anyio
import psycopg
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import Parameter, QueryParameter
from litestar.static_files import create_static_files_router
from psycopg_pool import ConnectionPool, PoolTimeout

from coverwatch import __version__
from coverwatch.errors import ConfigError, CoverwatchError, ServiceError
from coverwatch.settings import redact_url
from geo import maps, registry, report
from geo.assets import STATIC_DIR
from geo.cli import parse_window
from geo.coverage import TimeWindow, by_probe, probe_coverage
from geo.deadzones import probe_dead_zones
from geo.operators import CODE_OF_NAME, OPERATOR_NAMES
from geo.probes import PROBE_STATES, probe_health
from geo.registry import load_villages
from geo.status import DEFAULT_RADIUS_M, VillageStatus, village_status
from geo.thresholds import COVERAGE_CLASSES

logger = logging.getLogger("coverwatch.geo.web")

STATIC_URL: Final = "/static"
_DEAD_CLASSES: Final = ("none", "poor")

# ------------------------------------------------------------------ query parameters

Window = Annotated[
    str,
    Parameter(
        description="time window of readings up to now: 12h, 30d, 4w (ignored with since)",
        examples=[],
    ),
]
Since = Annotated[
    str | None, Parameter(description="start of the window, ISO 8601 (e.g. 2026-11-01)")
]
RadiusKm = Annotated[
    float,
    Parameter(description="probes within this distance speak for a village (km)"),
]
Province = Annotated[str | None, Parameter(description="only this province's villages")]
Operator = Annotated[
    str | None,
    Parameter(description="operator name or MCC-MNC code: " + ", ".join(OPERATOR_NAMES.values())),
]


def bad_parameter(name: str, problem: str, allowed: str) -> ValidationException:
    return ValidationException(
        detail=f"{name}: {problem}; allowed: {allowed}",
        extra={"parameter": name, "allowed": allowed},
    )


def _window(window: str, since: str | None) -> TimeWindow:
    try:
        return parse_window(since, None if since else window)
    except ConfigError as error:
        name = error.setting.lstrip("-")
        raise bad_parameter(name, error.problem, error.hint) from None


def _radius_m(radius_km: float) -> float:
    if not 0 < radius_km <= 100:
        raise bad_parameter("radius_km", f"{radius_km:g} is out of range", "0 < radius_km ≤ 100")
    return radius_km * 1000


def _operator(value: str | None) -> str | None:
    """A name (any case) or MCC-MNC code → the code readings carry."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    code = CODE_OF_NAME.get(text.lower())
    if code is not None:
        return code
    if text.isdigit() and len(text) in (5, 6):
        return text
    allowed = ", ".join(f"{name} ({code})" for code, name in OPERATOR_NAMES.items())
    raise bad_parameter(
        "operator", f"unknown operator {value!r}", f"{allowed}, or any 5-6 digit MCC-MNC code"
    )


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise bad_parameter(name, f"unknown value {value!r}", ", ".join(allowed))
    return value


# ------------------------------------------------------------------------- database


def _pool(state: State) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = state.pool
    return pool


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


def _known_provinces(connection: psycopg.Connection[Any]) -> list[str]:
    rows = connection.execute("SELECT DISTINCT province FROM villages ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def _check_province(connection: psycopg.Connection[Any], province: str | None) -> None:
    if province is None:
        return
    known = _known_provinces(connection)
    if province not in known:
        raise bad_parameter(
            "province", f"no villages in {province!r}", ", ".join(known) or "(no villages yet)"
        )


# ---------------------------------------------------------------------------- handlers


@get("/api/health", sync_to_thread=True, tags=["status"])
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


@get("/api/probes", sync_to_thread=True, tags=["probes"])
def list_probes(
    state: State,
    window: Window = "30d",
    since: Since = None,
    status: Annotated[
        str | None, Parameter(description="online, offline, stale or unknown")
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
    probes = probe_coverage(connection, span)
    villages = load_villages(connection, province=province)
    return village_status(villages, probes, radius_m=radius_m), probes


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


@get("/api/villages", tags=["villages"])
async def list_villages(
    state: State,
    operator: Operator = None,
    province: Province = None,
    status: Annotated[
        str | None,
        Parameter(description="good, fair, poor, none or unmeasured (of operator when given)"),
    ] = None,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> Response[dict[str, Any]]:
    """Villages as a GeoJSON FeatureCollection with their coverage status."""
    # async, with the work in a thread: litestar 2.25 wraps a sync handler twice when a
    # GET and a POST handler share a path, and the GET then returns a coroutine.
    return await anyio.to_thread.run_sync(
        functools.partial(_villages, state, operator, province, status, window, since, radius_km)
    )


def _villages(
    state: State,
    operator: str | None,
    province: str | None,
    status: str | None,
    window: str,
    since: str | None,
    radius_km: float,
) -> Response[dict[str, Any]]:
    code = _operator(operator)
    wanted = _choice("status", status, COVERAGE_CLASSES)
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    with _connection(state) as connection:
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
    return Response(body, media_type="application/geo+json")


@get("/api/deadzones", sync_to_thread=True, tags=["coverage"])
def deadzones(
    state: State,
    operator: Operator = None,
    province: Province = None,
    dead: Annotated[
        str, Parameter(description="classes counted as dead: none, or none,poor")
    ] = "none",
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> Response[dict[str, Any]]:
    """Covered, dead and unmeasured areas (GeoJSON), clipped to the province boundary."""
    code = _operator(operator)
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    dead_classes = {part.strip() for part in dead.split(",") if part.strip()}
    if not dead_classes or not dead_classes <= set(_DEAD_CLASSES):
        raise bad_parameter("dead", f"cannot use {dead!r}", "none, or none,poor")
    with _connection(state) as connection:
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
    return Response(body, media_type="application/geo+json")


@get("/api/uncovered", sync_to_thread=True, tags=["coverage"])
def uncovered(
    state: State,
    limit: Annotated[int | None, Parameter(ge=1, description="at most this many rows")] = None,
    format: Annotated[str, Parameter(description="json, csv or table")] = "json",
    province: Province = None,
    all_villages: Annotated[
        bool, QueryParameter(name="all", description="include villages with full availability")
    ] = False,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> Response[Any]:
    """Villages without coverage, ranked by population x unavailability (as the CLI report)."""
    fmt = _choice("format", format, ("json", "csv", "table")) or "json"
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    with _connection(state) as connection:
        _check_province(connection, province)
        statuses, probes = _statuses(connection, span, radius_m, province)
    rows = report.rank_uncovered(statuses, by_probe(probes), include_all=all_villages)
    if limit is not None:
        rows = rows[:limit]
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


@get("/map", sync_to_thread=True, media_type=MediaType.HTML, tags=["map"])
def coverage_map(
    state: State,
    province: Province = None,
    window: Window = "30d",
    since: Since = None,
    radius_km: RadiusKm = DEFAULT_RADIUS_M / 1000,
) -> str:
    """The coverage map (HTML; its scripts and styles are served under /static)."""
    span = _window(window, since)
    radius_m = _radius_m(radius_km)
    with _connection(state) as connection:
        _check_province(connection, province)
        data = maps.collect(connection, span, radius_m=radius_m, province=province)
    return maps.render(
        data, static_url=STATIC_URL, tiles=state.tiles, tiles_attribution=state.tiles_attribution
    )


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


@post("/api/villages", guards=[require_write_token], tags=["villages"], status_code=200)
async def import_villages(
    state: State,
    request: Request[Any, Any, Any],
    allow_outside_vietnam: Annotated[
        bool, QueryParameter(description="coordinates outside Vietnam are a warning, not an error")
    ] = False,
    source: Annotated[str, QueryParameter(description="recorded as the villages' source")] = "api",
) -> dict[str, Any]:
    """Import villages (upsert); each rejected row is reported with its line or feature.

    The body is a villages CSV (``text/csv``) or GeoJSON FeatureCollection
    (``application/geo+json``), with the columns of ``coverwatch villages import``.
    """
    content_type = request.headers.get("content-type", "")
    data = await request.body()
    return await anyio.to_thread.run_sync(
        functools.partial(_import, state, content_type, data, allow_outside_vietnam, source)
    )


def _import(
    state: State, content_type: str, data: bytes, allow_outside_vietnam: bool, source: str
) -> dict[str, Any]:
    content_type = content_type.split(";")[0].strip().lower()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_parameter("body", "is not UTF-8 text", "UTF-8 CSV or GeoJSON") from None
    is_json = "json" in content_type or text.lstrip().startswith("{")
    try:
        if is_json:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as error:
                raise bad_parameter(
                    "body", f"invalid JSON: {error.msg} at line {error.lineno}", "GeoJSON"
                ) from None
            parsed = registry.parse_villages_geojson(
                document, allow_outside_vietnam=allow_outside_vietnam
            )
        else:
            parsed = registry.parse_villages_csv(text, allow_outside_vietnam=allow_outside_vietnam)
    except CoverwatchError as error:
        raise bad_parameter("body", str(error), "CSV with a header line, or GeoJSON") from None
    with _connection(state) as connection:
        stored = registry.store_villages(connection, parsed.villages, source=source)
    return {
        "inserted": stored.inserted,
        "updated": stored.updated,
        "rejected": parsed.rejected,
        "warnings": len(parsed.problems) - len(parsed.errors),
        "problems": [str(problem) for problem in parsed.problems],
    }


# ------------------------------------------------------------------------------- app


def _undefined_table(_: Request[Any, Any, Any], error: psycopg.Error) -> Response[Any]:
    return Response(
        {
            "status_code": 503,
            "detail": f"the database schema is incomplete: {str(error).splitlines()[0]}",
            "hint": "run `coverwatch db upgrade`",
        },
        status_code=503,
    )


def _unreachable(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return Response(
        {
            "status_code": 503,
            "detail": f"database unreachable: {str(error).strip().splitlines()[0]}",
            "hint": "check that PostgreSQL is running; see GET /api/health",
        },
        status_code=503,
    )


def create_app(
    database_url: str,
    *,
    write_token: str | None = None,
    tiles: str | None = None,
    tiles_attribution: str | None = None,
    pool_size: int = 4,
    connect_timeout_s: float = 10.0,
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
            health,
            list_probes,
            list_villages,
            deadzones,
            uncovered,
            coverage_map,
            import_villages,
            create_static_files_router(
                path=STATIC_URL, directories=[STATIC_DIR], include_in_schema=False
            ),
        ],
        state=State(
            {
                "pool": pool,
                "database_url": database_url,
                "write_token": write_token.strip() if write_token else None,
                "tiles": tiles,
                "tiles_attribution": tiles_attribution,
                "connect_timeout_s": connect_timeout_s,
            }
        ),
        on_startup=[open_pool],
        on_shutdown=[close_pool],
        exception_handlers={
            psycopg.errors.UndefinedTable: _undefined_table,
            psycopg.OperationalError: _unreachable,
        },
        openapi_config=OpenAPIConfig(
            title="coverwatch",
            version=__version__,
            description="Mobile coverage of villages: probes, village status, dead zones, "
            "villages without coverage. Reads are public; writes need a bearer token.",
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
