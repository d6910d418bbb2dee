"""The tower registry: cells in the OpenCelliD / Mozilla Location Service CSV layout.

Both projects export one cell a row::

    radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal
    LTE,452,4,12040,31785217,215,106.2551,22.6663,1450,31,1,1459814400,1700000000,0

OpenCelliD's per-country downloads (``452.csv.gz``) have no header line; MLS exports
and OpenCelliD's full file have one. Both are read, gzipped or not. ``radio`` is GSM,
UMTS, LTE or NR (CDMA rows are skipped: Vietnam has no CDMA network); ``area`` is the
LAC or TAC; ``cell`` the CI (GSM), UTRAN cell id (UMTS), ECI (LTE) or NCI (NR);
``unit`` the PSC or PCI; ``range`` metres; ``created``/``updated`` Unix seconds;
``averageSignal`` dBm, 0 when unknown.

Every row is checked on its own like the village registry's (``line 7: cell: …``):
bad rows are reported and the good ones kept. Rows of another country's MCC are
skipped and counted (``mcc=None`` keeps every country). Re-importing a cell (same
technology, network, area and cell id) updates it in place. A registry position is an
estimate from crowd-sourced samples, never a surveyed mast: the map and the analysis
say so wherever they use one.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg

from coverwatch.errors import CoverwatchError
from geo import registry
from geo.coverage import TimeWindow
from geo.projection import haversine_m
from geo.registry import Problem, RowError
from geo.text import normalise_key

COLUMNS: Final = (
    "radio",
    "mcc",
    "net",
    "area",
    "cell",
    "unit",
    "lon",
    "lat",
    "range",
    "samples",
    "changeable",
    "created",
    "updated",
    "averageSignal",
)
REQUIRED: Final = frozenset({"radio", "mcc", "net", "area", "cell", "lon", "lat"})
# The registries' radio names → the technologies readings use.
TECHNOLOGY_OF_RADIO: Final[dict[str, str]] = {
    "gsm": "gsm",
    "umts": "umts",
    "lte": "lte",
    "nr": "nr5g",
    "5g": "nr5g",
}
SKIPPED_RADIOS: Final = frozenset({"cdma"})
# Largest area code and cell id per technology (3GPP TS 23.003).
MAX_AREA: Final[dict[str, int]] = {"gsm": 0xFFFF, "umts": 0xFFFF, "lte": 0xFFFF, "nr5g": 0xFFFFFF}
MAX_CELL: Final[dict[str, int]] = {
    "gsm": 0xFFFF,
    "umts": 0x0FFFFFFF,
    "lte": 0x0FFFFFFF,
    "nr5g": 0xFFFFFFFFF,
}
MAX_PCI: Final[dict[str, int]] = {"gsm": 63, "umts": 511, "lte": 503, "nr5g": 1007}
# A registry range beyond this is an artefact of few, scattered samples, not a cell.
MAX_PLAUSIBLE_RANGE_M: Final = 100_000
VIETNAM_MCC: Final = 452
MAX_PROBLEMS_KEPT: Final = 10_000


@dataclass(frozen=True, slots=True)
class TowerCell:
    technology: str
    mcc: int
    mnc: int
    area: int
    cell: int
    pci: int | None
    lon: float
    lat: float
    range_m: int | None
    samples: int | None
    changeable: bool | None
    created_at: datetime | None
    updated_at: datetime | None
    average_signal_dbm: float | None
    where: str = ""

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        return (self.technology, self.mcc, self.mnc, self.area, self.cell)

    @property
    def site(self) -> str:
        """The tower: an LTE eNB's cells (ECI / 256) share one; other cells stand alone."""
        network = f"{self.mcc}-{self.mnc:02d}"
        if self.technology == "lte":
            return f"lte:{network}:{self.cell >> 8}"
        return f"{self.technology}:{network}:{self.area}:{self.cell}"


@dataclass
class ParsedCells:
    """The cells a file held, every problem, and what was rejected or skipped."""

    cells: dict[tuple[str, int, int, int, int], TowerCell] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    rejected: int = 0
    other_countries: int = 0
    unsupported_radio: int = 0

    def add_problem(self, problem: Problem) -> None:
        # A world file can hold millions of bad rows; count them all, keep the first.
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)


def _integer(value: str, field_name: str, low: int, high: int) -> int:
    text = value.strip()
    if not text:
        raise RowError(field_name, "is missing")
    try:
        number = int(text)
    except ValueError:
        if text.lstrip("+-").isdigit():  # beyond Python's int-from-text digit limit
            raise RowError(
                field_name, f"a number of {len(text)} digits is not between {low} and {high}"
            ) from None
        try:
            as_float = float(text)
        except ValueError:
            raise RowError(field_name, f"expected a whole number, got {text[:40]!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise RowError(field_name, f"expected a whole number, got {text[:40]!r}") from None
        number = int(as_float)
    if not low <= number <= high:
        raise RowError(field_name, f"{number} is not between {low} and {high}")
    return number


def _optional_integer(value: str, field_name: str, low: int, high: int) -> int | None:
    return _integer(value, field_name, low, high) if value.strip() else None


def _lenient(value: str, field_name: str, where: str, problems: list[Problem]) -> int | None:
    """An optional figure of a cell: what cannot be read is unknown, with a warning (the
    cell itself is still good)."""
    try:
        return _optional_integer(value, field_name, -(2**31), 2**31 - 1)
    except RowError as error:
        problems.append(
            Problem(where, f"{error.message}; stored as unknown", "warning", field_name)
        )
        return None


def _coordinate(value: str, field_name: str) -> float:
    text = value.strip()
    if not text:
        raise RowError(field_name, "is missing")
    try:
        number = float(text)
    except ValueError:
        raise RowError(field_name, f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(number):
        raise RowError(field_name, f"expected a finite number, got {text[:40]!r}")
    return number


def _timestamp(value: str, field_name: str) -> datetime | None:
    seconds = _optional_integer(value, field_name, 0, 4_102_444_800)  # up to 2100
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _cell_from(
    values: dict[str, str],
    where: str,
    parsed: ParsedCells,
    *,
    mcc_wanted: int | None,
    allow_outside: bool,
) -> TowerCell | None:
    """One row as a cell; None for a row skipped on purpose (another country, CDMA)."""
    radio = values.get("radio", "").strip()
    key = normalise_key(radio)
    if key in SKIPPED_RADIOS:
        parsed.unsupported_radio += 1
        return None
    technology = TECHNOLOGY_OF_RADIO.get(key)
    if technology is None:
        raise RowError("radio", f"expected GSM, UMTS, LTE or NR, got {radio[:40]!r}")
    mcc = _integer(values.get("mcc", ""), "mcc", 200, 799)
    if mcc_wanted is not None and mcc != mcc_wanted:
        parsed.other_countries += 1
        return None
    mnc = _integer(values.get("net", ""), "net", 0, 999)
    area = _integer(values.get("area", ""), "area", 0, MAX_AREA[technology])
    cell = _integer(values.get("cell", ""), "cell", 0, MAX_CELL[technology])
    lon = _coordinate(values.get("lon", ""), "lon")
    lat = _coordinate(values.get("lat", ""), "lat")
    problems: list[Problem] = []
    registry.check_position(lon, lat, where, problems, allow_outside=allow_outside)
    pci = _lenient(values.get("unit", ""), "unit", where, problems)
    if pci is not None and not 0 <= pci <= MAX_PCI[technology]:
        if pci != -1:  # -1 is how OpenCelliD writes "unknown"
            problems.append(
                Problem(where, f"{pci} is not a {technology} PCI/PSC (0-{MAX_PCI[technology]}); "
                        "stored as unknown", "warning", "unit")
            )  # fmt: skip
        pci = None
    range_m = _lenient(values.get("range", ""), "range", where, problems)
    if range_m is not None and not 0 <= range_m <= MAX_PLAUSIBLE_RANGE_M:
        problems.append(
            Problem(where, f"{range_m} m is not a cell's reach; stored as unknown",
                    "warning", "range")
        )  # fmt: skip
        range_m = None
    samples = _optional_integer(values.get("samples", ""), "samples", 0, 2**31 - 1)
    changeable_text = values.get("changeable", "").strip()
    if changeable_text not in ("", "0", "1"):
        raise RowError("changeable", f"expected 0 or 1, got {changeable_text[:40]!r}")
    average = _lenient(values.get("averageSignal", ""), "averageSignal", where, problems)
    for problem in problems:
        parsed.add_problem(problem)
    return TowerCell(
        technology=technology,
        mcc=mcc,
        mnc=mnc,
        area=area,
        cell=cell,
        pci=pci,
        lon=lon,
        lat=lat,
        range_m=range_m,
        samples=samples,
        changeable=None if not changeable_text else changeable_text == "1",
        created_at=_timestamp(values.get("created", ""), "created"),
        updated_at=_timestamp(values.get("updated", ""), "updated"),
        # OpenCelliD writes 0 for "no signal samples"; a positive dBm is not a reading.
        average_signal_dbm=float(average) if average is not None and -150 <= average < 0 else None,
        where=where,
    )


def parse_cells(
    lines: Iterator[str], *, mcc: int | None = VIETNAM_MCC, allow_outside_vietnam: bool = False
) -> ParsedCells:
    """Read the CSV rows; ``mcc`` keeps one country (None: every country)."""
    parsed = ParsedCells()
    # Both registries write bare numbers and names, never quoted fields: a line is split
    # at its commas, so a stray quote or carriage return cannot swallow the lines after it.
    numbered = enumerate((line.rstrip("\r\n").split(",") for line in lines), start=1)
    first_line = next(numbered, None)
    first = first_line[1] if first_line is not None else None
    if first is None:
        raise CoverwatchError(
            "the file is empty (expected OpenCelliD/MLS rows: " + ",".join(COLUMNS) + ")"
        )
    header = [column.strip() for column in first]
    lowered = [column.lower() for column in header]
    pending: list[list[str]] = []
    if "radio" in lowered:
        names = [next((c for c in COLUMNS if c.lower() == column), column) for column in lowered]
        missing = REQUIRED - set(names)
        if missing:
            raise CoverwatchError(
                f"the CSV header has no {', '.join(sorted(missing))} column; expected the "
                f"OpenCelliD/MLS columns {','.join(COLUMNS)}"
            )
        for column in header:
            if column.lower() not in {c.lower() for c in COLUMNS}:
                parsed.add_problem(Problem("line 1", f"column {column!r} is not used", "warning"))
    elif first and normalise_key(first[0]) in {*TECHNOLOGY_OF_RADIO, *SKIPPED_RADIOS}:
        names = list(COLUMNS)  # OpenCelliD's country files: no header, the standard order
        pending.append(first)
    else:
        raise CoverwatchError(
            f"line 1: {','.join(first)[:80]!r} is neither the OpenCelliD/MLS header nor a "
            f"cell row; expected {','.join(COLUMNS)} (a header line is optional)"
        )
    seen: dict[tuple[str, int, int, int, int], str] = {}

    def rows() -> Iterator[tuple[int, list[str]]]:
        for row in pending:
            yield 1, row
        yield from numbered

    for line, row in rows():
        if not any(value.strip() for value in row):
            continue
        where = f"line {line}"
        if len(row) < len(REQUIRED):
            parsed.add_problem(
                Problem(where, f"{len(row)} fields; expected {len(names)} ({','.join(names)})")
            )
            parsed.rejected += 1
            continue
        values = dict(zip(names, row, strict=False))
        try:
            cell = _cell_from(
                values, where, parsed, mcc_wanted=mcc, allow_outside=allow_outside_vietnam
            )
        except RowError as error:
            parsed.add_problem(Problem(where, error.message, "error", error.field))
            parsed.rejected += 1
            continue
        if cell is None:
            continue
        earlier = parsed.cells.get(cell.key)
        if earlier is not None:
            keep_new = (cell.updated_at or datetime.min.replace(tzinfo=UTC)) >= (
                earlier.updated_at or datetime.min.replace(tzinfo=UTC)
            )
            parsed.add_problem(
                Problem(
                    where,
                    f"the same cell as {seen[cell.key]}; kept the one updated last "
                    f"({cell.where if keep_new else earlier.where})",
                    "warning",
                )
            )
            if not keep_new:
                continue
        seen[cell.key] = where
        parsed.cells[cell.key] = cell
    return parsed


def read_cells(
    path: Path, *, mcc: int | None = VIETNAM_MCC, allow_outside_vietnam: bool = False
) -> ParsedCells:
    """Parse an OpenCelliD/MLS file (``.csv`` or ``.csv.gz``)."""
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (
            gzip.open(path, "rb") if gzipped else path.open("rb") as binary,
            io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text,
        ):
            return parse_cells(iter(text), mcc=mcc, allow_outside_vietnam=allow_outside_vietnam)
    except UnicodeDecodeError as error:
        raise CoverwatchError(
            f"{path} is not UTF-8 text ({error.reason}); OpenCelliD and MLS exports are "
            "ASCII: is this the right file?"
        ) from None
    except (EOFError, gzip.BadGzipFile) as error:
        raise CoverwatchError(f"{path}: the gzip data is damaged ({error})") from None
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror or error}") from None


@dataclass(frozen=True, slots=True)
class StoredCells:
    inserted: int
    updated: int


def store_cells(
    connection: psycopg.Connection[Any], cells: list[TowerCell], *, source: str = ""
) -> StoredCells:
    """Upsert through COPY into a temporary table: a country's registry in seconds."""
    if not cells:
        return StoredCells(0, 0)
    connection.execute(
        "CREATE TEMPORARY TABLE incoming_cells (LIKE tower_cells INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    with connection.cursor().copy(
        """COPY incoming_cells (technology, mcc, mnc, area, cell, pci, lon, lat, range_m,
                                samples, changeable, created_at, updated_at,
                                average_signal_dbm, site, source) FROM STDIN"""
    ) as copy:
        for c in cells:
            copy.write_row((
                c.technology, c.mcc, c.mnc, c.area, c.cell, c.pci, c.lon, c.lat, c.range_m,
                c.samples, c.changeable, c.created_at, c.updated_at, c.average_signal_dbm,
                c.site, source,
            ))  # fmt: skip
    rows = connection.execute(
        """INSERT INTO tower_cells SELECT * FROM incoming_cells
           ON CONFLICT (technology, mcc, mnc, area, cell) DO UPDATE
           SET pci = excluded.pci, lon = excluded.lon, lat = excluded.lat,
               range_m = excluded.range_m, samples = excluded.samples,
               changeable = excluded.changeable, created_at = excluded.created_at,
               updated_at = excluded.updated_at,
               average_signal_dbm = excluded.average_signal_dbm, site = excluded.site,
               source = excluded.source, imported_at = now()
           RETURNING (xmax = 0)"""
    ).fetchall()
    inserted = sum(1 for (new,) in rows if new)
    return StoredCells(inserted, len(rows) - inserted)


# ------------------------------------------------------------------------------ links


@dataclass(frozen=True, slots=True)
class TowerLink:
    """A probe's modem served by one cell in a window, and where the registry puts it."""

    probe_id: str
    modem: str | None
    operator_code: str
    technology: str | None
    tac: int | None
    cell_id: int
    readings: int
    first_seen: datetime
    last_seen: datetime
    site: str | None
    site_lon: float | None
    site_lat: float | None
    range_m: int | None
    distance_m: float | None

    @property
    def beyond_range(self) -> bool:
        """Farther from its site than twice the registry's range: one of them is wrong."""
        return (
            self.distance_m is not None
            and self.range_m is not None
            and self.range_m > 0
            and self.distance_m > 2 * max(self.range_m, 1000)
        )


def tower_links(connection: psycopg.Connection[Any], window: TimeWindow) -> list[TowerLink]:
    """Every probe's serving cells in the window, linked to the registry where it knows them."""
    rows = connection.execute(
        """SELECT l.probe_id, l.modem, l.operator_code, l.technology, l.tac, l.cell_id,
                  l.readings, l.first_seen, l.last_seen, l.site, l.site_lon, l.site_lat,
                  l.range_m, p.lon, p.lat
           FROM signal_tower_links(%s, %s) l LEFT JOIN probes p USING (probe_id)
           ORDER BY l.probe_id, l.modem NULLS FIRST, l.readings DESC, l.cell_id""",
        (window.start, window.end),
    ).fetchall()
    links = []
    for row in rows:
        site_lon, site_lat, probe_lon, probe_lat = row[10], row[11], row[13], row[14]
        distance = (
            float(haversine_m(probe_lon, probe_lat, site_lon, site_lat))
            if None not in (probe_lon, probe_lat, site_lon, site_lat)
            else None
        )
        links.append(
            TowerLink(
                probe_id=row[0],
                modem=row[1],
                operator_code=row[2],
                technology=row[3],
                tac=row[4],
                cell_id=row[5],
                readings=row[6],
                first_seen=row[7],
                last_seen=row[8],
                site=row[9],
                site_lon=site_lon,
                site_lat=site_lat,
                range_m=row[12],
                distance_m=distance,
            )
        )
    return links
