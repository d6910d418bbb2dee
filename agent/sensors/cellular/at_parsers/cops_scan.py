"""``AT+COPS=?`` (3GPP TS 27.007 §7.3): every operator the modem can hear.

The reply is one list, which some modems wrap over several lines::

    +COPS: (2,"Viettel","Viettel","45204",7),(1,"VN Mobifone","Mobifone","45201",7),
    (3,"vodafone AU","voda AU","50503",0),,(0,1,2,3,4,5),(0,1,2)

Each group is ``(<stat>,"<long name>","<short name>","<numeric>"[,<AcT>])``. An empty
field (``,,``) ends the operators: the groups after it list the ``<mode>`` and
``<format>`` values the modem supports, not networks. A reply with no operator at all
(``+COPS: ,,(0-4),(0-2)``) is a scan that heard nothing.
"""

from __future__ import annotations

from typing import Final

from agent.sensors.base import SensorError
from agent.sensors.cellular.at_parsers.generic import COPS_TECHNOLOGY, to_int
from agent.sensors.cellular.at_session import AtReply, split_at_fields
from agent.sensors.cellular.scan_result import COPS_STATUS, ScannedNetwork, is_operator_code

# A group with fewer fields cannot name an operator: <stat>, long, short, numeric.
_OPERATOR_FIELDS: Final = 4


def parse_cops_scan(reply: AtReply) -> list[ScannedNetwork]:
    """The operators of a complete ``AT+COPS=?`` reply, one per (operator, AcT) group.

    Raises :class:`SensorError` when the reply is no scan (cut short, refused, or without
    a ``+COPS:`` line): that is a failed scan, not one that heard nothing. A malformed
    group (garbled, a code that is no MCC-MNC) is left out; the others are kept.
    """
    if reply.timed_out:
        raise SensorError(
            f"the modem did not finish answering AT+COPS=? ({reply.error}); the scan takes "
            f"1-3 minutes, raise sensors.cellular.scan_timeout_s if the modem is slower"
        )
    if not reply.ok:
        raise SensorError(
            f"the modem refused AT+COPS=? ({reply.error}); it may be busy registering "
            f"or not support a network scan"
        )
    text = _cops_text(reply.lines)
    if text is None:
        got = " / ".join(reply.lines)[:200]
        raise SensorError(f"the modem's answer to AT+COPS=? has no +COPS: line ({got!r})")
    networks = []
    for group in _operator_groups(text):
        network = _network(split_at_fields(group))
        if network is not None:
            networks.append(network)
    return networks


def _cops_text(lines: tuple[str, ...]) -> str | None:
    """The body of the ``+COPS:`` line (any case: some firmware echoes "+cops:") with the
    lines wrapped after it joined on."""
    for index, line in enumerate(lines):
        if line[: len("+COPS:")].upper() == "+COPS:":
            return "".join([line[len("+COPS:") :], *lines[index + 1 :]]).strip()
    return None


def _operator_groups(text: str) -> list[str]:
    """The parenthesised groups before the first empty field, quotes respected."""
    groups: list[str] = []
    depth = 0
    quoted = False
    start = 0
    previous = ","  # what came before the current top-level item
    for position, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        if quoted:
            continue
        if char == "(":
            if depth == 0:
                start = position + 1
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append(text[start:position])
                previous = ")"
        elif char == "," and depth == 0:
            if previous == ",":  # an empty field: the supported <mode>s and <format>s follow
                break
            previous = ","
        elif depth == 0 and not char.isspace():
            previous = char
    return groups


def _network(fields: list[str]) -> ScannedNetwork | None:
    if len(fields) < _OPERATOR_FIELDS:
        return None
    stat = to_int(fields[0])
    code = fields[3].strip()
    if stat not in COPS_STATUS or not is_operator_code(code):
        return None
    act = to_int(fields[4]) if len(fields) > _OPERATOR_FIELDS else None
    name = fields[1].strip() or fields[2].strip() or None
    return ScannedNetwork(
        operator_code=code,
        status=COPS_STATUS[stat],
        technology=COPS_TECHNOLOGY.get(act) if act is not None else None,
        operator_name=name,
    )
