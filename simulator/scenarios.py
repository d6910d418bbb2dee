"""Evidence scenarios: what a province's coverwatch deployment gets to see.

The demo's province (:mod:`simulator.province`) gives every village a kit with one modem
per operator — easy mode. A real province has probes in a fraction of its villages, one
SIM per kit, field teams who walk the roads with phones now and then, a public tower
registry with estimated positions and gaps, and operators' service maps drawn by an
optimistic planning model. A :class:`Scenario` is one such world, built from a seed:

- the **truth**: every village's median RSRP per operator, from the hidden
  :class:`simulator.terrain.Terrain` (correlated shadowing, closed valleys, and masts
  whose height and power differ from the nominal model by operator and by mast), which
  no evidence below ever carries;
- the **kits**: which villages have a probe and which SIMs it holds;
- the **survey**: walk/drive-test points along the roads on some days, as the
  coverwatch survey CSV (:mod:`geo.survey`) a team would import;
- the **tower registry**: the simulated towers as an OpenCelliD CSV export, three LTE
  cells a site, each cell's position estimated with an error, some towers missing;
- the **claims**: each operator's claimed LTE service area as GeoJSON, from the nominal
  COST-231 Hata model with a planning margin and no terrain at all.

Scenarios: ``sparse`` (probes in a quarter of the villages, one SIM each, surveys,
registry and claims: the issue's realistic province) and ``dense`` (the demo's layout:
a kit in every village with a SIM of every operator, the same registry and claims).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import shapely

from geo import towers
from simulator import province as province_module
from simulator import radio
from simulator.province import OPERATORS, Province, Village
from simulator.terrain import KM_PER_DEG_LAT, Terrain, Valley

ScenarioName = Literal["sparse", "dense"]
SCENARIOS: Final[tuple[ScenarioName, ...]] = ("sparse", "dense")

PROBE_SHARE: Final = 0.25
# Which SIM a one-SIM kit gets: roughly the operators' market shares in the uplands.
SIM_SHARES: Final[dict[str, float]] = {"45204": 0.55, "45202": 0.25, "45201": 0.20}
VALLEY_VILLAGE_SHARE: Final = 0.06
SURVEY_DAYS: Final = 4
SURVEY_STEP_KM: Final = 0.3
SURVEY_GPS_SIGMA_M: Final = 8.0
REGISTRY_MISSING_SHARE: Final = 0.15
REGISTRY_POSITION_SIGMA_M: Final = 300.0
CELLS_PER_SITE: Final = 3
# The operators' planning model: nominal COST-231 Hata, no terrain, and this much
# optimism on the usable edge (-115 dBm) — which is why claims overstate coverage.
CLAIM_MARGIN_DB: Final = 3.0
# Real masts are not the nominal model's: each operator's power and antennas, each mast's
# height and a little per mast. The analysis knows none of it (it calibrates).
OPERATOR_OFFSET_DB: Final[dict[str, float]] = {"45204": 2.0, "45202": -3.0, "45201": -1.0}
MAST_HEIGHTS_M: Final = (25.0, 45.0)
MAST_OFFSET_SIGMA_DB: Final = 1.5
FADING_SIGMA_DB: Final = radio.FAST_FADING_SIGMA_DB


@dataclass(frozen=True, slots=True)
class Kit:
    village_id: int
    probe_id: str
    lon: float
    lat: float
    sim_operators: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: ScenarioName
    seed: int
    province: Province  # villages carry the truth (median RSRP per operator)
    terrain: Terrain  # hidden: never handed to the analysis
    kits: tuple[Kit, ...]
    survey_csv: str
    registry_csv: str
    claims: dict[str, Any]  # GeoJSON FeatureCollection
    survey_points: int
    registry_sites: int

    def village(self, village_id: int) -> Village:
        return self.province.villages[village_id - 1]

    def probe_rsrp(self, kit: Kit, operator_code: str) -> float:
        """The median RSRP a kit's modem on this operator sees (the truth at the kit)."""
        return self.village(kit.village_id).median_rsrp_dbm[operator_code]


def _km_per_deg_lon() -> float:
    return 111.320 * math.cos(math.radians(province_module.CENTRE_LAT))


def _valleys(base: Province, rng: np.random.Generator) -> list[Valley]:
    """Closed valleys around random villages until about 6 % of villages lie in one."""
    lon_km = _km_per_deg_lon()
    lon = np.array([v.lon for v in base.villages])
    lat = np.array([v.lat for v in base.villages])
    inside = np.zeros(len(lon), dtype=bool)
    valleys: list[Valley] = []
    while inside.mean() < VALLEY_VILLAGE_SHARE:
        centre = base.villages[int(rng.integers(len(base.villages)))]
        radius = float(rng.uniform(1.5, 3.0))
        valleys.append(Valley(centre.lon, centre.lat, radius))
        inside |= (
            np.hypot((lon - centre.lon) * lon_km, (lat - centre.lat) * KM_PER_DEG_LAT) <= radius
        )
    return valleys


def _best_per_operator(base: Province, rsrp: np.ndarray[Any, Any]) -> list[dict[str, float]]:
    codes = np.array([t.operator_code for t in base.towers])
    return [{code: round(float(row[codes == code].max()), 1) for code in OPERATORS} for row in rsrp]


def _roads(base: Province) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Roads: a minimum spanning tree over the villages (each village on a road)."""
    lon_km = _km_per_deg_lon()
    points = np.array([(v.lon * lon_km, v.lat * KM_PER_DEG_LAT) for v in base.villages])
    count = len(points)
    in_tree = np.zeros(count, dtype=bool)
    in_tree[0] = True
    best = np.hypot(*(points - points[0]).T)
    parent = np.zeros(count, dtype=np.int64)
    edges = []
    for _ in range(count - 1):
        candidate = np.where(in_tree, np.inf, best)
        nxt = int(candidate.argmin())
        edges.append((int(parent[nxt]), nxt))
        in_tree[nxt] = True
        distance = np.hypot(*(points - points[nxt]).T)
        closer = distance < best
        best = np.where(closer, distance, best)
        parent = np.where(closer, nxt, parent)
    return [
        (
            (base.villages[a].lon, base.villages[a].lat),
            (base.villages[b].lon, base.villages[b].lat),
        )
        for a, b in edges
    ]


def _survey(
    base: Province, terrain: Terrain, rng: np.random.Generator, start: datetime
) -> tuple[str, int]:
    """Walk tests on some days along part of the roads, one phone per operator."""
    lon_km = _km_per_deg_lon()
    roads = _roads(base)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["time", "lon", "lat", "accuracy_m", "operator", "technology", "service", "rsrp_dbm"]
    )
    codes = np.array([t.operator_code for t in base.towers])
    rows = 0
    for day in range(SURVEY_DAYS):
        chosen = rng.choice(len(roads), size=max(1, len(roads) // 12), replace=False)
        moment = start + timedelta(days=2 * day, hours=1)  # 08:00 local
        lons: list[float] = []
        lats: list[float] = []
        for index in chosen:
            (a_lon, a_lat), (b_lon, b_lat) = roads[int(index)]
            length = math.hypot((b_lon - a_lon) * lon_km, (b_lat - a_lat) * KM_PER_DEG_LAT)
            steps = max(1, int(length / SURVEY_STEP_KM))
            for step in range(steps + 1):
                lons.append(a_lon + (b_lon - a_lon) * step / steps)
                lats.append(a_lat + (b_lat - a_lat) * step / steps)
        rsrp = terrain.rsrp_dbm(np.array(lons), np.array(lats))
        for i, (lon, lat) in enumerate(zip(lons, lats, strict=True)):
            moment += timedelta(seconds=20)
            # The phone's fix wanders around the true spot.
            fix_lon = lon + rng.normal(0, SURVEY_GPS_SIGMA_M / 1000) / lon_km
            fix_lat = lat + rng.normal(0, SURVEY_GPS_SIGMA_M / 1000) / KM_PER_DEG_LAT
            for code in OPERATORS:
                value = float(rsrp[i, codes == code].max()) + rng.normal(0, FADING_SIGMA_DB)
                served = value >= radio.REGISTRATION_FLOOR_DBM
                writer.writerow(
                    [
                        moment.isoformat().replace("+00:00", "Z"),
                        f"{fix_lon:.6f}",
                        f"{fix_lat:.6f}",
                        f"{SURVEY_GPS_SIGMA_M:.0f}",
                        code,
                        "4G",
                        "serving" if served else "none",
                        f"{value:.1f}" if served else "",
                    ]
                )
                rows += 1
    return out.getvalue(), rows


def _registry(base: Province, rng: np.random.Generator) -> tuple[str, int]:
    """The towers as OpenCelliD exports them: estimated positions, some towers missing."""
    lon_km = _km_per_deg_lon()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(towers.COLUMNS)
    sites = 0
    for number, tower in enumerate(base.towers):
        if rng.random() < REGISTRY_MISSING_SHARE:
            continue
        sites += 1
        enb = 10_000 + number
        for sector in range(CELLS_PER_SITE):
            lon = tower.lon + rng.normal(0, REGISTRY_POSITION_SIGMA_M / 1000) / lon_km
            lat = tower.lat + rng.normal(0, REGISTRY_POSITION_SIGMA_M / 1000) / KM_PER_DEG_LAT
            writer.writerow(
                [
                    "LTE",
                    tower.operator_code[:3],
                    int(tower.operator_code[3:]),
                    1000 + number // 6,
                    enb * 256 + sector + 1,
                    "",
                    f"{lon:.6f}",
                    f"{lat:.6f}",
                    int(rng.integers(1000, 12000)),
                    int(rng.integers(3, 400)),
                    1,
                    1_600_000_000,
                    1_700_000_000,
                    0,
                ]
            )
    return out.getvalue(), sites


def claim_radius_km() -> float:
    """Where the nominal model (no terrain) reaches -115 dBm less the planning margin."""
    edge = province_module.UNUSABLE_BELOW_DBM - CLAIM_MARGIN_DB
    low, high = 0.1, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        value = float(radio.median_rsrp_dbm(np.array([middle]), np.zeros(1))[0])
        low, high = (middle, high) if value >= edge else (low, middle)
    return low


def _claims(base: Province) -> dict[str, Any]:
    lon_km = _km_per_deg_lon()
    radius = claim_radius_km()
    features = []
    for code, (name, _) in OPERATORS.items():
        discs = [
            shapely.Point(t.lon * lon_km, t.lat * KM_PER_DEG_LAT).buffer(radius, 32)
            for t in base.towers
            if t.operator_code == code
        ]
        area = shapely.union_all(discs)
        lonlat = shapely.transform(
            area,
            lambda xy: np.column_stack([xy[:, 0] / lon_km, xy[:, 1] / KM_PER_DEG_LAT]),
        )
        features.append(
            {
                "type": "Feature",
                "properties": {"operator": code, "technology": "4G", "name": f"{name} 4G"},
                "geometry": shapely.geometry.mapping(lonlat),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def build(
    name: ScenarioName,
    seed: int,
    *,
    villages: int = 320,
    survey_start: datetime | None = None,
) -> Scenario:
    """The scenario ``name`` of the province of ``seed``: truth, kits and evidence."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}")
    base = province_module.generate(seed, villages=villages)
    rng = np.random.default_rng([seed, 14])
    valleys = _valleys(base, rng)
    terrain_seed = int(rng.integers(2**31))
    heights = rng.uniform(*MAST_HEIGHTS_M, size=len(base.towers)).tolist()
    offsets = [
        OPERATOR_OFFSET_DB[t.operator_code] + float(rng.normal(0, MAST_OFFSET_SIGMA_DB))
        for t in base.towers
    ]
    terrain = Terrain(
        terrain_seed,
        (province_module.CENTRE_LON, province_module.CENTRE_LAT),
        [(t.lon, t.lat) for t in base.towers],
        valleys,
        heights_m=heights,
        offsets_db=offsets,
    )
    rsrp = terrain.rsrp_dbm(
        np.array([v.lon for v in base.villages]), np.array([v.lat for v in base.villages])
    )
    truth = _best_per_operator(base, rsrp)
    world = replace(
        base,
        villages=[
            replace(v, median_rsrp_dbm=truth[i], flaky_link=False, malformed_sender=False)
            for i, v in enumerate(base.villages)
        ],
    )
    if name == "dense":
        chosen = list(range(len(world.villages)))
    else:
        count = max(1, round(PROBE_SHARE * len(world.villages)))
        chosen = sorted(rng.choice(len(world.villages), size=count, replace=False).tolist())
    codes = list(SIM_SHARES)
    shares = np.array(list(SIM_SHARES.values()))
    kits = []
    for index in chosen:
        village = world.villages[index]
        sims = (
            tuple(OPERATORS)
            if name == "dense"
            else (codes[int(rng.choice(len(codes), p=shares / shares.sum()))],)
        )
        kits.append(Kit(village.village_id, village.probe_id, village.lon, village.lat, sims))
    start = survey_start or datetime(2026, 11, 1, tzinfo=UTC)
    survey_csv, survey_points = _survey(world, terrain, rng, start)
    registry_csv, sites = _registry(world, rng)
    return Scenario(
        name=name,
        seed=seed,
        province=world,
        terrain=terrain,
        kits=tuple(kits),
        survey_csv=survey_csv,
        registry_csv=registry_csv,
        claims=_claims(world),
        survey_points=survey_points,
        registry_sites=sites,
    )
