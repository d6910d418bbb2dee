"""Where the probe is, from gpsd: the position a survey point is tagged with.

A portable probe (a Pi with its modems and a USB GPS receiver, carried through a
village) reads positions from gpsd, the GPS daemon every Linux distribution ships, over
its JSON socket protocol (``?WATCH``; TPV reports) through the ``gpsdclient`` library.
:class:`GpsWatcher` follows gpsd in a thread of its own and keeps the latest fix; a
survey asks for a fix no older than a few seconds, so a point is never tagged with the
place the receiver saw before it lost the sky. Without gpsd, or without a fix, there is
no position, and the survey says so instead of guessing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

logger = logging.getLogger(__name__)

GPSD_PORT: Final = 2947
RECONNECT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Fix:
    """A 2D or 3D fix: WGS 84 degrees, the horizontal error estimate in metres."""

    lon: float
    lat: float
    accuracy_m: float | None
    gps_time: datetime | None
    received_at: float  # the watcher's monotonic clock when the report arrived


def _finite(value: Any) -> float | None:
    """A JSON number that is finite (gpsd may write NaN for what it does not know)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fix_of(report: Mapping[str, Any], received_at: float) -> Fix | None:
    """The fix in a gpsd TPV report, or None (another class, no fix, values unusable).

    ``mode`` 2 and 3 are fixes; the accuracy is gpsd's ``eph`` (horizontal position
    error), else from ``epx`` and ``epy`` (longitude and latitude errors), else unknown.
    """
    if report.get("class") != "TPV" or not isinstance(report.get("mode"), int):
        return None
    if report["mode"] < 2:
        return None
    lon, lat = _finite(report.get("lon")), _finite(report.get("lat"))
    if lon is None or lat is None:
        return None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or (lon == 0 and lat == 0):
        return None

    def error(name: str) -> float | None:
        value = _finite(report.get(name))
        return value if value is not None and value >= 0 else None

    accuracy = error("eph")
    if accuracy is None:
        epx, epy = error("epx"), error("epy")
        accuracy = math.hypot(epx, epy) if epx is not None and epy is not None else None
    gps_time = report.get("time")
    return Fix(
        lon=lon,
        lat=lat,
        accuracy_m=accuracy,
        gps_time=gps_time if isinstance(gps_time, datetime) else None,
        received_at=received_at,
    )


def _gpsd_reports(host: str, port: int, timeout_s: float) -> Iterable[dict[str, Any]]:
    from gpsdclient.client import GPSDClient

    client = GPSDClient(host=host, port=port, timeout=timeout_s)
    try:
        yield from client.dict_stream(convert_datetime=True, filter=["TPV"])
    finally:
        client.close()  # type: ignore[no-untyped-call]


class GpsWatcher:
    """Follows gpsd in a daemon thread; :meth:`latest` is the freshest fix."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = GPSD_PORT,
        *,
        reports: Callable[[str, int, float], Iterable[Mapping[str, Any]]] = _gpsd_reports,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self._reports = reports
        self._clock = clock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._fix: Fix | None = None
        self._status = f"connecting to gpsd at {host}:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="gpsd", daemon=True)

    def start(self) -> GpsWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def latest(self, max_age_s: float) -> Fix | None:
        """The last fix if it arrived within ``max_age_s`` seconds, else None."""
        with self._lock:
            fix = self._fix
        if fix is None or self._clock() - fix.received_at > max_age_s:
            return None
        return fix

    @property
    def status(self) -> str:
        """Why there is no fix, in words a technician can act on."""
        with self._lock:
            return self._status

    def _set(self, status: str, fix: Fix | None = None) -> None:
        with self._lock:
            self._status = status
            if fix is not None:
                self._fix = fix

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                for report in self._reports(self.host, self.port, self._timeout_s):
                    if self._stop.is_set():
                        return
                    fix = fix_of(report, self._clock())
                    if fix is not None:
                        self._set("fix", fix)
                    elif report.get("class") == "TPV":
                        self._set(f"no fix yet (gpsd mode {report.get('mode', '?')}): wait "
                                  "under open sky")  # fmt: skip
                self._set(f"gpsd at {self.host}:{self.port} closed the connection")
            except (OSError, ValueError) as error:  # refused, timed out, not gpsd, bad JSON
                self._set(
                    f"no gpsd at {self.host}:{self.port} ({error}): is gpsd running and the "
                    "receiver plugged in? (systemctl status gpsd)"
                )
            self._stop.wait(RECONNECT_S)
