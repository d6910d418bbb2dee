"""The four coverwatch dashboards: fleet, probe detail, village/commune coverage, outages.

Every panel is raw SQL against the collector's schema (``collector/migrations``) with
Grafana's PostgreSQL macros (``$__timeFilter``, ``$__timeGroupAlias``, ``$__timeFrom()``,
``$__interval_ms``) and template variables (``$probe``, ``$province``).
``tests/test_dashboards_sql.py`` runs every one of these queries, macros expanded, against
the real schema. Time-series panels return a ``time`` column first, an optional ``metric``
column naming the series, and numeric value columns.
"""

# S608: these strings are SQL text for Grafana dashboards, never executed with user input
# here; the only interpolations are constants of this module and Grafana's own macros.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable

from dashboards.model import JSON, Panel, dashboard, query_variable
from geo.status import DEFAULT_RADIUS_M

FLEET_UID = "coverwatch-fleet"
PROBE_UID = "coverwatch-probe"
COVERAGE_UID = "coverwatch-coverage"
OUTAGES_UID = "coverwatch-outages"

# Probes within this distance speak for a village (geo's default radius).
VILLAGE_RADIUS_M = DEFAULT_RADIUS_M
# Readings arrive up to the probe outbox's max_age_days late; bounding taken_at too lets
# TimescaleDB skip old chunks when a panel filters on received_at.
LATE_ARRIVAL_BOUND = "interval '60 days'"

REGISTERED = "registration IN ('home', 'roaming')"

_READING_TABLES = (
    "signal",
    "latency",
    "power",
    "outage",
    "throughput",
    "system",
    "sensor_error",
    "operator_scan",
    "cell",
)


def _link(uid: str, variable: str) -> JSON:
    return {
        "links": [
            {
                "title": "open in probe detail",
                "url": f"/d/{uid}?var-{variable}=${{__value.raw}}&${{__url_time_range}}",
            }
        ]
    }


def _probe_link() -> tuple[str, JSON]:
    return ("probe_id", _link(PROBE_UID, "probe"))


# ---------------------------------------------------------------------------- fleet


def fleet(datasource_uid: str) -> JSON:
    readings_union = "\n  UNION ALL ".join(
        f"SELECT received_at, '{kind}' AS kind FROM readings_{kind} "
        f"WHERE $__timeFilter(received_at) "
        f"AND taken_at >= $__timeFrom()::timestamptz - {LATE_ARRIVAL_BOUND}"
        for kind in _READING_TABLES
    )
    in_service = "FROM probe_health WHERE NOT revoked"
    stats = [
        Panel(
            "Probes online",
            "stat",
            f"SELECT count(*) FILTER (WHERE state = 'online' AND NOT stale) AS online {in_service}",
            format="table",
            width=4,
            height=4,
            description="Online (birth message seen) and heard from within 3 report intervals.",
            thresholds=((None, "green"),),
        ),
        Panel(
            "Stale probes",
            "stat",
            f"SELECT count(*) FILTER (WHERE stale) AS stale {in_service}",
            format="table",
            width=4,
            height=4,
            description="Silent for more than 3 report intervals (power, network or a "
            "broken probe). Revoked probes are not counted.",
            thresholds=((None, "green"), (1, "orange"), (10, "red")),
        ),
        Panel(
            "Offline (last will)",
            "stat",
            f"SELECT count(*) FILTER (WHERE state = 'offline') AS offline {in_service}",
            format="table",
            width=4,
            height=4,
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Unregistered probes",
            "stat",
            "SELECT count(*) FILTER (WHERE NOT registered) AS unregistered FROM probe_health",
            format="table",
            width=4,
            height=4,
            description="Probes that publish but are not in the registry: register them "
            "with `coverwatch probes add`.",
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Dead letters",
            "stat",
            "SELECT count(*) AS dead_letters FROM dead_letters WHERE $__timeFilter(received_at)",
            format="table",
            width=4,
            height=4,
            description="Messages or readings rejected in the time range (see the table below).",
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Readings waiting on probes",
            "stat",
            """
SELECT coalesce(sum(outbox_pending), 0) AS outbox_pending
FROM (SELECT DISTINCT ON (probe_id) outbox_pending
      FROM readings_system
      WHERE $__timeFilter(taken_at)
      ORDER BY probe_id, taken_at DESC) latest
""",
            format="table",
            width=4,
            height=4,
            description="Sum of each probe's latest outbox_pending: readings not yet sent.",
            thresholds=((None, "green"), (10000, "orange")),
        ),
    ]
    throughput = [
        Panel(
            "Readings received per minute, by kind",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(received_at, $__interval),
       kind AS metric,
       count(*) * 60000.0 / $__interval_ms AS readings_per_min
FROM (
  {readings_union}
) received
GROUP BY 1, 2
ORDER BY 1
""",
            width=16,
            description="Ingest rate by reading kind, by arrival time (a backlog flush shows "
            "as a spike).",
            unit="short",
            custom={"stacking": {"mode": "normal"}, "fillOpacity": 30},
        ),
        Panel(
            "Dead letters per interval, by field",
            "timeseries",
            """
SELECT $__timeGroupAlias(received_at, $__interval),
       coalesce(field, 'whole message') AS metric,
       count(*) AS dead_letters
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 1
""",
            width=8,
            custom={"drawStyle": "bars", "fillOpacity": 60},
        ),
    ]
    outbox = [
        Panel(
            "Outbox backlog on probes",
            "timeseries",
            """
SELECT "time",
       sum(pending) AS outbox_pending,
       count(*) FILTER (WHERE pending > 0) AS probes_with_backlog
FROM (SELECT $__timeGroupAlias(taken_at, $__interval),
             probe_id,
             max(outbox_pending) AS pending
      FROM readings_system
      WHERE $__timeFilter(taken_at)
      GROUP BY 1, 2) per_probe
GROUP BY 1
ORDER BY 1
""",
            width=12,
            description="Readings kept on the probes' SD cards until the broker acknowledges "
            "them (from system readings); grows while villages are cut off.",
            overrides=(("probes_with_backlog", {"custom.axisPlacement": "right"}),),
        ),
        Panel(
            "Probes with the largest backlog",
            "table",
            """
SELECT s.probe_id,
       p.village,
       s.outbox_pending,
       s.outbox_dropped_total,
       s.dropped_in_range,
       s.taken_at AS reported_at
FROM (SELECT DISTINCT ON (probe_id)
             probe_id, outbox_pending, outbox_dropped_total, taken_at,
             greatest(0, outbox_dropped_total
                         - min(outbox_dropped_total) OVER (PARTITION BY probe_id))
                 AS dropped_in_range
      FROM readings_system
      WHERE $__timeFilter(taken_at)
      ORDER BY probe_id, taken_at DESC) s
LEFT JOIN probes p USING (probe_id)
ORDER BY s.outbox_pending DESC NULLS LAST, s.dropped_in_range DESC
LIMIT 20
""",
            format="table",
            width=12,
            description="dropped_in_range: readings the outbox discarded (size or age limit) "
            "during the time range — lost for good unless exported.",
            overrides=(
                _probe_link(),
                ("reported_at", {"unit": "dateTimeFromNow"}),
                ("dropped_in_range", {"color": {"mode": "thresholds"}}),
            ),
        ),
    ]
    tables = [
        Panel(
            "Probes",
            "table",
            """
SELECT probe_id, village, state, stale, revoked, registered, last_seen, agent_version,
       report_interval_s
FROM probe_health
ORDER BY revoked, stale DESC, last_seen NULLS FIRST
""",
            format="table",
            width=12,
            height=10,
            overrides=(
                _probe_link(),
                ("last_seen", {"unit": "dateTimeFromNow"}),
                ("report_interval_s", {"unit": "s"}),
            ),
        ),
        Panel(
            "Latest dead letters",
            "table",
            """
SELECT received_at AS "time", topic, probe_id, reading_index, field, reason, payload_bytes
FROM dead_letters
WHERE $__timeFilter(received_at)
ORDER BY received_at DESC
LIMIT 50
""",
            format="table",
            width=12,
            height=10,
            overrides=(("payload_bytes", {"unit": "bytes"}),),
        ),
    ]
    return dashboard(
        uid=FLEET_UID,
        title="coverwatch — fleet overview",
        description="Probes online and stale, ingest rate, dead letters and outbox backlogs.",
        rows=[stats, throughput, outbox, tables],
        datasource_uid=datasource_uid,
        time_from="now-24h",
    )


# ---------------------------------------------------------------------- probe detail

PROBE_VARIABLE_SQL = (
    "SELECT probe_id FROM probes UNION SELECT probe_id FROM probe_status ORDER BY 1"
)


def probe_detail(datasource_uid: str) -> JSON:
    this_probe = "probe_id = '$probe'"
    header = [
        Panel(
            "Probe",
            "table",
            """
SELECT q.probe_id, p.village, p.operator, s.state, s.last_seen, s.agent_version,
       p.report_interval_s, p.installed_at, p.revoked_at
FROM (SELECT '$probe'::text AS probe_id) q
LEFT JOIN probes p USING (probe_id)
LEFT JOIN probe_status s USING (probe_id)
""",
            format="table",
            width=12,
            height=4,
            overrides=(
                ("last_seen", {"unit": "dateTimeFromNow"}),
                ("report_interval_s", {"unit": "s"}),
            ),
        ),
        Panel(
            "Registered to a network",
            "stat",
            f"""
SELECT 100.0 * count(*) FILTER (WHERE {REGISTERED}) / nullif(count(*), 0) AS availability_pct
FROM readings_signal
WHERE {this_probe} AND $__timeFilter(taken_at)
""",
            format="table",
            width=4,
            height=4,
            unit="percent",
            decimals=1,
            description="Share of signal readings in the range with the modem registered "
            "(home or roaming).",
            thresholds=((None, "red"), (80, "orange"), (95, "green")),
        ),
        Panel(
            "Median RTT",
            "stat",
            f"""
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY coalesce(rtt_median_ms, rtt_avg_ms))
           AS rtt_median_ms
FROM readings_latency
WHERE {this_probe} AND $__timeFilter(taken_at)
""",
            format="table",
            width=4,
            height=4,
            unit="ms",
            thresholds=((None, "green"), (150, "orange"), (500, "red")),
        ),
        Panel(
            "Power outages",
            "stat",
            f"""
SELECT count(*) AS outages, coalesce(sum(outage_duration_s), 0) / 3600.0 AS outage_h
FROM power_outages
WHERE {this_probe} AND $__timeFilter(outage_started_at)
""",
            format="table",
            width=4,
            height=4,
            overrides=(("outage_h", {"unit": "h", "decimals": 1}),),
        ),
    ]
    signal = [
        Panel(
            "Signal strength",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       avg(rsrp_dbm) AS rsrp_dbm,
       avg(rssi_dbm) AS rssi_dbm,
       avg(rscp_dbm) AS rscp_dbm
FROM readings_signal
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            unit="dBm",
            description="RSRP for LTE/NR, RSSI for GSM, RSCP for UMTS. Gaps are periods "
            "without service (see Network registration) or without readings.",
        ),
        Panel(
            "Signal quality",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       avg(rsrq_db) AS rsrq_db,
       avg(sinr_db) AS sinr_db
FROM readings_signal
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            unit="dB",
        ),
    ]
    network = [
        Panel(
            "Network registration",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       100.0 * count(*) FILTER (WHERE {REGISTERED}) / count(*) AS registered_pct
FROM readings_signal
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            unit="percent",
            min=0,
            max=100,
            custom={"fillOpacity": 20},
        ),
        Panel(
            "Technology in use",
            "state-timeline",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       mode() WITHIN GROUP (ORDER BY coalesce(technology, 'no service: ' || registration))
           AS network
FROM readings_signal
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            format="table",
            options={"showValue": "auto", "mergeValues": True},
        ),
    ]
    latency = [
        Panel(
            "Round-trip time, by target",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       target AS metric,
       avg(coalesce(rtt_median_ms, rtt_avg_ms)) AS rtt_ms
FROM readings_latency
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1, 2
ORDER BY 1
""",
            unit="ms",
        ),
        Panel(
            "Packet loss, by target",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       target AS metric,
       avg(loss_pct) AS loss_pct
FROM readings_latency
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1, 2
ORDER BY 1
""",
            unit="percent",
            min=0,
            max=100,
        ),
    ]
    power = [
        Panel(
            "Power and battery",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       avg(battery_pct) AS battery_pct,
       100.0 * avg(on_mains::int) AS on_mains_pct,
       100.0 * avg(undervoltage_now::int) AS undervoltage_pct
FROM readings_power
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            unit="percent",
            min=0,
            max=100,
            description="on_mains_pct and undervoltage_pct: share of readings in the interval "
            "on grid power / with the Pi reporting under-voltage.",
        ),
        Panel(
            "Probe health",
            "timeseries",
            f"""
SELECT $__timeGroupAlias(taken_at, $__interval),
       max(cpu_temp_c) AS cpu_temp_c,
       max(outbox_pending) AS outbox_pending
FROM readings_system
WHERE {this_probe} AND $__timeFilter(taken_at)
GROUP BY 1
ORDER BY 1
""",
            overrides=(
                ("cpu_temp_c", {"unit": "celsius"}),
                ("outbox_pending", {"custom.axisPlacement": "right", "unit": "short"}),
            ),
        ),
    ]
    events = [
        Panel(
            "Power outages",
            "table",
            f"""
SELECT outage_started_at, outage_ended_at, outage_duration_s, previous_boot_id
FROM power_outages
WHERE {this_probe}
  AND outage_ended_at > $__timeFrom()::timestamptz
  AND outage_started_at < $__timeTo()::timestamptz
ORDER BY outage_started_at DESC
""",
            format="table",
            overrides=(("outage_duration_s", {"unit": "s"}),),
        ),
        Panel(
            "Events (online, offline, reboot)",
            "table",
            f"""
SELECT at AS "time", event, detail::text AS detail
FROM probe_events
WHERE {this_probe} AND $__timeFilter(at)
ORDER BY at DESC
LIMIT 200
""",
            format="table",
        ),
    ]
    return dashboard(
        uid=PROBE_UID,
        title="coverwatch — probe detail",
        description="One probe: signal, registration, latency, loss, power and outages.",
        rows=[header, signal, network, latency, power, events],
        datasource_uid=datasource_uid,
        variables=[query_variable("probe", "Probe", PROBE_VARIABLE_SQL, datasource_uid)],
        time_from="now-7d",
    )


# -------------------------------------------------------------------------- coverage

PROVINCE_VARIABLE_SQL = "SELECT DISTINCT province FROM villages WHERE province <> '' ORDER BY 1"
# What $province becomes for "All": a subquery, so that it also works on an empty registry.
PROVINCE_ALL_VALUE = "SELECT province FROM villages"


def _coverage_cte() -> str:
    """Every village's coverage per operator over the time range, from the database's one
    definition (``coverage_by_village()``, migration 007) — what the map and the API show.

    ``best`` is each village's best operator, chosen as geo/ chooses it (class, then
    availability, then operator code).
    """
    return f"""
WITH registry AS (
  SELECT village_id, name AS village, commune, district, province
  FROM villages WHERE province IN ($province)
),
labelled AS (
  SELECT r.province, r.district, r.commune, r.village, r.village_id,
         c.operator AS operator_code, coalesce(o.name, c.operator) AS operator,
         c.availability_pct, c.level, c.coverage_class, c.probes, c.readings
  FROM coverage_by_village($__timeFrom()::timestamptz, $__timeTo()::timestamptz,
                           {VILLAGE_RADIUS_M}) c
  JOIN registry r USING (village_id)
  LEFT JOIN mobile_operators o ON o.code = c.operator
),
best AS (
  SELECT DISTINCT ON (village_id) *
  FROM labelled
  ORDER BY village_id, level DESC, availability_pct DESC, operator_code DESC
)
""".strip()


def coverage(datasource_uid: str) -> JSON:
    cte = _coverage_cte()
    pct = {"unit": "percent", "decimals": 1}
    stats = [
        Panel(
            "Villages in the registry",
            "stat",
            "SELECT count(*) AS villages FROM villages WHERE province IN ($province)",
            format="table",
            width=5,
            height=4,
        ),
        Panel(
            "Villages measured",
            "stat",
            f"{cte}\nSELECT count(*) AS villages FROM best",
            format="table",
            width=5,
            height=4,
            description=f"Villages with a probe within {VILLAGE_RADIUS_M / 1000:g} km that sent "
            "signal readings in the time range. The others are unmeasured, never 'none'.",
        ),
        Panel(
            "Measured villages without usable service",
            "stat",
            f"{cte}\nSELECT count(*) AS villages FROM best WHERE coverage_class = 'none'",
            format="table",
            width=5,
            height=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "Availability, mean of measured villages",
            "stat",
            f"{cte}\nSELECT avg(availability_pct) AS availability_pct FROM best",
            format="table",
            width=5,
            height=4,
            unit="percent",
            decimals=1,
            thresholds=((None, "red"), (80, "orange"), (95, "green")),
            description="Mean over measured villages of the best operator's availability.",
        ),
        Panel(
            "How this is measured",
            "text",
            width=4,
            height=4,
            content=f"""
The same definition as the map and the API (`coverage_by_village`). A reading is
**usable** when registered and at or above the *poor* threshold of its technology
(`coverwatch thresholds show`). Availability = usable readings / readings; class =
median level. Probes within {VILLAGE_RADIUS_M / 1000:g} km speak for a village,
weighted by 1/distance².
""",
        ),
    ]
    by_operator = [
        Panel(
            "Availability by operator, daily (mean of measured villages)",
            "timeseries",
            f"""
WITH registry AS (
  SELECT village_id FROM villages WHERE province IN ($province)
)
SELECT d.day AS "time",
       coalesce(o.name, c.operator) AS metric,
       avg(c.availability_pct) AS availability_pct
FROM generate_series(date_trunc('day', $__timeFrom()::timestamptz, 'UTC'),
                     $__timeTo()::timestamptz, INTERVAL '1 day') AS d(day)
CROSS JOIN LATERAL coverage_by_village(greatest(d.day, $__timeFrom()::timestamptz),
                                       least(d.day + INTERVAL '1 day', $__timeTo()::timestamptz),
                                       {VILLAGE_RADIUS_M}) c
JOIN registry r USING (village_id)
LEFT JOIN mobile_operators o ON o.code = c.operator
GROUP BY 1, 2
ORDER BY 1
""",
            width=24,
            unit="percent",
            min=0,
            max=100,
        ),
    ]
    tables = [
        Panel(
            "Coverage by village and operator",
            "table",
            f"""
{cte}
SELECT province, district, commune, village, operator,
       coverage_class, availability_pct, probes, readings
FROM labelled
ORDER BY availability_pct NULLS FIRST, province, district, commune, village, operator
""",
            format="table",
            width=12,
            height=12,
            overrides=(("availability_pct", pct),),
        ),
        Panel(
            "Coverage by commune and operator",
            "table",
            f"""
{cte}
SELECT province, district, commune, operator,
       avg(availability_pct) AS availability_pct,
       count(*) AS villages_measured,
       count(*) FILTER (WHERE coverage_class = 'none') AS villages_without_service,
       sum(readings) AS readings
FROM labelled
GROUP BY province, district, commune, operator
ORDER BY availability_pct NULLS FIRST, province, district, commune, operator
""",
            format="table",
            width=12,
            height=12,
            overrides=(("availability_pct", pct),),
        ),
    ]
    province = query_variable(
        "province",
        "Province",
        PROVINCE_VARIABLE_SQL,
        datasource_uid,
        multi=True,
        include_all=True,
    )
    province["allValue"] = PROVINCE_ALL_VALUE
    province["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return dashboard(
        uid=COVERAGE_UID,
        title="coverwatch — village and commune coverage",
        description="Coverage by operator for every measured village and commune, by the "
        "same definition as the map and the API.",
        rows=[stats, by_operator, tables],
        datasource_uid=datasource_uid,
        variables=[province],
        time_from="now-30d",
        refresh="",
    )


# --------------------------------------------------------------------------- outages

# Network outages: offline (last will) until the next online event of the same probe.
# One that overlaps a power outage the probe reported afterwards is put down to power.
_OUTAGES_CTE = """
WITH network AS (
  SELECT e.probe_id,
         e.at AS started_at,
         (SELECT min(n.at) FROM probe_events n
          WHERE n.probe_id = e.probe_id AND n.event = 'online' AND n.at > e.at) AS ended_at
  FROM probe_events e
  WHERE e.event = 'offline'
    AND e.at < $__timeTo()::timestamptz
),
classified AS (
  SELECT n.probe_id,
         n.started_at,
         coalesce(n.ended_at, now()) AS ended_at,
         n.ended_at IS NULL AS ongoing,
         EXISTS (SELECT 1 FROM power_outages o
                 WHERE o.probe_id = n.probe_id
                   AND o.outage_started_at < coalesce(n.ended_at, now())
                   AND o.outage_ended_at > n.started_at) AS power_related
  FROM network n
),
network_outages AS (
  SELECT probe_id, started_at, ended_at, ongoing,
         extract(epoch FROM ended_at - started_at)::float8 AS duration_s
  FROM classified
  WHERE NOT power_related
    AND ended_at > $__timeFrom()::timestamptz
),
power AS (
  SELECT probe_id, outage_started_at AS started_at, outage_ended_at AS ended_at,
         outage_duration_s AS duration_s
  FROM power_outages
  WHERE outage_ended_at > $__timeFrom()::timestamptz
    AND outage_started_at < $__timeTo()::timestamptz
)
""".strip()


def outages(datasource_uid: str) -> JSON:
    cte = _OUTAGES_CTE
    hours = {"unit": "h", "decimals": 1}

    def stat(title: str, sql: str, *, unit: str = "", decimals: int | None = None) -> Panel:
        return Panel(
            title,
            "stat",
            f"{cte}\n{sql}",
            format="table",
            width=6,
            height=4,
            unit=unit,
            decimals=decimals,
        )

    stats = [
        stat("Power outages", "SELECT count(*) AS power_outages FROM power"),
        stat(
            "Hours without power",
            "SELECT coalesce(sum(duration_s), 0) / 3600.0 AS power_h FROM power",
            unit="h",
            decimals=1,
        ),
        stat("Network outages", "SELECT count(*) AS network_outages FROM network_outages"),
        stat(
            "Hours without network (power on)",
            "SELECT coalesce(sum(duration_s), 0) / 3600.0 AS network_h FROM network_outages",
            unit="h",
            decimals=1,
        ),
    ]
    chart = [
        Panel(
            "Outage hours per day: power vs network",
            "timeseries",
            f"""
{cte}
SELECT $__timeGroupAlias(started_at, '1d'),
       cause AS metric,
       sum(duration_s) / 3600.0 AS outage_h
FROM (SELECT started_at, 'power' AS cause, duration_s FROM power
      UNION ALL
      SELECT started_at, 'network', duration_s FROM network_outages) o
GROUP BY 1, 2
ORDER BY 1
""",
            width=24,
            unit="h",
            description="Power: outages probes reported after power returned. Network: the "
            "broker lost the probe (last will) while it had power.",
            custom={"drawStyle": "bars", "fillOpacity": 70, "stacking": {"mode": "normal"}},
        ),
    ]
    tables = [
        Panel(
            "Outages by village",
            "table",
            f"""
{cte}
SELECT coalesce(p.village, o.probe_id) AS village,
       count(*) FILTER (WHERE o.cause = 'power') AS power_outages,
       coalesce(sum(o.duration_s) FILTER (WHERE o.cause = 'power'), 0) / 3600.0 AS power_h,
       count(*) FILTER (WHERE o.cause = 'network') AS network_outages,
       coalesce(sum(o.duration_s) FILTER (WHERE o.cause = 'network'), 0) / 3600.0 AS network_h
FROM (SELECT probe_id, 'power' AS cause, duration_s FROM power
      UNION ALL
      SELECT probe_id, 'network', duration_s FROM network_outages) o
LEFT JOIN probes p USING (probe_id)
GROUP BY 1
ORDER BY sum(o.duration_s) DESC
""",
            format="table",
            width=8,
            height=10,
            overrides=(("power_h", hours), ("network_h", hours)),
        ),
        Panel(
            "Power outages",
            "table",
            f"""
{cte}
SELECT o.probe_id, p.village, o.started_at, o.ended_at, o.duration_s
FROM power o LEFT JOIN probes p USING (probe_id)
ORDER BY o.started_at DESC
LIMIT 200
""",
            format="table",
            width=8,
            height=10,
            overrides=(_probe_link(), ("duration_s", {"unit": "s"})),
        ),
        Panel(
            "Network outages",
            "table",
            f"""
{cte}
SELECT o.probe_id, p.village, o.started_at, o.ended_at, o.ongoing, o.duration_s
FROM network_outages o LEFT JOIN probes p USING (probe_id)
ORDER BY o.started_at DESC
LIMIT 200
""",
            format="table",
            width=8,
            height=10,
            overrides=(_probe_link(), ("duration_s", {"unit": "s"})),
        ),
    ]
    return dashboard(
        uid=OUTAGES_UID,
        title="coverwatch — outages: power vs network",
        description="Power outages reported by probes against network outages seen by the "
        "broker while the probe had power.",
        rows=[stats, chart, tables],
        datasource_uid=datasource_uid,
        time_from="now-30d",
        refresh="5m",
    )


# File name (without .json) -> builder.
DASHBOARDS: dict[str, Callable[[str], JSON]] = {
    "fleet": fleet,
    "probe": probe_detail,
    "coverage": coverage,
    "outages": outages,
}
