"""Claimed vs measured: where an operator's service map and the evidence disagree.

For one technology (4G by default, the one coverage is judged on), per operator:

- **claimed, not served**: villages inside the operator's claimed area where the
  evidence says there is no usable service from it — measured by a probe or a survey,
  or predicted with p(usable) <= 0.2 (shown as predicted, never as measured);
- **served, not claimed**: villages outside the claimed area where a probe or survey
  measured usable service (a map that undersells is worth correcting too).

Each list is ranked by population, each village with the evidence behind it; the
communes sum them up (the areas a province raises with the operator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
import shapely

from geo.claims import load_claim_areas
from geo.evidence import NO_SERVICE_P, OperatorVerdict, VillageVerdict
from geo.operators import operator_label
from geo.registry import Village

Direction = Literal["claimed_not_served", "served_not_claimed"]
DIRECTION_TEXT: Final[dict[Direction, str]] = {
    "claimed_not_served": "claimed as covered, no service found",
    "served_not_claimed": "not claimed, service measured",
}
# A predicted verdict contradicts a claim only when it is at least this sure.
MAX_PREDICTED_P_USABLE: Final = 1.0 - NO_SERVICE_P


@dataclass(frozen=True, slots=True)
class ClaimGap:
    operator: str
    technology: str
    direction: Direction
    village: Village
    evidence: OperatorVerdict

    @property
    def population(self) -> int:
        return self.village.population or 0

    def to_dict(self) -> dict[str, Any]:
        v = self.village
        return {
            "operator": self.operator,
            "operator_name": operator_label(self.operator),
            "technology": self.technology,
            "direction": self.direction,
            "village_id": v.village_id,
            "name": v.name,
            "commune": v.commune,
            "district": v.district,
            "population": v.population,
            "evidence": self.evidence.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class CommuneGap:
    operator: str
    direction: Direction
    commune: str
    district: str
    province: str
    villages: int
    population: int
    measured: int  # of the villages, how many rest on measurements (the rest: predicted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "direction": self.direction,
            "commune": self.commune,
            "district": self.district,
            "province": self.province,
            "villages": self.villages,
            "population": self.population,
            "measured": self.measured,
        }


def _contradicts(verdict: OperatorVerdict) -> Direction | None:
    """Which way this verdict could contradict a claim (None: it cannot)."""
    if verdict.p_usable is None:
        return None
    if verdict.kind in ("probe", "survey"):
        return "served_not_claimed" if verdict.p_usable == 1.0 else "claimed_not_served"
    if verdict.kind == "predicted" and verdict.p_usable <= MAX_PREDICTED_P_USABLE:
        return "claimed_not_served"
    return None


def compare_claims(
    connection: psycopg.Connection[Any],
    verdicts: Sequence[VillageVerdict],
    *,
    technology: str = "lte",
    operators: Iterable[str] | None = None,
) -> list[ClaimGap]:
    """Every disagreement between the claims of ``technology`` and the verdicts,
    largest population first. Operators without any claim of it are left out (nothing
    claimed is not a claim of nothing)."""
    wanted = set(operators) if operators is not None else None
    claimed_operators = [
        row[0]
        for row in connection.execute(
            "SELECT DISTINCT operator_code FROM operator_claims WHERE technology = %s ORDER BY 1",
            (technology,),
        ).fetchall()
        if wanted is None or row[0] in wanted
    ]
    gaps: list[ClaimGap] = []
    for operator in claimed_operators:
        area = load_claim_areas(connection, operator, technology)
        shapely.prepare(area)
        for verdict in verdicts:
            mine = next((o for o in verdict.operators if o.operator == operator), None)
            if mine is None:
                continue
            direction = _contradicts(mine)
            if direction is None:
                continue
            inside = bool(shapely.contains_xy(area, verdict.village.lon, verdict.village.lat))
            if inside == (direction == "claimed_not_served"):
                gaps.append(ClaimGap(operator, technology, direction, verdict.village, mine))
    gaps.sort(
        key=lambda g: (g.operator, g.direction, -g.population, g.village.name, g.village.village_id)
    )
    return gaps


def by_commune(gaps: Iterable[ClaimGap]) -> list[CommuneGap]:
    """The gaps summed per operator, direction and commune, largest population first."""
    totals: dict[tuple[str, Direction, str, str, str], list[int]] = {}
    for gap in gaps:
        v = gap.village
        key = (gap.operator, gap.direction, v.commune or "", v.district or "", v.province or "")
        entry = totals.setdefault(key, [0, 0, 0])
        entry[0] += 1
        entry[1] += gap.population
        entry[2] += gap.evidence.kind in ("probe", "survey")
    rows = [CommuneGap(*key, *values) for key, values in totals.items()]
    rows.sort(key=lambda c: (c.operator, c.direction, -c.population, c.commune))
    return rows
