"""A scenario's evidence loaded into a coverwatch database the way a province's would be.

Villages, the tower registry, the claims and the survey go through geo's own importers
(the same parsing and checks as ``coverwatch villages/towers/claims/survey import``);
the kits' readings are COPYed into ``readings_signal`` — what the collector stores for
each reading a real kit publishes, every 15 minutes over ``days`` days with fast
fading around the truth, ``searching`` below the registration floor — and the hourly
rollups are built by the collector's own refresh. Nothing of the hidden terrain is
stored: only what a probe, a survey phone, OpenCelliD or an operator would report.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from collector import rollups
from coverwatch.errors import CoverwatchError
from geo import claims, registry, survey, towers
from simulator import radio
from simulator.scenarios import Scenario

SIGNAL_EVERY = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Loaded:
    villages: int
    probes: int
    readings: int
    survey_points: int
    cells: int
    claims: int


def _readings(scenario: Scenario, start: datetime, days: int) -> tuple[list[tuple[Any, ...]], int]:
    rng = np.random.default_rng([scenario.seed, 15])
    rows: list[tuple[Any, ...]] = []
    slots = int(timedelta(days=days) / SIGNAL_EVERY)
    for kit in scenario.kits:
        boot = uuid.UUID(int=int(rng.integers(2**62)))
        seq = 0
        for code in kit.sim_operators:
            median = scenario.probe_rsrp(kit, code)
            values = median + rng.normal(0, radio.FAST_FADING_SIGMA_DB, slots)
            for slot, value in enumerate(values.tolist()):
                seq += 1
                taken = start + slot * SIGNAL_EVERY
                registered = value >= radio.REGISTRATION_FLOOR_DBM
                rows.append(
                    (
                        kit.probe_id,
                        seq,
                        boot,
                        taken,
                        slot * 900_000,
                        True,
                        "home" if registered else "searching",
                        "lte" if registered else None,
                        code if registered else None,
                        round(value, 1) if registered else None,
                        code,
                        code,
                    )
                )
    return rows, len(rows)


def load(database_url: str, scenario: Scenario, *, end: datetime, days: int = 3) -> Loaded:
    """Import the scenario's evidence into a migrated database; readings end at ``end``."""
    villages = registry.parse_villages_geojson(scenario.province.villages_geojson())
    cells = towers.parse_cells(iter(io.StringIO(scenario.registry_csv)))
    claimed = claims.parse_claims(scenario.claims)
    surveyed = survey.parse_survey(scenario.survey_csv, now=end)
    for what, problems in (
        ("villages", villages.problems),
        ("tower registry", cells.problems),
        ("claims", claimed.problems),
        ("survey", surveyed.problems),
    ):
        errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
        if errors:
            raise CoverwatchError(f"simulated {what} failed validation: {errors[0]}")
    start = end - timedelta(days=days)
    rows, count = _readings(scenario, start, days)
    with psycopg.connect(database_url) as connection:
        registry.store_villages(connection, villages.villages, source="scenario villages")
        towers.store_cells(connection, list(cells.cells.values()), source="scenario registry")
        claims.store_claims(connection, claimed.claims, source="scenario claims")
        survey.store_survey(connection, surveyed, survey=f"scenario-{scenario.seed}.csv")
        with connection.cursor() as cursor:
            cursor.executemany(
                """INSERT INTO probes (probe_id, name, village, lon, lat, operator, hardware,
                                       installed_at, report_interval_s)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [
                    (
                        kit.probe_id,
                        f"kit {kit.village_id}",
                        scenario.village(kit.village_id).name,
                        kit.lon,
                        kit.lat,
                        ",".join(kit.sim_operators),
                        f"simulated Raspberry Pi 4 + {len(kit.sim_operators)} LTE modem(s)",
                        start - timedelta(days=1),
                        int(SIGNAL_EVERY.total_seconds()),
                    )
                    for kit in scenario.kits
                ],
            )
        with connection.cursor().copy(
            "COPY readings_signal (probe_id, seq, boot_id, taken_at, monotonic_ms, ntp_synced, "
            "registration, technology, operator_code, rsrp_dbm, modem, sim_operator_code) "
            "FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        rollups.invalidate(connection, start - timedelta(hours=1), end + timedelta(hours=1))
        connection.commit()
    with psycopg.connect(database_url, autocommit=True) as connection:
        rollups.refresh_all(connection)
    return Loaded(
        villages=len(villages.villages),
        probes=len(scenario.kits),
        readings=count,
        survey_points=len(surveyed.points),
        cells=len(cells.cells),
        claims=len(claimed.claims),
    )


def write_files(scenario: Scenario, directory: Any) -> list[str]:
    """The scenario's evidence as the files a province would hand over."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "villages.geojson": json.dumps(scenario.province.villages_geojson(), ensure_ascii=False),
        "opencellid.csv": scenario.registry_csv,
        "claims.geojson": json.dumps(scenario.claims),
        "survey.csv": scenario.survey_csv,
    }
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(files)
