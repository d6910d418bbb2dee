"""bench/truth.py runs end to end on a small province and ends with its RESULT line."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = (
    "measured_precision",
    "measured_recall",
    "predicted_precision",
    "predicted_recall",
    "brier",
    "baseline_idw_precision",
    "baseline_idw_recall",
    "baseline_claims_precision",
    "baseline_claims_recall",
)


def run(*args: str, module: str = "bench.truth") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_truth_bench_reports_every_figure(postgres_admin_url: str) -> None:
    done = run("--seeds", "7", "--villages", "60", "--database-url", postgres_admin_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "seed 7: 60 villages, 15 probes" in done.stdout
    assert lines[-1].startswith("RESULT ")
    figures = dict(item.split("=") for item in lines[-1].split()[1:])
    assert tuple(figures) == KEYS
    for key, text in figures.items():
        value = float(text)
        assert math.isnan(value) or 0.0 <= value <= 1.0, key
    assert float(figures["brier"]) < 0.25  # better than a coin on every run


def test_truth_bench_names_bad_arguments() -> None:
    done = run("--seeds", "1,x")
    assert done.returncode == 2
    assert "'x' is not a seed: give whole numbers, e.g. 1,2,3 or 101-105" in done.stderr
    done = run("--villages", "5")
    assert done.returncode == 2
    assert "5 villages: give 20 to 2000" in done.stderr
    done = run("--scenario", "busy")
    assert done.returncode == 2
    assert "invalid choice: 'busy'" in done.stderr
