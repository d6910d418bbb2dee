"""The evidence report and the claims comparison as table, CSV or JSON.

One line per village: its verdict, the evidence kind it rests on, the probability of no
service, and per operator what was found (``probe: usable``, ``survey: none``,
``predicted: p 0.12, -118 ± 7 dBm``). A predicted verdict is always written as
predicted, with its probability: never in the words of a measurement.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Final, Literal

from geo.claims_check import DIRECTION_TEXT, ClaimGap, by_commune
from geo.evidence import OperatorVerdict, VillageVerdict
from geo.operators import operator_label

Format = Literal["table", "csv", "json"]
# A predicted village neither called "no service" (p >= 0.8) nor this unlikely to be
# without it is reported as uncertain.
UNCERTAIN_FROM: Final = 0.2

VERDICT_TEXT: Final = {
    True: "no service",
    False: "service",
}


def verdict_text(verdict: VillageVerdict) -> str:
    """``no service``/``service`` when measured, ``… (predicted)`` or ``uncertain`` when
    predicted (``p_no_service`` says how sure), ``unknown`` without evidence."""
    if verdict.kind == "unknown":
        return "unknown"
    if verdict.measured:
        return VERDICT_TEXT[verdict.no_service]
    p = verdict.p_no_service
    if verdict.no_service:
        return "no service (predicted)"
    if p is not None and p >= UNCERTAIN_FROM:
        return "uncertain (predicted)"
    return "service (predicted)"


def operator_text(o: OperatorVerdict) -> str:
    name = operator_label(o.operator)
    if o.kind in ("probe", "survey"):
        return f"{name}: {o.kind} {'usable' if o.p_usable == 1.0 else 'none'}"
    if o.kind == "predicted" and o.p_usable is not None:
        return (
            f"{name}: predicted p(usable) {o.p_usable:.2f}, {o.rsrp_dbm:.0f} ± {o.sigma_db:.0f} dBm"
        )
    return f"{name}: unknown"


def render_verdicts(verdicts: Sequence[VillageVerdict], fmt: Format) -> str:
    ordered = sorted(
        verdicts,
        key=lambda v: (-(v.p_no_service or 0.0), -(v.village.population or 0), v.village.name),
    )
    if fmt == "json":
        return json.dumps([v.to_dict() for v in ordered], ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "village_id",
                "name",
                "commune",
                "district",
                "population",
                "verdict",
                "evidence",
                "p_no_service",
                "operators",
            ]
        )
        for v in ordered:
            p = v.p_no_service
            writer.writerow(
                [
                    v.village.village_id,
                    v.village.name,
                    v.village.commune,
                    v.village.district,
                    v.village.population if v.village.population is not None else "",
                    verdict_text(v),
                    v.kind,
                    "" if p is None else f"{p:.3f}",
                    "; ".join(operator_text(o) for o in v.operators),
                ]
            )
        return out.getvalue()
    if not ordered:
        return "(no villages in the registry: `coverwatch villages import FILE` adds them)\n"
    lines = [
        f"{'village':<28}{'commune':<22}{'pop':>6}  {'verdict':<24}{'evidence':<11}"
        f"{'p(no service)':>13}"
    ]
    for v in ordered:
        p = v.p_no_service
        lines.append(
            f"{v.village.name[:27]:<28}{(v.village.commune or '')[:21]:<22}"
            f"{v.village.population if v.village.population is not None else '-':>6}  "
            f"{verdict_text(v):<24}{v.kind:<11}{'-' if p is None else f'{p:.2f}':>13}"
        )
        lines.extend(f"    {operator_text(o)}" for o in v.operators)
    counts: dict[str, int] = {}
    for v in ordered:
        counts[v.kind] = counts.get(v.kind, 0) + 1
    lines.append(
        f"{len(ordered)} villages; evidence: "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        + f"; no service: {sum(v.no_service for v in ordered)}"
    )
    return "\n".join(lines) + "\n"


def render_claim_gaps(gaps: Sequence[ClaimGap], fmt: Format) -> str:
    if fmt == "json":
        communes = [c.to_dict() for c in by_commune(gaps)]
        body = {"villages": [g.to_dict() for g in gaps], "communes": communes}
        return json.dumps(body, ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "operator",
                "technology",
                "direction",
                "village_id",
                "name",
                "commune",
                "district",
                "population",
                "evidence",
                "p_usable",
                "detail",
            ]
        )
        for g in gaps:
            e = g.evidence
            writer.writerow(
                [
                    operator_label(g.operator),
                    g.technology,
                    g.direction,
                    g.village.village_id,
                    g.village.name,
                    g.village.commune,
                    g.village.district,
                    g.village.population if g.village.population is not None else "",
                    e.kind,
                    "" if e.p_usable is None else f"{e.p_usable:.3f}",
                    e.evidence,
                ]
            )
        return out.getvalue()
    if not gaps:
        return "(the claims and the evidence agree: no village contradicts a claim)\n"
    lines: list[str] = []
    current: tuple[str, str] | None = None
    for g in gaps:
        if (g.operator, g.direction) != current:
            current = (g.operator, g.direction)
            lines.append(
                f"{operator_label(g.operator)} {g.technology}: {DIRECTION_TEXT[g.direction]}"
            )
        lines.append(
            f"  {g.village.name[:27]:<28}{(g.village.commune or '')[:21]:<22}"
            f"{g.village.population if g.village.population is not None else '-':>6}  "
            f"{operator_text(g.evidence)}  [{g.evidence.evidence}]"
        )
    lines.append("per commune:")
    for c in by_commune(gaps):
        lines.append(
            f"  {operator_label(c.operator):<11}{c.direction:<20}{c.commune[:26]:<27}"
            f"{c.villages:>3} villages {c.population:>7} people ({c.measured} measured)"
        )
    return "\n".join(lines) + "\n"
