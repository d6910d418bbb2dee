"""Villages without coverage, ranked by uncovered population x time.

``uncovered_score = population x (1 - best-operator availability)``: the number of
people who, on average over the measured time, had no usable service from any operator.
Availability is a share of *readings*, so hours in which the village's probe was dark
(a power cut, a dead probe) count as unmeasured and never as a coverage gap; the
``measured_pct`` and power columns show how much of the window the probe saw and why it
may not have seen more. ``heard_by_scan`` names the operators no probe measured that a
nearby probe's network scan heard (:mod:`geo.scan_evidence`): a hint, never coverage.

Order: measured villages by score (highest first; those with unknown population after
them by availability), then unmeasured villages (no probe within the radius) by
population — a list of where to install probes next. Villages with 100 % availability
are left out unless ``include_all``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeAlias

import psycopg

from geo.analysis import analyse
from geo.coverage import ProbeCoverage, TimeWindow
from geo.status import DEFAULT_RADIUS_M, VillageStatus
from geo.thresholds import CoverageClass

ReportFormat: TypeAlias = Literal["csv", "json", "table"]


@dataclass(frozen=True, slots=True)
class UncoveredVillage:
    rank: int
    name: str
    commune: str
    district: str
    province: str
    population: int | None
    households: int | None
    status: CoverageClass
    best_operator: str | None
    best_availability_pct: float | None
    uncovered_score: float | None
    nearest_probe_id: str | None
    nearest_probe_km: float | None
    measured_pct: float | None
    grid_power: str
    power_outages: int | None
    outage_hours: float | None
    availability_pct: dict[str, float] = field(default_factory=dict)
    # Operators no nearby probe measured that a nearby probe's network scan heard: not
    # coverage (they change neither status nor score), where to look next.
    heard_by_scan: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_uncovered(
    statuses: Sequence[VillageStatus],
    probes: Mapping[str, ProbeCoverage],
    *,
    include_all: bool = False,
) -> list[UncoveredVillage]:
    """Pure ranking of village statuses (see the module docstring for the order)."""
    rows: list[tuple[tuple[Any, ...], UncoveredVillage]] = []
    for status in statuses:
        village = status.village
        best = status.best
        availability = None if best is None else best.availability_pct
        if availability is not None and availability >= 100.0 and not include_all:
            continue
        score = (
            None
            if availability is None or village.population is None
            else village.population * (1 - availability / 100)
        )
        # Power and measured time from the probe that speaks for the village: the
        # nearest one within the radius.
        own = probes.get(status.nearby[0].probe_id) if status.nearby else None
        row = UncoveredVillage(
            rank=0,
            name=village.name,
            commune=village.commune,
            district=village.district,
            province=village.province,
            population=village.population,
            households=village.households,
            status=status.status,
            best_operator=None if best is None else best.operator_name,
            best_availability_pct=None if availability is None else round(availability, 1),
            uncovered_score=None if score is None else round(score, 1),
            nearest_probe_id=status.nearest_probe_id,
            nearest_probe_km=None
            if status.nearest_probe_m is None
            else round(status.nearest_probe_m / 1000, 2),
            measured_pct=None if own is None else round(own.measured_pct, 1),
            grid_power=village.grid_power,
            power_outages=None if own is None else own.outages,
            outage_hours=None if own is None else round(own.outage_s / 3600, 1),
            availability_pct={
                o.operator_name: round(o.availability_pct, 1) for o in status.operators
            },
            heard_by_scan=heard_by_scan(status),
        )
        if availability is None:
            order: tuple[Any, ...] = (2, -(village.population or 0), village.name)
        elif score is None:
            order = (1, availability, village.name)
        else:
            order = (0, -score, availability, village.name)
        rows.append((order, row))
    rows.sort(key=lambda pair: pair[0])
    return [_with_rank(row, rank) for rank, (_, row) in enumerate(rows, start=1)]


def heard_by_scan(status: VillageStatus) -> str:
    """``MobiFone (lte, umts), Vietnamobile (lte)``: the scan evidence in one cell."""
    return ", ".join(
        f"{e.operator_name} ({', '.join(e.technologies)})" if e.technologies else e.operator_name
        for e in status.scan_evidence
    )


def _with_rank(row: UncoveredVillage, rank: int) -> UncoveredVillage:
    values = row.to_dict()
    values["rank"] = rank
    return UncoveredVillage(**values)


def uncovered_villages(
    connection: psycopg.Connection[Any],
    window: TimeWindow,
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    province: str | None = None,
    include_all: bool = False,
) -> list[UncoveredVillage]:
    analysis = analyse(connection, window, radius_m=radius_m, province=province)
    return rank_uncovered(analysis.statuses, analysis.probe_by_id, include_all=include_all)


# --------------------------------------------------------------------------- output

_COLUMNS = (
    "rank",
    "name",
    "commune",
    "district",
    "province",
    "population",
    "households",
    "status",
    "best_operator",
    "best_availability_pct",
    "uncovered_score",
    "nearest_probe_id",
    "nearest_probe_km",
    "measured_pct",
    "grid_power",
    "power_outages",
    "outage_hours",
    "heard_by_scan",
)


def _operators(rows: Sequence[UncoveredVillage]) -> list[str]:
    return sorted({name for row in rows for name in row.availability_pct})


def _flat(row: UncoveredVillage, operators: Sequence[str]) -> dict[str, Any]:
    values = row.to_dict()
    flat = {column: values[column] for column in _COLUMNS}
    for name in operators:
        flat[f"availability_pct_{name}"] = row.availability_pct.get(name)
    return flat


def to_csv(rows: Sequence[UncoveredVillage]) -> str:
    operators = _operators(rows)
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        fieldnames=[*_COLUMNS, *(f"availability_pct_{name}" for name in operators)],
        lineterminator="\n",
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in _flat(row, operators).items()})
    return out.getvalue()


def to_json(rows: Sequence[UncoveredVillage], window: TimeWindow | None = None) -> str:
    body: dict[str, Any] = {"villages": [row.to_dict() for row in rows]}
    if window is not None:
        body = {"since": window.start.isoformat(), "until": window.end.isoformat(), **body}
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


_TABLE_COLUMNS = (
    ("#", "rank"),
    ("village", "name"),
    ("commune", "commune"),
    ("district", "district"),
    ("pop", "population"),
    ("status", "status"),
    ("best", "best_operator"),
    ("avail%", "best_availability_pct"),
    ("uncovered", "uncovered_score"),
    ("nearest probe", "nearest_probe_id"),
    ("km", "nearest_probe_km"),
    ("meas%", "measured_pct"),
    ("grid", "grid_power"),
    ("outages", "power_outages"),
    ("out h", "outage_hours"),
    ("heard by scan", "heard_by_scan"),
)


def to_table(rows: Sequence[UncoveredVillage]) -> str:
    operators = _operators(rows)
    headers = [title for title, _ in _TABLE_COLUMNS] + [f"{name}%" for name in operators]
    cells = [
        [_cell(getattr(row, attr)) for _, attr in _TABLE_COLUMNS]
        + [_cell(row.availability_pct.get(name)) for name in operators]
        for row in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    numeric = {"#", "pop", "avail%", "uncovered", "km", "meas%", "outages", "out h"}
    numeric |= {f"{name}%" for name in operators}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if headers[i] in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    if not rows:
        out.append("(no villages without coverage)")
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def render(
    rows: Sequence[UncoveredVillage], fmt: ReportFormat, window: TimeWindow | None = None
) -> str:
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "json":
        return to_json(rows, window)
    return to_table(rows)
