"""The province's hidden terrain: what the land does to each tower's signal, anywhere.

The first simulator (:mod:`simulator.province`) drew one shadowing value per
tower-village pair, independent of every other pair: enough to score verdicts at the
villages, but a walk test along a road 400 m from a village would see a different,
unrelated world. A realistic scenario needs the signal at *any* point, and needs it to
behave like land does:

- **shadowing** is a spatially correlated log-normal field (8 dB, correlation length a
  couple of kilometres in hill country; Gudmundson's model of correlated shadowing).
  Part of it is common to every tower (the ridge a village sits behind shades it from
  most directions), part belongs to each tower (the ridge between it and that mast);
- **closed valleys** are discs a few kilometres wide walled off by ridges: a tower
  outside loses 25 dB more inside the valley; a tower inside does not.

Each field is a sum of random cosines (random Fourier features of a Gaussian
covariance): cheap to evaluate at any point, and the same seed gives the same land.
Nothing here is ever handed to the analysis: geo sees only what probes, surveys and
registries report, which is how the simulator stays a fair judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulator import radio

CORRELATION_KM = 2.0
COMMON_SHARE = 0.5  # of the shadowing variance, shared by all towers at a spot
FEATURES = 160
VALLEY_LOSS_DB = 25.0
KM_PER_DEG_LAT = 110.574

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Valley:
    lon: float
    lat: float
    radius_km: float


class _Field:
    """A zero-mean Gaussian field of unit variance and correlation length ``scale_km``."""

    def __init__(self, rng: np.random.Generator, scale_km: float, count: int) -> None:
        # The spectral density of exp(-d^2 / 2 L^2) is Gaussian with standard deviation 1/L.
        self.frequencies = rng.normal(0.0, 1.0 / scale_km, size=(count, 2))
        self.phases = rng.uniform(0.0, 2 * math.pi, size=count)
        self.norm = math.sqrt(2.0 / count)

    def at(self, x_km: FloatArray, y_km: FloatArray) -> FloatArray:
        angles = np.outer(x_km, self.frequencies[:, 0]) + np.outer(y_km, self.frequencies[:, 1])
        result: FloatArray = self.norm * np.cos(angles + self.phases).sum(axis=1)
        return result


class Terrain:
    """Shadowing and closed valleys around ``centre`` (lon, lat), from ``seed``."""

    def __init__(
        self,
        seed: int,
        centre: tuple[float, float],
        towers: list[tuple[float, float]],
        valleys: list[Valley],
        *,
        heights_m: list[float] | None = None,
        offsets_db: list[float] | None = None,
    ) -> None:
        """``heights_m`` and ``offsets_db``: each mast's height and its transmit power
        and antenna against the radio model's nominal ones (35 m, 0 dB): real masts
        differ, and the analysis is told neither."""
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.heights_m = np.array(
            heights_m if heights_m is not None else [radio.BASE_HEIGHT_M] * len(towers)
        )
        self.offsets_db = np.array(offsets_db if offsets_db is not None else [0.0] * len(towers))
        self.centre = centre
        self.km_per_deg_lon = 111.320 * math.cos(math.radians(centre[1]))
        self.towers = np.array(towers, dtype=np.float64).reshape(-1, 2)
        self.valleys = valleys
        self._common = _Field(rng, CORRELATION_KM, FEATURES)
        self._own = [_Field(rng, CORRELATION_KM, FEATURES) for _ in towers]

    def with_towers(
        self, extra: list[tuple[float, float]], *, height_m: float, offset_db: float
    ) -> Terrain:
        """The same land with more towers: the fields of the towers already there are
        drawn first, from the same seed, so their signal does not change."""
        towers = [(float(lon), float(lat)) for lon, lat in self.towers.tolist()]
        return Terrain(
            self.seed,
            self.centre,
            towers + list(extra),
            self.valleys,
            heights_m=self.heights_m.tolist() + [height_m] * len(extra),
            offsets_db=self.offsets_db.tolist() + [offset_db] * len(extra),
        )

    def _km(self, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
        return (
            (lon - self.centre[0]) * self.km_per_deg_lon,
            (lat - self.centre[1]) * KM_PER_DEG_LAT,
        )

    def _in_valley(self, lon: FloatArray, lat: FloatArray) -> npt.NDArray[np.int64]:
        """Index of the valley each point lies in, -1 outside all of them."""
        inside = np.full(len(lon), -1, dtype=np.int64)
        x, y = self._km(lon, lat)
        for index, valley in enumerate(self.valleys):
            vx, vy = self._km(np.array([valley.lon]), np.array([valley.lat]))
            hit = np.hypot(x - vx[0], y - vy[0]) <= valley.radius_km
            inside[hit & (inside < 0)] = index
        return inside

    def rsrp_dbm(self, lon: FloatArray, lat: FloatArray) -> FloatArray:
        """Median RSRP (dBm) of every tower at every point: shape (points, towers)."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        x, y = self._km(lon, lat)
        tx, ty = self._km(self.towers[:, 0], self.towers[:, 1])
        distance = np.hypot(x[:, None] - tx[None, :], y[:, None] - ty[None, :])
        sigma = radio.SHADOWING_SIGMA_DB
        common = self._common.at(x, y) * sigma * math.sqrt(COMMON_SHARE)
        shadowing = np.empty_like(distance)
        for index, field in enumerate(self._own):
            shadowing[:, index] = common + field.at(x, y) * sigma * math.sqrt(1 - COMMON_SHARE)
        point_valley = self._in_valley(lon, lat)
        tower_valley = self._in_valley(self.towers[:, 0], self.towers[:, 1])
        walled = (point_valley[:, None] >= 0) & (point_valley[:, None] != tower_valley[None, :])
        shadowing = shadowing + np.where(walled, VALLEY_LOSS_DB, 0.0)
        return median_rsrp(distance, self.heights_m, self.offsets_db, shadowing)


def median_rsrp(
    distance_km: FloatArray, heights_m: FloatArray, offsets_db: FloatArray, shadowing: FloatArray
) -> FloatArray:
    """simulator.radio's COST-231 Hata (open/rural) with each mast's own height and power."""
    loss = radio.cost231_hata_rural_db(distance_km, np.asarray(heights_m)[None, :])
    result: FloatArray = radio.RSRP_AT_ZERO_LOSS_DBM + offsets_db[None, :] - loss - shadowing
    return result
