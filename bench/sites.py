"""The tower-site benchmark: recommended sites built in the simulator, and what they
really bring.

For each seed: a scenario (``simulator.scenarios``, ``sparse`` by default) is loaded into
a throwaway database as a province would be; ``coverwatch sites recommend`` (geo.sites)
picks ``--sites`` sites for ``--operator`` greedily, and the exact MILP (HiGHS) solves the
same instance. Then the simulator **builds** the greedy's towers — same land, same
existing towers, the new masts with terrain of their own — and recomputes the truth.

- ``greedy_vs_optimal``: the greedy's objective over the optimum's (the expected
  population without service that the sites newly serve at p >= min_p);
- ``realised_vs_predicted``: the population of villages that really had no service and
  have it once the towers stand, over the gain the model expected from those sites (each
  village's p(no service) times the probability that one of the new towers serves it);
- ``sites``, ``population_gain``: towers built and people newly served, over the seeds.

Counts are summed over the seeds. Last line ``RESULT greedy_vs_optimal=…
realised_vs_predicted=… sites=… population_gain=…``.

    python -m bench.sites --seeds 101-105 --operator Viettel --sites 5
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt
import psycopg

from bench.geo import check_server, throwaway_database
from bench.truth import DEFAULT_URL, END, _parse_seeds, _village_count
from collector import schema
from geo import sites
from geo.assessment import assess
from geo.coverage import TimeWindow
from geo.operators import parse_operator
from simulator import scenario_load, scenarios
from simulator.province import OPERATORS, UNUSABLE_BELOW_DBM
from simulator.terrain import Terrain


@dataclass
class SeedResult:
    seed: int
    candidates: int
    built: int
    greedy: float
    optimum: float
    optimal: bool
    expected_gain: float
    realised_gain: float
    seconds: float


def _covered(scenario: scenarios.Scenario, land: Terrain) -> npt.NDArray[np.bool_]:
    """Which villages have usable service from any operator, by the truth."""
    lon = np.array([v.lon for v in scenario.province.villages])
    lat = np.array([v.lat for v in scenario.province.villages])
    covered: npt.NDArray[np.bool_] = land.rsrp_dbm(lon, lat).max(axis=1) >= UNUSABLE_BELOW_DBM
    return covered


def run_seed(args: argparse.Namespace, seed: int, operator: str) -> SeedResult:
    began = time.perf_counter()
    scenario = scenarios.build(args.scenario, seed, villages=args.villages)
    server = check_server(args.database_url)
    assert server is not None
    with throwaway_database(server) as url:
        schema.upgrade(url)
        scenario_load.load(url, scenario, end=END)
        with psycopg.connect(url) as connection:
            window = TimeWindow(END - timedelta(days=30), END)
            assessment = assess(connection, window)
    villages = [v.village for v in assessment.verdicts]
    candidates = sites.grid_candidates(
        villages, sites.CandidateRules(grid_km=args.grid_km), assessment.model.projection
    )
    probabilities = sites.candidate_probabilities(assessment.model, operator, candidates, villages)
    instance = sites.build_problem(candidates, assessment.verdicts, probabilities, min_p=args.min_p)
    greedy = sites.greedy(instance, sites=args.sites)
    optimum = sites.exact(instance, sites=args.sites)
    # What the model expects of the greedy's towers, over every village.
    chosen = greedy.chosen
    expected = float(
        sites.expected_gain(
            assessment.model, operator, [candidates[i] for i in chosen], assessment.verdicts
        ).sum()
    )
    # Build them in the simulator and read the truth again (villages by name: the
    # database numbered them in import order).
    before = _covered(scenario, scenario.terrain)
    built = scenario.terrain.with_towers(
        [(candidates[i].lon, candidates[i].lat) for i in chosen],
        height_m=35.0,
        offset_db=scenarios.OPERATOR_OFFSET_DB[operator],
    )
    after = _covered(scenario, built)
    truth_population = np.array([float(v.population) for v in scenario.province.villages])
    realised = float(truth_population[after & ~before].sum())
    return SeedResult(
        seed,
        len(candidates),
        len(chosen),
        greedy.objective,
        optimum.objective,
        optimum.optimal,
        expected,
        realised,
        time.perf_counter() - began,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=_parse_seeds, default=_parse_seeds("1-5"))
    parser.add_argument("--scenario", choices=scenarios.SCENARIOS, default="sparse")
    parser.add_argument("--villages", type=_village_count, default=320)
    parser.add_argument("--operator", default="Viettel", help="whose towers are built")
    parser.add_argument("--sites", type=int, default=5, help="towers per province (5)")
    parser.add_argument("--min-p", type=float, default=sites.DEFAULT_MIN_P)
    parser.add_argument("--grid-km", type=float, default=sites.DEFAULT_GRID_KM)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("COVERWATCH_BENCH_DATABASE_URL", DEFAULT_URL),
        help="an admin URL of a PostgreSQL server; a throwaway database is created there",
    )
    args = parser.parse_args(argv)
    try:
        operator = parse_operator(args.operator)
    except ValueError as error:
        parser.error(f"--operator: {error}")
    if operator not in OPERATORS:
        parser.error(f"--operator: the simulator has towers of {', '.join(OPERATORS)} only")
    if not 1 <= args.sites <= 50:
        parser.error("--sites: give 1 to 50")
    print(
        f"bench/sites: scenario {args.scenario}, seeds {','.join(map(str, args.seeds))}, "
        f"{args.sites} {operator} sites per province, min p {args.min_p}",
        flush=True,
    )
    results = []
    for seed in args.seeds:
        r = run_seed(args, seed, operator)
        results.append(r)
        ratio = r.realised_gain / r.expected_gain if r.expected_gain else math.nan
        print(
            f"seed {seed}: {r.candidates} candidates, {r.built} built; greedy {r.greedy:,.0f} "
            f"vs optimum {r.optimum:,.0f}{'' if r.optimal else ' (time limit)'}; expected gain "
            f"{r.expected_gain:,.0f}, realised {r.realised_gain:,.0f} ({ratio:.2f}); "
            f"{r.seconds:.1f} s",
            flush=True,
        )
    greedy = sum(r.greedy for r in results)
    optimum = sum(r.optimum for r in results)
    expected = sum(r.expected_gain for r in results)
    realised = sum(r.realised_gain for r in results)
    built = sum(r.built for r in results)
    g_vs_o = greedy / optimum if optimum else math.nan
    r_vs_p = realised / expected if expected else math.nan
    print(
        f"pooled over {len(results)} seeds: greedy/optimum {g_vs_o:.3f} (target >= 0.9); "
        f"realised/expected gain {r_vs_p:.3f} (target within 15 %: 0.85-1.15); "
        f"{built} sites, {realised:,.0f} people newly served"
    )
    print(
        f"RESULT greedy_vs_optimal={g_vs_o:.3f} realised_vs_predicted={r_vs_p:.3f} "
        f"sites={built} population_gain={realised:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
