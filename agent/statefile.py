"""Small state documents rewritten often, for one sector of the SD card each time.

Why: the probe keeps a few small documents that change on a schedule — the power
heartbeat every round, when each modem's cells were last read, when its operator scan
is next due. Replacing a file (temp file, fsync, rename, fsync of the directory) writes a
data block, an inode and a directory block: ~18 KB on the card each time, measured on
ext4 with lazytime. Here the file is preallocated once and each write is one sector in
place with ``O_DIRECT`` and ``fdatasync`` (:mod:`agent.sectorio`).

A sector written in place can be torn by a power cut in the middle of the write, so
there are two slots, written alternately, each with a counter and a CRC: a torn slot
fails its CRC and the other slot still holds the document before it. :meth:`SlotFile.load`
returns the valid slot with the highest counter. A document is JSON of at most 492 bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sectorio import SECTOR_SIZES, SectorWriter, preallocate

_SLOT_BYTES = SECTOR_SIZES[-1]  # a slot starts on a 4 KB boundary, whatever the sector size
FILE_BYTES = 2 * _SLOT_BYTES
_RECORD = struct.Struct("<4sQII")  # magic, counter, payload length, crc32
MAX_DOCUMENT_BYTES = 512 - _RECORD.size  # one 512-byte sector in all


class SlotFile:
    """A JSON document in two alternating one-sector slots of a preallocated file."""

    def __init__(
        self, path: Path, *, magic: bytes = b"CWSF", sync: Callable[[int], None] = os.fdatasync
    ) -> None:
        if len(magic) != 4:
            raise ValueError(f"magic must be 4 bytes, got {magic!r}")
        self.path = path
        self._magic = magic
        self._sync = sync
        self._counter: int | None = None  # of the newest valid slot, read at the first write
        self.direct = False  # whether the last write went through O_DIRECT

    def load(self) -> Any | None:
        """The newest document that was written whole; None when there is none."""
        newest = self._newest()
        return None if newest is None else newest[1]

    def write(self, document: Any) -> None:
        """Store ``document`` durably (synced before this returns) in the older slot.
        Raises OSError when the card refuses it (the caller decides what that costs)."""
        payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
        if len(payload) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"a document of {len(payload)} bytes does not fit a sector")
        if self._counter is None:
            newest = self._newest()
            self._counter = 0 if newest is None else newest[0]
        counter = self._counter + 1
        record = _RECORD.pack(self._magic, counter, len(payload), _crc(counter, payload))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size < FILE_BYTES
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if fresh:
                preallocate(fd, self.path, FILE_BYTES)
            writer = SectorWriter(self.path, fd, self._sync)
            try:
                writer.write((counter % 2) * _SLOT_BYTES, record + payload)
                self.direct = writer.direct
            finally:
                writer.close()
        finally:
            os.close(fd)
        self._counter = counter

    def _newest(self) -> tuple[int, Any] | None:
        try:
            with self.path.open("rb") as file:
                data = file.read(FILE_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            return None
        found = [
            slot
            for offset in range(0, FILE_BYTES, _SLOT_BYTES)
            if (slot := self._read_slot(data, offset)) is not None
        ]
        return max(found, key=lambda slot: slot[0], default=None)

    def _read_slot(self, data: bytes, offset: int) -> tuple[int, Any] | None:
        if offset + _RECORD.size > len(data):
            return None
        magic, counter, length, crc = _RECORD.unpack_from(data, offset)
        start = offset + _RECORD.size
        if magic != self._magic or length > MAX_DOCUMENT_BYTES or start + length > len(data):
            return None
        payload = data[start : start + length]
        if _crc(counter, payload) != crc:
            return None
        with contextlib.suppress(ValueError):  # UnicodeDecodeError is a ValueError
            return counter, json.loads(payload.decode("utf-8"))
        return None


def _crc(counter: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", counter, len(payload))))
