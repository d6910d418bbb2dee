"""The on-disk outbox: every reading is stored here before it is published.

SQLite in WAL mode with ``synchronous=FULL``: a round of readings is one transaction,
fsynced before ``add`` returns, so a power cut a millisecond later loses nothing. A
reading leaves the outbox only when the **collector** has confirmed that it committed
it to the database (the commit ack, see docs/protocol.md) — never on the broker's
PUBACK alone, since a broker that dies before writing its store loses what it acked.
After a crash everything still here is simply sent again; the collector's ledger of
committed (outbox_id, seq) makes that harmless.

``seq`` is SQLite's AUTOINCREMENT row id: it only grows, survives reboots and is never
reused even after rows are deleted, which is exactly what the protocol asks of it.
``outbox_id`` is a UUID made when the outbox file is created: a probe whose outbox is
lost (new SD card, wiped state) starts seq at 1 again under a new outbox id, so the
collector never mistakes its new readings for ones it already has. An outbox created by
an earlier version gets a new id too the first time this version opens it.

Bounds: at most ``max_readings`` rows and nothing older than ``max_age_s``. When either
is exceeded the **oldest readings are dropped** (a probe that has been offline for
weeks keeps its most recent weeks) and the number dropped is added to a persistent
counter that the system reading reports, so lost data is visible at the collector.

To spare the SD card, each reading is stored once as compact JSON (~200 bytes) and
deleted in batches; WAL checkpoints are left to SQLite's default auto-checkpoint.

The round log (``round_log=True``, the default): a round is not written to SQLite at
all but appended to :mod:`agent.roundlog` (one 512-byte sector per round, fdatasynced
before ``add`` returns) and kept in memory. Live readings are usually confirmed within
seconds, deleted from memory, and the log is reset at the next removal: they never
reach SQLite. What is still unconfirmed moves into SQLite (one ``synchronous=FULL``
transaction) when the log is full, when the bounds need checking, at a removal that
leaves some behind, and when the outbox is opened (after a crash or power cut, the log's
rounds are replayed into SQLite first). So a round is durable before ``add`` returns,
whichever store holds it. Only one Outbox owns the log; another one on the same file
(``doctor``, ``export`` while the daemon runs) reads its rounds and writes to SQLite.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent import roundlog
from agent.clock import ClockAnchor
from coverwatch.protocol import Reading, seq_ranges

# The bounds' defaults, which probe.toml's [outbox] section takes as its own
# (agent/config.py): ~75 MB, about 50 days offline at the default cadence; 60 days.
MAX_READINGS = 200_000
MAX_AGE_S = 60 * 86_400.0
# Rounds go to the round log first (agent.roundlog); False: straight to SQLite.
ROUND_LOG = True

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id      TEXT NOT NULL,
    monotonic_ms INTEGER NOT NULL,
    ntp_synced   INTEGER NOT NULL,
    stored_at    REAL NOT NULL,       -- agent wall clock, for the age bound
    body         BLOB NOT NULL        -- the protocol reading as JSON, seq not filled in
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clock_anchors (
    boot_id                   TEXT PRIMARY KEY,
    wall_at_monotonic_zero_ns INTEGER NOT NULL,
    recorded_at               REAL NOT NULL
);
"""
_DROPPED = "dropped_total"
# With the round log, the bounds are checked (and what is in memory moved to SQLite) at
# least this often, by the outbox's wall clock.
BOUNDS_CHECK_S = 3600.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """A reading held in the round log (and memory), not in SQLite."""

    boot_id: str
    monotonic_ms: int
    ntp_synced: bool
    stored_at: float
    body: bytes


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Reading] = msgspec.json.Decoder(Reading)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    dropped_total: int
    oldest_seq: int | None
    newest_seq: int | None


class Outbox:
    """Durable FIFO of readings; safe to use from the scheduler and publisher threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_readings: int = MAX_READINGS,
        max_age_s: float = MAX_AGE_S,
        wall_clock: Callable[[], float] = time.time,
        durable: bool = True,
        round_log: bool = ROUND_LOG,
    ) -> None:
        if max_readings < 1:
            raise ValueError("max_readings must be at least 1")
        self.path = path
        self.max_readings = max_readings
        self.max_age_s = max_age_s
        self._now = wall_clock
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: SQLite serialises writers anyway, and a
        # single connection keeps the Pi's memory small.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # durable=False (no fsync at all) is for simulations that run thousands of
        # probes on one machine; a real probe always stores with synchronous=FULL.
        self._synchronous = "FULL" if durable else "OFF"
        self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._db.execute("PRAGMA busy_timeout=10000")
        self.outbox_id = self._set_up_schema()
        # Readings of the round log, by seq (all newer than any in SQLite).
        self._memory: dict[int, _Entry] = {}
        self._log: roundlog.RoundLog | None = None
        # The highest seq the round log gave out (readings confirmed while in the log
        # never reach SQLite's AUTOINCREMENT counter): seqs are never reused.
        self._seq_floor = 0
        self._bounds_checked_at = self._now()
        log_path = path.with_name(path.name + "-rounds")
        if (round_log and durable) or log_path.exists():
            # Also without the round log: rounds a round-log outbox left behind move to
            # SQLite, and its seq high-water mark is kept.
            self._open_round_log(log_path, keep=round_log and durable)
        self._anchors = self._load_anchors()

    def _open_round_log(self, log_path: Path, *, keep: bool) -> None:
        try:
            log = roundlog.RoundLog(log_path, self.outbox_id)
        except roundlog.RoundLogLocked:
            # Another Outbox owns it: see its durable rounds, write to SQLite only.
            self._memory = self._entries(roundlog.read_records(log_path, self.outbox_id))
            self._seq_floor = roundlog.read_header(log_path, self.outbox_id)[1]
            return
        self._memory = self._entries(log.replay())
        log.generation, self._seq_floor = roundlog.read_header(log_path, self.outbox_id)
        log.high_seq = max(self._seq_floor, max(self._memory, default=0))
        # Rounds left by a crash or power cut go to SQLite, then a new generation starts.
        with self._lock:
            self._flush_memory()
        log.reset()
        if keep:
            self._log = log
        else:
            log.close()

    def _entries(self, payloads: Iterable[bytes]) -> dict[int, _Entry]:
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
            ).fetchone()
        stored_up_to = int(row[0]) if row else 0
        entries: dict[int, _Entry] = {}
        for payload in payloads:
            for seq, boot_id, monotonic_ms, synced, stored_at, body in msgspec.json.decode(
                roundlog.inflate(payload)
            ):
                # Rounds already moved to SQLite (the reset after it did not happen)
                # are there, or were deleted on the collector's word since.
                if seq > stored_up_to:
                    entries[seq] = _Entry(
                        boot_id, monotonic_ms, bool(synced), stored_at, msgspec.json.encode(body)
                    )
        return entries

    def _flush_memory(self) -> None:
        """Move the round log's readings into SQLite durably, check the bounds (lock held)."""
        if self._memory and self._synchronous != "FULL":
            # A new log generation voids these rounds next: SQLite must hold them first,
            # even in an outbox that is otherwise not durable (durable=False).
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._insert_memory()
        finally:
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")

    def _insert_memory(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO readings "
                "(seq, boot_id, monotonic_ms, ntp_synced, stored_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        seq,
                        entry.boot_id,
                        entry.monotonic_ms,
                        int(entry.ntp_synced),
                        entry.stored_at,
                        entry.body,
                    )
                    for seq, entry in self._memory.items()
                ],
            )
            self._enforce_bounds(self._db, self._now())
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._memory = {}
        self._bounds_checked_at = self._now()

    def _set_up_schema(self) -> str:
        """Create the tables; return this outbox's id (made once, kept for its life)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                row = self._db.execute("SELECT value FROM meta WHERE name = 'outbox_id'").fetchone()
                if row is None:
                    # Also for an outbox of an earlier agent version: its readings were
                    # stored under no outbox id, which the collector does not track, so a
                    # fresh id cannot clash with them (and nil could hide a reset seq).
                    outbox_id = str(uuid.uuid4())
                    self._db.execute(
                        "INSERT INTO meta (name, value) VALUES ('outbox_id', ?)", (outbox_id,)
                    )
                else:
                    outbox_id = str(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return outbox_id

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()  # its rounds are durable; the next owner replays them
                self._log = None
            self._db.close()

    @property
    def round_log(self) -> roundlog.RoundLog | None:
        """The round log this outbox owns, if any."""
        return self._log

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def add(self, readings: Sequence[Reading]) -> list[int]:
        """Store a round of readings durably; return their sequence numbers."""
        if not readings:
            return []
        now = self._now()
        seqs: list[int] = []
        if self._log is not None:
            logged = self._add_to_log(readings, now)
            if logged is not None:
                return logged
        floor = max(self._seq_floor, max(self._memory, default=0))
        with self._transaction() as db:
            for reading in readings:
                row = db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
                ).fetchone()
                # Above any seq the round log gave out (NULL: SQLite's next one).
                explicit = max(floor, int(row[0]) if row else 0) + 1 if floor else None
                cursor = db.execute(
                    "INSERT INTO readings "
                    "(seq, boot_id, monotonic_ms, ntp_synced, stored_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        explicit,
                        reading.boot_id,
                        reading.monotonic_ms,
                        int(reading.ntp_synced),
                        now,
                        _encoder.encode(reading),
                    ),
                )
                seqs.append(int(cursor.lastrowid or 0))
            self._enforce_bounds(db, now)
        return seqs

    def _add_to_log(self, readings: Sequence[Reading], now: float) -> list[int] | None:
        """Append a round to the round log (fdatasynced); None if it must go to SQLite."""
        with self._lock:
            log = self._log
            assert log is not None
            if now - self._bounds_checked_at >= min(BOUNDS_CHECK_S, self.max_age_s):
                self._check_bounds(log, now)
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
            ).fetchone()
            first = max(int(row[0]) if row else 0, log.high_seq) + 1
            seqs = list(range(first, first + len(readings)))
            bodies = [_encoder.encode(reading) for reading in readings]
            payload = roundlog.deflate(
                msgspec.json.encode(
                    [
                        (
                            seq,
                            reading.boot_id,
                            reading.monotonic_ms,
                            int(reading.ntp_synced),
                            now,
                            msgspec.Raw(body),
                        )
                        for seq, reading, body in zip(seqs, readings, bodies, strict=True)
                    ]
                )
            )
            if not log.fits(len(payload)):
                self._flush_and_restart(log)
                if not log.fits(len(payload)):
                    return None  # a round bigger than the whole log: SQLite takes it
            log.append(payload)  # durable from here: the round is taken
            log.high_seq = seqs[-1]
            for seq, reading, body in zip(seqs, readings, bodies, strict=True):
                self._memory[seq] = _Entry(
                    reading.boot_id, reading.monotonic_ms, reading.ntp_synced, now, body
                )
            if len(self._memory) + self._stored_count_locked() > self.max_readings:
                self._flush_and_restart(log)
        return seqs

    def _check_bounds(self, log: roundlog.RoundLog, now: float) -> None:
        """The age bound, without moving what is in memory unless it is too old itself
        (a transaction that drops nothing writes nothing). Lock held."""
        too_old = now - self.max_age_s
        if any(e.ntp_synced and e.stored_at < too_old for e in self._memory.values()):
            self._flush_and_restart(log)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._enforce_bounds(self._db, now)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._bounds_checked_at = now

    def _flush_and_restart(self, log: roundlog.RoundLog) -> None:
        """Memory to SQLite, bounds checked, then a new log generation (lock held)."""
        self._flush_memory()
        if log.records:
            log.reset()

    def _stored_count_locked(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM readings").fetchone()[0])

    def _enforce_bounds(self, db: sqlite3.Connection, now: float) -> None:
        # Only readings stored with a synchronised clock are aged: a Pi booted from an
        # old image stores months-old wall times until NTP answers, and those readings
        # must not all be dropped the moment the clock is set (the count bound still
        # applies to them).
        dropped = db.execute(
            "DELETE FROM readings WHERE ntp_synced = 1 AND stored_at < ?",
            (now - self.max_age_s,),
        ).rowcount
        excess = db.execute("SELECT count(*) FROM readings").fetchone()[0] - self.max_readings
        if excess > 0:
            dropped += db.execute(
                "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings ORDER BY seq LIMIT ?)",
                (excess,),
            ).rowcount
        if dropped:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (_DROPPED, dropped),
            )

    def remove(self, seqs: Iterable[int]) -> int:
        """Forget readings the collector has committed; return how many were removed."""
        # Consecutive seqs (an exported backlog) become one range: one DELETE, not many.
        return self.remove_ranges(seq_ranges(seqs))

    def remove_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Forget the readings in these inclusive seq ranges; return how many went."""
        range_list = list(ranges)
        if not range_list:
            return 0
        removed = 0
        with self._lock:
            if self._memory:
                for first, last in range_list:
                    for seq in [seq for seq in self._memory if first <= seq <= last]:
                        del self._memory[seq]
                        removed += 1
            if self._log is not None and self._log.records:
                # The unconfirmed rest goes to SQLite so the log can start again (else a
                # power cut would bring back what was just confirmed, to be sent again).
                if self._memory:
                    self._flush_memory()
                self._log.reset()

            # A lost delete only means a harmless re-send, so deletes skip the fsync
            # (WAL + synchronous=NORMAL); the next stored round's FULL commit syncs them.
            # With the round log, rounds no longer commit to SQLite: deletes sync
            # themselves (they only happen to a backlog, which is rare).
            if self._synchronous == "FULL" and self._log is None:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed += self._db.executemany(
                    "DELETE FROM readings WHERE seq BETWEEN ? AND ?", range_list
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        return removed

    def count_in_ranges(self, ranges: Sequence[tuple[int, int]]) -> int:
        """How many stored readings fall in these inclusive seq ranges."""
        if not ranges:
            return 0
        with self._lock:
            in_memory = sum(
                1 for seq in self._memory for first, last in ranges if first <= seq <= last
            )
            return in_memory + sum(  # type: ignore[no-any-return]
                self._db.execute(
                    "SELECT count(*) FROM readings WHERE seq BETWEEN ? AND ?", (first, last)
                ).fetchone()[0]
                for first, last in ranges
            )

    def record_anchor(self, anchor: ClockAnchor) -> bool:
        """Remember a boot's clock anchor (the first one seen wins); True if new."""
        if anchor.boot_id in self._anchors:
            return False
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO clock_anchors VALUES (?, ?, ?)",
                (anchor.boot_id, anchor.wall_at_monotonic_zero_ns, self._now()),
            )
            # Anchors of boots with nothing left to correct are only clutter.
            keep = sorted({e.boot_id for e in self._memory.values() if not e.ntp_synced})
            condition = "".join(" AND boot_id != ?" for _ in keep)
            db.execute(
                "DELETE FROM clock_anchors WHERE boot_id != ? AND boot_id NOT IN "  # noqa: S608 - only placeholders are interpolated
                f"(SELECT DISTINCT boot_id FROM readings WHERE ntp_synced = 0){condition}",
                (anchor.boot_id, *keep),
            )
        self._anchors = self._load_anchors()
        return True

    # ------------------------------------------------------------------ reading

    def _load_anchors(self) -> dict[str, ClockAnchor]:
        with self._lock:
            rows = self._db.execute(
                "SELECT boot_id, wall_at_monotonic_zero_ns FROM clock_anchors"
            ).fetchall()
        return {boot_id: ClockAnchor(boot_id, wall) for boot_id, wall in rows}

    def pending(self, *, after_seq: int = 0, limit: int = 500) -> list[Reading]:
        """Readings waiting to be sent, oldest first, ready for the wire.

        ``seq`` is filled in, and unsynchronised readings of a boot with a clock anchor
        get their wall time corrected (see agent.clock).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += [
                    (seq, entry.body) for seq, entry in self._memory.items() if seq > after_seq
                ][: limit - len(rows)]
        return [self._ready(seq, body) for seq, body in rows]

    def get(self, seqs: Sequence[int]) -> list[Reading]:
        """The readings with these sequence numbers that are still here, oldest first."""
        if not seqs:
            return []
        placeholders = ",".join("?" * len(seqs))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, body FROM readings WHERE seq IN ({placeholders}) ORDER BY seq",  # noqa: S608 - only placeholders are interpolated
                tuple(seqs),
            ).fetchall()
            if self._memory:
                rows += [(seq, self._memory[seq].body) for seq in seqs if seq in self._memory]
                rows.sort()
        return [self._ready(seq, body) for seq, body in rows]

    def _ready(self, seq: int, body: bytes) -> Reading:
        reading = _decoder.decode(body)
        anchor = None if reading.ntp_synced else self._anchors.get(reading.boot_id)
        if anchor is not None:
            return msgspec.structs.replace(
                reading,
                seq=seq,
                taken_at=anchor.wall_time(reading.monotonic_ms),
                ntp_synced=True,
            )
        return msgspec.structs.replace(reading, seq=seq)

    def all(self, *, stored_since: float = 0.0) -> Iterator[Reading]:
        """Every stored reading, optionally only those stored since a wall time."""
        after_seq = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, body FROM readings WHERE seq > ? AND stored_at >= ? "
                    "ORDER BY seq LIMIT 1000",
                    (after_seq, stored_since),
                ).fetchall()
            if not rows:
                break
            for seq, body in rows:
                yield self._ready(seq, body)
            after_seq = rows[-1][0]
        with self._lock:
            held = [
                (seq, entry.body)
                for seq, entry in self._memory.items()
                if seq > after_seq and entry.stored_at >= stored_since
            ]
        for seq, body in held:
            yield self._ready(seq, body)

    def stats(self) -> OutboxStats:
        with self._lock:
            pending, oldest, newest = self._db.execute(
                "SELECT count(*), min(seq), max(seq) FROM readings"
            ).fetchone()
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = ?", (_DROPPED,)
            ).fetchone()
            if self._memory:
                pending += len(self._memory)
                oldest = oldest if oldest is not None else min(self._memory)
                newest = max(self._memory)
        return OutboxStats(
            pending=pending,
            dropped_total=row[0] if row else 0,
            oldest_seq=oldest,
            newest_seq=newest,
        )
