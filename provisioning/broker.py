"""The deployment broker's users and ACL, derived from ``coverwatch.protocol``.

Mosquitto runs with ``use_username_as_clientid true`` (deploy/mosquitto/mosquitto.conf):
a client's id *is* its user name, so a session belongs to a login. A probe's user is its
probe id, so no probe can take over the collector's persistent session or another
probe's connection. The flip side: every process that holds a session needs a user of
its own. Collectors sharing the load on a ``$share/<group>/…`` subscription each have one
(``collector``, ``collector-2``, ``collector-3``, …; ``coverwatch deploy add-collector``),
and probe ids starting with ``collector`` are refused so the names never collide.

The ACL (Mosquitto's ``acl_file``) is written to ``secrets/acl`` with a block for every
collector user found in ``secrets/passwd``; ``deploy/mosquitto/acl`` in the repository is
the same file for a deployment with one collector (a test compares them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from coverwatch import protocol

COLLECTOR_USER = "collector"
# Broker users of collectors: "collector", then "collector-2", "collector-3", …
_COLLECTOR_USER_RE = re.compile(rf"^{COLLECTOR_USER}(?:-(?P<number>[2-9]|[1-9][0-9]+))?$")
# Probe ids may not start with this: they share the broker's user namespace.
RESERVED_PREFIX = COLLECTOR_USER


def collector_user(number: int) -> str:
    """The broker user of the ``number``-th collector (1 is ``collector``)."""
    if number < 1:
        raise ValueError(f"collector numbers start at 1, got {number}")
    return COLLECTOR_USER if number == 1 else f"{COLLECTOR_USER}-{number}"


def collector_number(username: str) -> int | None:
    """1 for ``collector``, n for ``collector-n``; None for any other user (a probe)."""
    match = _COLLECTOR_USER_RE.match(username)
    if match is None:
        return None
    return int(match["number"] or 1)


def collector_password_key(number: int) -> str:
    """The ``.env`` variable holding that collector's broker password."""
    return "COLLECTOR_MQTT_PASSWORD" if number == 1 else f"COLLECTOR_{number}_MQTT_PASSWORD"


def collector_users(usernames: Iterable[str]) -> list[str]:
    """The collector users among ``usernames``, in order of their number."""
    numbered = {collector_number(name): name for name in usernames}
    return [numbered[number] for number in sorted(n for n in numbered if n is not None)]


def is_reserved_probe_id(probe_id: str) -> bool:
    return probe_id.startswith(RESERVED_PREFIX)


def _channel(channel: str, who: str) -> str:
    return f"{protocol.TOPIC_PREFIX}/{who}/{channel}"


def acl_text(collectors: Iterable[str]) -> str:
    """Mosquitto's ACL file: probes confined to their own topics, then one block per collector.

    Everything not granted is denied. Mosquitto 2 drops a denied publish silently (MQTT
    3.1.1 cannot refuse one) and does not deliver a message a client may not read, even
    when its subscription (e.g. ``#``) was accepted.
    """
    users = list(collectors)
    if not users:
        raise ValueError("the ACL needs at least one collector user")
    for user in users:
        if collector_number(user) is None:
            raise ValueError(f"{user!r} is not a collector user (collector, collector-2, …)")
    readings, status, ack = protocol.READINGS_CHANNEL, protocol.STATUS_CHANNEL, protocol.ACK_CHANNEL
    lines = [
        "# coverwatch broker ACL (Mosquitto 2). Mosquitto reads secrets/acl, which",
        "# `coverwatch deploy init`, `deploy add-collector` and `deploy acl` write with a",
        "# block per collector user; deploy/mosquitto/acl in the repository is that file",
        "# for a deployment with one collector (tests/test_deploy.py keeps them equal).",
        "# Change provisioning/broker.py, not either file. Whatever is not granted here",
        "# is denied.",
        "#",
        "# Probes. A probe's broker user is its probe id and the broker takes the user",
        "# name as the client id (use_username_as_clientid), so %u is the probe: it may",
        "# publish its readings and status (birth, goodbye, last will) and read only the",
        "# commit acknowledgements the collector sends it. Nothing else, not even its",
        "# own ack topic to write. Patterns apply to every user, collectors included.",
        f"pattern write {_channel(readings, '%u')}",
        f"pattern write {_channel(status, '%u')}",
        f"pattern read {_channel(ack, '%u')}",
    ]
    for user in users:
        lines += [
            "",
            "# A collector: reads every probe's readings and status, directly or through a",
            "# shared subscription ($share/<group>/...), and acknowledges commits to every",
            "# probe. One block per collector user: each collector has its own session.",
            f"user {user}",
            f"topic read {protocol.READINGS_TOPIC_FILTER}",
            f"topic read {protocol.STATUS_TOPIC_FILTER}",
            f"topic read $share/+/{protocol.READINGS_TOPIC_FILTER}",
            f"topic read $share/+/{protocol.STATUS_TOPIC_FILTER}",
            f"topic write {_channel(ack, '+')}",
        ]
    return "\n".join(lines) + "\n"
