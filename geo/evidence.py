"""Each village's verdict per operator, and the kind of evidence it rests on.

Kinds, strongest first:

- ``probe``: a probe stands in the village (within ``MEASURED_RADIUS_M``) and measured
  the operator — its coverage class decides (``none`` = no usable service);
- ``survey``: a field survey measured the operator within ``SURVEY_RADIUS_M`` of the
  village (at least ``MIN_SURVEY_POINTS`` points of the window, any technology): each
  point's margin over its technology's usable edge (the "poor" threshold; a point without
  service is the weakest), and the median decides when it is ``SURVEY_MARGIN_DB`` clear
  of the edge (a survey passes near a village, not through its centre);
- ``predicted``: geo.prediction's calibrated model, with its probability of usable
  service — never shown as measured;
- ``unknown``: nothing measured and nothing to predict from.

A village **has service** when any operator does; its verdict is *measured* when the
measurements alone decide it (an operator measured usable, or every operator measured
without service), *predicted* when a prediction is needed, with the probability that
no operator serves it: the predicted operators' joint probability of being below the
edge (not a product: a ridge shades a village from every mast), operators measured
without service counting as such. "No service" is called at ``p_no_service >= 0.8``
for a predicted verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import shapely

from geo.coverage import ProbeCoverage
from geo.prediction import UNREGISTERED_RSRP_DBM, PredictionModel
from geo.projection import LocalProjection
from geo.registry import Village
from geo.survey import MapPoint
from geo.thresholds import Thresholds

EvidenceKind = Literal["probe", "survey", "predicted", "unknown"]
EVIDENCE_KINDS: Final[tuple[EvidenceKind, ...]] = ("probe", "survey", "predicted", "unknown")
MEASURED_RADIUS_M: Final = 1000.0
SURVEY_RADIUS_M: Final = 500.0
MIN_SURVEY_POINTS: Final = 3
# A survey passes near a village, not through its centre: its median decides only when
# it is this clear of the usable edge (closer, it feeds the prediction instead).
SURVEY_MARGIN_DB: Final = 3.0
NO_SERVICE_P: Final = 0.8


@dataclass(frozen=True, slots=True)
class OperatorVerdict:
    operator: str
    kind: EvidenceKind
    p_usable: float | None  # 1/0 when measured, the model's probability when predicted
    rsrp_dbm: float | None
    sigma_db: float | None
    evidence: str  # what it rests on, for a reader

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "evidence": self.kind,
            "p_usable": None if self.p_usable is None else round(self.p_usable, 3),
            "rsrp_dbm": None if self.rsrp_dbm is None else round(self.rsrp_dbm, 1),
            "sigma_db": None if self.sigma_db is None else round(self.sigma_db, 1),
            "detail": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class VillageVerdict:
    village: Village
    operators: tuple[OperatorVerdict, ...]
    # P(none of the predicted operators is usable), from their joint prediction.
    predicted_p_none: float | None = None

    @property
    def measured(self) -> bool:
        """Do the measurements alone decide whether the village has service?"""
        known = [o for o in self.operators if o.kind in ("probe", "survey")]
        if any(o.p_usable == 1.0 for o in known):
            return True
        return bool(self.operators) and len(known) == len(self.operators)

    @property
    def kind(self) -> EvidenceKind:
        if self.measured:
            deciding = [o for o in self.operators if o.kind in ("probe", "survey")]
            usable = [o for o in deciding if o.p_usable == 1.0]
            return "probe" if any(o.kind == "probe" for o in usable or deciding) else "survey"
        if any(o.kind == "predicted" for o in self.operators):
            return "predicted"
        return "unknown"

    @property
    def p_no_service(self) -> float | None:
        """P(no operator gives usable service): 0 when one was measured usable, else the
        predicted operators' joint probability (1 when all were measured without)."""
        measured = [o for o in self.operators if o.kind in ("probe", "survey")]
        if any(o.p_usable == 1.0 for o in measured):
            return 0.0
        if self.predicted_p_none is not None:
            return self.predicted_p_none
        if measured and len(measured) == len(self.operators):
            return 1.0
        return None

    @property
    def no_service(self) -> bool:
        """The verdict "no usable service from any operator" (measured or at p >= 0.8)."""
        p = self.p_no_service
        if p is None:
            return False
        return p >= 1.0 if self.measured else p >= NO_SERVICE_P

    def to_dict(self) -> dict[str, Any]:
        p = self.p_no_service
        return {
            "village_id": self.village.village_id,
            "name": self.village.name,
            "evidence": self.kind,
            "no_service": self.no_service,
            "p_no_service": None if p is None else round(p, 3),
            "operators": [o.to_dict() for o in self.operators],
        }


def _survey_margin(point: MapPoint, thresholds: Thresholds) -> float:
    """How far above (+) or below (-) its technology's usable edge a survey point is:
    -inf without service, 0 where the phone had service of unknown strength."""
    if point.service == "none":
        return -math.inf
    band = thresholds.bands.get(point.technology or "")
    if point.signal_dbm is None or band is None:
        return 0.0
    return point.signal_dbm - band.poor_dbm


def _survey_verdicts(
    village_xy: Any,
    points: Sequence[MapPoint],
    thresholds: Thresholds,
    projection: LocalProjection,
) -> dict[tuple[int, str], tuple[bool, int]]:
    """(village index, operator) -> (usable, points) from the survey points near the
    village, on any technology: the median point's margin over its technology's usable
    edge decides when it is at least SURVEY_MARGIN_DB clear of it."""
    points = [p for p in points if p.operator_code]
    if not points:
        return {}
    xy = projection.forward(np.array([(p.lon, p.lat) for p in points], dtype=np.float64))
    tree = shapely.STRtree(np.asarray(shapely.points(xy), dtype=object))
    pairs = tree.query(shapely.points(village_xy), predicate="dwithin", distance=SURVEY_RADIUS_M)
    collected: dict[tuple[int, str], list[float]] = {}
    for village_index, point_index in zip(pairs[0].tolist(), pairs[1].tolist(), strict=True):
        point = points[point_index]
        assert point.operator_code is not None
        collected.setdefault((village_index, point.operator_code), []).append(
            _survey_margin(point, thresholds)
        )
    verdicts = {}
    for key, margins in collected.items():
        if len(margins) < MIN_SURVEY_POINTS:
            continue
        median = float(np.median(margins))
        if abs(median) >= SURVEY_MARGIN_DB:
            verdicts[key] = (median > 0, len(margins))
    return verdicts


def village_verdicts(
    villages: Sequence[Village],
    probes: Sequence[ProbeCoverage],
    model: PredictionModel,
    projection: LocalProjection,
    *,
    survey_points: Sequence[MapPoint] = (),
    thresholds: Thresholds | None = None,
    operators: Sequence[str] | None = None,
) -> list[VillageVerdict]:
    """Every village's verdict per operator (``operators``: those the model predicts,
    plus every operator a probe or a survey measured, on any technology)."""
    thresholds = thresholds or Thresholds()
    if not villages:
        return []
    measured_operators = {
        o.operator for p in probes for o in p.operators if o.operator.isdigit() and o.readings
    } | {p.operator_code for p in survey_points if p.operator_code}
    wanted = sorted(
        set(operators)
        if operators is not None
        else set(model.operators) | {o.operator for o in model.observations} | measured_operators
    )
    lon = [v.lon for v in villages]
    lat = [v.lat for v in villages]
    village_xy = projection.forward(np.column_stack([lon, lat]).astype(np.float64))
    joint = model.predict_joint(lon, lat)
    column = {operator: j for j, operator in enumerate(joint.operators)}
    surveyed = _survey_verdicts(village_xy, survey_points, thresholds, projection)

    placed = [p for p in probes if p.lon is not None and p.lat is not None]
    at_village: dict[tuple[int, str], tuple[bool, str]] = {}
    if placed:
        probe_xy = projection.forward(np.array([(p.lon, p.lat) for p in placed], dtype=np.float64))
        tree = shapely.STRtree(np.asarray(shapely.points(probe_xy), dtype=object))
        pairs = tree.query(
            shapely.points(village_xy), predicate="dwithin", distance=MEASURED_RADIUS_M
        )
        for village_index, probe_index in zip(pairs[0].tolist(), pairs[1].tolist(), strict=True):
            probe = placed[probe_index]
            for operator in probe.operators:
                if operator.readings == 0:
                    continue
                key = (village_index, operator.operator)
                usable = operator.coverage_class != "none"
                # Two probes in one village: service if either has it.
                if key not in at_village or usable:
                    at_village[key] = (usable, probe.probe_id)

    result: list[VillageVerdict] = []
    columns_of: list[tuple[int, ...]] = []
    for index, village in enumerate(villages):
        verdicts = []
        predicted_columns = []
        for operator in wanted:
            if (index, operator) in at_village:
                usable, probe_id = at_village[(index, operator)]
                verdicts.append(
                    OperatorVerdict(
                        operator,
                        "probe",
                        1.0 if usable else 0.0,
                        None,
                        None,
                        f"probe {probe_id}",
                    )
                )
            elif (index, operator) in surveyed:
                usable, points = surveyed[(index, operator)]
                verdicts.append(
                    OperatorVerdict(
                        operator,
                        "survey",
                        1.0 if usable else 0.0,
                        None,
                        None,
                        f"survey: {points} points within {SURVEY_RADIUS_M:.0f} m",
                    )
                )
            elif operator in column:
                p = joint.of(column[operator], index)
                predicted_columns.append(column[operator])
                verdicts.append(
                    OperatorVerdict(
                        operator, "predicted", p.p_usable, p.rsrp_dbm, p.sigma_db, p.basis
                    )
                )
            else:
                verdicts.append(
                    OperatorVerdict(operator, "unknown", None, None, None, "no evidence")
                )
        columns_of.append(tuple(predicted_columns))
        result.append(VillageVerdict(village, tuple(verdicts)))
    # The joint probabilities in one batch (a province has thousands of villages).
    p_none = joint.p_none_many(range(len(result)), columns_of)
    return [
        replace(verdict, predicted_p_none=p if columns_of[i] else None)
        for i, (verdict, p) in enumerate(zip(result, p_none, strict=True))
    ]


__all__ = [
    "EVIDENCE_KINDS",
    "NO_SERVICE_P",
    "UNREGISTERED_RSRP_DBM",
    "EvidenceKind",
    "OperatorVerdict",
    "VillageVerdict",
    "village_verdicts",
]
