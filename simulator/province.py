"""A plausible mountain province, generated deterministically from a seed.

Shaped like a northern border province (around Cao Bang's latitude): an irregular
boundary of ~100 km across, districts and communes, 300+ villages with log-normal
populations, a share of them off the grid, and the towers of three operators —
Viettel with the densest network, VinaPhone and MobiFone thinner and concentrated
near district towns, which is how most of the real gaps arise. The radio model
(simulator.radio) then decides what each village really receives; that is the
*ground truth* the demo scores coverwatch's verdicts against.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import numpy as np

from simulator import radio

CENTRE_LON, CENTRE_LAT = 106.05, 22.70
KM_PER_DEG_LAT = 110.574
UNUSABLE_BELOW_DBM = -115.0  # geo's "none" class for LTE: below Android's lowest bar
# Villages whose best median sits this close to the usable/unusable edge are nudged
# off it: there, whether a village "has service" is a coin toss by definition, and a
# ground truth that depends on it would score the coin, not coverwatch.
GUARD_BAND_DB = 1.5

OPERATORS: dict[str, tuple[str, int]] = {
    # MCC-MNC: (name, towers)
    "45204": ("Viettel", 18),
    "45202": ("VinaPhone", 10),
    "45201": ("MobiFone", 7),
}


@dataclass(frozen=True, slots=True)
class Tower:
    operator_code: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Village:
    village_id: int
    name: str
    commune: str
    district: str
    lon: float
    lat: float
    population: int
    households: int
    grid_power: bool
    # Ground truth: median RSRP per operator code (None: not even registrable).
    median_rsrp_dbm: dict[str, float] = field(default_factory=dict)
    flaky_link: bool = False
    malformed_sender: bool = False

    @property
    def probe_id(self) -> str:
        return f"sim-{self.village_id:04d}"

    def has_service(self, operator_code: str) -> bool:
        return self.median_rsrp_dbm.get(operator_code, -200.0) >= UNUSABLE_BELOW_DBM

    @property
    def covered(self) -> bool:
        """The truth: at least one operator gives usable service here."""
        return any(self.has_service(code) for code in self.median_rsrp_dbm)


@dataclass(frozen=True, slots=True)
class Province:
    name: str
    seed: int
    boundary: list[tuple[float, float]]  # closed ring, lon/lat
    villages: list[Village]
    towers: list[Tower]

    def boundary_geojson(self) -> dict[str, object]:
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"name": self.name, "level": "province"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[list(point) for point in self.boundary]],
                    },
                }
            ],
        }

    def villages_geojson(self) -> dict[str, object]:
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {
                        "name": v.name,
                        "commune": v.commune,
                        "district": v.district,
                        "province": self.name,
                        "population": v.population,
                        "households": v.households,
                        "grid_power": "yes" if v.grid_power else "no",
                    },
                    "geometry": {"type": "Point", "coordinates": [v.lon, v.lat]},
                }
                for v in self.villages
            ],
        }


def _km_per_deg_lon(lat: float) -> float:
    return 111.320 * math.cos(math.radians(lat))


def _inside(lon: float, lat: float, ring: list[tuple[float, float]]) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


_SYLLABLES = [
    "Na",
    "Pac",
    "Ban",
    "Lung",
    "Khuoi",
    "Phia",
    "Coc",
    "Nam",
    "Tat",
    "Keo",
    "Lang",
    "Po",
    "Thin",
    "Mo",
    "Slam",
    "Kha",
    "Ma",
    "Ngam",
    "Hoi",
    "Bo",
]


def generate(seed: int = 7, *, villages: int = 320, name: str = "Tinh Son Cao") -> Province:
    """The same seed gives the same province, villages, towers and truth."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not secrets
    lon_km, lat_km = _km_per_deg_lon(CENTRE_LAT), KM_PER_DEG_LAT

    # Boundary: a radius of ~45-60 km wobbling with a few harmonics.
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(4)]
    ring: list[tuple[float, float]] = []
    for step in range(72):
        angle = 2 * math.pi * step / 72
        radius = 48 + sum((6 / (k + 1)) * math.sin((k + 2) * angle + phases[k]) for k in range(4))
        ring.append(
            (
                round(CENTRE_LON + radius * math.cos(angle) / lon_km, 5),
                round(CENTRE_LAT + radius * math.sin(angle) / lat_km, 5),
            )
        )
    ring.append(ring[0])

    def random_point_inside() -> tuple[float, float]:
        while True:
            lon = CENTRE_LON + rng.uniform(-60, 60) / lon_km
            lat = CENTRE_LAT + rng.uniform(-60, 60) / lat_km
            if _inside(lon, lat, ring):
                return lon, lat

    # District towns, and communes around them.
    districts = [
        (f"Huyen {rng.choice(_SYLLABLES)} {i + 1}", random_point_inside()) for i in range(6)
    ]
    communes: list[tuple[str, str, tuple[float, float]]] = []
    for district_name, _ in districts:
        for j in range(5):
            communes.append(
                (
                    f"Xa {rng.choice(_SYLLABLES)} {rng.choice(_SYLLABLES)} {j + 1}",
                    district_name,
                    random_point_inside(),
                )
            )

    # Villages at least 1.2 km apart, so each probe speaks for its own village.
    points: list[tuple[float, float]] = []
    while len(points) < villages:
        lon, lat = random_point_inside()
        if all(math.hypot((lon - x) * lon_km, (lat - y) * lat_km) > 1.2 for x, y in points):
            points.append((lon, lat))

    # Towers: near district towns and larger places first, thinner further out.
    towers: list[Tower] = []
    for code, (_, count) in OPERATORS.items():
        for index in range(count):
            if index < len(districts):
                anchor = districts[index][1]
                spread = 4.0
            else:
                anchor = rng.choice(points)
                spread = 2.0
            towers.append(
                Tower(
                    code,
                    anchor[0] + rng.gauss(0, spread) / lon_km,
                    anchor[1] + rng.gauss(0, spread) / lat_km,
                )
            )

    truth = _median_rsrp(points, towers, rng)
    built: list[Village] = []
    flaky = set(rng.sample(range(villages), k=villages // 7))
    malformed = set(rng.sample(range(villages), k=3))
    for index, (lon, lat) in enumerate(points):
        commune_name, district_name, _ = min(
            communes,
            key=lambda c: math.hypot((c[2][0] - lon) * lon_km, (c[2][1] - lat) * lat_km),
        )
        population = int(min(4000, max(60, rng.lognormvariate(math.log(450), 0.6))))
        built.append(
            Village(
                village_id=index + 1,
                name=f"Ban {rng.choice(_SYLLABLES)} {rng.choice(_SYLLABLES)} {index + 1}",
                commune=commune_name,
                district=district_name,
                lon=round(lon, 6),
                lat=round(lat, 6),
                population=population,
                households=max(12, population // 5),
                grid_power=rng.random() > 0.12,
                median_rsrp_dbm=truth[index],
                flaky_link=index in flaky,
                malformed_sender=index in malformed,
            )
        )
    return Province(name=name, seed=seed, boundary=ring, villages=built, towers=towers)


def _median_rsrp(
    points: list[tuple[float, float]], towers: list[Tower], rng: random.Random
) -> list[dict[str, float]]:
    lon_km = _km_per_deg_lon(CENTRE_LAT)
    p = np.array(points)
    t = np.array([(tower.lon, tower.lat) for tower in towers])
    dx = (p[:, None, 0] - t[None, :, 0]) * lon_km
    dy = (p[:, None, 1] - t[None, :, 1]) * KM_PER_DEG_LAT
    distance_km = np.hypot(dx, dy)
    numpy_rng = np.random.default_rng(rng.randrange(2**32))
    shadowing = numpy_rng.normal(0.0, radio.SHADOWING_SIGMA_DB, distance_km.shape)
    # Some villages sit in valleys closed off from everything (a ridge on every side).
    closed_valleys = numpy_rng.random(len(points)) < 0.06
    shadowing[closed_valleys, :] += 25.0
    rsrp = radio.median_rsrp_dbm(distance_km, shadowing)
    codes = np.array([tower.operator_code for tower in towers])
    result: list[dict[str, float]] = []
    for row in rsrp:
        best: dict[str, float] = {}
        for code in OPERATORS:
            value = float(row[codes == code].max())
            if abs(value - UNUSABLE_BELOW_DBM) < GUARD_BAND_DB:
                value += GUARD_BAND_DB if value >= UNUSABLE_BELOW_DBM else -GUARD_BAND_DB
            best[code] = round(value, 1)
        result.append(best)
    return result
