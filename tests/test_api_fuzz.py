"""Schemathesis against the real server: no input is answered 5xx, every answer is documented.

The app runs under uvicorn on a free loopback port (``geo.web.serve_in_thread``, as the
collector hosts it) over a real PostgreSQL seeded with the map scenario of
``tests/geo_seed.py`` (probes, readings, outages, villages, boundaries). Schemathesis reads
``/schema/openapi.json`` and, for every operation, runs its examples, coverage and fuzzing
phases with positive and negative data and every check (``--checks all``): no server
error, status codes, content types, headers and bodies as documented, valid data
accepted, invalid data rejected, auth enforced, 405 with ``Allow`` for other methods.

It runs twice: with the write token (schemathesis sends it where the document asks for
the bearer scheme, and its ``ignored_auth`` check also tries each write without a token
and with a wrong one) and without it (every write must be refused 401, as documented).

One refinement of ``positive_data_acceptance``: a 400 for a value that matches its schema
is accepted when the error names one of the constraints a JSON Schema cannot state —
a province with no villages, a date in the future or more than ten years back, a window
longer than ten years, a CSV body without its header. The OpenAPI document says each of
these in the parameter's description; anything else the schema allows must be accepted.

Bounded and reproducible: a fixed seed, derandomized generation, ``MAX_EXAMPLES``
fuzzed cases per operation and mode; the whole file runs in well under a minute on two
cores.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import schemathesis
import schemathesis.transport.requests as schemathesis_requests
from psycopg import sql
from schemathesis import engine
from schemathesis.engine import events
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from collector import schema
from geo import params, web
from tests.test_map import seed_map

TOKEN = "fuzz-write-token-0123456789abcdef"
SEED = 20261130
MAX_EXAMPLES = 100

CONFIG = f"""
seed = {SEED}
suppress-health-check = ["too_slow", "filter_too_much", "data_too_large"]

[generation]
mode = "all"
max-examples = {MAX_EXAMPLES}
deterministic = true

[checks]
enabled = true
# Replaced by positive_data_acceptance_beyond_schema (below), which calls it.
positive_data_acceptance.enabled = false

[phases.examples]
enabled = true

[phases.coverage]
enabled = true

[phases.fuzzing]
enabled = true
"""
AUTH = f"""
[auth.openapi.{web.BEARER_SCHEME}]
bearer = "{TOKEN}"
"""

# What a JSON Schema cannot say, and the server answers 400 for (see the module docstring):
# the parameter named in the error, and the words its detail must hold.
BEYOND_THE_SCHEMA: dict[str, tuple[str, ...]] = {
    "province": ("no villages in",),
    "since": ("is not in the past", f"more than {params.MAX_WINDOW_DAYS} days ago", "as a date:"),
    "window": (f"longer than {params.MAX_WINDOW_DAYS} days",),
    "body": ("the CSV file is empty", "the CSV header has no"),
}


@schemathesis.check
def positive_data_acceptance_beyond_schema(
    ctx: schemathesis.CheckContext,
    response: schemathesis.Response,
    case: schemathesis.Case[Any],
) -> bool | None:
    """``positive_data_acceptance``, except for the 400s of BEYOND_THE_SCHEMA."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400:
            body = response.json()
            extra = body.get("extra") if isinstance(body, dict) else None
            name = extra.get("parameter") if isinstance(extra, dict) else None
            reasons = BEYOND_THE_SCHEMA.get(str(name), ())
            if any(reason in str(body.get("detail", "")) for reason in reasons):
                return None
        raise


@pytest.fixture(scope="module", autouse=True)
def _pools_of_urllib3_future() -> Iterator[None]:
    """Let schemathesis send requests through urllib3-future.

    grafana-client needs niquests, which installs urllib3-future over urllib3 (its .pth
    file merges it in at start-up), so ``requests`` runs on urllib3-future, whose pool
    manager keeps its pools in a container without ``keys()``. schemathesis counts the
    open connections that way before each request, to resend one request the server
    dropped unanswered; where it cannot count, it counts none (and still resends).
    """
    count = getattr(schemathesis_requests, "_count_opened_connections", None)
    if count is None:
        yield
        return

    def count_or_none(session: Any) -> int:
        try:
            return int(count(session))
        except AttributeError:
            return 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schemathesis_requests, "_count_opened_connections", count_or_none)
        yield


@pytest.fixture(scope="module")
def fuzz_database(postgres_admin_url: str) -> Iterator[str]:
    """One seeded database for the whole run (the writes of one operation are read by the next)."""
    name = f"cw_fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(postgres_admin_url, dbname=name)
    try:
        schema.upgrade(url)
        with psycopg.connect(url) as connection:
            seed_map(connection, grid=40)
        yield url
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def server(fuzz_database: str) -> Iterator[web.ServerHandle]:
    handle = web.serve_in_thread(web.create_app(fuzz_database, write_token=TOKEN), "127.0.0.1", 0)
    try:
        yield handle
    finally:
        handle.stop()


@dataclass
class Run:
    operations: Counter[str] = field(default_factory=Counter)  # test cases sent, by operation
    statuses: Counter[str] = field(default_factory=Counter)  # "GET /map 400"
    checks: Counter[str] = field(default_factory=Counter)  # check name → times run
    phases: Counter[str] = field(default_factory=Counter)  # phase → scenarios
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(server: web.ServerHandle, config: str) -> Run:
    """Run every phase of schemathesis over every operation; collect what failed."""
    started = time.monotonic()
    api = schemathesis.openapi.from_url(
        f"{server.url}/schema/openapi.json", config=schemathesis.Config.from_str(config)
    )
    run = Run()
    for event in engine.from_schema(api).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            run.phases[event.phase.value] += 1
            for case_id, node in recorder.cases.items():
                run.operations[recorder.label] += 1
                response = recorder.find_response(case_id=case_id)
                method = node.value.method.upper()
                status = response.status_code if response is not None else "no response"
                run.statuses[f"{method} {node.value.path} {status}"] += 1
            for checks in recorder.checks.values():
                for check in checks:
                    run.checks[check.name] += 1
                    if check.status == engine.Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        run.failures.append(
                            f"{recorder.label}: {check.name}: {failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(_error_text(event))
    run.seconds = time.monotonic() - started
    return run


def _error_text(event: events.NonFatalError | events.FatalError) -> str:
    if isinstance(event, events.NonFatalError):
        trace = "".join(traceback.format_exception(event.value))
        return f"{event.label}: {event.info.format()}\n{trace}"
    return "".join(traceback.format_exception(event.exception))


def report(run: Run) -> str:
    lines = [f"{run.seconds:.1f} s, {sum(run.operations.values())} test cases"]
    lines += [f"  {count:5d}  {label}" for label, count in sorted(run.operations.items())]
    lines += [f"  {count:5d}  {key}" for key, count in sorted(run.statuses.items())]
    lines += [f"  {count:5d}  check {name}" for name, count in sorted(run.checks.items())]
    lines += [f"  {count:5d}  phase {name}" for name, count in sorted(run.phases.items())]
    return "\n".join(lines)


# Every check schemathesis has (``--checks all``), positive_data_acceptance by way of
# positive_data_acceptance_beyond_schema.
CHECKS = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance_beyond_schema",
    "negative_data_rejection",
    "use_after_free",
    "ensure_resource_availability",
    "missing_required_header",
    "ignored_auth",
    "object_level_authorization",
    "unsupported_method",
    "allow_header_conformance",
}
OPERATIONS = {
    "GET /api/health",
    "GET /api/probes",
    "GET /api/villages",
    "POST /api/villages",
    "GET /api/deadzones",
    "GET /api/uncovered",
    "GET /api/evidence",
    "GET /api/claims/check",
    "GET /api/sites",
    "GET /map",
}


@pytest.mark.slow
def test_api_with_the_write_token(server: web.ServerHandle) -> None:
    run = fuzz(server, CONFIG + AUTH)
    print(report(run))
    assert not run.errors, run.errors
    assert not run.failures, "\n\n".join(run.failures[:20])
    assert set(run.operations) == OPERATIONS
    assert set(run.checks) == CHECKS
    assert set(run.phases) == {"examples", "coverage", "fuzzing"}
    assert not any(key.endswith((" 500", " 502", " 503", " 504")) for key in run.statuses)
    # The token went with the writes: rows were stored (a 401 here is one of schemathesis'
    # own probes without it).
    assert run.statuses["POST /api/villages 200"] > 0


@pytest.mark.slow
def test_api_without_a_token(server: web.ServerHandle) -> None:
    run = fuzz(server, CONFIG)
    print(report(run))
    assert not run.errors, run.errors
    assert not run.failures, "\n\n".join(run.failures[:20])
    assert set(run.operations) == OPERATIONS
    assert set(run.checks) == CHECKS
    # Whatever the body and the parameters, a write without the token is refused: 401, or
    # 403 when schemathesis made up a token of its own.
    writes = {key for key in run.statuses if key.startswith("POST /api/villages ")}
    assert "POST /api/villages 401" in writes
    assert writes <= {"POST /api/villages 401", "POST /api/villages 403"}, writes
