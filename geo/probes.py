"""Probe status (online, offline, stale, unknown) and power outages, as maps and the API show them.

The collector keeps each probe's latest state in ``probe_status``; the ``probe_health``
view adds the registry's position and a ``stale`` flag (silent for 3 report intervals).
The status shown here is, in this order:

- **offline**: the probe said so (its last will, or a clean shutdown);
- **stale**: it has been silent for 3 report intervals without saying goodbye;
- **online**: it reported recently;
- **unknown**: registered but never heard from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import psycopg

from geo.coverage import TimeWindow

ProbeState: TypeAlias = Literal["online", "offline", "stale", "unknown"]
PROBE_STATES: Final[tuple[ProbeState, ...]] = ("online", "offline", "stale", "unknown")


@dataclass(frozen=True, slots=True)
class ProbeHealth:
    probe_id: str
    status: ProbeState
    last_seen: datetime | None
    state_changed_at: datetime | None
    agent_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
            "state_changed_at": None
            if self.state_changed_at is None
            else self.state_changed_at.isoformat(),
            "agent_version": self.agent_version,
        }


def status_of(state: str | None, last_seen: datetime | None, stale: bool | None) -> ProbeState:
    """The shown status from ``probe_health``'s state, last_seen and stale columns."""
    if state == "offline":
        return "offline"
    if last_seen is None:
        return "unknown"
    return "stale" if stale else "online"


def probe_health(connection: psycopg.Connection[Any]) -> dict[str, ProbeHealth]:
    """Every probe in the registry or in ``probe_status``, by id."""
    rows = connection.execute(
        """SELECT p.probe_id, h.state, h.stale, h.last_seen, h.state_changed_at,
                  h.agent_version
           FROM probes p FULL JOIN probe_health h USING (probe_id)"""
    ).fetchall()
    result = {}
    for probe_id, state, stale, last_seen, changed, version in rows:
        status = status_of(state, last_seen, stale)
        result[probe_id] = ProbeHealth(probe_id, status, last_seen, changed, version)
    return result


@dataclass(frozen=True, slots=True)
class Outage:
    started_at: datetime
    ended_at: datetime

    @property
    def hours(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() / 3600


def power_outages(
    connection: psycopg.Connection[Any], window: TimeWindow
) -> dict[str, list[Outage]]:
    """Outages overlapping the window, clipped to it, oldest first, by probe id."""
    rows = connection.execute(
        """SELECT probe_id, greatest(outage_started_at, %(start)s),
                  least(outage_ended_at, %(end)s)
           FROM power_outages
           WHERE outage_ended_at > %(start)s AND outage_started_at < %(end)s
           ORDER BY probe_id, outage_started_at""",
        {"start": window.start, "end": window.end},
    ).fetchall()
    result: dict[str, list[Outage]] = defaultdict(list)
    for probe_id, started, ended in rows:
        result[probe_id].append(Outage(started, ended))
    return dict(result)
