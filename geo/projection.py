"""Lon/lat ↔ metres without pyproj (it is not a dependency), and great-circle distances.

Geometry is buffered and measured in a local equirectangular projection centred on the
area of interest: x = R·(lon - lon0)·cos(lat0), y = R·(lat - lat0). Across a northern
Vietnamese province (≤ ~2° of latitude either side of the centre) the east-west scale
is off by at most ~1.5 %, and within a few kilometres of a probe by far less, which is
well inside the uncertainty of a coverage radius. Distances between villages and probes
are great-circle (haversine) distances on a sphere of radius 6,371,008.8 m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

EARTH_RADIUS_M = 6_371_008.8

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Equirectangular projection about (lon0, lat0), in metres."""

    lon0: float
    lat0: float

    @classmethod
    def around(cls, lon: npt.ArrayLike, lat: npt.ArrayLike) -> LocalProjection:
        """Centred on the middle of the bounding box of the given points."""
        lons = np.asarray(lon, dtype=np.float64)
        lats = np.asarray(lat, dtype=np.float64)
        if lons.size == 0:
            return cls(0.0, 0.0)
        return cls(float((lons.min() + lons.max()) / 2), float((lats.min() + lats.max()) / 2))

    @classmethod
    def for_geometry(cls, geometry: Any) -> LocalProjection:
        min_lon, min_lat, max_lon, max_lat = shapely.bounds(geometry)
        return cls(float((min_lon + max_lon) / 2), float((min_lat + max_lat) / 2))

    @property
    def _kx(self) -> float:
        return EARTH_RADIUS_M * np.pi / 180 * float(np.cos(np.radians(self.lat0)))

    @property
    def _ky(self) -> float:
        return EARTH_RADIUS_M * np.pi / 180

    def forward(self, lonlat: FloatArray) -> FloatArray:
        """An (n, 2) array of lon/lat degrees → an (n, 2) array of x/y metres."""
        out = np.empty_like(lonlat, dtype=np.float64)
        out[:, 0] = (lonlat[:, 0] - self.lon0) * self._kx
        out[:, 1] = (lonlat[:, 1] - self.lat0) * self._ky
        return out

    def inverse(self, xy: FloatArray) -> FloatArray:
        out = np.empty_like(xy, dtype=np.float64)
        out[:, 0] = xy[:, 0] / self._kx + self.lon0
        out[:, 1] = xy[:, 1] / self._ky + self.lat0
        return out

    def to_metres(self, geometry: Any) -> Any:
        """A shapely geometry (or array of them) in lon/lat → the same in metres."""
        return shapely.transform(geometry, self.forward)

    def to_lonlat(self, geometry: Any) -> Any:
        return shapely.transform(geometry, self.inverse)


def haversine_m(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in metres, element-wise (numpy broadcasting)."""
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = phi2 - phi1
    dlam = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    result: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return result
