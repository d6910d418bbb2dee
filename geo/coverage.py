"""Coverage of each probe, per operator and technology, over a time window.

The aggregation runs in PostgreSQL (``percentile_cont``/``percentile_disc``, ``GROUPING
SETS``) over ``readings_signal`` and ``readings_latency``, so only one row per probe,
operator and technology comes back however many readings there are.

Definitions (see geo/README.md):

- **level** of a reading: 3 good, 2 fair, 1 poor, 0 none by the thresholds of its
  technology (geo/thresholds.py). Not registered → 0. Registered with no signal value,
  or a technology without thresholds → 1 (poor: there is service, strength unknown).
- **availability** = % of *signal readings* in the window with usable service (level ≥ 1,
  i.e. registered and at or above the "poor" threshold). It is a share of readings, not
  of wall time: an interval without readings (probe switched off, power cut, backhaul
  down with the outbox later lost) counts neither for nor against coverage — it is
  unmeasured. ``measured_pct`` says how much of the window the probe did measure.
- **class** of a probe and operator = the median level of its readings
  (``percentile_disc(0.5)``, the lower median). "none" therefore means no usable service
  at least half of the measured time; a probe or operator without readings is
  "unmeasured", never "none".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from geo.operators import CODE_OF_NAME, operator_label
from geo.thresholds import DEFAULT_THRESHOLDS, LEVELS, CoverageClass, SignalClass, Thresholds


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Half-open interval [start, end) of ``taken_at``."""

    start: datetime
    end: datetime

    @classmethod
    def last(cls, duration: timedelta, *, now: datetime | None = None) -> TimeWindow:
        end = now or datetime.now(UTC)
        return cls(end - duration, end)

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class TechnologyCoverage:
    technology: str  # lte, nr5g, umts, gsm; "none" for readings without one (not registered)
    readings: int
    usable_readings: int
    median_signal_dbm: float | None
    signal_class: SignalClass


@dataclass(frozen=True, slots=True)
class OperatorCoverage:
    operator: str  # MCC-MNC, or the probe's SIM operator as registered, or "unknown"
    readings: int
    usable_readings: int
    coverage_class: SignalClass
    technologies: tuple[TechnologyCoverage, ...] = ()

    @property
    def operator_name(self) -> str:
        return operator_label(self.operator)

    @property
    def availability_pct(self) -> float:
        return 100.0 * self.usable_readings / self.readings if self.readings else 0.0

    @property
    def level(self) -> int:
        return LEVELS.index(self.coverage_class)


@dataclass(frozen=True, slots=True)
class ProbeCoverage:
    probe_id: str
    village: str | None
    lon: float | None
    lat: float | None
    report_interval_s: int
    operators: tuple[OperatorCoverage, ...] = ()
    measured_pct: float = 0.0
    latency_rounds: int = 0
    rtt_median_ms: float | None = None
    loss_pct: float | None = None
    outages: int = 0
    outage_s: float = 0.0

    @property
    def measured(self) -> bool:
        return bool(self.operators)

    def best(self, operator: str | None = None) -> OperatorCoverage | None:
        """The operator's coverage here, or (``None``) the best operator's."""
        if operator is not None:
            return next((o for o in self.operators if o.operator == operator), None)
        if not self.operators:
            return None
        return max(self.operators, key=lambda o: (o.level, o.availability_pct, o.operator))

    def coverage_class(self, operator: str | None = None) -> CoverageClass:
        found = self.best(operator)
        return "unmeasured" if found is None else found.coverage_class

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the HTTP API and maps)."""
        return {
            "probe_id": self.probe_id,
            "village": self.village,
            "lon": self.lon,
            "lat": self.lat,
            "coverage_class": self.coverage_class(),
            "measured_pct": round(self.measured_pct, 1),
            "rtt_median_ms": self.rtt_median_ms,
            "loss_pct": self.loss_pct,
            "latency_rounds": self.latency_rounds,
            "outages": self.outages,
            "outage_s": self.outage_s,
            "operators": [
                {
                    "operator": o.operator,
                    "operator_name": o.operator_name,
                    "coverage_class": o.coverage_class,
                    "availability_pct": round(o.availability_pct, 1),
                    "readings": o.readings,
                    "technologies": [
                        {
                            "technology": t.technology,
                            "readings": t.readings,
                            "signal_class": t.signal_class,
                            "median_signal_dbm": t.median_signal_dbm,
                        }
                        for t in o.technologies
                    ],
                }
                for o in self.operators
            ],
        }


_SIGNAL_SQL = """
WITH sig AS (
    SELECT r.probe_id,
           coalesce(r.operator_code, op.code, nullif(p.operator, ''), 'unknown') AS operator,
           r.technology,
           r.registration IN ('home', 'roaming') AS registered,
           CASE r.technology WHEN 'gsm' THEN r.rssi_dbm
                             WHEN 'umts' THEN r.rscp_dbm
                             ELSE r.rsrp_dbm END AS signal_dbm
    FROM readings_signal r
    LEFT JOIN probes p USING (probe_id)
    LEFT JOIN unnest(%(op_names)s::text[], %(op_codes)s::text[]) AS op(name, code)
           ON lower(p.operator) = op.name
    WHERE r.taken_at >= %(start)s AND r.taken_at < %(end)s
), levelled AS (
    SELECT sig.*,
           CASE WHEN NOT registered THEN 0
                WHEN th.good_dbm IS NULL OR signal_dbm IS NULL THEN 1
                WHEN signal_dbm >= th.good_dbm THEN 3
                WHEN signal_dbm >= th.fair_dbm THEN 2
                WHEN signal_dbm >= th.poor_dbm THEN 1
                ELSE 0 END AS level
    FROM sig
    LEFT JOIN unnest(%(techs)s::text[], %(good)s::float8[], %(fair)s::float8[],
                     %(poor)s::float8[]) AS th(tech, good_dbm, fair_dbm, poor_dbm)
           ON th.tech = sig.technology
)
SELECT probe_id,
       operator,
       coalesce(technology, 'none') AS technology,
       GROUPING(technology) = 1 AS all_technologies,
       count(*) AS readings,
       count(*) FILTER (WHERE level >= 1) AS usable,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY level) AS median_level,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY signal_dbm) AS median_signal_dbm
FROM levelled
GROUP BY GROUPING SETS ((probe_id, operator), (probe_id, operator, technology))
ORDER BY probe_id, operator, all_technologies DESC, technology
"""

_PROBES_SQL = """
WITH seen AS (
    SELECT DISTINCT probe_id FROM readings_signal
    WHERE taken_at >= %(start)s AND taken_at < %(end)s
)
SELECT probe_id, p.village, p.lon, p.lat, coalesce(p.report_interval_s, 300)
FROM probes p FULL JOIN seen USING (probe_id)
ORDER BY probe_id
"""

# Share of the window's report slots (one per report_interval_s) with a signal reading.
_MEASURED_SQL = """
SELECT r.probe_id,
       count(DISTINCT floor(extract(epoch FROM r.taken_at)
                            / coalesce(p.report_interval_s, 300))) AS slots
FROM readings_signal r LEFT JOIN probes p USING (probe_id)
WHERE r.taken_at >= %(start)s AND r.taken_at < %(end)s
GROUP BY r.probe_id
"""

_LATENCY_SQL = """
SELECT probe_id,
       count(*) AS rounds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY coalesce(rtt_median_ms, rtt_avg_ms))
           AS rtt_median_ms,
       100.0 * sum(packets_sent - packets_received) / nullif(sum(packets_sent), 0) AS loss_pct
FROM readings_latency
WHERE taken_at >= %(start)s AND taken_at < %(end)s
GROUP BY probe_id
"""

# Outages (from the power_outages view) overlapping the window, clipped to it.
_OUTAGES_SQL = """
SELECT probe_id,
       count(*) AS outages,
       sum(extract(epoch FROM least(outage_ended_at, %(end)s)
                             - greatest(outage_started_at, %(start)s)))::float8 AS outage_s
FROM power_outages
WHERE outage_ended_at > %(start)s AND outage_started_at < %(end)s
GROUP BY probe_id
"""


def _parameters(window: TimeWindow, thresholds: Thresholds) -> dict[str, Any]:
    techs = sorted(thresholds.bands)
    return {
        "start": window.start,
        "end": window.end,
        "op_names": list(CODE_OF_NAME),
        "op_codes": list(CODE_OF_NAME.values()),
        "techs": techs,
        "good": [float(thresholds.bands[t].good_dbm) for t in techs],
        "fair": [float(thresholds.bands[t].fair_dbm) for t in techs],
        "poor": [float(thresholds.bands[t].poor_dbm) for t in techs],
    }


def probe_coverage(
    connection: psycopg.Connection[Any],
    window: TimeWindow,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[ProbeCoverage]:
    """Every registered probe (and every unregistered one that sent signal readings)."""
    params = _parameters(window, thresholds)
    operators: dict[str, list[OperatorCoverage]] = defaultdict(list)
    pending: dict[tuple[str, str], dict[str, Any]] = {}
    technologies: dict[tuple[str, str], list[TechnologyCoverage]] = defaultdict(list)
    for row in connection.execute(_SIGNAL_SQL, params):
        probe_id, operator, technology, overall, readings, usable, level, median = row
        if overall:
            pending[(probe_id, operator)] = {
                "readings": readings,
                "usable": usable,
                "level": level,
            }
        else:
            technologies[(probe_id, operator)].append(
                TechnologyCoverage(technology, readings, usable, _float(median), LEVELS[int(level)])
            )
    for (probe_id, operator), values in pending.items():
        operators[probe_id].append(
            OperatorCoverage(
                operator,
                values["readings"],
                values["usable"],
                LEVELS[int(values["level"])],
                tuple(technologies[(probe_id, operator)]),
            )
        )
    slots = dict(connection.execute(_MEASURED_SQL, params).fetchall())
    latency = {row[0]: row[1:] for row in connection.execute(_LATENCY_SQL, params)}
    outages = {row[0]: row[1:] for row in connection.execute(_OUTAGES_SQL, params)}
    result = []
    for probe_id, village, lon, lat, interval_s in connection.execute(_PROBES_SQL, params):
        rounds, rtt, loss = latency.get(probe_id, (0, None, None))
        outage_count, outage_s = outages.get(probe_id, (0, 0.0))
        expected_slots = max(window.seconds / interval_s, 1.0)
        result.append(
            ProbeCoverage(
                probe_id=probe_id,
                village=village,
                lon=lon,
                lat=lat,
                report_interval_s=interval_s,
                operators=tuple(operators.get(probe_id, ())),
                measured_pct=min(100.0, 100.0 * slots.get(probe_id, 0) / expected_slots),
                latency_rounds=rounds,
                rtt_median_ms=_float(rtt),
                loss_pct=_float(loss),
                outages=outage_count,
                outage_s=float(outage_s or 0.0),
            )
        )
    return result


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def by_probe(probes: list[ProbeCoverage]) -> Mapping[str, ProbeCoverage]:
    return {probe.probe_id: probe for probe in probes}
