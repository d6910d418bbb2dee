"""The round log: an append-only, preallocated file where each round is fsynced.

Why: SQLite stores a round by rewriting whole 4 KB pages (the table's leaf page, the
AUTOINCREMENT counter's page) into its WAL and fsyncing them, ~8 KB per round of two or
three readings. The round log appends one record per round instead, written with
``O_DIRECT`` in whole 512-byte sectors, then ``fdatasync``: a round of two to six readings
(deflated against the protocol's compact dictionary) is one sector. The file is
preallocated with zeros when it is made, so an append never changes its size and the
``fdatasync`` has no metadata to journal.

Writes go through :class:`agent.sectorio.SectorWriter` (its fallbacks where ``O_DIRECT``
is refused); durability is the same in every mode (``fdatasync`` before ``append``
returns), only the bytes written differ.

Layout: two header slots, at 0 and 4 KB, each holding one header (magic, generation,
sector size, outbox id, the highest seq given out so far, CRC): readings confirmed and
forgotten while in the log never reach SQLite's AUTOINCREMENT counter, so the log keeps
the seq high-water mark itself. :meth:`reset` starts a new generation by writing its
header into the slot of the generation before last; the valid header with the highest
generation is the log's. Why two: the header is rewritten in place at every reset (every
batched delete), and a power cut that tore the only copy would lose the high-water mark —
seqs would be given out again, and the collector drops a seq it already committed as a
repeat. A torn header fails its CRC and the one before it, with its generation's records
(still on the disk, since records are written only after their header), stands.

Records follow from 8 KB, each starting on a sector boundary: magic, generation, payload
length, CRC-32 of generation, length and payload, then the payload. Replay reads records
while magic, generation and CRC hold: a torn last record (its ``append`` never returned,
so its round was never reported as taken) fails its CRC and ends the replay. Every
record of another generation is ignored, whatever is still on the disk. Logs written
before 2026-12-01 (one header in sector 0, records from sector 1) are still read, so an
upgrade replays them; their next reset writes the new layout.

One owner at a time: the log is locked with ``flock``; a second :class:`RoundLog` on the
same file (another process, or a second Outbox in this one) only reads it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from agent.sectorio import SECTOR_SIZES, SectorWriter, padded, preallocate
from coverwatch.protocol import COMPACT_DICTIONARY

LOG_BYTES = 256 * 1024  # ~500 rounds (8 hours at the default cadence) before a flush
# magic, generation, sector size, outbox id, highest seq ever given out
_HEADER = struct.Struct("<8sQI36sQ")
_HEADER_MAGIC = b"CWRLOG03"  # two header slots, records from RECORDS_AT
_SINGLE_HEADER_MAGIC = b"CWRLOG02"  # one header in sector 0, records from sector 1
_HEADER_SLOTS = (0, SECTOR_SIZES[-1])  # each on a 4 KB boundary, whatever the sector size
RECORDS_AT = 2 * SECTOR_SIZES[-1]
_RECORD = struct.Struct("<4sQII")  # magic, generation, payload length, crc32
_RECORD_MAGIC = b"CWRR"


def datasync(fd: int, /) -> None:
    """What makes an append durable (``os.fdatasync``); a module attribute so that the
    power-cut tests can show that they catch its absence."""
    os.fdatasync(fd)


def deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(
        6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, COMPACT_DICTIONARY
    )
    return deflater.compress(data) + deflater.flush()


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15, COMPACT_DICTIONARY).decompress(data)


class RoundLogLocked(Exception):
    """Another RoundLog owns the file."""


class RoundLog:
    """Append-only log of payloads, each durable (fdatasync) before append returns."""

    def __init__(self, path: Path, outbox_id: str, *, size: int | None = None) -> None:
        self.path = path
        self.outbox_id = outbox_id
        self.size = size = size or LOG_BYTES
        fresh = not path.exists() or path.stat().st_size < size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RoundLogLocked(str(path)) from None
        if fresh:
            preallocate(self._fd, path, size)
        # The round is on the card before add() returns: the writer syncs every write
        # with this module's datasync (looked up at each call, so tests can replace it).
        self._writer = SectorWriter(path, self._fd, lambda fd: datasync(fd))
        self.generation = 0
        self.high_seq = 0  # written into the header at each reset
        self.end = 0  # where the next record goes
        self.records = 0

    @property
    def sector(self) -> int:
        return self._writer.sector

    @property
    def direct(self) -> bool:
        return self._writer.direct

    # ------------------------------------------------------------------ reading

    def replay(self) -> list[bytes]:
        """The payloads of the current generation (stops at the first bad record)."""
        return list(read_records(self.path, self.outbox_id))

    # ------------------------------------------------------------------ writing

    def reset(self, generation: int | None = None) -> None:
        """Start a new, empty generation (durably): older records are void from now on."""
        self.generation = (self.generation if generation is None else generation) + 1
        slot = _HEADER_SLOTS[self.generation % 2]
        header = self._header()
        self._writer.write(slot, header)
        if header != self._header():
            # The first write chose the sector size, which the header records.
            self._writer.write(slot, self._header())
        self.end = RECORDS_AT
        self.records = 0

    def fits(self, payload_size: int) -> bool:
        return self.end + padded(_RECORD.size + payload_size, self.sector) <= self.size

    def append(self, payload: bytes) -> None:
        """Write one record and fdatasync it; raise ValueError if the log is full."""
        if not self.fits(len(payload)):
            raise ValueError("round log full")
        head = _RECORD.pack(
            _RECORD_MAGIC,
            self.generation,
            len(payload),
            _crc(self.generation, len(payload), payload),
        )
        record = head + payload
        self._writer.write(self.end, record)
        self.end += padded(len(record), self.sector)
        self.records += 1

    def close(self) -> None:
        self._writer.close()
        os.close(self._fd)  # releases the flock

    def _header(self) -> bytes:
        body = _HEADER.pack(
            _HEADER_MAGIC,
            self.generation,
            self.sector,
            self.outbox_id.encode("ascii"),
            self.high_seq,
        )
        return body + struct.pack("<I", zlib.crc32(body))


def read_records(path: Path, outbox_id: str) -> Iterator[bytes]:
    """Payloads of the log's current generation, in order; nothing if the log is not
    this outbox's (a wiped outbox database next to an old log) or has no valid header."""
    try:
        with path.open("rb") as file:
            data = file.read()
    except FileNotFoundError:
        return
    header = _current_header(data, outbox_id)
    if header is None:
        return
    generation, sector, _, offset = header
    while offset + _RECORD.size <= len(data):
        magic, record_generation, length, crc = _RECORD.unpack_from(data, offset)
        start = offset + _RECORD.size
        if magic != _RECORD_MAGIC or record_generation != generation or start + length > len(data):
            return
        payload = data[start : start + length]
        if _crc(generation, length, payload) != crc:
            return
        yield payload
        offset += padded(_RECORD.size + length, sector)


def read_header(path: Path, outbox_id: str) -> tuple[int, int]:
    """(generation, highest seq given out) from the log's current header; (0, 0) if it
    has none or belongs to another outbox."""
    try:
        with path.open("rb") as file:
            data = file.read(RECORDS_AT)
    except FileNotFoundError:
        return 0, 0
    header = _current_header(data, outbox_id)
    return (0, 0) if header is None else (header[0], header[2])


def _current_header(data: bytes, outbox_id: str) -> tuple[int, int, int, int] | None:
    """(generation, sector size, highest seq, where its records start) of the valid
    header with the highest generation; a log of the single-header layout as it was
    written before two slots."""
    found = [
        (generation, sector, high_seq, RECORDS_AT)
        for slot in _HEADER_SLOTS
        if (parsed := _parse_header(data, slot, outbox_id, _HEADER_MAGIC)) is not None
        for generation, sector, high_seq in [parsed]
    ]
    if found:
        return max(found)
    single = _parse_header(data, 0, outbox_id, _SINGLE_HEADER_MAGIC)
    if single is None:
        return None
    generation, sector, high_seq = single
    return generation, sector, high_seq, sector


def _parse_header(
    data: bytes, offset: int, outbox_id: str, expected_magic: bytes
) -> tuple[int, int, int] | None:
    end = offset + _HEADER.size
    if len(data) < end + 4:
        return None
    body = data[offset:end]
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(body) != crc:
        return None
    magic, generation, sector, owner, high_seq = _HEADER.unpack(body)
    if magic != expected_magic or owner.decode("ascii", "replace") != outbox_id:
        return None
    if sector not in SECTOR_SIZES:
        return None
    return int(generation), int(sector), int(high_seq)


def _crc(generation: int, length: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", generation, length)))
