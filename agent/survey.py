"""Survey mode: walk a village with the probe and log each signal reading where it was taken.

``coverwatch-probe survey -o walk.csv`` reads every modem of the kit every few seconds,
tags each signal reading with the current GPS fix (:mod:`agent.gps`) and appends it to a
CSV file in the coverwatch survey format, which the server imports as survey evidence
(``coverwatch survey import walk.csv``; geo/README.md), apart from any probe's readings.
A reading without service is a point too (``service`` none): that is what a dead-zone
survey is for. A round without a fresh fix is not written (a point must have a place) and
is counted. Each round is flushed and fsynced: a walk cannot be repeated, and the
battery of a carried probe can run out at any moment.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Final, TextIO

from agent.gps import Fix
from coverwatch import protocol
from coverwatch.errors import ConfigError

COLUMNS: Final = (
    "time",
    "lon",
    "lat",
    "accuracy_m",
    "operator",
    "technology",
    "service",
    "cell_id",
    "tac",
    "pci",
    "rsrp_dbm",
    "rsrq_db",
    "sinr_db",
    "rssi_dbm",
    "rscp_dbm",
    "device",
)


def _text(value: float | int | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    if digits is not None:
        return f"{value:.{digits}f}"
    return str(value)


def survey_row(reading: protocol.SignalReading, fix: Fix, device: str) -> list[str]:
    """One CSV row: the reading, where it was taken, and by which probe and modem."""
    service = "serving" if reading.registered else "none"
    # Without service there is no network code: the SIM's operator is the one missed.
    operator = reading.operator_code or reading.sim_operator_code
    return [
        reading.taken_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        _text(fix.lon, 7),
        _text(fix.lat, 7),
        _text(fix.accuracy_m, 1),
        operator or "",
        reading.technology or "",
        service,
        _text(reading.cell_id) if reading.registered else "",
        _text(reading.tac) if reading.registered else "",
        "",
        _text(reading.rsrp_dbm) if reading.registered else "",
        _text(reading.rsrq_db) if reading.registered else "",
        _text(reading.sinr_db) if reading.registered else "",
        _text(reading.rssi_dbm) if reading.registered else "",
        _text(reading.rscp_dbm) if reading.registered else "",
        device,
    ]


@dataclass
class SurveyLog:
    """The CSV file a survey appends to, its header written once."""

    path: Path
    points: int = 0
    _file: TextIO | None = None

    def open(self) -> SurveyLog:
        try:
            existing = self.path.stat().st_size if self.path.exists() else 0
            self._file = self.path.open("a", encoding="utf-8", newline="")
        except OSError as error:
            raise ConfigError(
                "--output",
                f"cannot write {self.path}: {error.strerror}",
                "give a file in a writable directory, e.g. -o ~/walk.csv",
            ) from None
        if existing == 0:
            self._write([list(COLUMNS)])
        return self

    def append(self, rows: Iterable[list[str]]) -> None:
        rows = list(rows)
        if rows:
            self._write(rows)
            self.points += len(rows)

    def _write(self, rows: list[list[str]]) -> None:
        assert self._file is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self._file.write(buffer.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class SurveyRound:
    """What one round gave: the points written, or why none were."""

    points: int
    signal_readings: int
    without_fix: bool
    errors: list[str]


def survey_round(
    take_round: Callable[[], list[protocol.Reading]],
    latest_fix: Callable[[], Fix | None],
    log: SurveyLog,
    probe_id: str,
) -> SurveyRound:
    """Read the modems, tag their signal readings with the fix, append them."""
    readings = take_round()
    fix = latest_fix()
    signals = [r for r in readings if isinstance(r, protocol.SignalReading)]
    errors = [
        f"{r.sensor}: {r.error}" for r in readings if isinstance(r, protocol.SensorErrorReading)
    ]
    if fix is None:
        return SurveyRound(0, len(signals), True, errors)
    rows = [survey_row(r, fix, f"{probe_id}/{r.modem}" if r.modem else probe_id) for r in signals]
    log.append(rows)
    return SurveyRound(len(rows), len(signals), False, errors)
