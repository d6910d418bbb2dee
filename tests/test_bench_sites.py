"""bench/sites.py builds the recommended towers in a small simulated province and ends
with its RESULT line."""

from __future__ import annotations

import math

from tests.test_bench_truth import run


def test_sites_bench_reports_every_figure(postgres_admin_url: str) -> None:
    done = run(
        "--seeds", "9", "--villages", "60", "--sites", "2", "--database-url", postgres_admin_url,
        module="bench.sites",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    figures = dict(item.split("=") for item in last.split()[1:])
    assert tuple(figures) == (
        "greedy_vs_optimal",
        "realised_vs_predicted",
        "sites",
        "population_gain",
    )
    assert 0.0 < float(figures["greedy_vs_optimal"]) <= 1.0 + 1e-9
    ratio = float(figures["realised_vs_predicted"])
    assert math.isnan(ratio) or ratio >= 0.0
    assert 0 <= int(figures["sites"]) <= 2
    assert int(figures["population_gain"]) >= 0
    # The solver's banner stays off standard output.
    assert "Running HiGHS" not in done.stdout


def test_sites_bench_names_bad_arguments() -> None:
    done = run("--operator", "Telstra", module="bench.sites")
    assert done.returncode == 2
    assert "--operator" in done.stderr
    done = run("--operator", "Vietnamobile", module="bench.sites")
    assert done.returncode == 2
    assert "the simulator has towers of" in done.stderr
