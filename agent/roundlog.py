"""The round log: an append-only, preallocated file where each round is fsynced.

Why: SQLite stores a round by rewriting whole 4 KB pages (the table's leaf page, the
AUTOINCREMENT counter's page) into its WAL and fsyncing them, ~8 KB per round of two or
three readings. The round log appends one record per round instead, written with
``O_DIRECT`` in whole 512-byte sectors, then ``fdatasync``: a round of two to six readings
(deflated against the protocol's compact dictionary) is one sector. The file is
preallocated with zeros when it is made, so an append never changes its size and the
``fdatasync`` has no metadata to journal.

Where ``O_DIRECT`` is refused (tmpfs on older kernels, some FUSE file systems) or the
device wants 4 KB alignment, the log falls back to 4 KB sectors or to ordinary buffered
writes; durability is the same (``fdatasync`` before ``append`` returns), only the bytes
written differ.

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

import errno
import fcntl
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from coverwatch.protocol import COMPACT_DICTIONARY

LOG_BYTES = 256 * 1024  # ~500 rounds (8 hours at the default cadence) before a flush
# magic, generation, sector size, outbox id, highest seq ever given out
_HEADER = struct.Struct("<8sQI36sQ")
_HEADER_MAGIC = b"CWRLOG02"
_RECORD = struct.Struct("<4sQII")  # magic, generation, payload length, crc32
_RECORD_MAGIC = b"CWRR"
_SECTOR_SIZES = (512, 4096)


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
            # Preallocate with real zeros (not fallocate's unwritten extents, whose
            # first write is a metadata change): appends then never change the file.
            current = os.fstat(self._fd).st_size
            os.pwrite(self._fd, bytes(size - current), current)
            os.fsync(self._fd)
            _fsync_directory(path.parent)
        self._direct_fd: int | None = None
        self.sector = _SECTOR_SIZES[-1]
        self.direct = False
        self.generation = 0
        self.high_seq = 0  # written into the header at each reset
        self.end = 0  # where the next record goes
        self.records = 0

    # ------------------------------------------------------------------ reading

    def replay(self) -> list[bytes]:
        """The payloads of the current generation (stops at the first bad record)."""
        return list(read_records(self.path, self.outbox_id))

    # ------------------------------------------------------------------ writing

    def reset(self, generation: int | None = None) -> None:
        """Start a new, empty generation (durably): older records are void from now on."""
        self.generation = (self.generation if generation is None else generation) + 1
        if self._direct_fd is None:
            self._choose_write_mode()
        else:
            self._write(0, self._header())
        self.end = self.sector
        self.records = 0

    def fits(self, payload_size: int) -> bool:
        return self.end + _padded(_RECORD.size + payload_size, self.sector) <= self.size

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
        self._write(self.end, record)
        self.end += _padded(len(record), self.sector)
        self.records += 1

    def close(self) -> None:
        if self._direct_fd is not None and self._direct_fd != self._fd:
            os.close(self._direct_fd)
        self._direct_fd = None
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

    def _choose_write_mode(self) -> None:
        """O_DIRECT in 512-byte sectors if the file system takes it, else 4 KB, else buffered."""
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                direct_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | flag)
            except OSError:
                direct_fd = None
            if direct_fd is not None:
                for sector in _SECTOR_SIZES:
                    self.sector = sector
                    try:
                        _pwrite_aligned(direct_fd, 0, self._header(), sector)
                        datasync(direct_fd)
                    except OSError as error:
                        if error.errno != errno.EINVAL:
                            os.close(direct_fd)
                            raise
                        continue
                    self._direct_fd = direct_fd
                    self.direct = True
                    return
                os.close(direct_fd)
        self.sector = _SECTOR_SIZES[0]
        self._direct_fd = self._fd
        self.direct = False
        self._write(0, self._header())

    def _write(self, offset: int, data: bytes) -> None:
        assert self._direct_fd is not None
        if self.direct:
            _pwrite_aligned(self._direct_fd, offset, data, self.sector)
        else:
            os.pwrite(
                self._direct_fd, data + bytes(_padded(len(data), self.sector) - len(data)), offset
            )
        # The round is on the card before add() returns: this is the durability promise.
        datasync(self._direct_fd)


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
    if sector not in _SECTOR_SIZES:
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
        offset += _padded(_RECORD.size + length, sector)


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


def _padded(size: int, sector: int) -> int:
    return -(-size // sector) * sector


def _pwrite_aligned(fd: int, offset: int, data: bytes, sector: int) -> None:
    # O_DIRECT wants the memory aligned too: an anonymous mmap is page-aligned.
    length = _padded(len(data), sector)
    with mmap.mmap(-1, length) as buffer:
        buffer[: len(data)] = data
        written = os.pwrite(fd, buffer, offset)
    if written != length:
        raise OSError(errno.EIO, f"short write to the round log ({written} of {length} bytes)")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
