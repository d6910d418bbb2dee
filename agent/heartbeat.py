"""The power sensor's heartbeat: "this boot was alive at this time", durable every round.

Why a file of its own making: the heartbeat is rewritten every round, and a probe's SD
card wears with every byte. Replacing a small JSON file (temp file, fsync, rename,
fsync of the directory) writes a data block, an inode and a directory block each
round — more than the readings themselves. Here the file is preallocated once and
each heartbeat is one sector written in place with ``O_DIRECT`` and ``fdatasync``
(:mod:`agent.sectorio`).

A sector written in place can be torn by a power cut in the middle of the write, so
there are two slots, written alternately, each with a counter and a CRC: a torn slot
fails its CRC and the other slot still holds the heartbeat before it. :meth:`load`
returns the valid slot with the highest counter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.sectorio import SECTOR_SIZES, SectorWriter, preallocate
from coverwatch.protocol import BOOT_ID_RE

_SLOT_BYTES = SECTOR_SIZES[-1]  # a slot starts on a 4 KB boundary, whatever the sector size
_FILE_BYTES = 2 * _SLOT_BYTES
_RECORD = struct.Struct("<4sQII")  # magic, counter, payload length, crc32
_MAGIC = b"CWHB"
_MAX_PAYLOAD = 512 - _RECORD.size  # one 512-byte sector in all


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
    """Two alternating one-sector slots in a preallocated file."""

    def __init__(self, path: Path, *, sync: Callable[[int], None] = os.fdatasync) -> None:
        self.path = path
        self._sync = sync
        self._counter: int | None = None  # of the newest valid slot, read at the first write
        self.direct = False  # whether the last write went through O_DIRECT

    def load(self) -> Heartbeat | None:
        """The newest heartbeat that was written whole; None when there is none."""
        newest = self._newest()
        return None if newest is None else newest[1]

    def write(self, heartbeat: Heartbeat) -> None:
        """Store ``heartbeat`` durably (synced before this returns) in the older slot."""
        payload = json.dumps(
            {"boot_id": heartbeat.boot_id, "wall_time": heartbeat.wall_time.isoformat()},
            separators=(",", ":"),
        ).encode("utf-8")
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"heartbeat of {len(payload)} bytes does not fit a sector")
        if self._counter is None:
            newest = self._newest()
            self._counter = 0 if newest is None else newest[0]
        counter = self._counter + 1
        record = _RECORD.pack(_MAGIC, counter, len(payload), _crc(counter, payload)) + payload
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size < _FILE_BYTES
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if fresh:
                preallocate(fd, self.path, _FILE_BYTES)
            writer = SectorWriter(self.path, fd, self._sync)
            try:
                writer.write((counter % 2) * _SLOT_BYTES, record)
                self.direct = writer.direct
            finally:
                writer.close()
        finally:
            os.close(fd)
        self._counter = counter

    def _newest(self) -> tuple[int, Heartbeat] | None:
        try:
            with self.path.open("rb") as file:
                data = file.read(_FILE_BYTES)
        except FileNotFoundError:
            return None
        found: list[tuple[int, Heartbeat]] = []
        for offset in range(0, _FILE_BYTES, _SLOT_BYTES):
            slot = _read_slot(data, offset)
            if slot is not None:
                found.append(slot)
        return max(found, key=lambda slot: slot[0], default=None)


def _read_slot(data: bytes, offset: int) -> tuple[int, Heartbeat] | None:
    if offset + _RECORD.size > len(data):
        return None
    magic, counter, length, crc = _RECORD.unpack_from(data, offset)
    start = offset + _RECORD.size
    if magic != _MAGIC or length > _MAX_PAYLOAD or start + length > len(data):
        return None
    payload = data[start : start + length]
    if _crc(counter, payload) != crc:
        return None
    document: object = None
    with contextlib.suppress(ValueError):  # UnicodeDecodeError is a ValueError
        document = json.loads(payload.decode("utf-8"))
    heartbeat = parse_heartbeat(document)
    return None if heartbeat is None else (counter, heartbeat)


def _crc(counter: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", counter, len(payload))))
