"""Time on a computer without a real-time clock.

A Raspberry Pi boots with the wall clock wherever the last shutdown (or the fake-hwclock
file) left it, and only NTP puts it right. After a power cut in a village with no signal
that can take hours. So every reading carries, besides its wall time, the boot it was
taken in (``/proc/sys/kernel/random/boot_id``), the monotonic clock and whether the
kernel considered the wall clock NTP-synchronised at that moment.

**Correction is applied by the agent, at publish time.** Once the agent sees the clock
synchronised it records an *anchor* for the boot: the wall time at monotonic zero
(``wall_ns - monotonic_ns``). Readings of that boot still in the outbox that were taken
unsynchronised get ``taken_at = anchor + monotonic`` and go out with ``ntp_synced=true``,
which on the wire means "taken_at is trustworthy". The agent is the right place because
it holds both clocks of the same boot; the collector would need every probe's anchors and
would have to rewrite stored rows. Readings that had already been published before the
sync stay ``ntp_synced=false`` and the collector/geo treat their time as approximate.

Synchronisation is read from the kernel (``adjtimex``: the ``STA_UNSYNC`` bit, which is
what ``timedatectl``'s ``NTPSynchronized`` reports and what chrony, ntpd and
systemd-timesyncd all clear once they discipline the clock).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.sensors.base import Stamp

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; the kernel only reads `modes` (0 = read-only).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def kernel_ntp_synced() -> bool:
    """True when the kernel's clock is disciplined by NTP (adjtimex, read-only)."""
    libc = _libc()
    if libc is None:
        return False
    timex = _Timex()
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0 or state == _TIME_ERROR:
        return False
    return not (timex.status & _STA_UNSYNC)


def read_boot_id(proc: Path = Path("/proc")) -> str:
    """This boot's id; a random one where the kernel does not provide it (not Linux)."""
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return _process_boot_id


_process_boot_id = str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ClockAnchor:
    """Wall time at monotonic zero for one boot, recorded while NTP-synchronised."""

    boot_id: str
    wall_at_monotonic_zero_ns: int

    def wall_time(self, monotonic_ms: int) -> datetime:
        nanoseconds = self.wall_at_monotonic_zero_ns + monotonic_ms * 1_000_000
        return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=nanoseconds // 1000)


class Clock:
    """Stamps rounds of readings; every source is injectable for tests and simulation."""

    def __init__(
        self,
        *,
        boot_id: str | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        ntp_synced: Callable[[], bool] = kernel_ntp_synced,
    ) -> None:
        self.boot_id = boot_id or read_boot_id()
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._ntp_synced = ntp_synced

    def monotonic_s(self) -> float:
        return self._monotonic_ns() / 1e9

    def stamp(self) -> Stamp:
        # Sync state first: if NTP steps the clock between the reads, the reading is
        # marked unsynchronised (and corrected later), never a wrong time marked good.
        synced = self._ntp_synced()
        monotonic = self._monotonic_ns()
        wall = self._wall_ns()
        return Stamp(
            boot_id=self.boot_id,
            taken_at=datetime.fromtimestamp(0, UTC) + timedelta(microseconds=wall // 1000),
            monotonic_ms=monotonic // 1_000_000,
            ntp_synced=synced,
        )

    def anchor(self) -> ClockAnchor | None:
        """An anchor for this boot if the clock is synchronised right now."""
        if not self._ntp_synced():
            return None
        monotonic = self._monotonic_ns()
        wall = self._wall_ns()
        return ClockAnchor(self.boot_id, wall - monotonic)
