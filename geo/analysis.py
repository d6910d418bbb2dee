"""The one coverage analysis that the map, the reports and the HTTP API all start from.

``analyse()`` reads, for one window, radius and (optionally) province: every probe's
coverage (``geo.coverage``), the village registry and every village's status
(``geo.status``) — each from the database's single definition of coverage. What is
drawn, ranked or served is derived from an :class:`Analysis`; nothing downstream
queries coverage again, so the three can no longer disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from geo.coverage import ProbeCoverage, TimeWindow, by_probe, probe_coverage
from geo.gcpause import gc_paused
from geo.registry import Village, load_villages
from geo.status import (
    DEFAULT_MIN_DISTANCE_M,
    DEFAULT_RADIUS_M,
    VillageStatus,
    refresh_nearby,
    village_status,
)


@dataclass(frozen=True, slots=True)
class Analysis:
    window: TimeWindow
    radius_m: float
    province: str | None
    probes: list[ProbeCoverage]
    villages: list[Village]
    statuses: list[VillageStatus]
    probe_by_id: Mapping[str, ProbeCoverage] = field(default_factory=dict)


def analyse(
    connection: psycopg.Connection[Any],
    window: TimeWindow,
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    min_distance_m: float = DEFAULT_MIN_DISTANCE_M,
    province: str | None = None,
) -> Analysis:
    refresh_nearby(connection, radius_m=radius_m, min_distance_m=min_distance_m)
    with gc_paused():
        probes = probe_coverage(connection, window)
        villages = load_villages(connection, province=province)
        statuses = village_status(
            connection, villages, probes, window, radius_m=radius_m, min_distance_m=min_distance_m
        )
        return Analysis(window, radius_m, province, probes, villages, statuses, by_probe(probes))
