"""Cells: the serving and neighbour cells a modem sees, one ``cell`` reading each.

Every ``cells_interval_minutes`` (a setting of the cellular table; 0 turns it off) the
cellular sensor asks the backend that measured the round for the cells the modem sees:
ModemManager's ``mmcli -m N --get-cell-info`` (:mod:`.mmcli_cells`), Quectel's
``AT+QENG="servingcell"`` and ``AT+QENG="neighbourcell"``
(:mod:`.at_parsers.quectel_cells`), Fibocom's ``AT+GTCCINFO?``
(:mod:`.at_parsers.fibocom_cells`), SIMCom's ``AT+CPSI?`` (serving cell only,
:mod:`.at_parsers.simcom_cells`). A modem that names no cells still gives its serving
cell, from the round's own registration (cell id, TAC, levels).

Cells never cost the signal reading: a command the modem does not support, an error
or a garbled reply is logged, reported once as a ``sensor_error`` (until cells are
read again), and the round goes on.

What is kept, and why (the server tells a tower outage from a power cut with it):

* a neighbour needs an identity on the air (its channel and pci, or a cell id) and at
  least one level: a neighbour listed with '-' for every value is a frequency the
  network told the modem to watch, not a cell it saw;
* a neighbour the modem names without a network is the serving network's (modems only
  measure the neighbours their own network lists); one that is a serving cell again
  (same technology, channel and pci) is not sent twice;
* at most :data:`MAX_CELLS` per round, serving cells first, then the strongest: a cell
  costs 25-45 bytes of payload in the compact encoding (about 300 as JSON).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from agent.sensors._system import within
from agent.sensors.base import Stamp
from agent.sensors.cellular.state import CellularState
from agent.statefile import SlotFile
from coverwatch.protocol import CellReading, Reading, SensorErrorReading, Technology

logger = logging.getLogger("coverwatch.agent")

# Serving cells plus the strongest neighbours; a modem lists up to ~20 on a busy site.
MAX_CELLS: Final = 16
# Where the last cells round of each modem is kept, under the probe's state_dir.
STATE_FILE: Final = "cells-schedule"  # an agent.statefile.SlotFile


@dataclass(frozen=True)
class CellInfo:
    """One cell as a modem described it, before it is checked against the protocol."""

    serving: bool
    technology: Technology | None = None
    operator_code: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    pci: int | None = None
    channel: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    rscp_dbm: float | None = None
    ecio_db: float | None = None

    def to_reading(self, stamp: Stamp, *, modem: str | None = None) -> CellReading:
        """The wire reading; values outside the protocol's ranges become None."""
        return CellReading(
            **stamp.base(),
            serving=self.serving,
            technology=self.technology,
            operator_code=_code(self.operator_code),
            cell_id=_int_within(self.cell_id, 0, 2**36 - 1),
            tac=_int_within(self.tac, 0, 2**24 - 1),
            pci=_int_within(self.pci, 0, 1007),
            channel=_int_within(self.channel, 0, 3_279_165),
            rsrp_dbm=within(self.rsrp_dbm, -160, -20),
            rsrq_db=within(self.rsrq_db, -40, 20),
            sinr_db=within(self.sinr_db, -30, 50),
            rssi_dbm=within(self.rssi_dbm, -130, 0),
            rscp_dbm=within(self.rscp_dbm, -130, -20),
            ecio_db=within(self.ecio_db, -40, 0),
            modem=modem[:255] if modem else None,
        )

    def strength_dbm(self) -> float | None:
        """The level cells are ranked by (RSRP, else RSCP, else RSSI), in range."""
        for value, low, high in (
            (self.rsrp_dbm, -160, -20),
            (self.rscp_dbm, -130, -20),
            (self.rssi_dbm, -130, 0),
        ):
            if within(value, low, high) is not None:
                return value
        return None

    def identified(self) -> bool:
        """Whether a cell can be told from others: a cell id, or its pci on a channel."""
        cell_id = _int_within(self.cell_id, 0, 2**36 - 1)
        on_air = (
            _int_within(self.pci, 0, 1007) is not None
            and _int_within(self.channel, 0, 3_279_165) is not None
        )
        return cell_id is not None or on_air

    def measured(self) -> bool:
        return self.strength_dbm() is not None or within(self.rsrq_db, -40, 20) is not None


class CellSource(Protocol):
    """A backend that can list the cells its modem sees (after it measured the round)."""

    def read_cells(self, serving_technology: Technology | None) -> list[CellInfo]: ...


class CellsUnsupported(Exception):
    """The modem (or ModemManager) has no way to list cells: noted once, never retried
    more often than the cells interval."""


def serving_cell_of(state: CellularState) -> CellInfo | None:
    """The round's own serving cell, for modems that list no cells (or fail to)."""
    if state.registration not in ("home", "roaming") or state.cell_id is None:
        return None
    return CellInfo(
        serving=True,
        technology=state.technology,
        operator_code=state.operator_code,
        cell_id=state.cell_id,
        tac=state.tac,
        rsrp_dbm=state.rsrp_dbm,
        rsrq_db=state.rsrq_db,
        sinr_db=state.sinr_db,
        rssi_dbm=state.rssi_dbm,
        rscp_dbm=state.rscp_dbm,
        ecio_db=state.ecio_db,
    )


def chosen_cells(cells: Iterable[CellInfo], state: CellularState) -> list[CellInfo]:
    """The cells worth sending (see the module docstring), serving first, at most MAX_CELLS.

    The backend's serving cell gains what the round knows about it and the list lacks
    (cell id, TAC, network); without one from the backend, the round's serving cell
    stands in.
    """
    cells = list(cells)
    registered = state.registration in ("home", "roaming")
    serving = [cell for cell in cells if cell.serving]
    if not serving:
        fallback = serving_cell_of(state)
        serving = [fallback] if fallback else []
    elif registered:
        serving = _filled_from_state(serving, state)
    network = next((cell.operator_code for cell in serving if cell.operator_code), None)
    network = network or (state.operator_code if registered else None)
    # Quectel lists the serving cell among its intra-frequency neighbours too.
    on_air = {
        (cell.technology, cell.channel, cell.pci)
        for cell in serving
        if cell.channel is not None and cell.pci is not None
    }
    neighbours = [
        cell if cell.operator_code else replace(cell, operator_code=network)
        for cell in cells
        if not cell.serving
        and cell.identified()
        and cell.measured()
        and (cell.technology, cell.channel, cell.pci) not in on_air
    ]
    neighbours.sort(key=lambda cell: -(cell.strength_dbm() or -1000.0))
    return (serving + neighbours)[:MAX_CELLS]


def _filled_from_state(serving: list[CellInfo], state: CellularState) -> list[CellInfo]:
    """The backend's serving cells, the one the registration names completed from the
    round (cell id, TAC, network). With EN-DC (5G NSA) the registration names the LTE
    anchor, never the NR leg."""
    named = state.technology
    if named == "nr5g" and len(serving) > 1 and any(c.technology == "lte" for c in serving):
        named = "lte"
    return [
        replace(
            cell,
            operator_code=cell.operator_code or state.operator_code,
            cell_id=cell.cell_id if cell.cell_id is not None else state.cell_id,
            tac=cell.tac if cell.tac is not None else state.tac,
        )
        if cell.technology in (named, None)
        else cell
        for cell in serving
    ]


class CellsSchedule:
    """When the cells of one modem are next due, kept across restarts in ``state_dir``.

    The first round after the schedule starts (a fresh probe, or none on record) only
    starts the clock: the first cells follow one interval later, after the modem has
    settled on its network. A wall clock that went back (no RTC before NTP) makes the
    cells due, as for the throughput test.
    """

    def __init__(self, interval_minutes: int, key: str, state_dir: Path | None) -> None:
        self._interval = timedelta(minutes=interval_minutes)
        self._key = key
        # One sector rewritten in place per cells round (agent.statefile), not a file
        # replaced: ~0.5 KB on the card instead of ~18 KB, every 15 minutes per modem.
        self._file = SlotFile(state_dir / STATE_FILE) if state_dir is not None else None
        self._last: datetime | None = self._load()

    @property
    def enabled(self) -> bool:
        return self._interval > timedelta(0)

    def due(self, now: datetime) -> bool:
        if not self.enabled:
            return False
        now = now.astimezone(UTC)
        if self._last is None:
            self._record(now)
            return False
        return self._last > now or now - self._last >= self._interval

    def done(self, now: datetime) -> None:
        self._record(now.astimezone(UTC))

    def _record(self, now: datetime) -> None:
        self._last = now
        if self._file is None:
            return
        recorded = self._all()
        recorded[self._key] = now.isoformat()
        try:
            self._file.write(recorded)
        except (OSError, ValueError) as error:
            logger.warning("cannot keep the cells schedule in %s: %s", self._file.path, error)

    def _all(self) -> dict[str, str]:
        if self._file is None:
            return {}
        try:
            document = self._file.load()
        except OSError:
            return {}
        if not isinstance(document, dict):
            return {}
        return {str(key): str(value) for key, value in document.items()}

    def _load(self) -> datetime | None:
        text = self._all().get(self._key)
        if text is None:
            return None
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        return when if when.tzinfo is not None else None


class CellsRound:
    """The cells part of one cellular sensor's round: due or not, read, never raising."""

    def __init__(
        self,
        schedule: CellsSchedule,
        *,
        sensor_name: str,
        modem: str | None,
    ) -> None:
        self._schedule = schedule
        self._sensor_name = sensor_name
        self._modem = modem
        self._reported: str | None = None  # the failure already sent as a sensor_error

    def read(
        self,
        stamp: Stamp,
        state: CellularState,
        source: CellSource | None,
    ) -> list[Reading]:
        if not self._schedule.due(stamp.taken_at):
            return []
        self._schedule.done(stamp.taken_at)
        cells: list[CellInfo] = []
        try:
            if source is not None:
                cells = source.read_cells(state.technology)
        except CellsUnsupported as reason:
            if self._reported != str(reason):
                logger.info("%s: cells come from the round only: %s", self._sensor_name, reason)
                self._reported = str(reason)
        except Exception as error:  # cells never cost the round its signal reading
            failure = str(error) or type(error).__name__
            logger.warning("%s: cannot list the cells: %s", self._sensor_name, failure)
            readings = self._readings(stamp, chosen_cells([], state))
            if failure != self._reported:
                self._reported = failure
                readings.append(
                    SensorErrorReading(
                        **stamp.base(),
                        sensor=self._sensor_name[:255],
                        error=f"cells: {failure}"[:2000],
                    )
                )
            return readings
        else:
            self._reported = None
        return self._readings(stamp, chosen_cells(cells, state))

    def _readings(self, stamp: Stamp, cells: list[CellInfo]) -> list[Reading]:
        return [cell.to_reading(stamp, modem=self._modem) for cell in cells]


def _code(code: str | None) -> str | None:
    return code if code is not None and re.fullmatch(r"[0-9]{5,6}", code) else None


def _int_within(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None
