"""Vietnamese mobile operators: MCC-MNC codes and the names people use for them.

Readings carry the network's MCC-MNC (``operator_code``) when the modem is registered;
when it is not (searching, denied) there is no code, and the reading is put down to the
probe's own SIM operator from the registry (``probes.operator``), which may be written
as a code (``45204``) or a name (``Viettel``). This table turns names into codes.
"""

from __future__ import annotations

from typing import Any, Final

from geo.text import clean_text, normalise_key

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


# What operators are called besides their short names (normalised, no spaces).
_OPERATOR_ALIASES: Final[dict[str, str]] = {
    **{normalise_key(name).replace("_", ""): code for name, code in CODE_OF_NAME.items()},
    "vnpt": "45202",
    "vinafone": "45202",  # as it is often spelt
    "mobiphone": "45201",
    "vnptvinaphone": "45202",
    "viettelmobile": "45204",
    "viettelgroup": "45204",
}
TECHNOLOGY_OF: Final[dict[str, str]] = {
    **dict.fromkeys(("2g", "gsm", "gprs", "edge"), "gsm"),
    **dict.fromkeys(("3g", "umts", "wcdma", "hspa", "hspa_plus", "hsdpa"), "umts"),
    **dict.fromkeys(("4g", "lte", "lte_a", "lte_ca"), "lte"),
    **dict.fromkeys(("5g", "nr", "nr5g", "5g_nr", "nr_sa", "nr_nsa"), "nr5g"),
}


def parse_operator(value: Any) -> str:
    """``Viettel``, ``viettel``, ``VNPT VinaPhone``, ``452-04`` or ``45204`` → ``45204``.

    Raises ValueError naming the operators known.
    """
    text = clean_text(value)
    if any(not character.isprintable() for character in text):
        raise ValueError(f"{text[:40]!r} holds control characters; write the operator's name")
    digits = text.replace("-", "").replace(" ", "")
    if digits.isascii() and digits.isdecimal() and len(digits) in (5, 6):
        return digits
    code = _OPERATOR_ALIASES.get(normalise_key(text).replace("_", ""))
    if code is None:
        known = ", ".join(f"{name} ({code})" for code, name in OPERATOR_NAMES.items())
        raise ValueError(f"unknown operator {text[:40]!r}; known: {known}, or any MCC-MNC")
    return code


def parse_technology(value: Any) -> str:
    """``4G``, ``LTE``, ``lte`` → ``lte``; raises ValueError."""
    text = clean_text(value)
    technology = TECHNOLOGY_OF.get(normalise_key(text))
    if technology is None:
        raise ValueError(f"expected 2G, 3G, 4G or 5G, got {text[:40]!r}")
    return technology
