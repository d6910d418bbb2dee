"""Coverage classes and the signal thresholds that define them.

A reading is put in one of four classes by the signal metric of its technology, the
way Android draws signal bars (AOSP ``frameworks/base``, ``telephony/java/android/
telephony``):

========== ============ ================================= ================================
technology metric       great, good, moderate, poor (dBm)  AOSP source (see below)
========== ============ ================================= ================================
lte, nr5g  ``rsrp_dbm`` -85, -95, -105, -115               CellSignalStrengthLte
umts       ``rscp_dbm`` -85, -95, -105, -115               CarrierConfigManager (WCDMA RSCP)
gsm        ``rssi_dbm`` -89, -97, -103, -107               CellSignalStrengthGsm
========== ============ ================================= ================================

Sources: ``CellSignalStrengthLte.sRsrpThresholds`` (the fallback used without a carrier
config), ``CarrierConfigManager.KEY_WCDMA_RSCP_THRESHOLDS_INT_ARRAY`` and
``CellSignalStrengthGsm.GSM_RSSI_GREAT/GOOD/MODERATE/POOR``. Note that the *carrier
config* default for LTE, ``KEY_LTE_RSRP_THRESHOLDS_INT_ARRAY``, is more lenient:
-98, -108, -118, -128; ``coverwatch thresholds set lte=-108,-118,-128`` uses it.

Android has five levels (great, good, moderate, poor, none); coverwatch merges great and
good into **good**, calls moderate **fair**, and keeps **poor** and **none**. A reading
that is not registered (searching, denied, …) is **none** whatever its signal. A period
with no readings at all is **unmeasured** — a separate state, never "none".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import psycopg

from coverwatch.errors import ConfigError

SignalClass: TypeAlias = Literal["good", "fair", "poor", "none"]
CoverageClass: TypeAlias = Literal["good", "fair", "poor", "none", "unmeasured"]

# Ordinal levels, as SQL computes them: higher is better.
LEVELS: Final[tuple[SignalClass, ...]] = ("none", "poor", "fair", "good")
LEVEL_OF: Final[dict[str, int]] = {name: level for level, name in enumerate(LEVELS)}
COVERAGE_CLASSES: Final[tuple[CoverageClass, ...]] = ("good", "fair", "poor", "none", "unmeasured")

# The signal column that measures each technology (protocol field names).
METRIC_OF: Final[dict[str, str]] = {
    "lte": "rsrp_dbm",
    "nr5g": "rsrp_dbm",
    "umts": "rscp_dbm",
    "gsm": "rssi_dbm",
}


@dataclass(frozen=True, slots=True)
class Band:
    """Lower bounds (dBm, inclusive) of the good, fair and poor classes of one technology."""

    good_dbm: float
    fair_dbm: float
    poor_dbm: float
    source: str = ""

    def __post_init__(self) -> None:
        if not self.good_dbm > self.fair_dbm > self.poor_dbm:
            raise ConfigError(
                "thresholds",
                f"good ({self.good_dbm}), fair ({self.fair_dbm}) and poor ({self.poor_dbm}) "
                "dBm are not in descending order",
                "give three descending values, e.g. lte=-95,-105,-115",
            )

    def classify(self, signal_dbm: float | None, *, registered: bool = True) -> SignalClass:
        """The class of one reading (registered with no signal value counts as poor)."""
        if not registered:
            return "none"
        if signal_dbm is None:
            return "poor"
        if signal_dbm >= self.good_dbm:
            return "good"
        if signal_dbm >= self.fair_dbm:
            return "fair"
        if signal_dbm >= self.poor_dbm:
            return "poor"
        return "none"


_AOSP = "AOSP frameworks/base telephony/java/android/telephony/"
DEFAULT_BANDS: Final[dict[str, Band]] = {
    "lte": Band(-95, -105, -115, _AOSP + "CellSignalStrengthLte.java sRsrpThresholds"),
    "nr5g": Band(-95, -105, -115, "as lte (probes report NR SS-RSRP in rsrp_dbm)"),
    "umts": Band(
        -95, -105, -115, _AOSP + "CarrierConfigManager.java KEY_WCDMA_RSCP_THRESHOLDS_INT_ARRAY"
    ),
    "gsm": Band(-97, -103, -107, _AOSP + "CellSignalStrengthGsm.java GSM_RSSI_GOOD/MODERATE/POOR"),
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per-technology bands; a technology without a band is classed by registration only."""

    bands: Mapping[str, Band] = field(default_factory=lambda: dict(DEFAULT_BANDS))

    def classify(
        self, technology: str | None, signal_dbm: float | None, *, registered: bool = True
    ) -> SignalClass:
        band = self.bands.get(technology or "")
        if band is None:
            return "poor" if registered else "none"
        return band.classify(signal_dbm, registered=registered)

    def with_overrides(self, overrides: Mapping[str, Band]) -> Thresholds:
        unknown = set(overrides) - set(METRIC_OF)
        if unknown:
            raise ConfigError(
                "--threshold",
                f"unknown technology {sorted(unknown)[0]!r}",
                f"use one of {', '.join(sorted(METRIC_OF))}",
            )
        return Thresholds({**self.bands, **overrides})


DEFAULT_THRESHOLDS: Final = Thresholds()


def parse_threshold(text: str) -> tuple[str, Band]:
    """``lte=-95,-105,-115`` (good, fair, poor dBm) → ``("lte", Band(...))``."""
    technology, _, values = text.partition("=")
    parts = values.split(",")
    try:
        good, fair, poor = (float(part) for part in parts)
    except ValueError:
        raise ConfigError(
            "--threshold",
            f"cannot read {text!r}",
            "write TECHNOLOGY=GOOD,FAIR,POOR in dBm, e.g. lte=-95,-105,-115",
        ) from None
    return technology.strip().lower(), Band(good, fair, poor, "command line")


# ------------------------------------------------------------------ in the database

# The thresholds that count are the database's (table coverage_thresholds, migration
# 007): the map, the reports, the API and Grafana all classify with them.


def load_thresholds(connection: psycopg.Connection[Any]) -> Thresholds:
    rows = connection.execute(
        "SELECT technology, good_dbm, fair_dbm, poor_dbm, source FROM coverage_thresholds"
    ).fetchall()
    return Thresholds(
        {tech: Band(good, fair, poor, source) for tech, good, fair, poor, source in rows}
    )


def store_thresholds(connection: psycopg.Connection[Any], bands: Mapping[str, Band]) -> int:
    """Set these technologies' thresholds and mark every hour for re-aggregation.

    In the caller's transaction: the new thresholds and the marks commit together, so
    no reader ever sees rollups of the old thresholds beside readings of the new ones.
    Returns the number of (probe, hour) pairs marked.
    """
    unknown = set(bands) - set(METRIC_OF)
    if unknown:
        raise ConfigError(
            "thresholds",
            f"unknown technology {sorted(unknown)[0]!r}",
            f"use one of {', '.join(sorted(METRIC_OF))}",
        )
    for technology, band in sorted(bands.items()):
        connection.execute(
            """INSERT INTO coverage_thresholds
                   (technology, metric, good_dbm, fair_dbm, poor_dbm, source)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (technology) DO UPDATE
               SET metric = excluded.metric, good_dbm = excluded.good_dbm,
                   fair_dbm = excluded.fair_dbm, poor_dbm = excluded.poor_dbm,
                   source = excluded.source""",
            (
                technology,
                METRIC_OF[technology],
                band.good_dbm,
                band.fair_dbm,
                band.poor_dbm,
                band.source,
            ),
        )
    row = connection.execute("SELECT coverage_invalidate()").fetchone()
    return int(row[0]) if row else 0
