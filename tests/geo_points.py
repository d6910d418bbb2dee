"""Points in kilometres around a centre near Cao Bằng, for geo's model tests."""

from __future__ import annotations

import math

from geo.projection import LocalProjection

CENTRE = (106.05, 22.70)
PROJECTION = LocalProjection(*CENTRE)
KM_LON = 111.320 * math.cos(math.radians(CENTRE[1]))
KM_LAT = 110.574


def lonlat(x_km: float, y_km: float) -> tuple[float, float]:
    """The point ``x_km`` east and ``y_km`` north of the centre (lon, lat)."""
    return CENTRE[0] + x_km / KM_LON, CENTRE[1] + y_km / KM_LAT
