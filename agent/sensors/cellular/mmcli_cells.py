"""ModemManager cells: ``mmcli -m N --get-cell-info -J`` (ModemManager >= 1.20).

``-J`` prints the cells as one string each under ``modem.generic.cell-info``, in the text
form libmm-glib builds (``mm_cell_info_build_string``: ``"cell type: <type>, serving:
<yes|no>"`` then ``", <key>: <value>"`` for each value the modem gave):

* lte / 5gnr: ``operator id``, ``tac``, ``ci``, ``physical ci`` (hex, as 27.007 writes
  them), ``earfcn`` / ``nrarfcn``, ``rsrp``, ``rsrq`` (``sinr`` for 5gnr), ...
* umts: ``operator id``, ``lac``, ``ci`` (hex), ``uarfcn``, ``psc`` (decimal), ``rscp``,
  ``ecio``, ...
* gsm: ``operator id``, ``lac``, ``ci`` (hex), ``arfcn``, ``base station id`` (the BSIC),
  ``rx level`` (the 0-63 RXLEV of TS 45.008: -110 dBm + the level).

A modem or ModemManager that cannot list cells is :class:`~.cells.CellsUnsupported`
(``Core.Unsupported``, or an mmcli older than 1.20 that does not know the option); one
bad string is skipped, never the others.
"""

from __future__ import annotations

import json
from typing import Any, Final

from agent.sensors.base import SensorError
from agent.sensors.cellular.cells import CellInfo, CellsUnsupported
from agent.sensors.cellular.state import hex_int
from coverwatch.protocol import Technology

_CELL_TYPES: Final[dict[str, Technology]] = {
    "gsm": "gsm",
    "umts": "umts",
    "tdscdma": "umts",
    "lte": "lte",
    "5gnr": "nr5g",
}
_CHANNEL_KEYS: Final = ("earfcn", "nrarfcn", "uarfcn", "arfcn")
# What ModemManager or mmcli says when cell info cannot be had at all.
_UNSUPPORTED: Final = ("Unsupported", "not supported", "Unknown option", "unknown option")


def parse_mmcli_cell_info(text: str) -> list[CellInfo]:
    """The cells of ``mmcli -m N --get-cell-info -J``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SensorError(f"mmcli --get-cell-info -J did not print JSON ({error})") from error
    generic = ((document if isinstance(document, dict) else {}).get("modem") or {}).get(
        "generic"
    ) or {}
    lines = generic.get("cell-info") if isinstance(generic, dict) else None
    if not isinstance(lines, list):
        raise SensorError(f"mmcli --get-cell-info -J printed no cell-info list: {text[:200]!r}")
    cells = [_cell(line) for line in lines if isinstance(line, str)]
    return [cell for cell in cells if cell is not None]


def check_cell_info_error(error: SensorError) -> CellsUnsupported | SensorError:
    """What a failed ``--get-cell-info`` stands for: "no cell info here", or a fault."""
    if any(marker in str(error) for marker in _UNSUPPORTED):
        return CellsUnsupported(
            f"ModemManager cannot list this modem's cells ({error}); the serving cell "
            "comes from the round"
        )
    return error


def _cell(line: str) -> CellInfo | None:
    values = _key_values(line)
    technology = _CELL_TYPES.get(values.get("cell type", ""))
    if technology is None:
        return None
    channel = next((_number(values[k]) for k in _CHANNEL_KEYS if k in values), None)
    if technology in ("lte", "nr5g"):
        pci = hex_int(values.get("physical ci"))
    elif technology == "umts":
        pci = _number(values.get("psc"))
    else:
        pci = _number(values.get("base station id"))
    rx_level = _number(values.get("rx level"))
    return CellInfo(
        serving=values.get("serving") == "yes",
        technology=technology,
        operator_code=values.get("operator id"),
        cell_id=hex_int(values.get("ci")),
        tac=hex_int(values.get("tac") or values.get("lac")),
        pci=pci,
        channel=channel,
        rsrp_dbm=_float(values.get("rsrp")),
        rsrq_db=_float(values.get("rsrq")),
        sinr_db=_float(values.get("sinr")),
        rscp_dbm=_float(values.get("rscp")),
        ecio_db=_float(values.get("ecio")),
        rssi_dbm=None if rx_level is None or rx_level > 63 else rx_level - 110.0,
    )


def _key_values(line: str) -> dict[str, str]:
    """``"cell type: lte, serving: yes, tac: 2B67"`` as a dict; pieces without ': ' are
    skipped (no value of ModemManager's contains ', ')."""
    values: dict[str, str] = {}
    for piece in line.split(", "):
        key, separator, value = piece.partition(": ")
        if separator and key.strip():
            values[key.strip()] = value.strip()
    return values


def _number(text: Any) -> int | None:
    if not isinstance(text, str) or not text.strip().isdecimal() or not text.isascii():
        return None
    return int(text.strip())


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        return None
    return value if value == value and abs(value) < 1e6 else None  # NaN, -G_MAXDOUBLE
