"""Writes decoded messages to PostgreSQL: readings exactly once, bad input to dead letters.

One call of :meth:`Store.write` handles one batch of MQTT messages in one transaction:

* a reading is identified by (probe_id, outbox_id, seq), whatever its taken_at (a
  probe that corrected its clock sends a reading again with another time). The
  ``reading_ledger`` holds each probe outbox's committed seq ranges: the batch locks
  its probes' ledger rows, drops readings already committed (and repeats within the
  batch), stores the rest and extends the ledger, all in one transaction. The seqs
  handled (stored now, stored before, or dead-lettered) are returned so the collector
  can confirm them to the probe;
* readings of each kind are COPY'd straight into ``readings_<kind>`` inside a
  savepoint; should that still hit the unique key (rows stored before the ledger
  existed), they go through a staging table and ``INSERT … ON CONFLICT DO NOTHING``
  instead, so a duplicate is counted, never stored twice;
* messages and readings that fail validation go to ``dead_letters`` with the reason;
* status messages and the readings' arrival update ``probe_status`` and ``probe_events``.

Errors are sorted as Telegraf's PostgreSQL output does: *temporary* ones (SQLSTATE
classes 08 connection, 40 serialization/deadlock, 53 resources such as a full disk,
57 operator intervention such as a restart, or a lost connection) raise
:class:`TemporaryStoreError` and the caller retries the whole batch later; *permanent*
ones (22 data exception, 23 constraint violation) make the store retry message by
message and then reading by reading, quarantining only the rows that fail.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import psycopg
from psycopg import pq, sql
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper

from coverwatch import protocol

logger = logging.getLogger("coverwatch.collector")

DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024
TEMPORARY_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

# Columns of readings_<kind>, in protocol order: the protocol is the single definition.
# The order is the structs' field order, so msgspec.structs.astuple(reading) is a row.
COLUMNS: dict[str, tuple[str, ...]] = {
    kind: tuple(reading_type.__struct_fields__)
    for kind, reading_type in protocol.READING_TYPES.items()
}
_KIND_OF_TYPE: dict[type, str] = {
    reading_type: kind for kind, reading_type in protocol.READING_TYPES.items()
}
_astuple = msgspec.structs.astuple
# Where seq sits in a row (probe_id, *COLUMNS[kind]): msgspec orders a kw_only struct's
# own fields before the inherited ones.
_SEQ_AT: dict[str, int] = {kind: 1 + columns.index("seq") for kind, columns in COLUMNS.items()}
_taken_at = attrgetter("taken_at")

_UUID_OID = 2950
_FLOAT4_OID = 700
# Binary COPY hands a real column the C cast of the double, where text COPY has
# PostgreSQL parse the number and refuse one that overflows or underflows real. A batch
# with a value near those limits (or not finite) is therefore copied as text.
_FLOAT4_SAFE_MIN = 1.2e-38  # smallest normal real is 1.17549435e-38
_FLOAT4_SAFE_MAX = 3.4e38  # largest real is 3.40282347e+38


# A status or reading time further ahead of its arrival than this comes from a clock
# that is wrong: it must not freeze a probe's status (a status "at" year 9999 would win
# every later comparison), so it is recorded at the arrival time.
MAX_CLOCK_AHEAD = timedelta(minutes=10)

# (probe_id, outbox_id, seq): what identifies a reading.
ReadingKey = tuple[str, str, int]


class TemporaryStoreError(Exception):
    """The database is unreachable or busy; retry the same batch later."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message to store: from MQTT, or a line of an offline export file.

    ``source`` says where a message that did not come over MQTT came from
    (``import:<file>:<line>``); its dead letters are filed under it instead of the topic,
    so a rejected line can be found again in the file.
    """

    topic: str
    payload: bytes
    received_at: datetime
    redelivered: bool = False
    source: str | None = None

    @property
    def origin(self) -> str:
        return self.source or self.topic


@dataclass
class WriteResult:
    stored: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: int = 0
    rejected: list[DeadLetter] = field(default_factory=list)
    status_messages: int = 0
    # (probe_id, outbox_id) -> seqs now durable (stored, stored before, dead-lettered):
    # what the collector confirms to each probe after the commit.
    committed: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))

    @property
    def stored_total(self) -> int:
        return sum(self.stored.values())

    @property
    def dead_letters(self) -> int:
        return len(self.rejected)

    def add(self, other: WriteResult) -> None:
        for kind, count in other.stored.items():
            self.stored[kind] += count
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.status_messages += other.status_messages
        for outbox, seqs in other.committed.items():
            self.committed[outbox].update(seqs)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    probe_id: str | None
    reason: str
    field: str | None
    payload: bytes
    received_at: datetime
    reading_index: int | None = None
    # The reading's identity when it is known: a dead-lettered reading is handled for
    # good (confirmed to the probe, never expected again).
    key: ReadingKey | None = None


@dataclass
class DecodedBatch:
    """A batch of messages after decoding, grouped for writing.

    ``outboxes`` runs parallel to ``readings``: a row's identity is (row[0],
    outboxes[kind][i], row[_SEQ_AT[kind]]). ``positions`` (each row's place in
    its message) is kept only when decoding one message for quarantine.
    ``handled`` holds every seq the batch settles per (probe_id, outbox_id): its rows
    and its dead-lettered readings whose seq is known.
    """

    readings: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    outboxes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    positions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    handled: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    arrivals: dict[str, _Arrival] = field(default_factory=dict)
    statuses: list[tuple[protocol.ProbeStatus, datetime]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    repeats: int = 0  # readings that came twice within the batch
    track_positions: bool = False
    # (UTC hour since the epoch, probe) of every signal and latency row, for the rollup
    # marks: computed where the batch is decoded (the collector's decoder thread), so the
    # writer does not, unless the ledger dropped some rows as already committed.
    rollup_hours: set[tuple[int, str]] | None = None


@dataclass
class _Arrival:
    """What one probe's readings in this batch say about the probe."""

    last_seen: datetime
    last_taken_at: datetime
    boot_id: str


def is_temporary(error: BaseException) -> bool:
    """Connection trouble, serialization failures, full disks, restarts: retry later."""
    state: str | None = getattr(error, "sqlstate", None)
    if state:
        return state[:2] in TEMPORARY_SQLSTATE_CLASSES
    # No SQLSTATE: the connection itself failed or was lost.
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def decode_messages(
    messages: Iterable[InboundMessage], *, track_positions: bool = False
) -> DecodedBatch:
    decoded = DecodedBatch(track_positions=track_positions)
    for message in messages:
        _decode_one(message, decoded)
    decoded.rollup_hours = rollup_hours(decoded.readings)
    return decoded


def _probe_from_topic(topic: str) -> str | None:
    try:
        return protocol.parse_topic(topic).probe_id
    except protocol.ProtocolError:
        return None


def _decode_one(message: InboundMessage, into: DecodedBatch) -> None:
    try:
        address = protocol.parse_topic(message.topic)
        if address.channel == "status":
            if not message.payload:
                return  # an empty retained message only clears the status; nothing to store
            status = protocol.decode_status(message.topic, message.payload)
            into.statuses.append(
                (_status_within_clock_bounds(status, message, into), message.received_at)
            )
            return
        batch = protocol.decode_readings(message.topic, message.payload)
    except protocol.ProtocolError as error:
        into.dead_letters.append(
            DeadLetter(
                message.origin,
                _probe_from_topic(message.topic),
                error.reason,
                error.field,
                message.payload,
                message.received_at,
            )
        )
        return
    probe_id = batch.batch.probe_id
    outbox_id = batch.batch.outbox_id or protocol.NIL_OUTBOX_ID
    for rejected in batch.rejected:
        seq = _seq_of(rejected.raw)
        if seq is not None:
            into.handled[(probe_id, outbox_id)].append(seq)
        into.dead_letters.append(
            DeadLetter(
                message.origin,
                probe_id,
                rejected.error.reason,
                rejected.error.field,
                rejected.raw,
                message.received_at,
                rejected.index,
                None if seq is None else (probe_id, outbox_id, seq),
            )
        )
    readings = batch.batch.readings
    if not readings:
        return
    positions: Sequence[int] = range(len(readings))
    if batch.rejected:
        rejected_indexes = {rejected.index for rejected in batch.rejected}
        total = len(readings) + len(rejected_indexes)
        positions = [i for i in range(total) if i not in rejected_indexes]
    seqs = [reading.seq for reading in readings]
    seen = into.seen.setdefault((probe_id, outbox_id), set())
    stored = readings
    if seen.isdisjoint(seqs) and len(set(seqs)) == len(seqs):
        seen.update(seqs)  # the usual case: nothing repeated, no check per reading
    else:
        keep = [False] * len(readings)
        for number, seq in enumerate(seqs):
            if seq in seen:
                into.repeats += 1
            else:
                seen.add(seq)
                keep[number] = True
        stored = [reading for reading, kept in zip(readings, keep, strict=True) if kept]
        positions = [position for position, kept in zip(positions, keep, strict=True) if kept]
        seqs = [reading.seq for reading in stored]
    into.handled[(probe_id, outbox_id)].extend(seqs)
    rows, outboxes = into.readings, into.outboxes
    prefix = (probe_id,)
    for reading in stored:
        kind = _KIND_OF_TYPE[type(reading)]
        rows[kind].append(prefix + _astuple(reading))
        outboxes[kind].append(outbox_id)
    if into.track_positions:
        for reading, position in zip(stored, positions, strict=True):
            into.positions[_KIND_OF_TYPE[type(reading)]].append(position)
    # The probe's newest reading (the last of equals) says which boot it is in; a time
    # from a clock running far ahead counts as the arrival time.
    newest = max(reversed(readings), key=_taken_at)
    newest_taken_at = min(newest.taken_at, message.received_at + MAX_CLOCK_AHEAD)
    arrival = into.arrivals.get(probe_id)
    if arrival is None:
        into.arrivals[probe_id] = _Arrival(message.received_at, newest_taken_at, newest.boot_id)
        return
    arrival.last_seen = max(arrival.last_seen, message.received_at)
    if newest_taken_at >= arrival.last_taken_at:
        arrival.last_taken_at = newest_taken_at
        arrival.boot_id = newest.boot_id


def _status_within_clock_bounds(
    status: protocol.ProbeStatus, message: InboundMessage, into: DecodedBatch
) -> protocol.ProbeStatus:
    """A status dated far in the future is recorded at its arrival, with a dead letter."""
    limit = message.received_at + MAX_CLOCK_AHEAD
    if status.at is None or status.at <= limit:
        return status
    into.dead_letters.append(
        DeadLetter(
            message.origin,
            status.probe_id,
            f"status time {status.at.isoformat()} is more than "
            f"{int(MAX_CLOCK_AHEAD.total_seconds() // 60)} minutes after its arrival "
            f"({message.received_at.isoformat()}); recorded at the arrival time instead. "
            "Check the probe's clock (coverwatch-probe doctor)",
            "at",
            message.payload,
            message.received_at,
        )
    )
    return msgspec.structs.replace(status, at=message.received_at)


_generic_json = msgspec.json.Decoder()


def _seq_of(raw: bytes) -> int | None:
    """The seq of a rejected reading, if it has a usable one (hostile bytes allowed)."""
    try:
        value = _generic_json.decode(raw)
    except Exception:  # any malformed or absurd JSON: no seq to confirm
        return None
    seq = value.get("seq") if isinstance(value, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= protocol.MAX_SEQ:
        return seq
    return None


class Store:
    """Writes batches over one connection, reconnecting when it was lost."""

    def __init__(self, database_url: str, *, connect_timeout_s: float = 10) -> None:
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s
        self._connection: psycopg.Connection[Any] | None = None
        # Column types of readings_<kind> for binary COPY, looked up once per connection;
        # None where the table cannot take a binary COPY of COLUMNS (then COPY is text).
        self._copy_types: dict[str, _CopyTypes | None] = {}

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            self._connection = psycopg.connect(
                self.database_url, connect_timeout=int(self.connect_timeout_s)
            )
            self._connection.adapters.register_dumper(None, _BootIdBinaryDumper)
            self._connection.execute("SET synchronous_commit = on")
            self._connection.commit()
            self._copy_types = {}
        return self._connection

    def write(
        self, messages: Sequence[InboundMessage], decoded: DecodedBatch | None = None
    ) -> WriteResult:
        """Store a batch; raise TemporaryStoreError if it must be retried whole.

        ``decoded`` is ``decode_messages(messages)`` when the caller decoded the batch
        already (the collector does, in a thread of its own, while this writes the one
        before); writing never changes it, so a retry may pass it again.
        """
        outcome = self._try_write(decode_messages(messages) if decoded is None else decoded)
        if isinstance(outcome, WriteResult):
            return outcome
        logger.warning(
            "permanent database error, retrying message by message: %s", str(outcome).strip()
        )
        total = WriteResult()
        for message in messages:
            decoded = decode_messages([message], track_positions=True)
            outcome = self._try_write(decoded)
            if isinstance(outcome, WriteResult):
                total.add(outcome)
            else:
                total.add(self._write_reading_by_reading(message, decoded))
        return total

    def _try_write(self, decoded: DecodedBatch) -> WriteResult | psycopg.Error:
        """Write in one transaction; a permanent error is returned, a temporary one raised."""
        try:
            return self._write_decoded(decoded)
        except psycopg.Error as error:
            self._rollback_quietly()
            if is_temporary(error):
                raise TemporaryStoreError(str(error).strip()) from error
            return error

    def _rollback_quietly(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            connection.rollback()
        except psycopg.Error:
            self.close()

    def _write_decoded(self, decoded: DecodedBatch) -> WriteResult:
        connection = self.connection()
        result = WriteResult(duplicates=decoded.repeats)
        letters = decoded.dead_letters
        with connection.transaction():
            _lock_probe_status(connection, decoded)
            # Batches without an outbox id (probes older than the ledger, imports of their
            # exports) keep the old identity (probe_id, seq, taken_at): under the nil id a
            # probe whose old outbox restarted seq at 1 could not be told from a re-send.
            ranges = {
                outbox: protocol.seq_ranges(seqs)
                for outbox, seqs in decoded.handled.items()
                if outbox[1] != protocol.NIL_OUTBOX_ID and seqs
            }
            committed = _lock_ledger(connection, ranges) if ranges else {}
            readings = _without_committed(decoded, committed) if committed else decoded.readings
            dropped = sum(map(len, decoded.readings.values())) - sum(map(len, readings.values()))
            result.duplicates += dropped
            if readings:
                self._look_up_copy_types(connection, readings)
                for kind, inserted in _copy_readings(
                    connection, readings, self._copy_types
                ).items():
                    result.stored[kind] += inserted
                    result.duplicates += len(readings[kind]) - inserted
            hours = decoded.rollup_hours
            _mark_rollup_hours(
                connection, hours if hours is not None and not dropped else rollup_hours(readings)
            )
            if ranges:
                _extend_ledger(connection, ranges)
            for outbox, seqs in decoded.handled.items():
                result.committed[outbox].update(seqs)
            if committed:
                # A re-sent invalid reading was dead-lettered the first time.
                letters = [
                    letter
                    for letter in letters
                    if letter.key is None or not _in_ranges(committed, *letter.key)
                ]
                result.duplicates += len(decoded.dead_letters) - len(letters)
            _insert_dead_letters(connection, letters)
            result.rejected.extend(letters)
            _record_arrivals(connection, decoded.arrivals)
            for status, received_at in decoded.statuses:
                _record_status(connection, status, received_at)
            result.status_messages = len(decoded.statuses)
        connection.commit()
        return result

    def _look_up_copy_types(
        self, connection: psycopg.Connection[Any], readings: dict[str, list[tuple[Any, ...]]]
    ) -> None:
        for kind in readings:
            if kind not in self._copy_types:
                self._copy_types[kind] = _CopyTypes.look_up(connection, kind)

    def _write_reading_by_reading(
        self, message: InboundMessage, decoded: DecodedBatch
    ) -> WriteResult:
        """Quarantine exactly the readings the database refuses.

        Each reading is tried in a transaction of its own; a refused one goes to the
        dead letters as its row in JSON. The message's status and dead letters follow
        in a last part, quarantined with the raw message should they fail too.
        """
        parts: list[tuple[DecodedBatch, bytes, int | None, ReadingKey | None]] = []
        for kind, rows in decoded.readings.items():
            for row, outbox_id, position in zip(
                rows, decoded.outboxes[kind], decoded.positions[kind], strict=True
            ):
                single = DecodedBatch()
                single.readings[kind].append(row)
                single.outboxes[kind].append(outbox_id)
                key = (row[0], outbox_id, row[_SEQ_AT[kind]])
                single.handled[(key[0], key[1])].append(key[2])
                named_row = dict(zip(("probe_id", *COLUMNS[kind]), row, strict=True))
                parts.append((single, msgspec.json.encode(named_row), position, key))
        rest = DecodedBatch(
            arrivals=decoded.arrivals, statuses=decoded.statuses, dead_letters=decoded.dead_letters
        )
        for letter in decoded.dead_letters:
            if letter.key is not None:
                rest.handled[(letter.key[0], letter.key[1])].append(letter.key[2])
        parts.append((rest, message.payload, None, None))
        total = WriteResult(duplicates=decoded.repeats)
        for part, raw, part_index, part_key in parts:
            outcome = self._try_write(part)
            if isinstance(outcome, WriteResult):
                total.add(outcome)
                continue
            letter = DeadLetter(
                message.origin,
                _probe_from_topic(message.topic),
                f"database refused the row: {str(outcome).strip()}",
                None,
                raw,
                message.received_at,
                part_index,
                part_key,
            )
            refused = DecodedBatch(dead_letters=[letter])
            if part_key is not None:
                refused.handled[(part_key[0], part_key[1])].append(part_key[2])
            total.add(self._write_decoded(refused))
        return total

    def quarantine(self, letters: Sequence[DeadLetter]) -> WriteResult:
        """Store dead letters for input that never became a message (an unreadable line)."""
        outcome = self._try_write(DecodedBatch(dead_letters=list(letters)))
        if isinstance(outcome, WriteResult):
            return outcome
        raise outcome


class _BootIdBinaryDumper(Dumper):
    """uuid for binary COPY from the protocol's boot ids, which are validated UUID text."""

    format = pq.Format.BINARY
    oid = _UUID_OID

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self._seen: dict[str, bytes] = {}  # a probe keeps its boot id for many readings

    def dump(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            return bytes(obj.bytes)
        value = self._seen.get(obj)
        if value is None:
            value = self._seen[obj] = bytes.fromhex(obj.replace("-", ""))
        return value


@dataclass(frozen=True, slots=True)
class _CopyTypes:
    """What a binary COPY into readings_<kind> needs: the type of every column."""

    oids: tuple[int, ...]
    real_columns: tuple[int, ...]  # positions of real (float4) columns in a row

    @classmethod
    def look_up(cls, connection: psycopg.Connection[Any], kind: str) -> _CopyTypes | None:
        names = ["probe_id", *COLUMNS[kind]]
        oids = [
            row[0]
            for row in connection.execute(
                "SELECT a.atttypid::int FROM unnest(%s::text[]) WITH ORDINALITY AS c(name, i) "
                "LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(%s) "
                "AND a.attname = c.name AND NOT a.attisdropped ORDER BY c.i",
                (names, f"readings_{kind}"),
            )
        ]
        if len(oids) != len(names) or not all(oids):
            return None  # no such table or column: text COPY reports it as it always did
        return cls(tuple(oids), tuple(i for i, oid in enumerate(oids) if oid == _FLOAT4_OID))

    def fit(self, rows: list[tuple[Any, ...]]) -> bool:
        """Whether every real value is one binary and text COPY store alike."""
        for position in self.real_columns:
            values = list(filter(None, map(itemgetter(position), rows)))  # no NULLs, no zeros
            if values and not (
                min(map(abs, values)) > _FLOAT4_SAFE_MIN
                and max(map(abs, values)) < _FLOAT4_SAFE_MAX
            ):
                return False
        return True


_COLUMN_LISTS = {
    kind: sql.SQL(", ").join(sql.Identifier(name) for name in ("probe_id", *columns))
    for kind, columns in COLUMNS.items()
}
_COPY_TEXT = {
    kind: sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(f"readings_{kind}"), columns)
    for kind, columns in _COLUMN_LISTS.items()
}
_COPY_BINARY = {
    kind: sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(f"readings_{kind}"), columns
    )
    for kind, columns in _COLUMN_LISTS.items()
}


def _copy_readings(
    connection: psycopg.Connection[Any],
    readings: dict[str, list[tuple[Any, ...]]],
    copy_types: dict[str, _CopyTypes | None],
) -> dict[str, int]:
    """Store rows of every kind, skipping those already stored; return how many were new.

    Fast path: COPY straight into the tables inside one savepoint, as most batches hold
    no reading seen before; in binary format where the table's types are known and the
    values allow it. Should the binary COPY fail for any other reason than a duplicate
    or a lost connection, it is tried again in text format, which fails (or not) exactly
    as the text COPY always did. A unique violation (a redelivery or re-send) rolls the
    savepoint back and takes the slow path: COPY (text) into a staging table per kind,
    then INSERT … ON CONFLICT DO NOTHING, which counts exactly the new rows.
    """
    allow_binary = True
    while True:
        used_binary = False
        try:
            with connection.transaction(), connection.cursor() as cursor:
                for kind, rows in readings.items():
                    types = copy_types.get(kind) if allow_binary else None
                    if types is not None and types.fit(rows):
                        used_binary = True
                        with cursor.copy(_COPY_BINARY[kind]) as copy:
                            copy.set_types(types.oids)
                            for row in rows:
                                copy.write_row(row)
                    else:
                        with cursor.copy(_COPY_TEXT[kind]) as copy:
                            for row in rows:
                                copy.write_row(row)
            return {kind: len(rows) for kind, rows in readings.items()}
        except psycopg.errors.UniqueViolation:
            break
        except Exception as error:
            if not used_binary or (isinstance(error, psycopg.Error) and is_temporary(error)):
                raise
            logger.debug("binary COPY failed, copying as text: %s", str(error).strip())
            allow_binary = False
    return {kind: _copy_via_staging(connection, kind, rows) for kind, rows in readings.items()}


def _copy_via_staging(
    connection: psycopg.Connection[Any], kind: str, rows: list[tuple[Any, ...]]
) -> int:
    table = sql.Identifier(f"readings_{kind}")
    columns = _COLUMN_LISTS[kind]
    staging = sql.Identifier(f"staging_{kind}")
    connection.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(staging, table)
    )
    with connection.cursor() as cursor:
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
                "ON CONFLICT DO NOTHING"
            ).format(table=table, columns=columns, staging=staging)
        )
        inserted = cursor.rowcount
        cursor.execute(sql.SQL("TRUNCATE {}").format(staging))
    return inserted


def _lock_probe_status(connection: psycopg.Connection[Any], decoded: DecodedBatch) -> None:
    """Lock the probe_status row of every probe the batch touches, in probe order.

    Arrivals and status messages update these rows in message order; two collectors of a
    shared group with the same probes in another order would deadlock (retried, but
    each costs deadlock_timeout). Taking every row up front, sorted, avoids it; rows
    that do not exist yet are made here.
    """
    if not decoded.statuses:
        return  # arrivals alone are one statement over rows in probe order: no cycle
    probes = sorted({*decoded.arrivals, *(status.probe_id for status, _ in decoded.statuses)})
    connection.execute(
        "INSERT INTO probe_status (probe_id) SELECT * FROM unnest(%s::text[]) ORDER BY 1 "
        "ON CONFLICT (probe_id) DO UPDATE SET probe_id = excluded.probe_id",
        (probes,),
    )


_Ranges = dict[tuple[str, str], list[tuple[int, int]]]


def _lock_ledger(connection: psycopg.Connection[Any], ranges: _Ranges) -> _Ranges:
    """Lock the ledger rows of these probe outboxes; return what of ``ranges`` is
    already committed, as half-open ``[lower, upper)`` seq ranges per outbox.

    The upsert takes a row lock on every (probe_id, outbox_id) of the batch, in a fixed
    order, so two collectors of a shared group handling one probe take turns instead
    of both storing a reading. The batch goes to the server as seq ranges (a message's
    seqs are mostly one range) and comes back as their committed parts: a few values
    per message instead of three per reading.
    """
    outboxes = sorted(ranges)
    connection.execute(
        "INSERT INTO reading_ledger (probe_id, outbox_id) "
        "SELECT * FROM unnest(%s::text[], %s::uuid[]) ORDER BY 1, 2 "
        "ON CONFLICT (probe_id, outbox_id) DO UPDATE SET updated_at = now()",
        ([probe for probe, _ in outboxes], [outbox for _, outbox in outboxes]),
    )
    rows = connection.execute(
        "SELECT u.probe_id, u.outbox_id::text, lower(r), upper(r) "
        "FROM unnest(%s::text[], %s::uuid[], %s::bigint[], %s::bigint[]) "
        "     AS u(probe_id, outbox_id, first, last) "
        "JOIN reading_ledger l USING (probe_id, outbox_id) "
        "CROSS JOIN LATERAL unnest(l.committed * int8multirange(int8range(u.first, u.last, '[]'))) "
        "     AS r",
        _range_columns(ranges),
    ).fetchall()
    committed: _Ranges = defaultdict(list)
    for probe_id, outbox_id, lower, upper in rows:
        committed[(probe_id, outbox_id)].append((int(lower), int(upper)))
    return dict(committed)


def _in_ranges(committed: _Ranges, probe_id: str, outbox_id: str, seq: int) -> bool:
    return any(lower <= seq < upper for lower, upper in committed.get((probe_id, outbox_id), ()))


def _range_columns(ranges: _Ranges) -> tuple[list[str], list[str], list[int], list[int]]:
    probes: list[str] = []
    outboxes: list[str] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for (probe_id, outbox_id), outbox_ranges in ranges.items():
        for first, last in outbox_ranges:
            probes.append(probe_id)
            outboxes.append(outbox_id)
            firsts.append(first)
            lasts.append(last)
    return probes, outboxes, firsts, lasts


def _without_committed(
    decoded: DecodedBatch, committed: _Ranges
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows whose reading is not committed yet."""
    readings: dict[str, list[tuple[Any, ...]]] = {}
    for kind, rows in decoded.readings.items():
        seq_at = _SEQ_AT[kind]
        kept = [
            row
            for row, outbox_id in zip(rows, decoded.outboxes[kind], strict=True)
            if not _in_ranges(committed, row[0], outbox_id, row[seq_at])
        ]
        if kept:
            readings[kind] = kept
    return readings


# Reading kinds the hourly rollups aggregate (migration 007), and where taken_at sits.
_ROLLED_UP: dict[str, int] = {
    kind: 1 + COLUMNS[kind].index("taken_at") for kind in ("signal", "latency")
}
_MARK_HOURS = """
INSERT INTO rollup_dirty (probe_id, hour)
SELECT probe_id, hour FROM unnest(%s::text[], %s::timestamptz[]) AS m(probe_id, hour)
ORDER BY hour, probe_id
ON CONFLICT (probe_id, hour) DO UPDATE SET marked_at = excluded.marked_at
"""


def rollup_hours(readings: dict[str, list[tuple[Any, ...]]]) -> set[tuple[int, str]]:
    """(UTC hour since the epoch, probe) of every signal and latency row."""
    # Hours since the epoch are UTC hours; a set, as a batch holds few of them.
    hours: set[tuple[int, str]] = set()
    for kind, taken_at in _ROLLED_UP.items():
        rows = readings.get(kind)
        if rows:
            hours.update((int(row[taken_at].timestamp() // 3600), row[0]) for row in rows)
    return hours


def _mark_rollup_hours(connection: psycopg.Connection[Any], hours: set[tuple[int, str]]) -> None:
    """Mark the (probe, UTC hour) of every stored signal and latency reading for the rollups.

    In the writing transaction, so that readers aggregate those hours live until the
    refresher has re-materialized them (see migration 007). Sorted, so that two writers
    marking the same hours take their row locks in one order and cannot deadlock. DO
    UPDATE (not DO NOTHING) so that a mark the refresher holds makes this wait for it:
    the refresher's aggregate may not have seen these readings.
    """
    if hours:
        ordered = sorted(hours)
        connection.execute(
            _MARK_HOURS,
            (
                [probe for _, probe in ordered],
                [datetime.fromtimestamp(hour * 3600, UTC) for hour, _ in ordered],
            ),
        )


def _extend_ledger(connection: psycopg.Connection[Any], ranges: _Ranges) -> None:
    connection.execute(
        "UPDATE reading_ledger l SET committed = l.committed + n.ranges, updated_at = now() "
        "FROM (SELECT probe_id, outbox_id, range_agg(int8range(first, last, '[]')) AS ranges "
        "      FROM unnest(%s::text[], %s::uuid[], %s::bigint[], %s::bigint[]) "
        "           AS u(probe_id, outbox_id, first, last) GROUP BY 1, 2) AS n "
        "WHERE l.probe_id = n.probe_id AND l.outbox_id = n.outbox_id",
        _range_columns(ranges),
    )


def _insert_dead_letters(connection: psycopg.Connection[Any], letters: list[DeadLetter]) -> None:
    if not letters:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO dead_letters (received_at, topic, probe_id, reading_index, reason, "
            "field, payload, payload_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    letter.received_at,
                    letter.topic.replace("\x00", "\\0"),
                    letter.probe_id,
                    letter.reading_index,
                    letter.reason.replace("\x00", "\\0"),
                    letter.field.replace("\x00", "\\0") if letter.field else None,
                    letter.payload[:DEAD_LETTER_PAYLOAD_LIMIT],
                    len(letter.payload),
                )
                for letter in letters
            ],
        )


def _record_arrivals(connection: psycopg.Connection[Any], arrivals: dict[str, _Arrival]) -> None:
    """Update probe_status from the readings' arrival, set-based (one statement)."""
    if not arrivals:
        return
    in_order = sorted(arrivals.items())  # rows locked in probe order, as everywhere
    connection.execute(
        _RECORD_ARRIVALS,
        (
            [probe_id for probe_id, _ in in_order],
            [arrival.last_seen for _, arrival in in_order],
            [arrival.last_taken_at for _, arrival in in_order],
            [arrival.boot_id for _, arrival in in_order],
        ),
    )


# Both parts read probe_status as it was before the statement, so the reboot check sees
# the previous boot just as when they were two statements.
_RECORD_ARRIVALS = """
WITH arrivals AS (
    SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::uuid[])
        AS a(probe_id, last_seen, last_taken_at, boot_id)
), reboots AS (
    -- A newer reading from another boot than the last one stored: the probe rebooted.
    INSERT INTO probe_events (probe_id, at, event, detail)
    SELECT a.probe_id, a.last_taken_at, 'reboot',
           jsonb_build_object('previous_boot_id', s.boot_id, 'boot_id', a.boot_id)
    FROM arrivals a JOIN probe_status s USING (probe_id)
    WHERE s.boot_id IS NOT NULL AND s.boot_id <> a.boot_id
      AND (s.last_taken_at IS NULL OR a.last_taken_at >= s.last_taken_at)
    ON CONFLICT DO NOTHING
)
INSERT INTO probe_status (probe_id, last_seen, last_taken_at, boot_id)
SELECT probe_id, last_seen, last_taken_at, boot_id FROM arrivals
ON CONFLICT (probe_id) DO UPDATE SET
    last_seen = greatest(probe_status.last_seen, excluded.last_seen),
    boot_id = CASE WHEN probe_status.last_taken_at IS NULL
                     OR excluded.last_taken_at >= probe_status.last_taken_at
                   THEN excluded.boot_id ELSE probe_status.boot_id END,
    last_taken_at = greatest(probe_status.last_taken_at, excluded.last_taken_at)
"""


def _record_status(
    connection: psycopg.Connection[Any], status: protocol.ProbeStatus, received_at: datetime
) -> None:
    at = status.at or received_at
    changed = connection.execute(
        """INSERT INTO probe_status (probe_id, state, state_changed_at, agent_version)
           VALUES (%(probe)s, %(state)s, %(at)s, %(version)s)
           ON CONFLICT (probe_id) DO UPDATE SET
               state = excluded.state,
               state_changed_at = excluded.state_changed_at,
               agent_version = coalesce(excluded.agent_version, probe_status.agent_version)
           WHERE probe_status.state_changed_at IS NULL
              OR probe_status.state_changed_at <= excluded.state_changed_at
           RETURNING probe_id""",
        {
            "probe": status.probe_id,
            "state": status.state,
            "at": at,
            "version": status.agent_version,
        },
    ).fetchone()
    detail = {k: v for k, v in {"reason": status.reason, "boot_id": status.boot_id}.items() if v}
    connection.execute(
        "INSERT INTO probe_events (probe_id, at, event, detail) VALUES (%s, %s, %s, %s::jsonb) "
        "ON CONFLICT DO NOTHING",
        (status.probe_id, at, status.state, msgspec.json.encode(detail).decode()),
    )
    if changed is None:
        logger.debug("older status for %s ignored", status.probe_id)
