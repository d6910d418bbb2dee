"""geo.prediction: the calibrated propagation model, censored observations, kriging of
the residuals across operators, and the joint probability of no service."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo import prediction
from geo.prediction import Covariance, Observation, fit, fit_trend, nominal_rsrp_dbm
from tests.geo_points import PROJECTION, lonlat


def test_nominal_model_is_cost231_hata_open_rural_at_1800_mhz() -> None:
    # By hand: 46.3 + 33.9 log 1800 - 13.82 log 35 - a(2 m) = 133.83 dB urban at 1 km;
    # open/rural correction -31.93 dB; RSRP at zero loss 27.21 dBm.
    at_1km, at_10km = nominal_rsrp_dbm(np.array([1.0, 10.0]))
    assert at_1km == pytest.approx(-74.69, abs=0.05)
    assert at_1km - at_10km == pytest.approx(44.9 - 6.55 * math.log10(35), abs=0.01)


def _synthetic(
    rng: np.random.Generator, count: int, offset: float, slope: float, noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sites = np.array([[0.0, 0.0], [20_000.0, 5_000.0]])
    obs = rng.uniform(-25_000, 40_000, size=(count, 2))
    distance = np.hypot(obs[:, None, 0] - sites[None, :, 0], obs[:, None, 1] - sites[None, :, 1])
    x = nominal_rsrp_dbm(distance.min(axis=1) / 1000)
    values = x + offset + (slope - 1) * (x + 110) + rng.normal(0, noise, count)
    return sites, obs, values


def test_calibration_recovers_offset_slope_and_spread() -> None:
    rng = np.random.default_rng(1)
    sites, obs, values = _synthetic(rng, 400, offset=6.0, slope=0.8, noise=4.0)
    trend, residuals = fit_trend("45204", sites, obs, values)
    a, b = trend.coefficients
    assert a == pytest.approx(6.0, abs=1.0)
    assert b == pytest.approx(0.8, abs=0.06)
    assert trend.sigma_db == pytest.approx(4.0, abs=0.5)
    assert abs(float(np.mean(residuals))) < 0.5
    assert trend.basis == "registry + measurements"


def test_few_observations_stay_near_the_nominal_model() -> None:
    rng = np.random.default_rng(2)
    sites, obs, values = _synthetic(rng, 2, offset=30.0, slope=1.0, noise=0.0)
    trend, _ = fit_trend("45204", sites, obs, values)
    # Two readings 30 dB above the model move it, but the prior holds most of the way,
    # and the spread stays the prior's.
    assert 0 < trend.coefficients[0] < 30
    assert trend.sigma_db == prediction.PRIOR_SIGMA_DB


def test_censored_observations_do_not_flatten_the_fit() -> None:
    rng = np.random.default_rng(3)
    sites, obs, truth = _synthetic(rng, 600, offset=0.0, slope=1.0, noise=6.0)
    bound = prediction.UNREGISTERED_RSRP_DBM
    censored = truth < bound
    assert 0.15 < censored.mean() < 0.7  # the test needs many places without service
    recorded = np.where(censored, bound, truth)
    aware, _ = fit_trend("45204", sites, obs, recorded, censored)
    naive, _ = fit_trend("45204", sites, obs, recorded)
    uncensored, _ = fit_trend("45204", sites, obs, truth)
    # Taking "below -120" as "-120" pulls the weak end up (a flatter slope, a smaller
    # spread); the censored fit finds what the values themselves would have given.
    assert naive.coefficients[1] < uncensored.coefficients[1] - 0.15
    assert aware.coefficients[1] == pytest.approx(uncensored.coefficients[1], abs=0.04)
    assert aware.coefficients[0] == pytest.approx(uncensored.coefficients[0], abs=0.5)
    assert aware.sigma_db == pytest.approx(uncensored.sigma_db, abs=0.6)
    assert naive.sigma_db < uncensored.sigma_db - 1


def _observation(
    operator: str, x_km: float, y_km: float, value: float, censored: bool = False
) -> Observation:
    lon, lat = lonlat(x_km, y_km)
    return Observation(operator, lon, lat, value, "survey", "survey: 5 points", censored)


def _calibrating_rings(operators: tuple[str, ...]) -> list[Observation]:
    """Places 20-30 km out, measured as the model says give or take 3 dB: enough to pin
    each operator's trend, too far to say anything about a spot within 10 km."""
    rng = np.random.default_rng(8)
    return [
        _observation(op, r * math.cos(k), r * math.sin(k),
                     float(nominal_rsrp_dbm(np.array([r]))[0]) + rng.normal(0, 3))
        for r in (20.0, 25.0, 30.0)
        for k in np.linspace(0, 2 * math.pi, 40, endpoint=False)
        for op in operators
    ]  # fmt: skip


def test_kriging_follows_the_measurements_nearby_and_the_trend_far_away() -> None:
    sites = {"45204": [lonlat(0, 0)]}
    rng = np.random.default_rng(7)
    # Rings of places measured as the model says (give or take 3 dB), and one place
    # 15 dB stronger.
    observations = [
        _observation(
            "45204",
            r * math.cos(k),
            r * math.sin(k),
            float(nominal_rsrp_dbm(np.array([r]))[0]) + rng.normal(0, 3),
        )
        for r in (3.0, 9.0, 15.0)
        for k in np.linspace(0, 2 * math.pi, 40, endpoint=False)
    ]
    bump = (6.0, 0.0)
    bump_value = float(nominal_rsrp_dbm(np.array([6.0]))[0]) + 15
    observations += [_observation("45204", bump[0] + dx, dy, bump_value) for dx, dy in
                     ((0, 0), (0.05, 0), (0, 0.05), (-0.05, 0), (0, -0.05))]  # fmt: skip
    model = fit(PROJECTION, sites, observations)
    model.covariance = Covariance(range_km=2.0, nugget_share=0.05, shared=0.0)
    near = lonlat(bump[0] + 0.1, 0.0)
    far = lonlat(-40.0, 0.0)
    predicted = model.predict([near[0], far[0]], [near[1], far[1]])["45204"]
    near_trend, far_trend = (float(v) for v in model.trends["45204"].at(
        PROJECTION.forward(np.array([near, far])))[0])  # fmt: skip
    assert predicted[0].rsrp_dbm - near_trend > 10
    assert predicted[1].rsrp_dbm == pytest.approx(far_trend, abs=0.5)
    assert predicted[0].sigma_db < predicted[1].sigma_db / 2
    assert predicted[0].p_usable > predicted[1].p_usable


def test_one_operators_dead_spot_lowers_the_others_where_shadowing_is_shared() -> None:
    sites = {"45204": [lonlat(0, 0)], "45201": [lonlat(0, 0)]}
    spot = (5.0, 5.0)
    expected = float(nominal_rsrp_dbm(np.array([math.hypot(*spot)]))[0])
    observations = _calibrating_rings(("45204", "45201"))
    # Only MobiFone was measured at the spot: 20 dB below the model.
    observations.append(_observation("45201", *spot, expected - 20))
    model = fit(PROJECTION, sites, observations)
    lon, lat = lonlat(*spot)
    model.covariance = Covariance(range_km=3.0, nugget_share=0.1, shared=0.8)
    shared = model.predict([lon], [lat])["45204"][0]
    model.covariance = Covariance(range_km=3.0, nugget_share=0.1, shared=0.0)
    alone = model.predict([lon], [lat])["45204"][0]
    assert shared.rsrp_dbm < alone.rsrp_dbm - 8
    assert alone.rsrp_dbm == pytest.approx(expected, abs=2.5)


def test_joint_probability_of_no_service_accounts_for_shared_shadowing() -> None:
    sites = {"45204": [lonlat(0, 0)], "45201": [lonlat(0, 0)]}
    model = fit(PROJECTION, sites, _calibrating_rings(("45204", "45201")))
    lon, lat = lonlat(0.0, 12.0)  # near the usable edge for both
    model.covariance = Covariance(range_km=2.0, nugget_share=0.5, shared=0.0)
    joint = model.predict_joint([lon], [lat])
    p_each = [1 - joint.of(j, 0).p_usable for j in range(2)]
    independent = joint.p_none(0, [0, 1])
    assert independent == pytest.approx(p_each[0] * p_each[1], abs=0.03)
    model.covariance = Covariance(range_km=2.0, nugget_share=0.0, shared=0.95)
    correlated = model.predict_joint([lon], [lat]).p_none(0, [0, 1])
    assert correlated > independent + 0.1
    assert joint.p_none(0, []) == 1.0


def test_what_each_operator_is_predicted_from() -> None:
    sites = {"45204": [lonlat(0, 0)]}
    # VinaPhone measured far away (its residuals say nothing about the spot below).
    observations = [_observation("45202", 80 + k, 0, -100.0 - k) for k in range(10)]
    model = fit(PROJECTION, sites, observations)
    assert set(model.operators) == {"45204", "45202"}  # 45201: nothing to go on, not predicted
    assert model.trends["45204"].basis == "registry only"
    assert model.trends["45204"].sigma_db == prediction.PRIOR_SIGMA_DB
    # Uncalibrated, the operator's power is unknown too: wider than the terrain alone.
    assert model.trends["45202"].basis == "measurements only"
    lon, lat = lonlat(1.0, 0.0)
    only_registry = model.predict([lon], [lat])["45204"][0]
    assert only_registry.sigma_db > prediction.PRIOR_SIGMA_DB + 3
    assert only_registry.rsrp_dbm == pytest.approx(
        float(nominal_rsrp_dbm(np.array([1.0]))[0]), abs=0.5
    )


def test_covariance_chosen_on_observations_a_village_apart() -> None:
    rng = np.random.default_rng(5)
    xy = np.vstack([rng.uniform(0, 30_000, (50, 2)), np.column_stack([np.arange(200) * 10.0,
                   np.zeros(200)])])  # fmt: skip
    pick = prediction._thinned(xy, 1000.0, 600)
    kept = xy[pick]
    distance = np.hypot(kept[:, None, 0] - kept[None, :, 0], kept[:, None, 1] - kept[None, :, 1])
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= 1000.0
    # A walk's 200 points 10 m apart are a couple of places, not 200 witnesses.
    assert len(pick) < 60


def test_cross_operator_correlation_from_places_measured_together() -> None:
    rng = np.random.default_rng(6)
    places = rng.uniform(0, 50_000, (200, 2))
    common = rng.normal(0, 1, 200)
    residuals, xy, op = [], [], []
    for index in range(200):
        for operator in (0, 1):
            residuals.append(common[index] * 6 + rng.normal(0, 6))
            xy.append(places[index])
            op.append(operator)
    correlation = prediction.cross_operator_correlation(
        np.array(xy), np.full(400, 8.5), np.array(op), np.array(residuals)
    )
    assert correlation == pytest.approx(0.5, abs=0.12)


def test_any_number_of_operators_is_predicted_jointly() -> None:
    codes = [f"452{n:02d}" for n in range(1, 11)]  # ten networks, as a messy registry holds
    sites = {code: [lonlat(n * 3.0, 0.0)] for n, code in enumerate(codes)}
    model = fit(PROJECTION, sites, _calibrating_rings(tuple(codes[:3])))
    lon, lat = lonlat(5.0, 5.0)
    joint = model.predict_joint([lon, lon + 0.01], [lat, lat])
    assert len(joint.operators) == 10
    p = joint.p_none_many([0, 1], [tuple(range(10)), tuple(range(10))])
    assert all(0.0 <= value <= 1.0 for value in p)


def test_censored_expectation_holds_far_in_the_tail() -> None:
    # A modem that reports no service 80 dB below what the model expects there: the
    # value is just under the bound, not 81 dB^2 uncertain (1 + erf underflowed here).
    expected, variance = prediction._below(np.array([-40.0]), 9.0, np.array([-120.0]))
    assert -122.0 < expected[0] < -120.0
    assert variance[0] < 2.0


def test_spread_is_not_learnt_from_no_service_alone() -> None:
    observations = [
        _observation("45204", 0.3 * k, 0.0, prediction.UNREGISTERED_RSRP_DBM, censored=True)
        for k in range(10)
    ]
    model = fit(PROJECTION, {}, observations)
    assert model.trends["45204"].sigma_db == prediction.PRIOR_SIGMA_DB
    far = lonlat(40.0, 0.0)
    assert model.predict([far[0]], [far[1]])["45204"][0].sigma_db >= prediction.PRIOR_SIGMA_DB - 1


def test_constant_residuals_give_no_shared_share() -> None:
    xy = np.repeat(np.arange(25.0)[:, None] * 1000, 2, axis=0).repeat(2, axis=1)
    op = np.tile([0, 1], 25)
    assert prediction.cross_operator_correlation(xy, np.full(50, 9.0), op, np.zeros(50)) is None
    model = fit(
        PROJECTION,
        {},
        [_observation(o, k, 0, -100.0) for k in range(25) for o in ("45204", "45201")],
    )
    assert math.isfinite(model.covariance.shared)
    lon, lat = lonlat(3.0, 3.0)
    assert all(math.isfinite(p.rsrp_dbm) for p in model.predict([lon], [lat])["45204"])
