"""Durable small writes that cost the SD card one 512-byte sector, not a 4 KB page.

Why: the probe writes a little every round (the round log, the power heartbeat) and must
have it on the card before it goes on. A buffered write plus ``fsync`` rewrites at least
a whole 4 KB page, and a file that grows or is replaced also journals its inode and
directory. Writing whole sectors with ``O_DIRECT`` into a file preallocated with real
zeros, then ``fdatasync``, costs one sector and no metadata.

Where ``O_DIRECT`` is refused (tmpfs on older kernels, some FUSE file systems) or the
device wants 4 KB alignment, the writer falls back to 4 KB sectors, then to ordinary
buffered writes; durability is the same (``fdatasync`` before a write returns), only
the bytes written differ. The caller supplies the sync function, so that tests can show
they catch its absence.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from pathlib import Path

SECTOR_SIZES = (512, 4096)


def padded(size: int, sector: int) -> int:
    """``size`` rounded up to whole sectors."""
    return -(-size // sector) * sector


def preallocate(fd: int, path: Path, size: int) -> None:
    """Fill the file up to ``size`` with real zeros, durably (file and directory).

    Not ``fallocate``: its unwritten extents turn the first write into each block into
    a metadata change, which is what preallocation is meant to avoid."""
    current = os.fstat(fd).st_size
    if current < size:
        os.pwrite(fd, bytes(size - current), current)
    os.fsync(fd)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SectorWriter:
    """Writes whole sectors at given offsets of one preallocated file, each synced.

    The write mode is chosen by the first :meth:`write`: the data the caller wants on
    disk anyway is the probe, so choosing the mode never overwrites anything with a test
    pattern."""

    def __init__(self, path: Path, fd: int, sync: Callable[[int], None]) -> None:
        self.path = path
        self._fd = fd  # the caller's buffered descriptor, for the fallback
        self._sync = sync
        self._write_fd: int | None = None
        self.sector = SECTOR_SIZES[-1]
        self.direct = False

    @property
    def chosen(self) -> bool:
        return self._write_fd is not None

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` (padded with zeros to whole sectors) at ``offset`` and sync it.
        ``offset`` must be a multiple of 4096 until the mode is chosen, since the first
        write may be the one that finds 4 KB sectors."""
        if self._write_fd is None:
            self._choose(offset, data)
            return
        self._write_now(self._write_fd, offset, data)

    def close(self) -> None:
        if self._write_fd is not None and self._write_fd != self._fd:
            os.close(self._write_fd)
        self._write_fd = None

    def _choose(self, offset: int, data: bytes) -> None:
        """O_DIRECT in 512-byte sectors if the file system takes it, else 4 KB, else buffered."""
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                direct_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | flag)
            except OSError:
                direct_fd = None
            if direct_fd is not None:
                self.direct = True
                for sector in SECTOR_SIZES:
                    self.sector = sector
                    try:
                        self._write_now(direct_fd, offset, data)
                    except OSError as error:
                        if error.errno != errno.EINVAL:
                            os.close(direct_fd)
                            self.direct = False
                            raise
                        continue
                    self._write_fd = direct_fd
                    return
                os.close(direct_fd)
        self.sector = SECTOR_SIZES[0]
        self.direct = False
        self._write_fd = self._fd
        self._write_now(self._fd, offset, data)

    def _write_now(self, fd: int, offset: int, data: bytes) -> None:
        if self.direct:
            _pwrite_aligned(fd, offset, data, self.sector)
        else:
            os.pwrite(fd, data + bytes(padded(len(data), self.sector) - len(data)), offset)
        # On the card before the caller goes on: this is the durability promise.
        self._sync(fd)


def _pwrite_aligned(fd: int, offset: int, data: bytes, sector: int) -> None:
    # O_DIRECT wants the memory aligned too: an anonymous mmap is page-aligned.
    length = padded(len(data), sector)
    with mmap.mmap(-1, length) as buffer:
        buffer[: len(data)] = data
        written = os.pwrite(fd, buffer, offset)
    if written != length:
        raise OSError(errno.EIO, f"short write ({written} of {length} bytes)")
