"""Coverage of each probe, per operator and technology, over a time window.

What coverage *is* lives in the database, once (``collector/migrations/
007_coverage_definition.sql``): the thresholds in ``coverage_thresholds``, the hourly
rollups, and ``coverage_by_probe()`` / ``coverage_by_village()``. The map, the HTTP API,
the reports and the Grafana panels all read those functions; this module only turns
their rows into Python objects. In short (see geo/README.md):

- **level** of a reading: 3 good, 2 fair, 1 poor, 0 none by the thresholds of its
  technology. Not registered → 0. Registered with no signal value, or a technology
  without thresholds → 1 (poor: there is service, strength unknown).
- **availability** = % of *signal readings* in the window with usable service (level ≥ 1,
  i.e. registered and at or above the "poor" threshold). It is a share of readings, not
  of wall time: an interval without readings (probe switched off, power cut, backhaul
  down with the outbox later lost) counts neither for nor against coverage — it is
  unmeasured. ``measured_pct`` says how much of the window the probe did measure.
- **class** of a probe and operator = the lower median level of its readings. "none"
  therefore means no usable service at least half of the measured time; a probe or
  operator without readings is "unmeasured", never "none".
- a **window** is read in whole UTC hours: every hour that overlaps it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from geo.operators import operator_label
from geo.thresholds import LEVELS, CoverageClass, SignalClass


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
    mean_signal_dbm: float | None  # dBm, mean over the readings with a signal value
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
    rtt_ms: float | None = None  # mean of the latency rounds' median round-trip times
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
            "rtt_ms": self.rtt_ms,
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
                            "mean_signal_dbm": t.mean_signal_dbm,
                        }
                        for t in o.technologies
                    ],
                }
                for o in self.operators
            ],
        }


_SIGNAL_SQL = """
SELECT probe_id, operator, technology, readings, usable_readings, level, signal_dbm_mean
FROM coverage_by_probe(%(start)s, %(end)s)
ORDER BY probe_id, operator, technology = 'all' DESC, technology
"""

# Registered probes; those that sent signal readings without being registered come from
# the activity rows (coverage_probe_activity is computed once per analysis).
_PROBES_SQL = """
SELECT probe_id, village, lon, lat, coalesce(report_interval_s, 300)
FROM probes
"""
_UNREGISTERED_INTERVAL_S = 300  # the collector's default report_interval_s

# Share of the window's report slots (one per report_interval_s) with a signal reading,
# and latency over every target (rtt: mean of the rounds' medians).
_ACTIVITY_SQL = """
SELECT probe_id, signal_slots, latency_rounds, rtt_ms, loss_pct
FROM coverage_probe_activity(%(start)s, %(end)s)
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


def probe_coverage(connection: psycopg.Connection[Any], window: TimeWindow) -> list[ProbeCoverage]:
    """Every registered probe (and every unregistered one that sent signal readings)."""
    params = {"start": window.start, "end": window.end}
    operators: dict[str, list[OperatorCoverage]] = defaultdict(list)
    pending: dict[tuple[str, str], tuple[int, int, int]] = {}
    technologies: dict[tuple[str, str], list[TechnologyCoverage]] = defaultdict(list)
    for row in connection.execute(_SIGNAL_SQL, params):
        probe_id, operator, technology, readings, usable, level, mean = row
        if technology == "all":
            pending[(probe_id, operator)] = (readings, usable, level)
        else:
            technologies[(probe_id, operator)].append(
                TechnologyCoverage(technology, readings, usable, _float(mean), LEVELS[int(level)])
            )
    for (probe_id, operator), (readings, usable, level) in pending.items():
        operators[probe_id].append(
            OperatorCoverage(
                operator,
                readings,
                usable,
                LEVELS[int(level)],
                tuple(technologies[(probe_id, operator)]),
            )
        )
    activity = {row[0]: row[1:] for row in connection.execute(_ACTIVITY_SQL, params)}
    outages = {row[0]: row[1:] for row in connection.execute(_OUTAGES_SQL, params)}
    placed = {row[0]: row[1:] for row in connection.execute(_PROBES_SQL)}
    for probe_id, (signal_slots, *_) in activity.items():
        if signal_slots > 0 and probe_id not in placed:
            placed[probe_id] = (None, None, None, _UNREGISTERED_INTERVAL_S)
    result = []
    for probe_id in sorted(placed):
        village, lon, lat, interval_s = placed[probe_id]
        slots, rounds, rtt, loss = activity.get(probe_id, (0, 0, None, None))
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
                measured_pct=min(100.0, 100.0 * float(slots) / expected_slots),
                latency_rounds=int(rounds),
                rtt_ms=_float(rtt),
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
