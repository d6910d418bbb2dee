"""The coverage map: one HTML page (folium + Leaflet) that works without internet.

What is drawn (layers in the layer control):

- **Villages** coloured by coverage class, clustered (Leaflet.markercluster). The base
  layers are the operator filter: "best operator" and one view per operator. Each
  village's popup shows the numbers behind its colour: class and availability % per
  operator, mean signal and readings count (at the probe that speaks for the
  village, the nearest within the radius), latency and loss, nearest probe.
  Unmeasured villages are hollow grey, never red.
- **Probes** with status (online / offline / stale / unknown, see geo/probes.py) and
  last-seen time; **power outages** in the window at each probe.
- **Dead zones**, **unmeasured areas** (nobody measured: grey, dashed — never drawn as
  dead) and **covered areas** (geo/deadzones.py), clipped to the province boundary;
  without an imported boundary, to the extent of the villages and probes.
- **Boundaries**: province and communes, as vectors — there is no base map by default
  (tiles would come from the internet); ``tiles=URL`` adds one from an office tile server.

To keep a 10,000-village province small (``bench/map_size.py``), the data is one compact
JSON document (arrays, shared string tables, rounded coordinates, simplified polygons)
and markers and popups are built in the browser by ``geo/static/coverwatch/map.js``,
instead of one folium object (and one popup document) per marker.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import folium
import numpy as np
import psycopg
import shapely
from branca.element import Element, Figure, MacroElement
from jinja2 import Template

from geo import assets, survey
from geo.analysis import analyse
from geo.assessment import assess
from geo.coverage import OperatorCoverage, ProbeCoverage, TimeWindow
from geo.deadzones import DeadZones, probe_dead_zones
from geo.evidence import EVIDENCE_KINDS, VillageVerdict
from geo.gcpause import gc_paused
from geo.operators import operator_label
from geo.probes import PROBE_STATES, Outage, ProbeHealth, power_outages, probe_health
from geo.sites import Recommendation, SiteOptions, recommend
from geo.status import DEFAULT_RADIUS_M, NearbyProbes, VillageStatus
from geo.thresholds import COVERAGE_CLASSES, load_thresholds

COORD_DECIMALS: Final = 5  # ~1 m
SIMPLIFY_DEG: Final = 1e-4  # ~10 m: polygon vertices closer than that are dropped


@dataclass(frozen=True, slots=True)
class Boundary:
    level: str
    name: str
    parent: str
    geometry: Any  # shapely, lon/lat


@dataclass(frozen=True, slots=True)
class MapData:
    """Everything the map shows, gathered from the database once."""

    window: TimeWindow
    radius_m: float
    villages: Sequence[VillageStatus]
    probes: Sequence[ProbeCoverage]
    health: dict[str, ProbeHealth]
    outages: dict[str, list[Outage]]
    boundaries: Sequence[Boundary]
    zones: DeadZones | None
    area: str  # what the zones are clipped to
    surveys: Sequence[survey.MapPoint] = ()
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Each village's verdict with its evidence (geo.evidence), in the order of
    # ``villages``; None when the map was not asked for it (the prediction costs time).
    verdicts: Sequence[VillageVerdict] | None = None
    # Recommended tower sites (geo.sites), when the map was asked for them.
    sites: Sequence[Recommendation] | None = None


# ------------------------------------------------------------------------- gathering


def load_boundaries(
    connection: psycopg.Connection[Any], *, province: str | None = None
) -> list[Boundary]:
    """Province and commune boundaries (of one province: communes inside it)."""
    rows = connection.execute(
        """SELECT level, name, parent, geometry FROM boundaries
           WHERE level IN ('province', 'commune')
           ORDER BY level DESC, parent, name"""
    ).fetchall()
    found = [
        Boundary(level, name, parent, shapely.from_geojson(json.dumps(geometry)))
        for level, name, parent, geometry in rows
    ]
    if province is None:
        return found
    provinces = [b for b in found if b.level == "province" and b.name == province]
    if not provinces:
        return []
    outline = shapely.union_all([b.geometry for b in provinces])
    return provinces + [
        b
        for b in found
        if b.level == "commune" and outline.contains(shapely.point_on_surface(b.geometry))
    ]


def _extent(statuses: Sequence[VillageStatus], probes: Sequence[ProbeCoverage], r: float) -> Any:
    lons = [s.village.lon for s in statuses] + [p.lon for p in probes if p.lon is not None]
    lats = [s.village.lat for s in statuses] + [p.lat for p in probes if p.lat is not None]
    if not lons:
        return None
    mid = float(np.radians((min(lats) + max(lats)) / 2))
    dlat = r / 111_320
    dlon = r / (111_320 * max(float(np.cos(mid)), 0.1))
    return shapely.box(min(lons) - dlon, min(lats) - dlat, max(lons) + dlon, max(lats) + dlat)


def zone_area(
    boundaries: Sequence[Boundary],
    statuses: Sequence[VillageStatus],
    probes: Sequence[ProbeCoverage],
    radius_m: float,
) -> tuple[Any, str]:
    """What dead zones are clipped to, and its description: the province, else the
    communes, else the extent of villages and probes; ``(None, …)`` with nothing at all."""
    provinces = [b.geometry for b in boundaries if b.level == "province"]
    communes = [b.geometry for b in boundaries if b.level == "commune"]
    if provinces:
        return shapely.union_all(provinces), "province boundary"
    if communes:
        return shapely.union_all(communes), "commune boundaries"
    return (
        _extent(statuses, probes, radius_m),
        "extent of villages and probes (no boundary imported)",
    )


def collect(
    connection: psycopg.Connection[Any],
    window: TimeWindow,
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    province: str | None = None,
    evidence: bool = False,
    sites: SiteOptions | None = None,
) -> MapData:
    """``evidence``: add every village's verdict with its kind of evidence, predicted
    where nothing measured it (geo.assessment); ``sites``: add the tower sites
    recommended with these options (geo.sites)."""
    analysis = analyse(connection, window, radius_m=radius_m, province=province)
    statuses, probes = analysis.statuses, analysis.probes
    assessment = (
        assess(connection, window, radius_m=radius_m, analysis=analysis)
        if evidence or sites is not None
        else None
    )
    verdicts = assessment.verdicts if evidence and assessment is not None else None
    recommended = (
        recommend(connection, window, sites, province=province, assessment=assessment).rows
        if sites is not None
        else None
    )
    boundaries = load_boundaries(connection, province=province)
    area_shape, area = zone_area(boundaries, statuses, probes, radius_m)
    zones = None
    if area_shape is not None:
        zones = probe_dead_zones(probes, area_shape, radius_m=radius_m)
    # Survey points of a province's map: those within its area's bounding box.
    box: tuple[float, float, float, float] | None = None
    if province is not None and area_shape is not None:
        min_lon, min_lat, max_lon, max_lat = shapely.bounds(area_shape).tolist()
        box = (min_lon, min_lat, max_lon, max_lat)
    survey_points = (
        []  # a province with neither villages nor boundary: nowhere to show them
        if province is not None and box is None
        else survey.map_points(
            connection, window.start, window.end, load_thresholds(connection), bounds=box
        )
    )
    return MapData(
        window=window,
        radius_m=radius_m,
        villages=statuses,
        probes=probes,
        health=probe_health(connection),
        outages=power_outages(connection, window),
        boundaries=boundaries,
        zones=zones,
        area=area,
        surveys=survey_points,
        verdicts=verdicts,
        sites=recommended,
    )


# --------------------------------------------------------------------------- payload


def _geometry(shape: Any) -> dict[str, Any] | None:
    """Simplified, rounded GeoJSON geometry, or None when empty."""
    if shape is None or shapely.is_empty(shape):
        return None
    simple = shapely.simplify(shape, SIMPLIFY_DEG, preserve_topology=True)
    rounded = shapely.transform(simple, lambda xy: np.round(xy, COORD_DECIMALS))
    result: dict[str, Any] = json.loads(shapely.to_geojson(rounded))
    return result


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _main_signal(operator: OperatorCoverage) -> float | None:
    """Mean signal of the technology the probe used most with this operator."""
    measured = [t for t in operator.technologies if t.mean_signal_dbm is not None]
    if not measured:
        return None
    main = max(measured, key=lambda t: t.readings)
    return _round(main.mean_signal_dbm, 0)


def nearby_ids(status: VillageStatus) -> Sequence[str]:
    """A village's nearby probes' ids, nearest first (no NearbyProbe built for each)."""
    nearby = status.nearby
    return nearby.probe_ids if isinstance(nearby, NearbyProbes) else [n.probe_id for n in nearby]


def payload(data: MapData) -> dict[str, Any]:
    """The compact JSON the browser builds the layers from (see map.js for the layout)."""
    placed = [p for p in data.probes if p.lon is not None and p.lat is not None]
    probe_index = {p.probe_id: i for i, p in enumerate(placed)}
    coverage_of = {p.probe_id: {o.operator: o for o in p.operators} for p in placed}
    operators = sorted({o.operator for p in placed for o in p.operators})
    op_index = {code: i for i, code in enumerate(operators)}
    cls_index = {name: i for i, name in enumerate(COVERAGE_CLASSES)}
    places: dict[str, int] = {}
    # A probe's operator's signal, once each (villages ask ~12 times as often).
    signal_of = {(p.probe_id, o.operator): _main_signal(o) for p in placed for o in p.operators}

    villages = []
    for status in data.villages:
        v = status.village
        place = ", ".join(part for part in (v.commune, v.district) if part)
        ops = []
        for o in sorted(status.operators, key=lambda o: op_index.get(o.operator, 0)):
            # The numbers come from the nearest nearby probe that measured this operator.
            at, at_probe = None, ""
            for probe_id in nearby_ids(status):
                measured = coverage_of.get(probe_id)
                if measured is not None and o.operator in measured:
                    at, at_probe = measured[o.operator], probe_id
                    break
            ops.append(
                [
                    op_index[o.operator],
                    cls_index[o.coverage_class],
                    _round(o.availability_pct),
                    None if at is None else signal_of[at_probe, o.operator],
                    None if at is None else at.readings,
                ]
            )
        speaking = probe_index.get(status.nearby[0].probe_id, -1) if status.nearby else -1
        villages.append(
            [
                round(v.lat, COORD_DECIMALS),
                round(v.lon, COORD_DECIMALS),
                v.name,
                places.setdefault(place, len(places)),
                v.population,
                cls_index[status.status],
                probe_index.get(status.nearest_probe_id or "", -1),
                None if status.nearest_probe_m is None else round(status.nearest_probe_m / 1000, 1),
                speaking,
                ops,
                # Heard by nearby probes' scans, not measured: shown apart, never a class.
                [
                    [
                        e.operator_name,
                        ", ".join(e.technologies),
                        _round(e.best_rsrp_dbm if e.best_rsrp_dbm is not None else e.best_rssi_dbm),
                        e.probes,
                    ]
                    for e in status.scan_evidence
                ],
            ]
        )

    probes = []
    for p in placed:
        health = data.health.get(p.probe_id)
        outages = data.outages.get(p.probe_id, [])
        last = outages[-1] if outages else None
        probes.append(
            [
                p.probe_id,
                round(p.lat or 0.0, COORD_DECIMALS),
                round(p.lon or 0.0, COORD_DECIMALS),
                PROBE_STATES.index(health.status if health else "unknown"),
                _iso(health.last_seen if health else None),
                cls_index[p.coverage_class()],
                _round(p.measured_pct),
                _round(p.rtt_ms),
                _round(p.loss_pct),
                len(outages),
                _round(sum(o.hours for o in outages)),
                None if last is None else _iso(last.started_at),
                None if last is None else _iso(last.ended_at),
                p.village,
            ]
        )

    zones = []
    if data.zones is not None:
        for state, shape, km2 in (
            ("covered", data.zones.covered, data.zones.covered_km2),
            ("unmeasured", data.zones.unmeasured, data.zones.unmeasured_km2),
            ("dead", data.zones.dead, data.zones.dead_km2),
        ):
            geometry = _geometry(shape)
            if geometry is not None:
                zones.append(
                    {
                        "type": "Feature",
                        "properties": {"state": state, "km2": round(km2, 1)},
                        "geometry": geometry,
                    }
                )
    boundaries = []
    for b in data.boundaries:
        geometry = _geometry(b.geometry)
        if geometry is not None:
            boundaries.append(
                {"type": "Feature", "properties": {"l": b.level, "n": b.name}, "geometry": geometry}
            )

    survey_ops = sorted({p.operator_code or "" for p in data.surveys})
    surveys = [
        [
            round(p.lat, COORD_DECIMALS),
            round(p.lon, COORD_DECIMALS),
            _iso(p.taken_at),
            survey_ops.index(p.operator_code or ""),
            p.technology,
            cls_index[p.signal_class] if p.service != "none" else cls_index["none"],
            _round(p.signal_dbm, 0),
            _round(p.accuracy_m, 0),
            1 if p.service == "none" else 0,
        ]
        for p in data.surveys
    ]

    document: dict[str, Any] = {
        "meta": {
            "since": _iso(data.window.start),
            "until": _iso(data.window.end),
            "radius_km": round(data.radius_m / 1000, 2),
            "area": data.area,
            "generated": _iso(data.generated_at),
            "unplaced_probes": len(data.probes) - len(placed),
        },
        "classes": list(COVERAGE_CLASSES),
        "states": list(PROBE_STATES),
        "ops": [operator_label(code) for code in operators],
        "places": list(places),
        "villages": villages,
        "probes": probes,
        "zones": zones,
        "boundaries": boundaries,
        "survey_ops": [operator_label(code) if code else "?" for code in survey_ops],
        "survey": surveys,
    }
    if data.verdicts is not None:
        document["evidence_kinds"] = list(EVIDENCE_KINDS)
        document["evidence"] = _evidence(data)
    if data.sites is not None:
        document["sites"] = [
            [
                round(r.candidate.lat, COORD_DECIMALS),
                round(r.candidate.lon, COORD_DECIMALS),
                r.rank,
                r.candidate.candidate_id,
                operator_label(r.operator),
                round(r.gain),
                [[v.name, round(need)] for v, need in r.villages],
            ]
            for r in data.sites
        ]
    return document


def _evidence(data: MapData) -> list[Any]:
    """Per village (in the villages' order): [kind, p(no service), no service (1/0),
    [[operator name, kind, p(usable), predicted dBm, its sigma dB], ...]]."""
    assert data.verdicts is not None
    kind_index = {kind: i for i, kind in enumerate(EVIDENCE_KINDS)}
    rows = []
    for status, verdict in zip(data.villages, data.verdicts, strict=True):
        if status.village.village_id != verdict.village.village_id:
            raise ValueError("map: the verdicts are not in the villages' order")
        p = verdict.p_no_service
        rows.append(
            [
                kind_index[verdict.kind],
                None if p is None else round(p, 3),
                1 if verdict.no_service else 0,
                [
                    [
                        operator_label(o.operator),
                        kind_index[o.kind],
                        None if o.p_usable is None else round(o.p_usable, 2),
                        _round(o.rsrp_dbm, 0),
                        _round(o.sigma_db, 0),
                    ]
                    for o in verdict.operators
                ],
            ]
        )
    return rows


# ------------------------------------------------------------------------- rendering


class _Layers(MacroElement):
    """Hands the payload to coverwatchMap() once the map and layer control exist."""

    _template = Template(
        "{% macro script(this, kwargs) %}"
        "coverwatchMap({{ this.map_name }}, {{ this.control_name }}, {{ this.data }});"
        "{% endmacro %}"
    )

    def __init__(self, map_name: str, control_name: str, data: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "CoverwatchLayers"
        self.map_name = map_name
        self.control_name = control_name
        self.data = data


def _bounds(data: MapData) -> list[list[float]] | None:
    lons = [s.village.lon for s in data.villages]
    lats = [s.village.lat for s in data.villages]
    lons += [p.lon for p in data.probes if p.lon is not None]
    lats += [p.lat for p in data.probes if p.lat is not None]
    for b in data.boundaries:
        min_lon, min_lat, max_lon, max_lat = shapely.bounds(b.geometry).tolist()
        lons += [min_lon, max_lon]
        lats += [min_lat, max_lat]
    if not lons:
        return None
    return [[min(lats), min(lons)], [max(lats), max(lons)]]


def to_json(document: Any) -> str:
    """Compact JSON that is safe inside a <script> element."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render(
    data: MapData,
    *,
    static_url: str | None = None,
    tiles: str | None = None,
    tiles_attribution: str | None = None,
    title: str = "coverwatch coverage map",
) -> str:
    """The map page. ``static_url`` (e.g. ``/static``) links the assets; None inlines them.

    The page around the data (folium's map, the layer control, the assets) depends only
    on these options: it is built once and the data's JSON and bounds are put into it.
    """
    with gc_paused():
        document = to_json(payload(data))
    bounds = _bounds(data)
    shell = _shell(static_url, tiles, tiles_attribution, title, bounds is not None)
    if bounds is not None:
        shell = shell.replace(_BOUNDS_MARK, json.dumps(bounds), 1)
    return shell.replace(_PAYLOAD_MARK, document, 1)


# Stand-ins for the data in the cached page: a payload no JSON document can be mistaken
# for, and bounds no map has (both latitudes below the south pole's).
_PAYLOAD_MARK: Final = "__coverwatch_payload__"
_BOUNDS_STAND_IN: Final = [[-91.25, -181.5], [-91.75, -182.5]]
_BOUNDS_MARK: Final = json.dumps(_BOUNDS_STAND_IN)


@functools.lru_cache(maxsize=16)
def _shell(
    static_url: str | None,
    tiles: str | None,
    tiles_attribution: str | None,
    title: str,
    has_bounds: bool,
) -> str:
    figure_map = folium.Map(
        location=[21.5, 105.5], zoom_start=8, tiles=None, control_scale=True, prefer_canvas=False
    )
    # folium's CDN defaults (Leaflet, jQuery, Bootstrap, Font Awesome) are replaced by
    # coverwatch's own copies: see geo/assets.py.
    figure_map.default_js = assets.js_links()
    figure_map.default_css = assets.css_links()
    root = figure_map.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(Element(f"<title>{html.escape(title)}</title>"), name="title")
    if has_bounds:
        figure_map.fit_bounds(_BOUNDS_STAND_IN, padding=(10, 10))
    if tiles:
        folium.TileLayer(
            tiles=tiles,
            attr=tiles_attribution or "base map: office tile server",
            name="Base map (tiles)",
            overlay=True,
            control=True,
        ).add_to(figure_map)
    control = folium.LayerControl(collapsed=False).add_to(figure_map)
    _Layers(figure_map.get_name(), control.get_name(), _PAYLOAD_MARK).add_to(figure_map)
    page: str = root.render()
    page = (
        assets.inline_assets(page) if static_url is None else assets.link_assets(page, static_url)
    )
    if page.count(_PAYLOAD_MARK) != 1 or page.count(_BOUNDS_MARK) != int(has_bounds):
        raise AssertionError("folium rendered the map's stand-ins in an unexpected way")
    return page
