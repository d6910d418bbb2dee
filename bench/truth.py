"""The truth benchmark: coverwatch's verdicts against the simulator's hidden truth.

For each seed it builds a scenario (``simulator.scenarios``: ``sparse`` — probes in a
quarter of the villages, one SIM a kit, walk tests along roads, an OpenCelliD-style
registry with position errors and missing towers, optimistic operator claims — or
``dense``), loads its evidence into a throwaway database through geo's importers and
the real schema, and runs the analysis:

- **measured** verdicts (geo.evidence: a probe in the village, or a survey near it,
  decides): precision and recall of "no usable service from any operator";
- **predicted** verdicts for every other village (geo.prediction: the registry's
  sites through COST-231 Hata, calibrated per operator on the measurements, plus
  kriging): precision and recall of "no service" at p >= 0.8, and the Brier score of
  p(no service);
- an **oracle bound**: p(no service) for an analyst who knows every tower and the
  terrain's statistics but not the terrain itself — what no method that sees only the
  evidence can beat on average (probes and surveys add local knowledge to it);
- in the same run, on the same villages, two **baselines**: the nearest probes within
  3 km (geo's village status, inverse-square weighted: "none" means no service), and
  the operators' claims (no service where no operator claims the village).

Counts are pooled over the seeds (and printed per seed). The last line is
``RESULT measured_precision=… measured_recall=… predicted_precision=…
predicted_recall=… brier=… baseline_idw_precision=… baseline_idw_recall=…
baseline_claims_precision=… baseline_claims_recall=…``.

    python -m bench.truth --scenario sparse --seeds 101,102,103,104,105
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import shapely

from bench.geo import check_server, throwaway_database
from collector import schema
from geo.assessment import assess
from geo.claims import load_claim_areas
from geo.coverage import TimeWindow
from simulator import radio, scenario_load, scenarios, terrain
from simulator.province import OPERATORS, UNUSABLE_BELOW_DBM

END = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: bool, truth: bool) -> None:
        if flagged and truth:
            self.tp += 1
        elif flagged:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    def merge(self, other: Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def brier(self) -> float:
        """The Brier score of these verdicts taken as probabilities 0 or 1."""
        total = self.tp + self.fp + self.fn + self.tn
        return (self.fp + self.fn) / total if total else math.nan

    def text(self) -> str:
        return (
            f"precision {self.precision:.3f} recall {self.recall:.3f} "
            f"(tp {self.tp} fp {self.fp} fn {self.fn} tn {self.tn})"
        )


@dataclass
class SeedFigures:
    seed: int
    measured: Counts = field(default_factory=Counts)
    predicted: Counts = field(default_factory=Counts)
    idw: Counts = field(default_factory=Counts)
    claims: Counts = field(default_factory=Counts)
    brier_terms: list[float] = field(default_factory=list)
    oracle: Counts = field(default_factory=Counts)
    oracle_brier_terms: list[float] = field(default_factory=list)
    at_half: Counts = field(default_factory=Counts)
    villages: int = 0
    probes: int = 0
    survey_points: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    analysis_s: float = 0.0


ORACLE_DRAWS = 2000


def oracle_p_none(scenario: scenarios.Scenario) -> dict[str, float]:
    """P(no service) per village for an analyst who knows every tower's true position,
    height and power and the terrain's statistics — but not this terrain's field or
    where its valleys are. No method that sees only the evidence can do better on
    average: it bounds what "predicted" can reach in this world."""
    rng = np.random.default_rng([scenario.seed, 99])
    land = scenario.terrain
    towers = scenario.province.towers
    codes = np.array([t.operator_code for t in towers])
    lon_km = 111.320 * math.cos(math.radians(22.70))
    result: dict[str, float] = {}
    sigma = radio.SHADOWING_SIGMA_DB
    for village in scenario.province.villages:
        distance = np.hypot(
            [(t.lon - village.lon) * lon_km for t in towers],
            [(t.lat - village.lat) * terrain.KM_PER_DEG_LAT for t in towers],
        )
        common = rng.normal(0, sigma * math.sqrt(terrain.COMMON_SHARE), (ORACLE_DRAWS, 1))
        own = rng.normal(
            0, sigma * math.sqrt(1 - terrain.COMMON_SHARE), (ORACLE_DRAWS, len(towers))
        )
        walled = (
            rng.random((ORACLE_DRAWS, 1)) < scenarios.VALLEY_VILLAGE_SHARE
        ) * terrain.VALLEY_LOSS_DB
        rsrp = terrain.median_rsrp(
            np.broadcast_to(distance, (ORACLE_DRAWS, len(towers))),
            land.heights_m,
            land.offsets_db,
            common + own + walled,
        )
        dark = np.ones(ORACLE_DRAWS, dtype=bool)
        for code in OPERATORS:
            dark &= rsrp[:, codes == code].max(axis=1) < UNUSABLE_BELOW_DBM
        result[village.name] = float(dark.mean())
    return result


def run_seed(
    admin_url: str, name: scenarios.ScenarioName, seed: int, villages: int = 320
) -> SeedFigures:
    began = time.perf_counter()
    figures = SeedFigures(seed)
    scenario = scenarios.build(name, seed, villages=villages)
    server = check_server(admin_url)
    assert server is not None
    truth_no_service = {v.name: not v.covered for v in scenario.province.villages}
    with throwaway_database(server) as url:
        schema.upgrade(url)
        loaded = scenario_load.load(url, scenario, end=END)
        figures.probes, figures.survey_points = loaded.probes, loaded.survey_points
        analysis_began = time.perf_counter()
        with psycopg.connect(url) as connection:
            window = TimeWindow(END - timedelta(days=30), END)
            assessment = assess(connection, window)
            analysis, verdicts = assessment.analysis, assessment.verdicts
            claimed = [load_claim_areas(connection, operator, "lte") for operator in OPERATORS]
        figures.analysis_s = time.perf_counter() - analysis_began
    claim_area = shapely.union_all([a for a in claimed if a is not None])
    oracle = oracle_p_none(scenario)
    idw_status = {s.village.name: s.status for s in analysis.statuses}
    for verdict in verdicts:
        name_ = verdict.village.name
        truth = truth_no_service[name_]
        figures.villages += 1
        figures.kinds[verdict.kind] = figures.kinds.get(verdict.kind, 0) + 1
        if verdict.measured:
            figures.measured.add(verdict.no_service, truth)
            continue
        figures.predicted.add(verdict.no_service, truth)
        p = verdict.p_no_service
        # A village nothing can be said about counts as p = 0.5 in the Brier score.
        figures.brier_terms.append(((0.5 if p is None else p) - float(truth)) ** 2)
        figures.at_half.add(p is not None and p >= 0.5, truth)
        figures.oracle.add(oracle[name_] >= 0.8, truth)
        figures.oracle_brier_terms.append((oracle[name_] - float(truth)) ** 2)
        figures.idw.add(idw_status[name_] == "none", truth)
        inside = bool(shapely.contains_xy(claim_area, verdict.village.lon, verdict.village.lat))
        figures.claims.add(not inside, truth)
    figures.seconds = time.perf_counter() - began
    return figures


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                seeds.extend(range(int(low), int(high) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a seed: give whole numbers, e.g. 1,2,3 or 101-105"
            ) from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given: e.g. --seeds 101-105")
    return seeds


def _village_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of villages") from None
    if not 20 <= value <= 2000:
        raise argparse.ArgumentTypeError(
            f"{value} villages: give 20 to 2000 (villages stand at least 1.2 km apart in a "
            "province of about 100 km across)"
        )
    return value


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("1-5"),
                        help="seeds to run, e.g. 1,2,3 or 101-105 (default 1-5)")  # fmt: skip
    parser.add_argument("--scenario", choices=scenarios.SCENARIOS, default="sparse")
    parser.add_argument(
        "--villages",
        type=_village_count,
        default=320,
        help="villages per province (320, as the demo's)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("COVERWATCH_BENCH_DATABASE_URL", DEFAULT_URL),
        help="an admin URL of a PostgreSQL server; a throwaway database is created there",
    )
    args = parser.parse_args(argv)
    print(
        f"bench/truth: scenario {args.scenario}, seeds {','.join(map(str, args.seeds))}, "
        f"server {check_server(args.database_url) and args.database_url}",
        flush=True,
    )
    total = SeedFigures(-1)
    for seed in args.seeds:
        f = run_seed(args.database_url, args.scenario, seed, args.villages)
        print(
            f"seed {seed}: {f.villages} villages, {f.probes} probes, {f.survey_points} survey "
            f"points; evidence {dict(sorted(f.kinds.items()))}; {f.seconds:.1f} s "
            f"(analysis + prediction {f.analysis_s:.1f} s)\n"
            f"  measured   {f.measured.text()}\n"
            f"  predicted  {f.predicted.text()}  Brier "
            f"{np.mean(f.brier_terms) if f.brier_terms else math.nan:.3f}\n"
            f"  (at p >= 0.5: {f.at_half.text()})\n"
            f"  oracle     {f.oracle.text()}  Brier {np.mean(f.oracle_brier_terms):.3f}\n"
            f"  idw 3 km   {f.idw.text()}\n"
            f"  claims     {f.claims.text()}",
            flush=True,
        )
        total.measured.merge(f.measured)
        total.predicted.merge(f.predicted)
        total.idw.merge(f.idw)
        total.claims.merge(f.claims)
        total.brier_terms += f.brier_terms
        total.oracle.merge(f.oracle)
        total.oracle_brier_terms += f.oracle_brier_terms
        total.at_half.merge(f.at_half)
    brier = float(np.mean(total.brier_terms)) if total.brier_terms else math.nan
    print(
        f"pooled over {len(args.seeds)} seeds:\n"
        f"  measured   {total.measured.text()}   target >= 0.95 / 0.95\n"
        f"  predicted  {total.predicted.text()}  Brier {brier:.3f}   "
        "target >= 0.85 / 0.85, Brier <= 0.10\n"
        f"             at p >= 0.5: {total.at_half.text()}\n"
        f"  bound: an oracle knowing every tower and the terrain's statistics, not the "
        f"terrain: {total.oracle.text()}  Brier {np.mean(total.oracle_brier_terms):.3f}\n"
        f"  baseline nearest probes within 3 km: {total.idw.text()}  "
        f"Brier (as 0/1) {total.idw.brier:.3f}\n"
        f"  baseline operators' claims:          {total.claims.text()}  "
        f"Brier (as 0/1) {total.claims.brier:.3f}"
    )
    print(
        "RESULT "
        + " ".join(
            f"{key}={value}"
            for key, value in (
                ("measured_precision", _fmt(total.measured.precision)),
                ("measured_recall", _fmt(total.measured.recall)),
                ("predicted_precision", _fmt(total.predicted.precision)),
                ("predicted_recall", _fmt(total.predicted.recall)),
                ("brier", _fmt(brier)),
                ("baseline_idw_precision", _fmt(total.idw.precision)),
                ("baseline_idw_recall", _fmt(total.idw.recall)),
                ("baseline_claims_precision", _fmt(total.claims.precision)),
                ("baseline_claims_recall", _fmt(total.claims.recall)),
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
