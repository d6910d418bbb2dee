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

Layout: sector 0 holds the header (magic, generation, sector size, outbox id, the highest
seq given out so far, CRC): readings confirmed and forgotten while in the log never
reach SQLite's AUTOINCREMENT counter, so the log keeps the seq high-water mark itself.
Records follow, each starting on a sector boundary: magic, generation, payload length,
CRC-32 of generation, length and payload, then the payload. Replay reads records from
sector 1 while magic, generation and CRC hold: a torn last record (its ``append`` never
returned, so its round was never reported as taken) fails its CRC and ends the replay.
:meth:`reset` starts a new generation by rewriting the header: every older record is then
ignored, whatever is still on the disk.

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
_HEADER_MAGIC = b"CWRLOG02"
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
        header = self._header()
        self._writer.write(0, header)
        if header != self._header():
            # The first write chose the sector size, which the header records.
            self._writer.write(0, self._header())
        self.end = self.sector
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
    if len(data) < _HEADER.size + 4:
        return
    body = data[: _HEADER.size]
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    if zlib.crc32(body) != crc:
        return
    magic, generation, sector, owner, _ = _HEADER.unpack(body)
    if magic != _HEADER_MAGIC or owner.decode("ascii", "replace") != outbox_id:
        return
    if sector not in SECTOR_SIZES:
        return
    offset = sector
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
    """(generation, highest seq given out) from the log's header; (0, 0) if it has none
    or belongs to another outbox."""
    try:
        with path.open("rb") as file:
            data = file.read(_HEADER.size + 4)
    except FileNotFoundError:
        return 0, 0
    if len(data) < _HEADER.size + 4:
        return 0, 0
    body = data[: _HEADER.size]
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    magic, generation, _, owner, high_seq = _HEADER.unpack(body)
    if zlib.crc32(body) != crc or magic != _HEADER_MAGIC:
        return 0, 0
    if owner.decode("ascii", "replace") != outbox_id:
        return 0, 0
    return int(generation), int(high_seq)


def _crc(generation: int, length: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", generation, length)))
