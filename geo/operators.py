"""Vietnamese mobile operators: MCC-MNC codes and the names people use for them.

Readings carry the network's MCC-MNC (``operator_code``) when the modem is registered;
when it is not (searching, denied) there is no code, and the reading is put down to the
probe's own SIM operator from the registry (``probes.operator``), which may be written
as a code (``45204``) or a name (``Viettel``). This table turns names into codes.
"""

from __future__ import annotations

from typing import Final

# MCC 452 (Vietnam). Source: ITU-T E.212 list of mobile network codes.
OPERATOR_NAMES: Final[dict[str, str]] = {
    "45201": "MobiFone",
    "45202": "VinaPhone",
    "45204": "Viettel",
    "45205": "Vietnamobile",
    "45207": "Gmobile",
}
CODE_OF_NAME: Final[dict[str, str]] = {name.lower(): code for code, name in OPERATOR_NAMES.items()}


def operator_label(code: str) -> str:
    """``45204`` → ``Viettel``; an unknown code is shown as it is."""
    return OPERATOR_NAMES.get(code, code)
