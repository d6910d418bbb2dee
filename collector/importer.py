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

The file comes from a USB stick, so it is read as hostile input: lines are read with a
bound (a line longer than a message may be is skipped to its end and rejected, so a gzip
bomb or a file of zeros cannot make the importer allocate without bound), and nothing in
a line — nesting thousands deep, numbers out of range, NUL bytes, bytes that are not
UTF-8 — does more than reject that line.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec
import psycopg

from collector import schema
from collector.storage import DeadLetter, InboundMessage, Store, TemporaryStoreError, WriteResult
from coverwatch import protocol
from coverwatch.errors import CoverwatchError
from coverwatch.settings import redact_url

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# A line is one message, so it may be as long as a message (plus its line ending).
MAX_LINE_BYTES = protocol.MAX_PAYLOAD_BYTES
# Of a line longer than that, only this much is kept (for its dead letter).
TOO_LONG_KEPT_BYTES = 64 * 1024
# One transaction per this many lines, readings or bytes, whichever comes first: small
# enough that an interrupted import keeps most of its work (and memory stays bounded),
# big enough to keep COPY efficient.
FLUSH_LINES = 500
FLUSH_READINGS = 5000
FLUSH_BYTES = 16 * 1024 * 1024
_SKIP_CHUNK_BYTES = 1024 * 1024


class LineReader(Protocol):
    """What the importer reads: an open binary file, plain or gzip (``readline`` with a bound)."""

    def readline(self, size: int = -1, /) -> bytes: ...


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
def open_export(path: Path) -> Iterator[LineReader]:
    """The file's bytes, decompressed when it starts with the gzip magic bytes."""
    try:
        raw = path.open("rb")
    except OSError as error:
        raise CoverwatchError(f"cannot read {path}: {error.strerror or error}") from None
    with raw:
        try:
            compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            raw.seek(0)
        except OSError as error:  # e.g. a pipe, which cannot be read twice
            raise CoverwatchError(f"cannot read {path}: {error.strerror or error}") from None
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


def import_export(
    stream: LineReader, name: str, store: Store, *, received_at: datetime | None = None
) -> ImportSummary:
    """Store every line of an export file; bad lines are dead-lettered, not fatal.

    Raises NotAnExportFile, before storing anything, when the first line does not even
    start a JSON object (a photo, a CSV, UTF-16 text), and CoverwatchError when the
    database goes away (what was committed stays; importing the file again is safe). A
    file that cannot be read to its end (a truncated gzip stream) keeps the lines before
    the damage and says so in ``read_error``.
    """
    reader = ExportReader(stream, name, received_at or datetime.now(UTC))
    batch = _Batch(store, ImportSummary(reader.name))
    try:
        for number, item in reader:
            batch.add(number, item)
    except READ_ERRORS as error:
        batch.summary.read_error = (
            f"cannot read {reader.name} past line {reader.last_number}: {error}; "
            "the lines before were imported"
            if reader.last_number
            else f"cannot read {reader.name}: {error} (a damaged or truncated gzip file?); "
            "nothing was imported"
        )
    batch.flush()
    return batch.summary


# What reading a damaged file raises (a gzip stream cut short or corrupt, a bad disk).
READ_ERRORS = (OSError, EOFError, zlib.error)


class ExportReader:
    """The lines of an export file, parsed: each non-blank line with its number, as the
    message it would have been on MQTT (to be decoded and stored), or as a dead letter
    when it cannot be one (no valid ``probe_id``, not JSON, too long).

    Pure parsing, no database. Iterating raises only NotAnExportFile (at the first
    non-blank line) and READ_ERRORS; ``last_number`` says how far it got.
    """

    def __init__(self, stream: LineReader, name: str, received_at: datetime) -> None:
        self.stream = stream
        self.name = display_name(name)
        self.received_at = received_at
        self.last_number = 0

    def __iter__(self) -> Iterator[tuple[int, InboundMessage | DeadLetter]]:
        first = True
        for line in self._lines():
            if first:
                _check_first_line(self.name, line)
                first = False
            source = f"import:{self.name}:{line.number}"
            topic = None if line.too_long else _topic_for(line.data)
            if topic is None:
                yield line.number, _unreadable_line(line, source, self.received_at)
            else:
                yield line.number, InboundMessage(topic, line.data, self.received_at, source=source)

    def _lines(self) -> Iterator[_Line]:
        """Non-blank lines, read with a bound."""
        while True:
            # A whole line of the longest message, with "\r\n", or a line too long.
            line = self.stream.readline(MAX_LINE_BYTES + 2)
            if not line:
                return
            self.last_number += 1
            if self.last_number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]  # Windows editors write one; JSON allows it
            size = len(line.rstrip(b"\r\n"))
            if not line.endswith(b"\n") and size > MAX_LINE_BYTES:
                size += self._skip_to_end_of_line()
                line = line[:TOO_LONG_KEPT_BYTES]
            stripped = line.strip()
            if stripped:
                yield _Line(self.last_number, stripped, size)

    def _skip_to_end_of_line(self) -> int:
        """Read past the rest of an over-long line without keeping it; its length."""
        skipped = 0
        while True:
            chunk = self.stream.readline(_SKIP_CHUNK_BYTES)
            skipped += len(chunk.rstrip(b"\r\n"))
            if not chunk or chunk.endswith(b"\n"):
                return skipped


def display_name(name: str) -> str:
    """The file name as it can be printed and stored (undecodable bytes as ``\\xff``)."""
    try:
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)


@dataclass(frozen=True, slots=True)
class _Line:
    """One non-blank line: its 1-based number, its bytes without the line ending and
    surrounding blanks, and its length as read (only its start is kept when too long)."""

    number: int
    data: bytes
    size: int

    @property
    def too_long(self) -> bool:
        return self.size > MAX_LINE_BYTES


def _check_first_line(name: str, line: _Line) -> None:
    """Refuse a file that is not JSON Lines at all, before anything is stored.

    Only whether the first line starts a JSON object counts: a line that does but is
    broken (cut short, nested too deeply, a number out of range, a stray byte) is an
    export line gone bad, rejected on its own while the lines beside it are stored.
    """
    if line.data.startswith(b"{") and line.data[1:2] != b"\x00":
        return
    raise NotAnExportFile(
        f"{name} is not a coverwatch export file: line {line.number} is not JSON "
        f"({_why_not_json(line.data)}); expected one readings batch per line (JSON Lines, "
        "UTF-8, optionally gzip-compressed), as written by coverwatch-probe export"
    )


def _why_not_json(data: bytes) -> str:
    head = data[:64]
    nuls = head.count(0)
    if data.startswith(GZIP_MAGIC):
        return "it is gzip-compressed inside the file; decompress it once"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (nuls and abs(2 * nuls - len(head)) <= 1):
        return "it looks like UTF-16 text; save the file as UTF-8"
    if nuls:
        return "it holds NUL bytes: binary data, not text"
    try:
        msgspec.json.decode(data, type=msgspec.Raw)  # syntax only: no numbers converted
    except RecursionError:
        return "it is nested too deeply"
    except Exception as error:  # any other failure is an explanation, not a crash
        return str(error)
    return "it is JSON, but not an object: a readings batch starts with {"


class _Batch:
    """Lines waiting to be written in one transaction, and the running summary."""

    def __init__(self, store: Store, summary: ImportSummary) -> None:
        self.store = store
        self.summary = summary
        self.messages: list[InboundMessage] = []
        self.unreadable: list[DeadLetter] = []
        self.line_of_source: dict[str, int] = {}
        self.readings_hint = 0
        self.buffered_bytes = 0

    def add(self, number: int, item: InboundMessage | DeadLetter) -> None:
        self.summary.lines += 1
        if isinstance(item, DeadLetter):
            self.line_of_source[item.topic] = number
            self.unreadable.append(item)
        else:
            self.line_of_source[item.origin] = number
            self.messages.append(item)
            self.readings_hint += item.payload.count(b'"seq"') or 1
        self.buffered_bytes += len(item.payload)
        if (
            len(self.line_of_source) >= FLUSH_LINES
            or self.readings_hint >= FLUSH_READINGS
            or self.buffered_bytes >= FLUSH_BYTES
        ):
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
        self.readings_hint = self.buffered_bytes = 0


def _topic_for(line: bytes) -> str | None:
    """The topic the line would have been published on, if it names a valid probe."""
    try:
        probe_id = _probe_id_decoder.decode(line).probe_id
        return None if probe_id is None else protocol.readings_topic(probe_id)
    except Exception:  # nesting too deep, bad bytes, ...: the decoder explains it next
        return None


# Used only to let the protocol explain a line without a valid probe_id: such a line
# fails in its envelope (which requires one) before the topic is compared with it.
_ANY_READINGS_TOPIC = protocol.readings_topic("unknown")


def _unreadable_line(line: _Line, source: str, received_at: datetime) -> DeadLetter:
    if line.too_long:
        return DeadLetter(
            source,
            None,
            f"line is {line.size} bytes, the limit is {MAX_LINE_BYTES} (one message per "
            f"line); only its first {len(line.data)} bytes are kept",
            None,
            line.data,
            received_at,
        )
    try:
        protocol.decode_readings(_ANY_READINGS_TOPIC, line.data)
    except protocol.ProtocolError as error:
        return DeadLetter(source, None, error.reason, error.field, line.data, received_at)
    return DeadLetter(source, None, "missing or invalid", "probe_id", line.data, received_at)
