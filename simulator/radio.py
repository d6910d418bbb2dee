"""The radio model: how strong a tower's LTE signal is in a village.

Median path loss is **COST-231 Hata** (COST Action 231, 1999; the 1500-2000 MHz
extension of Okumura-Hata) at 1800 MHz (LTE band 3, the band Vietnamese operators
use most widely), base station 35 m, probe antenna 2 m, with the Okumura-Hata
*open/rural* correction ``-4.78 (log f)^2 + 18.33 log f - 40.94`` (Hata 1980), since
the villages are rural. On top comes **terrain shadowing**: a log-normal term (8 dB,
a usual figure for hilly terrain) fixed per tower-village pair — the ridge between a
village and a tower does not move — plus an extra ridge loss for villages in a
valley closed off from a tower. Per reading, **fast fading** of a couple of dB
varies around that median.

RSRP is the reference-signal power per resource element: a 20 MHz carrier at 43 dBm
spreads over 1,200 subcarriers (-30.8 dB), antenna gain 17 dBi, cable loss 2 dB:
``RSRP = 43 - 30.8 + 17 - 2 - path loss`` = 27.2 dBm - path loss.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FREQUENCY_MHZ = 1800.0
BASE_HEIGHT_M = 35.0
MOBILE_HEIGHT_M = 2.0
RSRP_AT_ZERO_LOSS_DBM = 43.0 - 10 * math.log10(1200) + 17.0 - 2.0
SHADOWING_SIGMA_DB = 8.0
FAST_FADING_SIGMA_DB = 2.0
# Below this the modem cannot hold on to the cell: "searching", no signal values.
REGISTRATION_FLOOR_DBM = -122.0


def cost231_hata_rural_db(
    distance_km: npt.NDArray[np.float64],
    base_height_m: float | npt.NDArray[np.float64] = BASE_HEIGHT_M,
) -> npt.NDArray[np.float64]:
    """Median path loss (dB) at ``distance_km`` for the constants above; ``base_height_m``
    per mast (broadcast against the distances) where masts differ."""
    log_f = math.log10(FREQUENCY_MHZ)
    log_hb = np.log10(base_height_m)
    # Mobile antenna correction for small/medium cities (the rural formula builds on it).
    a_hm = (1.1 * log_f - 0.7) * MOBILE_HEIGHT_M - (1.56 * log_f - 0.8)
    urban = (
        46.3
        + 33.9 * log_f
        - 13.82 * log_hb
        - a_hm
        + (44.9 - 6.55 * log_hb) * np.log10(np.maximum(distance_km, 0.05))
    )
    open_rural_correction = -4.78 * log_f**2 + 18.33 * log_f - 40.94
    result: npt.NDArray[np.float64] = urban + open_rural_correction
    return result


def median_rsrp_dbm(
    distance_km: npt.NDArray[np.float64], shadowing_db: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Median RSRP in dBm; ``shadowing_db`` is the terrain's extra loss (may be < 0)."""
    result: npt.NDArray[np.float64] = (
        RSRP_AT_ZERO_LOSS_DBM - cost231_hata_rural_db(distance_km) - shadowing_db
    )
    return result
