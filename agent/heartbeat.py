"""The power sensor's heartbeat: "this boot was alive at this time", durable every round.

Rewritten every round, so it is kept in a :class:`agent.statefile.SlotFile` — one sector
in place, two slots against torn writes — instead of a file replaced each time (a data
block, an inode and a directory block per round).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.statefile import SlotFile
from coverwatch.protocol import BOOT_ID_RE

_MAGIC = b"CWHB"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    boot_id: str
    wall_time: datetime


def parse_heartbeat(document: object) -> Heartbeat | None:
    """A heartbeat from its JSON document; None if it is not a valid one."""
    try:
        boot_id = str(document["boot_id"])  # type: ignore[index]
        wall_time = datetime.fromisoformat(document["wall_time"])  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        return None
    if not re.fullmatch(BOOT_ID_RE, boot_id) or wall_time.tzinfo is None:
        return None
    return Heartbeat(boot_id, wall_time)


class HeartbeatFile:
    """The last heartbeat, in two alternating one-sector slots of a preallocated file."""

    def __init__(self, path: Path, *, sync: Callable[[int], None] = os.fdatasync) -> None:
        self.path = path
        self._slots = SlotFile(path, magic=_MAGIC, sync=sync)

    @property
    def direct(self) -> bool:
        return self._slots.direct

    def load(self) -> Heartbeat | None:
        """The newest heartbeat that was written whole; None when there is none."""
        return parse_heartbeat(self._slots.load())

    def write(self, heartbeat: Heartbeat) -> None:
        """Store ``heartbeat`` durably (synced before this returns) in the older slot."""
        self._slots.write(
            {"boot_id": heartbeat.boot_id, "wall_time": heartbeat.wall_time.isoformat()}
        )
