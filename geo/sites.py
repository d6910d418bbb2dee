"""Tower-site recommendations: where one more tower brings service to the most people
who have none.

1. **Candidates** — a metric grid over the villages' area (``grid_km`` apart), kept where
   the rules allow: within ``max_village_km`` of a village (access, a road to build it),
   optionally within ``max_grid_power_km`` of a village on grid power, outside exclusion
   areas; or a list the user supplies (CSV ``id,name,lon,lat[,cost]`` or GeoJSON points).
2. **Coverage of a candidate** — for the chosen operator, the probability that a tower
   there gives a village usable service: the operator's calibrated model
   (geo.prediction) at the candidate-village distance, with the operator's spread.
3. **Need** — each village's probability of having no service from any operator today
   (geo.evidence: 0 or 1 when measured, the prediction otherwise), times its population
   (or households).
4. **Selection** — a village counts as newly served by a site when the site's
   probability reaches ``min_p``; the expected population without service that the chosen
   sites newly serve is maximised under a number of sites or a budget (each candidate's
   cost): greedily (by gain, or gain per cost, with the best single site as a fallback, the
   usual guarantee for budgeted coverage), or exactly as a MILP with HiGHS (``highspy``)
   where the instance is small enough.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import shapely

from coverwatch.errors import CoverwatchError
from geo import registry
from geo.evidence import VillageVerdict
from geo.operators import operator_label
from geo.prediction import (
    PRIOR_SIGMA_DB,
    REFERENCE_DBM,
    PredictionModel,
    nominal_rsrp_dbm,
    normal_cdf,
)
from geo.projection import LocalProjection
from geo.registry import Problem, Village
from geo.text import normalise_key

Weight = Literal["population", "households"]
FloatArray = npt.NDArray[np.float64]

DEFAULT_GRID_KM: Final = 2.0
DEFAULT_MAX_VILLAGE_KM: Final = 5.0
DEFAULT_MIN_P: Final = 0.8
MAX_CANDIDATES: Final = 50_000
# The exact solver is for measuring the greedy's gap on instances small enough.
MAX_EXACT_CANDIDATES: Final = 5000
EXACT_TIME_LIMIT_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class Candidate:
    candidate_id: str
    lon: float
    lat: float
    cost: float = 1.0
    name: str = ""


@dataclass(frozen=True, slots=True)
class CandidateRules:
    grid_km: float = DEFAULT_GRID_KM
    max_village_km: float = DEFAULT_MAX_VILLAGE_KM
    max_grid_power_km: float | None = None
    exclusions: Any = None  # shapely geometry (lon/lat) where no tower may stand


@dataclass(frozen=True, slots=True)
class ParsedCandidates:
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def grid_candidates(
    villages: Sequence[Village], rules: CandidateRules, projection: LocalProjection
) -> list[Candidate]:
    """Grid points over the villages' extent that the rules allow."""
    if not villages:
        return []
    xy = projection.forward(np.array([(v.lon, v.lat) for v in villages], dtype=np.float64))
    step = rules.grid_km * 1000
    reach = rules.max_village_km * 1000
    (min_x, min_y), (max_x, max_y) = xy.min(axis=0) - reach, xy.max(axis=0) + reach
    columns = int((max_x - min_x) // step) + 1
    rows = int((max_y - min_y) // step) + 1
    if columns * rows > MAX_CANDIDATES * 20:
        raise CoverwatchError(
            f"a {rules.grid_km:g} km grid over this area has {columns * rows:,} points: "
            "give a coarser --grid-km"
        )
    gx, gy = np.meshgrid(min_x + np.arange(columns) * step, min_y + np.arange(rows) * step)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    tree = shapely.STRtree(np.asarray(shapely.points(xy), dtype=object))
    points = shapely.points(grid)
    near = np.unique(tree.query(points, predicate="dwithin", distance=reach)[0])
    keep = np.zeros(len(grid), dtype=bool)
    keep[near] = True
    if rules.max_grid_power_km is not None:
        powered = [i for i, v in enumerate(villages) if v.grid_power == "yes"]
        allowed = np.zeros(len(grid), dtype=bool)
        if powered:
            powered_tree = shapely.STRtree(np.asarray(shapely.points(xy[powered]), dtype=object))
            hits = powered_tree.query(
                points, predicate="dwithin", distance=rules.max_grid_power_km * 1000
            )[0]
            allowed[np.unique(hits)] = True
        keep &= allowed
    lonlat = projection.inverse(grid)
    if rules.exclusions is not None and not shapely.is_empty(rules.exclusions):
        keep &= ~shapely.contains_xy(rules.exclusions, lonlat[:, 0], lonlat[:, 1])
    chosen = np.flatnonzero(keep)
    if len(chosen) > MAX_CANDIDATES:
        raise CoverwatchError(
            f"{len(chosen):,} candidate sites: give a coarser --grid-km (at most "
            f"{MAX_CANDIDATES:,} are weighed)"
        )
    return [
        Candidate(f"g{i}", round(float(lonlat[i, 0]), 6), round(float(lonlat[i, 1]), 6))
        for i in chosen.tolist()
    ]


def parse_candidates(text: str, *, name: str) -> ParsedCandidates:
    """Candidates from a CSV (``id,name,lon,lat[,cost]``) or GeoJSON points; each bad row
    or feature is reported and the others kept."""
    parsed = ParsedCandidates()
    stripped = text.lstrip("\ufeff").lstrip()
    if stripped.startswith("{"):
        document = registry.json_of(stripped, name)
        rows: list[tuple[str, dict[str, Any], Any]] = []
        try:
            features = registry.features_of(document)
        except CoverwatchError as error:
            raise CoverwatchError(f"{name}: {error}") from None
        for index, feature in enumerate(features):
            where = f"features[{index}]"
            try:
                properties, geometry = registry.feature_parts(feature)
            except registry.RowError as error:
                parsed.problems.append(Problem(where, error.message, field=error.field))
                continue
            if not geometry or geometry.get("type") != "Point":
                kind = geometry.get("type") if geometry else None
                parsed.problems.append(
                    Problem(where, f"expected a Point, got {kind!r}", field="geometry")
                )
                continue
            fields = {str(k).strip().lower(): v for k, v in properties.items()}
            rows.append((where, fields, geometry.get("coordinates")))
    else:
        reader, header = registry.open_csv(stripped, stripped.split("\n", 1)[0])
        names = [normalise_key(h) for h in header]
        rows = []
        try:
            for number, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                rows.append((f"line {number}", dict(zip(names, row, strict=False)), None))
        except csv.Error as error:
            raise CoverwatchError(f"{name}: unreadable CSV ({error})") from None
    seen: set[str] = set()
    for where, fields, point in rows:
        try:
            if point is not None:
                if not isinstance(point, list) or len(point) < 2:
                    raise registry.RowError("geometry", "a Point needs [lon, lat]")
                lon_value, lat_value = point[0], point[1]
            elif "lon" in fields and "lat" in fields:
                lon_value, lat_value = fields["lon"], fields["lat"]
            else:
                raise registry.RowError(
                    "lon/lat", "missing: give lon and lat columns, or a GeoJSON Point"
                )
            lon = _number(lon_value, "lon")
            lat = _number(lat_value, "lat")
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise registry.RowError("lon/lat", f"{lon}, {lat} is not a position")
            cost_text = fields.get("cost")
            cost = 1.0 if cost_text in (None, "") else _number(cost_text, "cost")
            if not cost > 0:
                raise registry.RowError("cost", f"{cost} is not a positive cost")
            identifier = str(fields.get("id") or fields.get("candidate_id") or "").strip()
            identifier = identifier or f"c{len(parsed.candidates) + 1}"
            if identifier in seen:
                raise registry.RowError("id", f"{identifier!r} is listed twice")
            seen.add(identifier)
            parsed.candidates.append(
                Candidate(identifier, lon, lat, cost, str(fields.get("name") or "").strip())
            )
        except registry.RowError as error:
            parsed.problems.append(Problem(where, error.message, field=error.field))
    return parsed


def _number(value: Any, field_name: str) -> float:
    try:
        number = float(str(value).strip().replace(",", "."))
    except ValueError:
        raise registry.RowError(field_name, f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise registry.RowError(field_name, f"{value!r} is not a finite number")
    return number


def read_candidates(path: Path) -> ParsedCandidates:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CoverwatchError(f"{path}: cannot read ({error.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1258", errors="replace")
    return parse_candidates(text, name=str(path))


# ---------------------------------------------------------------------- coverage


def candidate_probabilities(
    model: PredictionModel,
    operator: str,
    candidates: Sequence[Candidate],
    villages: Sequence[Village],
) -> FloatArray:
    """P(a tower of ``operator`` at each candidate gives each village usable service):
    shape (candidates, villages). The operator's calibrated trend at the distance, with
    its spread; without a model of the operator, the nominal model and the prior spread."""
    if not candidates or not villages:
        return np.zeros((len(candidates), len(villages)))
    projection = model.projection
    c_xy = projection.forward(np.array([(c.lon, c.lat) for c in candidates], dtype=np.float64))
    v_xy = projection.forward(np.array([(v.lon, v.lat) for v in villages], dtype=np.float64))
    trend = model.trends.get(operator)
    a, b = (
        (0.0, 1.0)
        if trend is None
        else (float(trend.coefficients[0]), float(trend.coefficients[1]))
    )
    sigma = PRIOR_SIGMA_DB if trend is None else trend.sigma_db
    # The land at each village, as the measurements nearby tell it: a new mast's signal
    # there is its trend plus this (geo.prediction.PredictionModel.unseen_mast).
    land, spread = model.unseen_mast([v.lon for v in villages], [v.lat for v in villages], sigma)
    result = np.empty((len(c_xy), len(v_xy)))
    for start in range(0, len(c_xy), 512):
        part = c_xy[start : start + 512]
        distance = np.hypot(
            part[:, None, 0] - v_xy[None, :, 0], part[:, None, 1] - v_xy[None, :, 1]
        )
        nominal = nominal_rsrp_dbm(distance / 1000)
        mean = nominal + a + (b - 1) * (nominal - REFERENCE_DBM) + land[None, :]
        result[start : start + 512] = normal_cdf((mean - model.edge_dbm) / spread[None, :])
    return result


def expected_gain(
    model: PredictionModel,
    operator: str,
    sites: Sequence[Candidate],
    verdicts: Sequence[VillageVerdict],
    *,
    weight: Weight = "population",
) -> FloatArray:
    """Per village: its people times the probability that it has no service today and
    that one of the new masts gives it service — sampled from the joint prediction of
    today's operators and the new masts at the village, which share the land's part of
    what the trends miss (a village dark today is dark partly because of its land, and
    the land stays when a mast is added). Villages measured with service gain nothing."""
    gains = np.zeros(len(verdicts))
    if not sites or not verdicts:
        return gains
    projection = model.projection
    v_xy = projection.forward(
        np.array([(v.village.lon, v.village.lat) for v in verdicts], dtype=np.float64)
    )
    s_xy = projection.forward(np.array([(c.lon, c.lat) for c in sites], dtype=np.float64))
    operators = list(model.operators)
    m, k = len(operators), len(sites)
    trend = model.trends.get(operator)
    a, b = (
        (0.0, 1.0)
        if trend is None
        else (float(trend.coefficients[0]), float(trend.coefficients[1]))
    )
    new_sigma = PRIOR_SIGMA_DB if trend is None else trend.sigma_db
    sigma = np.r_[[t.sigma_db for t in model.trends.values()], [new_sigma] * k]
    ops = np.r_[np.arange(m), -1 - np.arange(k)].astype(np.int64)
    residual, cov = model.residual_joint(v_xy, sigma, ops)
    mean = residual.copy()
    for j, t in enumerate(model.trends.values()):
        trend_mean, trend_var = t.at(v_xy)
        mean[:, j] += trend_mean
        cov[:, j, j] += trend_var
    distance = np.hypot(v_xy[:, None, 0] - s_xy[None, :, 0], v_xy[:, None, 1] - s_xy[None, :, 1])
    nominal = nominal_rsrp_dbm(distance / 1000)
    mean[:, m:] += nominal + a + (b - 1) * (nominal - REFERENCE_DBM)
    column = {op: j for j, op in enumerate(operators)}
    draws = np.random.default_rng([20261201, m + k]).standard_normal((2000, m + k))
    for i, verdict in enumerate(verdicts):
        village = verdict.village
        people = float((village.population if weight == "population" else village.households) or 0)
        if people <= 0 or any(
            o.kind in ("probe", "survey") and o.p_usable == 1.0 for o in verdict.operators
        ):
            continue
        # Operators measured without service are dark for certain; the predicted ones
        # are sampled with the new masts.
        today = [column[o.operator] for o in verdict.operators
                 if o.kind == "predicted" and o.operator in column]  # fmt: skip
        pick = today + list(range(m, m + k))
        sub_cov = cov[i][np.ix_(pick, pick)] + np.eye(len(pick)) * 0.25
        lower = np.linalg.cholesky(sub_cov)
        samples = mean[i, pick] + draws[:, : len(pick)] @ lower.T
        dark = np.all(samples[:, : len(today)] < model.edge_dbm, axis=1)
        served = np.any(samples[:, len(today) :] >= model.edge_dbm, axis=1)
        gains[i] = people * float(np.mean(dark & served))
    return gains


# --------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Instance:
    """What is weighed: each village's need and which candidates would serve it."""

    candidates: Sequence[Candidate]
    need: FloatArray  # expected population without service today, per village
    covers: npt.NDArray[np.bool_]  # (candidates, villages): p >= min_p
    costs: FloatArray


@dataclass(frozen=True, slots=True)
class Selection:
    chosen: list[int]  # candidate indexes, in the order picked
    gains: list[float]  # each one's added expected population (greedy order)
    objective: float
    method: Literal["greedy", "exact"]
    optimal: bool = False


def build_problem(
    candidates: Sequence[Candidate],
    verdicts: Sequence[VillageVerdict],
    probabilities: FloatArray,
    *,
    min_p: float = DEFAULT_MIN_P,
    weight: Weight = "population",
) -> Instance:
    need = np.array(
        [
            (v.p_no_service or 0.0)
            * float((v.village.population if weight == "population" else v.village.households) or 0)
            for v in verdicts
        ]
    )
    covers = probabilities >= min_p
    # A candidate serves only villages that need it: drop the rest from the instance.
    return Instance(
        candidates, need, covers & (need > 0)[None, :], np.array([c.cost for c in candidates])
    )


def greedy(
    instance: Instance, *, sites: int | None = None, budget: float | None = None
) -> Selection:
    """Greedy maximum coverage: the candidate adding the most (per cost, under a budget)
    until the number of sites or the budget is used up. Under a budget the best single
    affordable site is taken instead when it alone beats the greedy's total."""
    covered = np.zeros(instance.covers.shape[1], dtype=bool)
    chosen: list[int] = []
    gains: list[float] = []
    spent = 0.0
    while sites is None or len(chosen) < sites:
        open_need = np.where(covered, 0.0, instance.need)
        gain = instance.covers @ open_need
        if chosen:
            gain[chosen] = -1.0
        if budget is not None:
            affordable = instance.costs <= budget - spent + 1e-9
            gain = np.where(affordable, gain, -1.0)
            score = np.where(affordable, gain / instance.costs, -1.0)
        else:
            score = gain
        best = int(np.argmax(score)) if len(score) else -1
        if best < 0 or gain[best] <= 0:
            break
        chosen.append(best)
        gains.append(float(gain[best]))
        covered |= instance.covers[best]
        spent += float(instance.costs[best])
    objective = float(sum(gains))
    if budget is not None and len(instance.candidates):
        single = instance.covers @ instance.need
        single = np.where(instance.costs <= budget + 1e-9, single, -1.0)
        best_single = int(np.argmax(single))
        if single[best_single] > objective:
            return Selection(
                [best_single], [float(single[best_single])], float(single[best_single]), "greedy"
            )
    return Selection(chosen, gains, objective, "greedy")


@contextmanager
def _banner_to_stderr() -> Iterator[None]:
    """HiGHS prints its banner on file descriptor 1 when a solver is made, whatever its
    options: sent to standard error, so that CSV or GeoJSON on standard output stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def exact(
    instance: Instance, *, sites: int | None = None, budget: float | None = None
) -> Selection:
    """The optimum of the same objective as a MILP (HiGHS): maximise the need served,
    y_v <= sum of the x_c that cover v, sum x_c <= sites (or sum cost_c x_c <= budget)."""
    import highspy

    useful = np.flatnonzero(instance.covers.any(axis=1))
    villages = np.flatnonzero(instance.covers[useful].any(axis=0)) if len(useful) else useful
    if len(useful) > MAX_EXACT_CANDIDATES:
        raise CoverwatchError(
            f"{len(useful)} useful candidates: the exact solver takes at most "
            f"{MAX_EXACT_CANDIDATES} (use the greedy, or fewer candidates)"
        )
    if not len(useful):
        return Selection([], [], 0.0, "exact", optimal=True)
    with _banner_to_stderr():
        h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.silent()
    h.setOptionValue("time_limit", EXACT_TIME_LIMIT_S)
    n_x, n_y = len(useful), len(villages)
    inf = highspy.kHighsInf
    h.addVars(n_x + n_y, np.zeros(n_x + n_y), np.ones(n_x + n_y))
    h.changeColsIntegrality(
        n_x, np.arange(n_x, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * n_x)
    )
    h.changeColsCost(
        n_y, np.arange(n_x, n_x + n_y, dtype=np.int32), instance.need[villages].astype(np.float64)
    )
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    sub = instance.covers[np.ix_(useful, villages)]
    for j in range(n_y):
        covering = np.flatnonzero(sub[:, j]).astype(np.int32)
        indices = np.r_[np.int32(n_x + j), covering].astype(np.int32)
        values = np.r_[1.0, -np.ones(len(covering))]
        h.addRow(-inf, 0.0, len(indices), indices, values)
    limit = float(sites) if sites is not None else float(budget or 0.0)
    weights = np.ones(n_x) if sites is not None else instance.costs[useful].astype(np.float64)
    h.addRow(-inf, limit, n_x, np.arange(n_x, dtype=np.int32), weights)
    h.run()
    status = h.getModelStatus()
    optimal = status == highspy.HighsModelStatus.kOptimal
    if not optimal and status != highspy.HighsModelStatus.kTimeLimit:
        raise CoverwatchError(f"the exact solver stopped without a solution ({status})")
    values = np.array(h.getSolution().col_value)
    chosen = [int(useful[i]) for i in np.flatnonzero(values[:n_x] > 0.5)]
    covered = (
        instance.covers[chosen].any(axis=0) if chosen else np.zeros(instance.covers.shape[1], bool)
    )
    objective = float(instance.need[covered].sum())
    return Selection(chosen, [], objective, "exact", optimal=optimal)


# ------------------------------------------------------------------------ output


@dataclass(frozen=True, slots=True)
class Recommendation:
    rank: int
    candidate: Candidate
    operator: str
    gain: float  # expected population newly served (on top of the sites before it)
    villages: list[tuple[Village, float]]  # newly served by this site: (village, need)


def recommendations(
    instance: Instance, selection: Selection, verdicts: Sequence[VillageVerdict], operator: str
) -> list[Recommendation]:
    covered = np.zeros(instance.covers.shape[1], dtype=bool)
    result = []
    for rank, index in enumerate(selection.chosen, start=1):
        newly = instance.covers[index] & ~covered
        covered |= instance.covers[index]
        served = [
            (verdicts[j].village, float(instance.need[j])) for j in np.flatnonzero(newly).tolist()
        ]
        served.sort(key=lambda item: -item[1])
        result.append(
            Recommendation(
                rank, instance.candidates[index], operator, float(sum(n for _, n in served)), served
            )
        )
    return result


def to_geojson(rows: Sequence[Recommendation]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [r.candidate.lon, r.candidate.lat]},
                "properties": {
                    "rank": r.rank,
                    "candidate_id": r.candidate.candidate_id,
                    "name": r.candidate.name,
                    "operator": r.operator,
                    "operator_name": operator_label(r.operator),
                    "cost": r.candidate.cost,
                    "expected_population_served": round(r.gain, 1),
                    "villages": [
                        {
                            "village_id": v.village_id,
                            "name": v.name,
                            "commune": v.commune,
                            "population": v.population,
                            "expected_without_service": round(n, 1),
                        }
                        for v, n in r.villages
                    ],
                },
            }
            for r in rows
        ],
    }


def to_csv(rows: Sequence[Recommendation]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "candidate_id",
            "name",
            "operator",
            "lon",
            "lat",
            "cost",
            "expected_population_served",
            "villages",
        ]
    )
    for r in rows:
        writer.writerow(
            [
                r.rank,
                r.candidate.candidate_id,
                r.candidate.name,
                operator_label(r.operator),
                r.candidate.lon,
                r.candidate.lat,
                r.candidate.cost,
                round(r.gain, 1),
                "; ".join(v.name for v, _ in r.villages),
            ]
        )
    return out.getvalue()


def to_table(rows: Sequence[Recommendation], selection: Selection) -> str:
    if not rows:
        return "(no candidate site would newly serve a village without service)\n"
    lines = [f"{'#':>3}  {'site':<10}{'lon':>11}{'lat':>10}  {'+people':>8}  villages newly served"]
    for r in rows:
        names = ", ".join(f"{v.name} ({n:.0f})" for v, n in r.villages[:6])
        more = f", … {len(r.villages) - 6} more" if len(r.villages) > 6 else ""
        lines.append(
            f"{r.rank:>3}  {r.candidate.candidate_id:<10}{r.candidate.lon:>11.5f}"
            f"{r.candidate.lat:>10.5f}  {r.gain:>8.0f}  {names}{more}"
        )
    lines.append(
        f"{len(rows)} sites ({selection.method}{', optimal' if selection.optimal else ''}): "
        f"{selection.objective:,.0f} people expected to gain service"
    )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- one entry point


@dataclass(frozen=True, slots=True)
class SiteOptions:
    operator: str
    sites: int | None = 5
    budget: float | None = None
    min_p: float = DEFAULT_MIN_P
    weight: Weight = "population"
    rules: CandidateRules = field(default_factory=CandidateRules)
    candidates: Sequence[Candidate] | None = None  # None: the grid
    exact: bool = False


@dataclass(frozen=True, slots=True)
class SiteRecommendation:
    rows: list[Recommendation]
    selection: Selection
    candidates: int
    villages_in_need: int


def recommend(
    connection: Any,
    window: Any,
    options: SiteOptions,
    *,
    province: str | None = None,
    assessment: Any = None,
) -> SiteRecommendation:
    """Assess the province (geo.assessment; or take ``assessment``, one already made of
    this window), weigh the candidates, select."""
    from geo.assessment import assess

    if assessment is None:
        assessment = assess(connection, window, province=province)
    villages = [v.village for v in assessment.verdicts]
    if options.candidates is None:
        candidates = grid_candidates(villages, options.rules, assessment.model.projection)
    else:
        candidates = list(options.candidates)
        exclusions = options.rules.exclusions
        if exclusions is not None and not shapely.is_empty(exclusions):
            candidates = [
                c for c in candidates if not shapely.contains_xy(exclusions, c.lon, c.lat)
            ]
    probabilities = candidate_probabilities(
        assessment.model, options.operator, candidates, villages
    )
    instance = build_problem(
        candidates,
        assessment.verdicts,
        probabilities,
        min_p=options.min_p,
        weight=options.weight,
    )
    choose = exact if options.exact else greedy
    selection = choose(instance, sites=options.sites, budget=options.budget)
    rows = recommendations(instance, selection, assessment.verdicts, options.operator)
    return SiteRecommendation(rows, selection, len(candidates), int((instance.need > 0).sum()))


def read_exclusions(path: Path) -> tuple[Any, list[Problem]]:
    """Exclusion areas (GeoJSON polygons) as one geometry, and the problems found."""
    document = registry.read_geojson(path)
    problems: list[Problem] = []
    shapes = []
    try:
        features = registry.features_of(document)
    except CoverwatchError as error:
        raise CoverwatchError(f"{path}: {error}") from None
    for index, feature in enumerate(features):
        where = f"features[{index}]"
        try:
            _, geometry = registry.feature_parts(feature)
            if geometry is None:
                raise registry.RowError("geometry", "missing: an exclusion area is a polygon")
            shapes.append(registry.polygon_of(geometry, where, problems))
        except registry.RowError as error:
            problems.append(Problem(where, error.message, field=error.field))
    return (shapely.union_all(shapes) if shapes else None), problems
