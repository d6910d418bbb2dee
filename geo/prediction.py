"""Coverage predicted where nobody measured: a propagation model from the tower
registry, calibrated per operator on the measurements, plus kriging of what it misses.

For one operator (LTE RSRP, the quantity geo's "none" boundary is drawn on):

1. **Nominal model.** COST-231 Hata (the Okumura-Hata extension to 1.5-2 GHz) with the
   open/rural correction, at 1800 MHz (band 3, the band Vietnamese operators use most),
   masts of 35 m, a handset at 2 m, 43 dBm over a 20 MHz carrier with 17 dBi antennas:
   ``x = 27.2 dBm - L(d)`` from the nearest registered site of the operator (the one
   with the least loss). The registry's positions are estimates and some sites are
   missing; the calibration absorbs what it can of both.
2. **Calibration.** ``rsrp = x + a + (b - 1)(x + 110)`` fitted on the operator's
   measurements (probes' mean LTE RSRP and survey points averaged per 200 m cell) by
   Bayesian least squares, shrunk towards the nominal model (a ~ N(0, 10 dB),
   b ~ N(1, 0.3)), so that an operator measured at three places is not fitted to noise.
   Where a modem could not register at all (the operator measured as "none" without a
   value) the observation stands at ``UNREGISTERED_RSRP_DBM``.
3. **Residuals.** What the model misses (terrain, missing sites) is spatially correlated:
   simple kriging of the residuals with an exponential covariance, its range and nugget
   chosen per operator by leave-one-out likelihood over a small grid.
4. **Verdict.** At each point the predicted RSRP ``mu`` with its standard deviation
   (kriging variance + the calibration's parameter uncertainty), and the probability of
   usable service ``P(rsrp >= edge) = 1 - Phi((edge - mu) / sigma)`` with ``edge`` the
   database's LTE "poor" threshold (-115 dBm by default).

An operator with sites but no measurements is predicted from the nominal model alone
with the prior shadowing spread (``PRIOR_SIGMA_DB``); with measurements but no sites, from
the measurements alone (a constant mean plus kriging); with neither it is not predicted.
A prediction is evidence of its own kind, never shown as measured (see geo.evidence).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import psycopg
import shapely

from geo.coverage import ProbeCoverage, TimeWindow
from geo.projection import LocalProjection

FloatArray = npt.NDArray[np.float64]
ObservationKind = Literal["probe", "survey"]

FREQUENCY_MHZ: Final = 1800.0
BASE_HEIGHT_M: Final = 35.0
MOBILE_HEIGHT_M: Final = 2.0
RSRP_AT_ZERO_LOSS_DBM: Final = 43.0 - 10 * math.log10(1200) + 17.0 - 2.0
# A modem loses the cell somewhere around -120..-125 dBm: where a probe or a phone found
# no service at all, the signal is known only to lie below this bound (a censored
# observation; see the module docstring).
UNREGISTERED_RSRP_DBM: Final = -120.0
PRIOR_SIGMA_DB: Final = 9.0
PRIOR_OFFSET_SD_DB: Final = 10.0
PRIOR_SLOPE_SD: Final = 0.3
REFERENCE_DBM: Final = -110.0
SURVEY_CELL_M: Final = 200.0
# Leave-one-out choices of the residuals' covariance: correlation range and nugget share.
RANGES_KM: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
NUGGET_SHARES: Final = (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)
MAX_SHARED: Final = 0.95
MIN_SHARED_PAIRS: Final = 20
MAX_CHOICE_OBSERVATIONS: Final = 400
# Observations this far apart judge the covariance: about the distance from a village
# to the nearest measurement that is not in it.
CHOICE_SPACING_M: Final = 1000.0
# Kriging is local: each point is predicted from its nearest observations.
NEIGHBOURS: Final = 48
MIN_OBSERVATIONS_FOR_SPREAD: Final = 3
MIN_SIGMA_DB: Final = 2.0
MONTE_CARLO_DRAWS: Final = 2000
DEFAULT_EDGE_DBM: Final = -115.0


def nominal_rsrp_dbm(distance_km: FloatArray) -> FloatArray:
    """COST-231 Hata, open/rural, for the constants above (distance clipped at 50 m)."""
    log_f = math.log10(FREQUENCY_MHZ)
    log_hb = math.log10(BASE_HEIGHT_M)
    a_hm = (1.1 * log_f - 0.7) * MOBILE_HEIGHT_M - (1.56 * log_f - 0.8)
    loss = (
        46.3
        + 33.9 * log_f
        - 13.82 * log_hb
        - a_hm
        + (44.9 - 6.55 * log_hb) * np.log10(np.maximum(distance_km, 0.05))
        - 4.78 * log_f**2
        + 18.33 * log_f
        - 40.94
    )
    result: FloatArray = RSRP_AT_ZERO_LOSS_DBM - loss
    return result


@dataclass(frozen=True, slots=True)
class Observation:
    operator: str
    lon: float
    lat: float
    rsrp_dbm: float
    kind: ObservationKind
    source: str  # the probe's id, or the survey cell's points ("survey: 7 points")
    censored: bool = False  # no service: the signal lies somewhere below rsrp_dbm


@dataclass(frozen=True, slots=True)
class Prediction:
    operator: str
    rsrp_dbm: float
    sigma_db: float
    p_usable: float
    basis: str  # "registry + measurements", "registry only", "measurements only"

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "rsrp_dbm": round(self.rsrp_dbm, 1),
            "sigma_db": round(self.sigma_db, 1),
            "p_usable": round(self.p_usable, 3),
            "basis": self.basis,
        }


def normal_cdf(z: FloatArray) -> FloatArray:
    """Phi(z) through erfc: exact far into the lower tail, where 1 + erf(z) underflows."""
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    result: FloatArray = 0.5 * erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0))
    return result


@dataclass(frozen=True, slots=True)
class Trend:
    """One operator's calibrated nominal model: ``x + a + (b - 1)(x + 110)``."""

    operator: str
    sites_xy: FloatArray  # metres, shape (n, 2)
    coefficients: FloatArray  # a, b
    coefficient_covariance: FloatArray
    sigma_db: float  # spread of what the trend misses (residual standard deviation)
    observations: int

    @property
    def basis(self) -> str:
        if len(self.sites_xy) and self.observations:
            return "registry + measurements"
        return "registry only" if len(self.sites_xy) else "measurements only"

    def nominal(self, xy: FloatArray) -> FloatArray:
        if not len(self.sites_xy):
            return np.full(len(xy), REFERENCE_DBM)
        return _nominal_at(xy, self.sites_xy)

    def at(self, xy: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The trend and its variance (from the calibration's uncertainty) at points."""
        nominal = self.nominal(xy)
        design = np.column_stack([np.ones(len(xy)), nominal - REFERENCE_DBM])
        mean = nominal + design @ (self.coefficients - np.array([0.0, 1.0]))
        variance = ((design @ self.coefficient_covariance) * design).sum(axis=1)
        return mean, variance


def _nominal_at(xy: FloatArray, sites_xy: FloatArray) -> FloatArray:
    """The nominal RSRP from the nearest site (the strongest: it falls with distance);
    a tree of the sites keeps this linear in points and sites, however large the
    registry."""
    tree = shapely.STRtree(np.asarray(shapely.points(sites_xy), dtype=object))
    nearest = tree.query_nearest(shapely.points(xy), all_matches=False)
    index = np.zeros(len(xy), dtype=np.int64)
    index[nearest[0]] = nearest[1]
    distance = np.hypot(*(xy - sites_xy[index]).T)
    return nominal_rsrp_dbm(distance / 1000)


def _below(mean: FloatArray, sigma: float, bound: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and variance of y ~ N(mean, sigma^2) given y < bound: where a censored
    observation stands, and how unsure that is."""
    alpha = (bound - mean) / sigma
    density = np.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = density / normal_cdf(alpha)
        # Far below, both underflow: the Mills ratio's expansion, -a / (1 - 1/a^2 + 3/a^4).
        asymptotic = -alpha / (1 - alpha**-2.0 + 3 * alpha**-4.0)
    ratio = np.where((alpha < -30) | ~np.isfinite(exact), asymptotic, exact)
    expected: FloatArray = np.minimum(mean - sigma * ratio, bound)
    variance: FloatArray = sigma**2 * np.clip(1 - alpha * ratio - ratio**2, 0.0, 1.0)
    return expected, variance


def fit_trend(
    operator: str,
    sites_xy: FloatArray,
    obs_xy: FloatArray,
    values: FloatArray,
    censored: npt.NDArray[np.bool_] | None = None,
) -> tuple[Trend, FloatArray]:
    """Bayesian least squares of the calibration, shrunk towards the nominal model; the
    trend and the observations' residuals. A censored observation (no service: below its
    value) stands at its expectation below the bound under the current fit, refitted
    until both settle (EM for a censored regression)."""
    bounds = values.copy()
    censored = np.zeros(len(values), dtype=bool) if censored is None else censored
    # "Below -120 dBm" says nothing of how far below: with fewer than three values the
    # spread is not estimated (a walk through one dead valley is not the province's
    # spread), and it never falls below MIN_SIGMA_DB.
    spread_unknown = int((~censored).sum()) < MIN_OBSERVATIONS_FOR_SPREAD
    nominal = (
        _nominal_at(obs_xy, sites_xy) if len(sites_xy) else np.full(len(obs_xy), REFERENCE_DBM)
    )
    design = np.column_stack([np.ones(len(obs_xy)), nominal - REFERENCE_DBM])
    prior_mean = np.array([0.0, 1.0])
    # Without sites the slope has nothing to act on: fixed at 1 (a constant mean).
    prior_sd = np.array([PRIOR_OFFSET_SD_DB, PRIOR_SLOPE_SD if len(sites_xy) else 1e-6])
    target = values - nominal + (nominal - REFERENCE_DBM)  # = a + b (x + 110) + residual
    noise_var = PRIOR_SIGMA_DB**2
    coefficients, covariance = prior_mean, np.diag(prior_sd**2)
    for _ in range(30):  # the noise level, the fit and the censored values settle together
        precision = np.diag(1 / prior_sd**2) + design.T @ design / noise_var
        covariance = np.linalg.inv(precision)
        coefficients = covariance @ (prior_mean / prior_sd**2 + design.T @ target / noise_var)
        fitted = design @ coefficients
        hidden = np.zeros(len(values))  # the censored values' remaining variance
        if censored.any():
            expected, hidden[censored] = _below(
                (fitted + REFERENCE_DBM)[censored], math.sqrt(noise_var), bounds[censored]
            )
            target[censored] = expected - REFERENCE_DBM
        if spread_unknown:
            continue
        residuals = target - fitted
        noise_var = max(float(np.mean(residuals**2 + hidden)), MIN_SIGMA_DB**2)
    residuals = target - design @ coefficients
    sigma = PRIOR_SIGMA_DB if spread_unknown else math.sqrt(noise_var)
    return Trend(operator, sites_xy, coefficients, covariance, sigma, len(values)), residuals


@dataclass(frozen=True, slots=True)
class Covariance:
    """Residuals' covariance: exponential in distance, a nugget share of each operator's
    variance that no neighbour explains, and a share of the rest common to all operators
    (the ridge that shades a village shades it from every operator's mast)."""

    range_km: float = 2.0
    nugget_share: float = 0.5
    shared: float = 0.5

    def between(
        self,
        a_xy: FloatArray,
        a_sigma: FloatArray,
        a_op: npt.NDArray[np.int64],
        b_xy: FloatArray,
        b_sigma: FloatArray,
        b_op: npt.NDArray[np.int64],
    ) -> FloatArray:
        """Covariance of residuals at distinct points (no nugget), last two axes (a, b)."""
        distance_km = (
            np.hypot(
                a_xy[..., :, None, 0] - b_xy[..., None, :, 0],
                a_xy[..., :, None, 1] - b_xy[..., None, :, 1],
            )
            / 1000
        )
        same = a_op[..., :, None] == b_op[..., None, :]
        correlation = np.where(same, 1.0, self.shared) * (1 - self.nugget_share)
        result: FloatArray = (
            a_sigma[..., :, None] * b_sigma[..., None, :] * correlation
            * np.exp(-distance_km / self.range_km)
        )  # fmt: skip
        return result


def _loo_score(
    covariance: Covariance,
    xy: FloatArray,
    sigma: FloatArray,
    op: npt.NDArray[np.int64],
    residuals: FloatArray,
) -> float:
    """Mean negative log-likelihood of leave-one-out kriging predictions."""
    k = covariance.between(xy, sigma, op, xy, sigma, op)
    k[np.diag_indices_from(k)] = sigma**2
    try:
        inverse = np.linalg.inv(k)
    except np.linalg.LinAlgError:
        return math.inf
    diagonal = np.diag(inverse)
    if np.any(diagonal <= 0):
        return math.inf
    errors = (inverse @ residuals) / diagonal
    variances = 1.0 / diagonal
    return float(np.mean(0.5 * np.log(2 * math.pi * variances) + errors**2 / (2 * variances)))


def _thinned(xy: FloatArray, spacing_m: float, limit: int) -> npt.NDArray[np.int64]:
    """Observations whose places lie at least ``spacing_m`` apart (all observations at a
    kept place stay), at most about ``limit`` of them, chosen in a seeded random order."""
    places, place_of = np.unique(np.round(xy / 10), axis=0, return_inverse=True)
    order = np.random.default_rng(0).permutation(len(places))
    kept: list[int] = []
    kept_xy = np.empty((0, 2))
    for place in order.tolist():
        point = places[place] * 10
        if len(kept_xy) and np.hypot(*(kept_xy - point).T).min() < spacing_m:
            continue
        kept.append(place)
        kept_xy = np.vstack([kept_xy, point])
        if np.isin(place_of, kept).sum() >= limit:
            break
    return np.flatnonzero(np.isin(place_of.ravel(), kept))


def cross_operator_correlation(
    xy: FloatArray, sigma: FloatArray, op: npt.NDArray[np.int64], residuals: FloatArray
) -> float | None:
    """The correlation of two operators' residuals measured at one place (a survey cell
    or a multi-SIM kit): how much of what the trend misses is the place, not the mast."""
    places = np.unique(np.round(xy / 10), axis=0, return_inverse=True)[1].ravel()
    scaled = residuals / sigma
    first: list[float] = []
    second: list[float] = []
    for place in np.unique(places).tolist():
        members = np.flatnonzero(places == place)
        for i, a in enumerate(members.tolist()):
            for b in members[i + 1 :].tolist():
                if op[a] != op[b]:
                    first.append(float(scaled[a]))
                    second.append(float(scaled[b]))
    if len(first) < MIN_SHARED_PAIRS:
        return None
    # Symmetric: each pair counted both ways, so the order of operators does not matter.
    x = np.array(first + second)
    y = np.array(second + first)
    correlation = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else math.nan
    return correlation if math.isfinite(correlation) else None


def choose_covariance(
    xy: FloatArray, sigma: FloatArray, op: npt.NDArray[np.int64], residuals: FloatArray
) -> Covariance:
    """Range and nugget by leave-one-out likelihood, on observations at least
    ``CHOICE_SPACING_M`` apart (a walk logs a point every few metres, and judged on such
    neighbours the residuals would look far smoother than they are a village away); the
    operators' shared share from their correlation where they were measured together
    (leave-one-out scores each operator alone, and says little about it)."""
    correlation = cross_operator_correlation(xy, sigma, op, residuals)

    def with_shared(covariance: Covariance) -> Covariance:
        if correlation is None:
            return covariance
        shared = min(max(correlation / (1 - covariance.nugget_share), 0.0), MAX_SHARED)
        return replace(covariance, shared=shared)

    pick = _thinned(xy, CHOICE_SPACING_M, MAX_CHOICE_OBSERVATIONS)
    if len(pick) < 5:
        return with_shared(Covariance())
    args = (xy[pick], sigma[pick], op[pick], residuals[pick])
    best = with_shared(Covariance())
    best_score = _loo_score(best, *args)
    for _ in range(2):  # coordinate search: each parameter over its grid, twice
        for name, grid in (("range_km", RANGES_KM), ("nugget_share", NUGGET_SHARES)):
            for value in grid:
                candidate = with_shared(replace(best, **{name: value}))
                score = _loo_score(candidate, *args)
                if score < best_score:
                    best, best_score = candidate, score
    return best


@dataclass(frozen=True, slots=True)
class JointPrediction:
    """Every operator's predicted RSRP at a set of points, with their joint spread."""

    operators: tuple[str, ...]
    mean: FloatArray  # (points, operators)
    covariance: FloatArray  # (points, operators, operators)
    edge_dbm: float
    bases: tuple[str, ...]

    def marginal(self, index: int) -> list[Prediction]:
        return [self.of(index, point) for point in range(len(self.mean))]

    def of(self, operator_index: int, point: int) -> Prediction:
        mean = float(self.mean[point, operator_index])
        sigma = math.sqrt(max(float(self.covariance[point, operator_index, operator_index]), 0.25))
        p = 0.5 * math.erfc((self.edge_dbm - mean) / (sigma * math.sqrt(2.0)))
        return Prediction(
            self.operators[operator_index], mean, sigma, p, self.bases[operator_index]
        )

    def p_none(self, point: int, operator_indexes: Sequence[int]) -> float:
        """P(no operator among these reaches the usable edge) at a point: the operators'
        shadowing is correlated (a valley is dark for all), so not a product."""
        return self.p_none_many([point], [tuple(operator_indexes)])[0]

    def p_none_many(
        self, points: Sequence[int], operator_indexes: Sequence[tuple[int, ...]]
    ) -> list[float]:
        """:meth:`p_none` of many points at once (points sharing a set of operators are
        sampled together, in slices that bound memory)."""
        result = [1.0] * len(points)
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, pick in enumerate(operator_indexes):
            if pick:
                groups.setdefault(tuple(pick), []).append(position)
        for pick, positions in groups.items():
            columns = np.asarray(pick, dtype=np.int64)
            for start in range(0, len(positions), 256):
                chunk = positions[start : start + 256]
                rows = np.asarray([points[i] for i in chunk], dtype=np.int64)
                mean = self.mean[np.ix_(rows, columns)]
                cov = self.covariance[rows][:, columns][:, :, columns]
                cov = cov + np.eye(len(columns)) * 0.25
                lower = np.linalg.cholesky(cov)
                draws = _standard_samples(len(columns))
                samples = mean[:, None, :] + np.einsum("sk,pjk->psj", draws, lower)
                dark = np.all(samples < self.edge_dbm, axis=2).mean(axis=1)
                for i, value in zip(chunk, dark.tolist(), strict=True):
                    result[i] = float(value)
        return result


@functools.lru_cache(maxsize=32)
def _standard_samples(dimensions: int) -> FloatArray:
    """Fixed standard normal draws: the same evidence always gives the same probability."""
    result: FloatArray = np.random.default_rng([20261201, dimensions]).standard_normal(
        (MONTE_CARLO_DRAWS, dimensions)
    )
    return result


@dataclass
class PredictionModel:
    """The operators' trends and the residuals' joint kriging; see the module docstring."""

    projection: LocalProjection
    trends: dict[str, Trend]
    observations: Sequence[Observation]
    covariance: Covariance
    edge_dbm: float
    obs_xy: FloatArray
    obs_op: npt.NDArray[np.int64]
    residuals: FloatArray

    @property
    def operators(self) -> tuple[str, ...]:
        return tuple(self.trends)

    @property
    def models(self) -> dict[str, Trend]:
        return self.trends

    def _sigma(self, op: npt.NDArray[np.int64]) -> FloatArray:
        sigmas = np.array([t.sigma_db for t in self.trends.values()])
        result: FloatArray = sigmas[op]
        return result

    def residual_joint(
        self, xy: FloatArray, sigma: FloatArray, ops: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray]:
        """What the trends miss at points ``xy`` (metres), for columns of operator index
        ``ops`` (a negative index: a mast nobody measured, each its own) with spreads
        ``sigma``: the kriged mean (points, columns) and joint covariance (points,
        columns, columns). Two columns are two masts: they share the land's part."""
        n, m = len(xy), len(ops)
        mean = np.zeros((n, m))
        shared = self.covariance.shared * (1 - self.covariance.nugget_share)
        prior = sigma[:, None] * sigma[None, :] * np.where(np.eye(m, dtype=bool), 1.0, shared)
        cov = np.broadcast_to(prior, (n, m, m)).copy()
        if not n or not m or not len(self.residuals):
            return mean, cov
        near = min(NEIGHBOURS, len(self.residuals))
        for start in range(0, n, 512):
            part = xy[start : start + 512]
            distance = np.hypot(
                part[:, None, 0] - self.obs_xy[None, :, 0],
                part[:, None, 1] - self.obs_xy[None, :, 1],
            )
            idx = np.argpartition(distance, near - 1, axis=1)[:, :near]
            n_xy, n_op = self.obs_xy[idx], self.obs_op[idx]
            n_sigma = self._sigma(n_op)
            k_obs = self.covariance.between(n_xy, n_sigma, n_op, n_xy, n_sigma, n_op)
            diagonal = np.arange(near)
            k_obs[:, diagonal, diagonal] = n_sigma**2
            points = np.repeat(part[:, None, :], m, axis=1)
            k_point = self.covariance.between(
                points,
                np.broadcast_to(sigma, (len(part), m)),
                np.broadcast_to(ops, (len(part), m)),
                n_xy,
                n_sigma,
                n_op,
            )  # (points, columns, neighbours)
            rhs = np.concatenate(
                [self.residuals[idx][:, :, None], k_point.transpose(0, 2, 1)], axis=2
            )
            solved = np.linalg.solve(k_obs, rhs)
            weights, projected = solved[:, :, 0], solved[:, :, 1:]
            mean[start : start + 512] = np.einsum("pok,pk->po", k_point, weights)
            cov[start : start + 512] -= np.einsum("pok,pkq->poq", k_point, projected)
        return mean, cov

    def predict_joint(self, lon: Sequence[float], lat: Sequence[float]) -> JointPrediction:
        operators = self.operators
        m, n = len(operators), len(lon)
        bases = tuple(t.basis for t in self.trends.values())
        if not n or not m:
            return JointPrediction(
                operators, np.zeros((n, m)), np.zeros((n, m, m)), self.edge_dbm, bases
            )
        xy = self.projection.forward(np.column_stack([lon, lat]).astype(np.float64))
        ops = np.arange(m)
        mean, cov = self.residual_joint(xy, self._sigma(ops), ops)
        for j, trend in enumerate(self.trends.values()):
            trend_mean, trend_var = trend.at(xy)
            mean[:, j] += trend_mean
            cov[:, j, j] += trend_var
        return JointPrediction(operators, mean, cov, self.edge_dbm, bases)

    def unseen_mast(
        self, lon: Sequence[float], lat: Sequence[float], sigma_db: float
    ) -> tuple[FloatArray, FloatArray]:
        """What the trend would miss at these points for a mast nobody has measured yet (a
        planned tower): the mean and spread of its residual. Only the land's share of what
        was measured nearby speaks for it — a village dark for every operator's mast is
        likely dark for a new one too (the between-operator covariance is the between-mast
        one)."""
        if not len(lon):
            return np.zeros(0), np.zeros(0)
        xy = self.projection.forward(np.column_stack([lon, lat]).astype(np.float64))
        mean, cov = self.residual_joint(xy, np.array([sigma_db]), np.array([-1]))
        return mean[:, 0], np.sqrt(np.maximum(cov[:, 0, 0], 0.25))

    def predict(self, lon: Sequence[float], lat: Sequence[float]) -> dict[str, list[Prediction]]:
        joint = self.predict_joint(lon, lat)
        return {operator: joint.marginal(j) for j, operator in enumerate(joint.operators)}


def fit(
    projection: LocalProjection,
    sites: Mapping[str, Sequence[tuple[float, float]]],
    observations: Sequence[Observation],
    *,
    edge_dbm: float = DEFAULT_EDGE_DBM,
    operators: Iterable[str] | None = None,
) -> PredictionModel:
    """Calibrate each operator's trend, then the residuals' joint covariance."""
    by_operator: dict[str, list[Observation]] = {}
    for observation in observations:
        by_operator.setdefault(observation.operator, []).append(observation)
    wanted = sorted(set(operators) if operators is not None else set(sites) | set(by_operator))
    wanted = [o for o in wanted if sites.get(o) or by_operator.get(o)]
    trends: dict[str, Trend] = {}
    kept: list[Observation] = []
    residual_parts: list[FloatArray] = []
    op_parts: list[npt.NDArray[np.int64]] = []
    for index, operator in enumerate(wanted):
        own = by_operator.get(operator, [])
        sites_xy = (
            projection.forward(np.array(sites[operator], dtype=np.float64))
            if sites.get(operator)
            else np.empty((0, 2))
        )
        obs_xy = (
            projection.forward(np.array([(o.lon, o.lat) for o in own], dtype=np.float64))
            if own
            else np.empty((0, 2))
        )
        values = np.array([o.rsrp_dbm for o in own], dtype=np.float64)
        censored = np.array([o.censored for o in own], dtype=bool)
        trends[operator], residuals = fit_trend(operator, sites_xy, obs_xy, values, censored)
        kept += own
        residual_parts.append(residuals)
        op_parts.append(np.full(len(own), index, dtype=np.int64))
    obs_xy = (
        projection.forward(np.array([(o.lon, o.lat) for o in kept], dtype=np.float64))
        if kept
        else np.empty((0, 2))
    )
    residuals = np.concatenate(residual_parts) if residual_parts else np.empty(0)
    obs_op = np.concatenate(op_parts) if op_parts else np.empty(0, dtype=np.int64)
    model = PredictionModel(
        projection, trends, kept, Covariance(), edge_dbm, obs_xy, obs_op, residuals
    )
    if len(residuals):
        model.covariance = choose_covariance(obs_xy, model._sigma(obs_op), obs_op, residuals)
    return model


# ------------------------------------------------------------------ the database side


def operator_of(mcc: int, mnc: int) -> str:
    """A registry's MCC and MNC as the readings' operator code (two-digit MNCs padded)."""
    return f"{mcc:03d}{mnc:02d}" if mnc < 100 else f"{mcc:03d}{mnc:03d}"


def load_sites(connection: psycopg.Connection[Any]) -> dict[str, list[tuple[float, float]]]:
    """Every registered site carrying LTE or 5G, per operator."""
    sites: dict[str, list[tuple[float, float]]] = {}
    rows = connection.execute(
        "SELECT mcc, mnc, lon, lat FROM tower_sites "
        "WHERE technologies && ARRAY['lte', 'nr5g'] ORDER BY mcc, mnc, site"
    ).fetchall()
    for mcc, mnc, lon, lat in rows:
        sites.setdefault(operator_of(mcc, mnc), []).append((float(lon), float(lat)))
    return sites


def probe_observations(probes: Iterable[ProbeCoverage]) -> list[Observation]:
    """Each placed probe's mean LTE/5G RSRP per operator it was on; an operator it could
    only hear as "none" without any value stands at ``UNREGISTERED_RSRP_DBM``."""
    observations = []
    for probe in probes:
        if probe.lon is None or probe.lat is None:
            continue
        for operator in probe.operators:
            if not operator.operator.isdigit():
                continue
            values = [
                (t.mean_signal_dbm, t.readings)
                for t in operator.technologies
                if t.technology in ("lte", "nr5g") and t.mean_signal_dbm is not None
            ]
            if values:
                count = sum(n for _, n in values)
                value = sum(float(v or 0.0) * n for v, n in values) / count
            elif operator.coverage_class == "none":
                value = None
            else:
                continue  # on 2G/3G only: not an LTE observation
            observations.append(
                Observation(
                    operator.operator,
                    probe.lon,
                    probe.lat,
                    UNREGISTERED_RSRP_DBM if value is None else float(value),
                    "probe",
                    probe.probe_id,
                    censored=value is None,
                )
            )
    return observations


_SURVEY_SQL = """
SELECT operator_code, lon, lat, service, rsrp_dbm
FROM survey_points
WHERE operator_code IS NOT NULL AND taken_at >= %(start)s AND taken_at < %(end)s
  AND (service = 'none' OR (service = 'serving' AND technology IN ('lte', 'nr5g')
                            AND rsrp_dbm IS NOT NULL))
"""


def survey_observations(
    connection: psycopg.Connection[Any], projection: LocalProjection, window: TimeWindow
) -> list[Observation]:
    """Survey points averaged per operator and 200 m cell (a walk logs a point every few
    seconds: unaveraged, one slow walk would outweigh every probe)."""
    rows = connection.execute(_SURVEY_SQL, {"start": window.start, "end": window.end}).fetchall()
    if not rows:
        return []
    operators = sorted({row[0] for row in rows})
    operator_index = {operator: i for i, operator in enumerate(operators)}
    lonlat = np.array([(row[1], row[2]) for row in rows], dtype=np.float64)
    # A point without service counts as the weakest value of its cell.
    values = np.array(
        [float(row[4]) if row[3] == "serving" else -math.inf for row in rows], dtype=np.float64
    )
    cells = np.floor(projection.forward(lonlat) / SURVEY_CELL_M).astype(np.int64)
    keys = np.column_stack([[operator_index[row[0]] for row in rows], cells])
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    # Medians of all groups at once: sort by group, then by value, and take the middle.
    order = np.lexsort((values, group))
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    counts = np.diff(np.r_[starts, len(order)])
    low = values[order[starts + (counts - 1) // 2]]
    high = values[order[starts + counts // 2]]
    with np.errstate(invalid="ignore"):  # -inf + -inf is -inf; -inf + x too
        medians = np.where(np.isneginf(low), -math.inf, (low + high) / 2)
    first = order[starts]
    sums = np.zeros((len(starts), 2))
    np.add.at(sums, group, lonlat)
    centres = sums / counts[:, None]
    observations = []
    for g, median in enumerate(medians.tolist()):
        observations.append(
            Observation(
                rows[int(first[g])][0],
                float(centres[g, 0]),
                float(centres[g, 1]),
                UNREGISTERED_RSRP_DBM if median == -math.inf else float(median),
                "survey",
                f"survey: {int(counts[g])} points",
                censored=median == -math.inf,
            )
        )
    return observations


def build_model(
    connection: psycopg.Connection[Any],
    probes: Sequence[ProbeCoverage],
    projection: LocalProjection,
    window: TimeWindow,
    *,
    edge_dbm: float = DEFAULT_EDGE_DBM,
    operators: Iterable[str] | None = None,
) -> PredictionModel:
    """The model of every operator with registered sites or LTE measurements (the probes'
    coverage and the survey points of ``window``)."""
    observations = probe_observations(probes) + survey_observations(connection, projection, window)
    return fit(
        projection, load_sites(connection), observations, edge_dbm=edge_dbm, operators=operators
    )
