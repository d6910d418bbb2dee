"""Every dashboard query, run against the real schema on a real PostgreSQL.

The schema is that of the run's storage layout (``COVERWATCH_TEST_LAYOUT``): plain
tables, or TimescaleDB hypertables; the rollups are the same on both (migration 007).

Grafana's PostgreSQL macros are expanded here the way Grafana expands them (with the
time bucket written as ``to_timestamp(floor(epoch / s) * s)``, since plain PostgreSQL
has no ``time_bucket``), template variables are interpolated as Grafana does (a single
value raw, a multi-value variable as a quoted list or its "All" value), and each query
must run, return rows for the seeded data, and return the columns its panel expects:
``time`` first plus numeric values for time series, numbers for stats, and every column
a field override names for tables.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from collector import rollups, schema
from dashboards.generate import build_all
from tests.conftest import refresh_rollups

NOW = datetime.now(UTC).replace(microsecond=0)
RANGE_FROM = NOW - timedelta(days=2)
RANGE_TO = NOW + timedelta(minutes=5)
INTERVAL_S = 600  # what Grafana would pick as $__interval for the panel width
BOOT_A = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
BOOT_B = "4a1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}

# Single-value variables are interpolated raw (quotes doubled); multi-value ones quoted.
VARIABLES = {"probe": "cb-001", "province": "'Cao Bằng','Lai Châu'"}


def _seconds(interval: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval.strip().strip("'\""))
    assert match, f"unexpected interval {interval!r}"
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return max(1, int(int(match[1]) * factor))


def expand(query: str, variables: dict[str, str]) -> str:
    """Grafana's macro and variable expansion for the PostgreSQL datasource."""
    start, end = f"'{RANGE_FROM.isoformat()}'", f"'{RANGE_TO.isoformat()}'"
    text = query.replace("$__interval_ms", str(INTERVAL_S * 1000))
    text = text.replace("$__interval", f"{INTERVAL_S}s")

    def bucket(match: re.Match[str], alias: bool) -> str:
        column, seconds = match[1].strip(), _seconds(match[2])
        expression = f"to_timestamp(floor(extract(epoch FROM {column}) / {seconds}) * {seconds})"
        return f'{expression} AS "time"' if alias else expression

    group = r"\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*(?:,[^()]*)?\)"
    text = re.sub(r"\$__timeGroupAlias" + group, lambda m: bucket(m, True), text)
    text = re.sub(r"\$__timeGroup" + group, lambda m: bucket(m, False), text)
    text = re.sub(
        r"\$__timeFilter\(\s*([^()]+?)\s*\)", lambda m: f"{m[1]} BETWEEN {start} AND {end}", text
    )
    text = text.replace("$__timeFrom()", start).replace("$__timeTo()", end)
    for name, value in variables.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in text, f"unexpanded macro or variable left in:\n{text}"
    return text


# ------------------------------------------------------------------------- the data


def _seed(connection: psycopg.Connection[Any]) -> None:
    def ago(**delta: float) -> datetime:
        return NOW - timedelta(**delta)

    connection.execute(
        """INSERT INTO villages (name, commune, district, province, lon, lat, population)
           VALUES ('Nà Pài', 'Quang Trung', 'Trùng Khánh', 'Cao Bằng', 106.50, 22.80, 420),
                  ('Pa Vệ Sủ', 'Pa Vệ Sủ', 'Mường Tè', 'Lai Châu', 102.60, 22.45, 300)"""
    )
    connection.execute(
        """INSERT INTO probes (probe_id, village, lon, lat, operator, report_interval_s)
           VALUES ('cb-001', 'Nà Pài', 106.501, 22.801, 'Viettel', 300),
                  ('lc-001', 'Pa Vệ Sủ', 102.601, 22.451, '45201', 300)"""
    )
    connection.execute(
        """INSERT INTO probe_status (probe_id, state, state_changed_at, last_seen, boot_id)
           VALUES ('cb-001', 'online', %(a)s, %(now)s, %(boot)s),
                  ('lc-001', 'offline', %(b)s, %(b)s, %(boot)s),
                  ('xx-999', 'online', %(b)s, %(b)s, %(boot)s)""",
        {"a": ago(hours=4), "b": ago(hours=1), "now": NOW, "boot": BOOT_B},
    )
    events = [
        ("cb-001", ago(hours=5), "offline"),  # the power went: put down to power
        ("cb-001", ago(hours=4), "online"),
        ("cb-001", ago(hours=4), "reboot"),
        ("lc-001", ago(hours=3), "offline"),  # network outage with power on
        ("lc-001", ago(hours=2, minutes=30), "online"),
        ("lc-001", ago(hours=1), "offline"),  # still going on
    ]
    connection.cursor().executemany(
        "INSERT INTO probe_events (probe_id, at, event) VALUES (%s, %s, %s)", events
    )
    seq = 0
    for probe_id, operator in (("cb-001", "45204"), ("lc-001", "45201")):
        for step in range(24):  # every 15 minutes over the last 6 hours
            seq += 1
            taken = ago(minutes=15 * step)
            common = (probe_id, seq, BOOT_B, taken, 1000 * seq, True)
            registered = step % 4 != 0
            connection.execute(
                """INSERT INTO readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms,
                       ntp_synced, registration, technology, operator_code, rsrp_dbm, rsrq_db,
                       sinr_db, rssi_dbm)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    *common,
                    "home" if registered else "searching",
                    "lte" if registered else None,
                    operator if registered else None,
                    -100.0 - step if registered else None,
                    -12.0 if registered else None,
                    3.5 if registered else None,
                    -75.0 if registered else None,
                ),
            )
            for target, loss in (("1.1.1.1", 0.0), ("vnexpress.net", 20.0)):
                connection.execute(
                    """INSERT INTO readings_latency (probe_id, seq, boot_id, taken_at,
                           monotonic_ms, ntp_synced, target, method, packets_sent,
                           packets_received, loss_pct, rtt_avg_ms, rtt_median_ms, rtt_max_ms)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, 'icmp', 10, %s, %s, 80, 78, 140)""",
                    (
                        probe_id,
                        seq + 1000 * (target == "1.1.1.1"),
                        *common[2:],
                        target,
                        10 - int(loss / 10),
                        loss,
                    ),
                )
            connection.execute(
                """INSERT INTO readings_power (probe_id, seq, boot_id, taken_at, monotonic_ms,
                       ntp_synced, uptime_s, undervoltage_now, on_mains, battery_pct)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s, %s)""",
                (*common, 60.0 * step, step % 2 == 0, 80.0 - step),
            )
            connection.execute(
                """INSERT INTO readings_system (probe_id, seq, boot_id, taken_at, monotonic_ms,
                       ntp_synced, cpu_temp_c, outbox_pending, outbox_dropped_total)
                   VALUES (%s, %s, %s, %s, %s, %s, 51.5, %s, %s)""",
                (*common, 10 * step, 5 if step > 12 else 0),
            )
    connection.execute(
        """INSERT INTO readings_outage (probe_id, seq, boot_id, taken_at, monotonic_ms,
               ntp_synced, previous_boot_id, outage_started_at, outage_ended_at,
               outage_duration_s)
           VALUES ('cb-001', 5000, %s, %s, 1000, true, %s, %s, %s, 3600)""",
        (BOOT_B, ago(hours=4), BOOT_A, ago(hours=5, minutes=2), ago(hours=4, minutes=2)),
    )
    connection.execute(
        """INSERT INTO dead_letters (topic, probe_id, reading_index, reason, field, payload,
               payload_bytes, received_at)
           VALUES ('coverwatch/v1/cb-001/readings', 'cb-001', 1,
                   'readings[1].rsrp_dbm: expected number', 'readings[1].rsrp_dbm', 'x', 1,
                   %s),
                  ('coverwatch/v1/zz/readings', NULL, NULL, 'not JSON', NULL, 'y', 1, %s)""",
        (ago(hours=2), ago(minutes=30)),
    )
    # Received half a minute after being taken, not at now(): NOW was fixed when this
    # module was imported, and a long run seeds minutes later, past the range's end.
    for kind in ("signal", "latency", "power", "system", "outage"):
        connection.execute(
            sql.SQL("UPDATE {} SET received_at = taken_at + interval '30 seconds'").format(
                sql.Identifier(f"readings_{kind}")
            )
        )


@pytest.fixture(scope="module")
def seeded_url(postgres_admin_url: str) -> Iterator[str]:
    """One upgraded, seeded database of the run's layout for the module (queries only read)."""
    name = f"cw_test_dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(postgres_admin_url, dbname=name)
    try:
        schema.upgrade(url)
        with psycopg.connect(url) as connection:
            _seed(connection)
            # Written past the collector: mark the hours for the rollups.
            rollups.invalidate(connection)
        refresh_rollups(url)
        yield url
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# ----------------------------------------------------------------------- the queries


def _targets() -> list[Any]:
    cases = []
    for file_name, model in build_all().items():
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                cases.append(
                    pytest.param(
                        panel,
                        target,
                        id=f"{file_name}:{panel['id']}:{target['refId']}:{panel['title']}",
                    )
                )
    return cases


def _variables() -> list[Any]:
    cases = []
    for file_name, model in build_all().items():
        for variable in model["templating"]["list"]:
            cases.append(pytest.param(variable, id=f"{file_name}:${variable['name']}"))
    return cases


def _run(url: str, query: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as connection:
        cursor = connection.execute(query.encode())
        assert cursor.description is not None
        names = [column.name for column in cursor.description]
        types = [
            getattr(connection.adapters.types.get(column.type_code), "name", "?")
            for column in cursor.description
        ]
        return names, types, cursor.fetchall()


def _check_columns(
    panel: dict[str, Any],
    target: dict[str, Any],
    names: list[str],
    types: list[str],
    rows: list[tuple[Any, ...]],
) -> None:
    title = panel["title"]
    assert len(set(names)) == len(names), f"{title}: duplicate column names {names}"
    assert rows, f"{title}: no rows for the seeded data"
    if target["format"] == "time_series" or panel["type"] == "state-timeline":
        assert names[0] == "time", f"{title}: the first column must be 'time', got {names}"
        assert types[0] == "timestamptz", f"{title}: 'time' is {types[0]}"
        times = [row[0] for row in rows]
        assert times == sorted(times), f"{title}: rows must be ordered by time"
    if target["format"] == "time_series":
        values = [(n, t) for n, t in zip(names[1:], types[1:], strict=True) if n != "metric"]
        assert values, f"{title}: no value column"
        for name, type_name in values:
            assert type_name in NUMERIC, f"{title}: value column {name} is {type_name}"
        if "metric" in names:
            assert types[names.index("metric")] == "text", f"{title}: metric must be text"
    if panel["type"] == "stat":
        for name, type_name in zip(names, types, strict=True):
            assert type_name in NUMERIC, f"{title}: stat column {name} is {type_name}"
        assert len(rows) == 1, f"{title}: a stat reads one row"
    for override in panel["fieldConfig"]["overrides"]:
        column = override["matcher"]["options"]
        assert column in names, f"{title}: override for {column!r}, not among {names}"


@pytest.mark.parametrize(("panel", "target"), _targets())
def test_panel_query_runs_and_returns_what_the_panel_shows(
    seeded_url: str, panel: dict[str, Any], target: dict[str, Any]
) -> None:
    names, types, rows = _run(seeded_url, expand(target["rawSql"], VARIABLES))
    _check_columns(panel, target, names, types, rows)


@pytest.mark.parametrize("variable", _variables())
def test_template_variable_query_lists_values(seeded_url: str, variable: dict[str, Any]) -> None:
    names, _, rows = _run(seeded_url, expand(variable["query"], VARIABLES))
    assert len(names) == 1, "Grafana takes the first column; return just one"
    values = [row[0] for row in rows]
    assert values
    assert len(values) == len(set(values))
    if variable["name"] == "probe":
        assert values == ["cb-001", "lc-001", "xx-999"]  # registered or ever heard from
    if variable["name"] == "province":
        assert values == ["Cao Bằng", "Lai Châu"]


def test_all_value_of_province_works_even_with_no_villages(seeded_url: str) -> None:
    coverage = build_all()["coverage.json"]
    (province,) = coverage["templating"]["list"]
    everything = {**VARIABLES, "province": province["allValue"]}
    for panel in coverage["panels"]:
        for target in panel.get("targets", []):
            names, types, rows = _run(seeded_url, expand(target["rawSql"], everything))
            _check_columns(panel, target, names, types, rows)


def test_coverage_puts_readings_without_service_on_the_sim_operator(seeded_url: str) -> None:
    coverage = build_all()["coverage.json"]
    (table,) = [p for p in coverage["panels"] if p["title"] == "Coverage by village and operator"]
    names, _, rows = _run(seeded_url, expand(table["targets"][0]["rawSql"], VARIABLES))
    by_village = {(row[names.index("village")], row[names.index("operator")]): row for row in rows}
    assert set(by_village) == {("Nà Pài", "Viettel"), ("Pa Vệ Sủ", "MobiFone")}
    availability = by_village["Nà Pài", "Viettel"][names.index("availability_pct")]
    # 1 in 4 seeded readings had no service, and 6 of 24 were registered below -115 dBm.
    assert float(availability) == pytest.approx(50.0)


def test_outages_tell_power_from_network(seeded_url: str) -> None:
    outages = build_all()["outages.json"]
    panels = {panel["title"]: panel for panel in outages["panels"]}
    names, _, rows = _run(
        seeded_url, expand(panels["Network outages"]["targets"][0]["rawSql"], VARIABLES)
    )
    network = sorted((row[0], row[names.index("ongoing")]) for row in rows)
    # cb-001's offline spell overlaps its reported power outage, so it is not network.
    assert network == [("lc-001", False), ("lc-001", True)]
    _, _, power = _run(
        seeded_url, expand(panels["Power outages"]["targets"][0]["rawSql"], VARIABLES)
    )
    assert [row[0] for row in power] == ["cb-001"]
