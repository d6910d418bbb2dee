"""``coverwatch import FILE``: readings carried on a USB stick from a village with no network.

A technician exports a probe's outbox with ``coverwatch-probe export``; the file is
JSON Lines, one readings batch per line, exactly the payload the probe would have
published on ``coverwatch/v1/<probe_id>/readings``, optionally gzip-compressed (told by
its magic bytes, not its name). See "Offline export files" in docs/protocol.md.

Each line goes through the collector's own path: the topic it would have been published
on is taken from its ``probe_id``, and :meth:`collector.storage.Store.write` decodes and
stores it. So the rules are the MQTT ones: a reading already stored (by an earlier import,
or because it also arrived over MQTT) is counted as a duplicate and not stored again;
a bad line or a bad reading goes to ``dead_letters``, filed under the topic
``import:<file name>:<line>``, and the valid lines and readings beside it are stored.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg

from collector import schema
from collector.storage import DeadLetter, InboundMessage, Store, TemporaryStoreError, WriteResult
from coverwatch import protocol
from coverwatch.errors import CoverwatchError
from coverwatch.settings import redact_url

GZIP_MAGIC = b"\x1f\x8b"
# One transaction per this many lines or readings, whichever comes first: small enough
# that an interrupted import keeps most of its work, big enough to keep COPY efficient.
FLUSH_LINES = 500
FLUSH_READINGS = 5000


class _ProbeIdOnly(msgspec.Struct):
    probe_id: str | None = None


_probe_id_decoder = msgspec.json.Decoder(_ProbeIdOnly)


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportSummary:
    file: str
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    read_error: str | None = None

    def describe(self) -> str:
        text = (
            f"{self.file}: {self.lines} lines, {self.stored} readings stored, "
            f"{self.duplicates} duplicates skipped, {len(self.rejections)} rejected"
        )
        return text + (" (kept in dead_letters)" if self.rejections else "")


class NotAnExportFile(CoverwatchError):
    """The file is not JSON Lines at all (a photo, a CSV, the wrong file from the stick)."""


def require_schema(database_url: str) -> None:
    """Refuse to import into a database that ``coverwatch db upgrade`` has not prepared."""
    with psycopg.connect(database_url) as connection:
        missing = schema.pending_migrations(connection)
    if missing:
        names = ", ".join(f"{m.version:03d}_{m.name}" for m in missing)
        raise CoverwatchError(
            f"the database at {redact_url(database_url)} lacks migrations {names}; "
            "run coverwatch db upgrade first"
        )


@contextlib.contextmanager
def open_export(path: Path) -> Iterator[Iterable[bytes]]:
    """The file's bytes, decompressed when it starts with the gzip magic bytes."""
    try:
        raw = path.open("rb")
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror}") from None
    with raw:
        if raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            raw.seek(0)
            yield raw


def import_export(
    stream: Iterable[bytes], name: str, store: Store, *, received_at: datetime | None = None
) -> ImportSummary:
    """Store every line of an export file; bad lines are dead-lettered, not fatal.

    Raises NotAnExportFile, before storing anything, when the first line is not JSON,
    and CoverwatchError when the database goes away (what was committed stays; importing
    the file again is safe). A file that cannot be read to its end (a truncated gzip
    stream) keeps the lines before the damage and says so in ``read_error``.
    """
    batch = _Batch(store, ImportSummary(name), received_at or datetime.now(UTC))
    lines = _NumberedLines(stream)
    try:
        for number, line in lines:
            if batch.summary.lines == 0:
                _check_first_line(name, number, line)
            batch.add(number, line)
    except (OSError, EOFError, zlib.error) as error:
        batch.summary.read_error = (
            f"cannot read {name} past line {lines.last_number}: {error}; "
            "the lines before were imported"
        )
    batch.flush()
    return batch.summary


class _NumberedLines:
    """Non-blank lines with their 1-based line numbers, remembering how far it got."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self.stream = stream
        self.last_number = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for number, line in enumerate(self.stream, start=1):
            self.last_number = number
            stripped = line.strip()
            if stripped:
                yield number, stripped


def _check_first_line(name: str, number: int, line: bytes) -> None:
    try:
        msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise NotAnExportFile(
            f"{name} is not a coverwatch export file: line {number} is not JSON ({error}); "
            "expected one readings batch per line (JSON Lines, optionally gzip-compressed), "
            "as written by coverwatch-probe export"
        ) from None


class _Batch:
    """Lines waiting to be written in one transaction, and the running summary."""

    def __init__(self, store: Store, summary: ImportSummary, received_at: datetime) -> None:
        self.store = store
        self.summary = summary
        self.received_at = received_at
        self.messages: list[InboundMessage] = []
        self.unreadable: list[DeadLetter] = []
        self.line_of_source: dict[str, int] = {}
        self.readings_hint = 0

    def add(self, number: int, line: bytes) -> None:
        self.summary.lines += 1
        source = f"import:{self.summary.file}:{number}"
        self.line_of_source[source] = number
        topic = _topic_for(line)
        if topic is None:
            self.unreadable.append(_unreadable_line(line, source, self.received_at))
        else:
            self.messages.append(InboundMessage(topic, line, self.received_at, source=source))
            self.readings_hint += line.count(b'"seq"') or 1
        if len(self.line_of_source) >= FLUSH_LINES or self.readings_hint >= FLUSH_READINGS:
            self.flush()

    def flush(self) -> None:
        try:
            result = self.store.write(self.messages) if self.messages else WriteResult()
            if self.unreadable:
                result.add(self.store.quarantine(self.unreadable))
        except (TemporaryStoreError, psycopg.Error) as error:
            first = min(self.line_of_source.values(), default=0)
            raise CoverwatchError(
                f"database error while storing {self.summary.file} from line {first} on: "
                f"{str(error).strip()}; the lines before were stored, and importing the "
                "file again is safe (stored readings are skipped as duplicates)"
            ) from None
        self.summary.stored += result.stored_total
        self.summary.duplicates += result.duplicates
        rejections = [
            Rejection(
                self.line_of_source[letter.topic],
                f"{letter.field}: {letter.reason}" if letter.field else letter.reason,
            )
            for letter in result.rejected
        ]
        self.summary.rejections.extend(sorted(rejections, key=lambda r: r.line))
        self.messages, self.unreadable, self.line_of_source = [], [], {}
        self.readings_hint = 0


def _topic_for(line: bytes) -> str | None:
    """The topic the line would have been published on, if it names a valid probe."""
    try:
        probe_id = _probe_id_decoder.decode(line).probe_id
        return None if probe_id is None else protocol.readings_topic(probe_id)
    except (msgspec.DecodeError, UnicodeDecodeError, protocol.ProtocolError):
        return None


# Used only to let the protocol explain a line without a valid probe_id: such a line
# fails in its envelope (which requires one) before the topic is compared with it.
_ANY_READINGS_TOPIC = protocol.readings_topic("unknown")


def _unreadable_line(line: bytes, source: str, received_at: datetime) -> DeadLetter:
    try:
        protocol.decode_readings(_ANY_READINGS_TOPIC, line)
    except protocol.ProtocolError as error:
        return DeadLetter(source, None, error.reason, error.field, line, received_at)
    return DeadLetter(source, None, "missing or invalid", "probe_id", line, received_at)
