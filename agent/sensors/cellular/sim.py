"""The SIM's home network (MCC-MNC), from what the SIM or the modem says about it.

A reading without service still belongs to an operator: the one whose SIM is in the
modem. The IMSI starts with that network's MCC (3 digits) and MNC (2 or 3 digits); how
long the MNC is cannot be read off the IMSI itself (the SIM's EF_AD says, and
ModemManager reports the result as the SIM's ``operator-code``). Without that, the MNC
length comes from a small table of countries (ITU-T E.212 assignments), and for any
other country from the network the modem is registered on at home, whose code the IMSI
must start with. Otherwise the home network is unknown (None), never a guess.
"""

from __future__ import annotations

import re
from typing import Final

# MNC length by MCC, for the countries coverwatch is deployed in and their neighbours,
# plus the 3-digit countries most often met (ITU-T E.212 list of MNCs). Vietnam's MCC
# 452 uses 2-digit MNCs: 45201 MobiFone, 45202 VinaPhone, 45204 Viettel.
MNC_DIGITS: Final[dict[str, int]] = {
    "452": 2,  # Vietnam
    "456": 2,  # Cambodia
    "457": 2,  # Laos
    "460": 2,  # China
    "520": 2,  # Thailand
    "262": 2,  # Germany
    "295": 2,  # Liechtenstein
    "302": 3,  # Canada
    "310": 3,  # United States
    "311": 3,
    "312": 3,
    "313": 3,
    "314": 3,
    "315": 3,
    "316": 3,
    "334": 3,  # Mexico
}

_CODE = re.compile(r"[0-9]{5,6}")
_IMSI = re.compile(r"[0-9]{6,15}")


def home_network(
    sim_operator_code: str | None, imsi: str | None, *, registered_home: str | None = None
) -> str | None:
    """The SIM's MCC-MNC: the SIM's own operator code, else from the IMSI.

    ``registered_home`` is the network the modem is registered on when the registration
    is *home* (not roaming): for an MCC missing from :data:`MNC_DIGITS` it settles the
    MNC's length, if the IMSI starts with it.
    """
    if sim_operator_code and _CODE.fullmatch(sim_operator_code):
        return sim_operator_code
    if not imsi or not _IMSI.fullmatch(imsi):
        return None
    digits = MNC_DIGITS.get(imsi[:3])
    if digits is not None:
        return imsi[: 3 + digits]
    if registered_home and _CODE.fullmatch(registered_home) and imsi.startswith(registered_home):
        return registered_home
    return None
