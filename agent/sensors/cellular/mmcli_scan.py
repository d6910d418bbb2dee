"""``mmcli -m N --3gpp-scan --timeout=S -J``: ModemManager's operator scan.

mmcli prints one string per network under ``modem.3gpp.scan-networks``
(cli/mmcli-output.c, ``build_network_info``)::

    {"modem": {"3gpp": {"scan-networks": [
        "operator-code: 26201, operator-name: TDG, access-technologies: lte, availability: current"
    ]}}}

A scan that heard nothing is not ``[]`` here: mmcli exits with "couldn't scan networks in
the modem: 'unknown error'" (see :func:`~.scan.scan_over_mmcli`).
``access-technologies`` may name several (``gsm, umts``): the network is then listed
once per generation. ``--`` stands for a value ModemManager does not know.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from agent.sensors.base import SensorError
from agent.sensors.cellular.modemmanager import MMCLI_TECHNOLOGY
from agent.sensors.cellular.scan_result import ScannedNetwork, is_operator_code
from coverwatch.protocol import ScanStatus, Technology

_NETWORK: Final = re.compile(
    r"^operator-code: (?P<code>.*?), operator-name: (?P<name>.*), "
    r"access-technologies: (?P<technologies>.*), availability: (?P<availability>[a-z-]+)$"
)
_AVAILABILITY: Final[dict[str, ScanStatus]] = {
    "unknown": "unknown",
    "available": "available",
    "current": "current",
    "forbidden": "forbidden",
}


def parse_mmcli_scan(text: str) -> list[ScannedNetwork]:
    """The networks of ``--3gpp-scan -J``; an entry that does not parse is left out.

    Raises :class:`SensorError` when the output is not the scan's JSON at all.
    """
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise SensorError(f"mmcli --3gpp-scan did not print JSON ({error})") from error
    gpp = ((document if isinstance(document, dict) else {}).get("modem") or {}).get("3gpp")
    if not isinstance(gpp, dict) or "scan-networks" not in gpp:
        raise SensorError(f"mmcli --3gpp-scan printed no scan-networks: {text[:200]!r}")
    entries = gpp.get("scan-networks") or []
    if isinstance(entries, str):
        entries = [entries]
    networks: list[ScannedNetwork] = []
    for entry in entries if isinstance(entries, list) else []:
        match = _NETWORK.match(str(entry).strip())
        if match is None:
            continue
        code = match["code"].strip()
        if not is_operator_code(code):
            continue
        name = match["name"].strip()
        status = _AVAILABILITY.get(match["availability"], "unknown")
        nicks = [nick.strip() for nick in match["technologies"].split(",")]
        generations: list[Technology | None] = list(
            dict.fromkeys(MMCLI_TECHNOLOGY[n] for n in nicks if n in MMCLI_TECHNOLOGY)
        )
        for technology in generations or [None]:
            networks.append(
                ScannedNetwork(
                    operator_code=code,
                    status=status,
                    technology=technology,
                    operator_name=None if name in ("", "--") else name,
                )
            )
    return networks
