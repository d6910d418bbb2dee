"""Coverage with its evidence: the analysis, the prediction and every village's verdict.

``assess()`` is the one place that puts them together — the analysis of the probes'
coverage (geo.analysis), the calibrated prediction (geo.prediction) and each village's
verdict with the kind of evidence it rests on (geo.evidence) — for the evidence report,
the claims comparison, the API and the truth benchmark alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from geo import survey
from geo.analysis import Analysis, analyse
from geo.coverage import TimeWindow
from geo.evidence import VillageVerdict, village_verdicts
from geo.prediction import PredictionModel, build_model
from geo.projection import LocalProjection
from geo.status import DEFAULT_RADIUS_M
from geo.thresholds import load_thresholds


@dataclass(frozen=True, slots=True)
class Assessment:
    analysis: Analysis
    model: PredictionModel
    verdicts: list[VillageVerdict]
    edge_dbm: float  # the LTE usable edge (the "poor" threshold) predictions are judged on


def assess(
    connection: psycopg.Connection[Any],
    window: TimeWindow,
    *,
    province: str | None = None,
    radius_m: float = DEFAULT_RADIUS_M,
    analysis: Analysis | None = None,
) -> Assessment:
    """``analysis``: one already made of this window (the map's), not made again."""
    if analysis is None:
        analysis = analyse(connection, window, radius_m=radius_m, province=province)
    thresholds = load_thresholds(connection)
    edge = thresholds.bands["lte"].poor_dbm
    # Centred on the villages (a province is small enough for one local projection).
    projection = LocalProjection.around(
        [v.lon for v in analysis.villages], [v.lat for v in analysis.villages]
    )
    model = build_model(connection, analysis.probes, projection, window, edge_dbm=edge)
    points = survey.map_points(connection, window.start, window.end, thresholds)
    verdicts = village_verdicts(
        analysis.villages,
        analysis.probes,
        model,
        projection,
        survey_points=points,
        thresholds=thresholds,
    )
    return Assessment(analysis, model, verdicts, edge)
