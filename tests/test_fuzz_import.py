"""Hostile export files for ``coverwatch import``'s reader (hypothesis, no database).

:class:`collector.importer.ExportReader` is pure parsing: it turns a file into one
message or one dead letter per non-blank line. Fed files mixing good lines with deep
nesting, huge numbers, NUL bytes, bytes that are not UTF-8, random bytes and mutated
lines, plain or gzip (whole or cut short), it may raise only NotAnExportFile (when the
first line does not start a JSON object) or a read error; every good line comes out as
the message it is, every line keeps its number, and what the collector then decodes
(``collector.storage.decode_messages``, pure as well) raises nothing either. The database
side is tested end to end in tests/test_import.py.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collector import importer
from collector.importer import READ_ERRORS, ExportReader, NotAnExportFile
from collector.storage import COLUMNS, DeadLetter, InboundMessage, decode_messages
from tests.helpers import signal
from tests.test_fuzz_protocol import HOSTILE_FRAGMENTS, VALID_HOSTILE_VALUES, mutated

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def good_line(seq: int) -> bytes:
    return json.dumps({"v": 1, "probe_id": "cb-001", "readings": [signal(seq)]}).encode()


def read_all(data: bytes, name: str = "cb-001.jsonl") -> list[tuple[int, object]]:
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else None
    return list(ExportReader(stream or io.BytesIO(data), name, NOW))


@st.composite
def hostile_value_in_a_reading(draw: st.DrawFn) -> bytes:
    """A good line but for one value of its reading: still JSON, with its probe_id."""
    field = draw(st.sampled_from(["seq", "rsrp_dbm", "taken_at", "operator_name", "kind"]))
    reading = signal(999) | {field: "__hostile__"}
    line = json.dumps({"v": 1, "probe_id": "cb-001", "readings": [reading]}).encode()
    return line.replace(b'"__hostile__"', draw(VALID_HOSTILE_VALUES))


HOSTILE_LINES = st.one_of(
    HOSTILE_FRAGMENTS,
    st.binary(max_size=300),
    mutated(good_line(999)),
    hostile_value_in_a_reading(),
    st.sampled_from([b"", b"   ", b"\r", b"\t\x0b\x0c"]),  # blank lines are skipped
).map(lambda line: line.replace(b"\n", b" "))


@st.composite
def export_files(draw: st.DrawFn) -> tuple[list[bytes], list[bool]]:
    """Lines (without "\\n") and which of them are good; good lines have distinct seqs."""
    lines: list[bytes] = []
    good: list[bool] = []
    for seq in range(draw(st.integers(1, 12))):
        # Mostly a good first line, so that most files get past the first-line check.
        if draw(st.integers(0, 3)) > (0 if seq == 0 else 1):
            lines.append(good_line(seq))
            good.append(True)
        else:
            lines.append(draw(HOSTILE_LINES))
            good.append(False)
    return lines, good


@FUZZ
@given(export_files(), st.sampled_from(["plain", "gzip", "gzip cut short", "crlf"]))
def test_every_line_becomes_a_message_or_a_dead_letter(
    file: tuple[list[bytes], list[bool]], form: str
) -> None:
    lines, good = file
    ending = b"\r\n" if form == "crlf" else b"\n"
    data = b"".join(line + ending for line in lines)
    if form.startswith("gzip"):
        data = gzip.compress(data)
        if form == "gzip cut short":
            data = data[: len(data) // 2]
    non_blank = [number for number, line in enumerate(lines, 1) if line.strip()]
    reader = ExportReader(
        gzip.GzipFile(fileobj=io.BytesIO(data)) if form.startswith("gzip") else io.BytesIO(data),
        "cb-001.jsonl",
        NOW,
    )
    items: list[tuple[int, InboundMessage | DeadLetter]] = []
    refused: NotAnExportFile | None = None
    try:
        for numbered in reader:
            items.append(numbered)
    except NotAnExportFile as error:
        refused = error
    except READ_ERRORS:
        event("read error")
        assert form == "gzip cut short"
    else:
        assert form != "gzip cut short" or not data
    if refused is not None:
        event("refused as not an export file")
        first = lines[non_blank[0] - 1].strip()
        assert not first.startswith(b"{") or first[1:2] == b"\x00"
        assert items == []
        assert f"line {non_blank[0]} is not JSON" in str(refused)
        return
    # Every non-blank line read so far is one item, numbered as in the file.
    assert [number for number, _ in items] == non_blank[: len(items)]
    if form != "gzip cut short":
        assert len(items) == len(non_blank)
    for number, item in items:
        source = f"import:cb-001.jsonl:{number}"
        if good[number - 1]:
            assert isinstance(item, InboundMessage), item
            assert item.payload == lines[number - 1]
            assert (item.topic, item.source) == ("coverwatch/v1/cb-001/readings", source)
        elif isinstance(item, DeadLetter):
            assert item.topic == source
            assert item.reason.strip()
            assert len(item.reason) < 600
    # What the collector does next with the messages is pure too, and must not raise.
    decoded = decode_messages(item for _, item in items if isinstance(item, InboundMessage))
    decoded_seqs = {
        row[1 + COLUMNS[kind].index("seq")]
        for kind, rows in decoded.readings.items()
        for row in rows
    }
    assert decoded_seqs >= {number - 1 for number, _ in items if good[number - 1]}
    for letter in decoded.dead_letters:
        assert letter.reason.strip()
    event(f"dead letters from the reader: {sum(isinstance(i, DeadLetter) for _, i in items) > 0}")
    event(f"rejected by the decoder: {len(decoded.dead_letters) > 0}")


@pytest.mark.parametrize(
    ("first_line", "words"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "NUL bytes"),
        ('{"v": 1}'.encode("utf-16"), "UTF-16"),
        ('{"v": 1}'.encode("utf-16-le"), "UTF-16"),
        (b"probe_id,seq", "JSON is malformed"),
        (b"[1e400]", "JSON, but not an object"),
        (gzip.compress(b"{}"), "gzip-compressed inside"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_a_file_that_is_not_json_lines_is_refused_with_the_reason(
    first_line: bytes, words: str, compress: bool
) -> None:
    data = first_line + b"\n" + good_line(1) + b"\n"
    if compress or data.startswith(b"\x1f\x8b"):
        data = gzip.compress(data)
    with pytest.raises(NotAnExportFile) as caught:
        read_all(data)
    message = str(caught.value)
    assert "cb-001.jsonl is not a coverwatch export file: line 1 is not JSON" in message
    assert words in message


@pytest.mark.parametrize(
    "bad",
    [
        b'{"v": 1, "probe_id": "cb-001", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"{" + b"[" * 100_000,
        good_line(5).replace(b'"monotonic_ms": 1005', b'"monotonic_ms": 1e400'),
        good_line(5).replace(b'"monotonic_ms": 1005', b'"monotonic_ms": 1' + b"0" * 5000),
        good_line(5).replace(b'"home"', b'"home", "operator_name": "\\ud800"'),
        good_line(5).replace(b'"home"', '"home", "operator_name": "Đi\u00ean"'.encode("cp1258")),
        b'{"v": 1, "probe_id": "cb-001",\x00}',
    ],
)
def test_a_bad_first_line_of_an_export_costs_only_itself(bad: bytes) -> None:
    items = read_all(bad + b"\n" + good_line(1) + b"\n")
    assert [number for number, _ in items] == [1, 2]
    assert isinstance(items[1][1], InboundMessage)
    decoded = decode_messages([items[0][1]] if isinstance(items[0][1], InboundMessage) else [])
    letters = [items[0][1]] if isinstance(items[0][1], DeadLetter) else decoded.dead_letters
    assert letters, "the bad line was not rejected"
    assert not any(decoded.readings.values())


def test_a_utf8_byte_order_mark_is_allowed() -> None:
    items = read_all(b"\xef\xbb\xbf" + good_line(1) + b"\n")
    assert [type(item) for _, item in items] == [InboundMessage]


def test_a_line_longer_than_a_message_is_skipped_in_bounded_memory() -> None:
    """A gzip bomb in one line: 64 MiB of zeros between two good lines."""
    bomb = b'{"probe_id": "cb-001", "x": "' + b"0" * (64 * 1024 * 1024) + b'"}'
    data = gzip.compress(good_line(1) + b"\n" + bomb + b"\n" + good_line(2) + b"\n", 1)
    tracemalloc.start()
    try:
        items = read_all(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    assert [number for number, _ in items] == [1, 2, 3]
    letter = items[1][1]
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith(f"line is {len(bomb)} bytes, the limit is 1048576")
    assert len(letter.payload) == importer.TOO_LONG_KEPT_BYTES
    assert [type(item) for _, item in (items[0], items[2])] == [InboundMessage, InboundMessage]


def test_a_line_of_exactly_the_message_limit_is_kept() -> None:
    line = b'{"probe_id": "cb-001", "x": "' + b"a" * 100 + b'"}'
    line = line.replace(b"a" * 100, b"a" * (100 + importer.MAX_LINE_BYTES - len(line)))
    assert len(line) == importer.MAX_LINE_BYTES
    items = read_all(line + b"\r\n" + good_line(1) + b"\n")
    assert isinstance(items[0][1], InboundMessage)
    assert len(items) == 2


def test_a_file_name_that_is_not_utf8_is_shown_and_stored_escaped() -> None:
    name = b"cb\xff\n.jsonl".decode("utf-8", "surrogateescape")
    (_, message), (_, letter) = read_all(good_line(1) + b"\nnot json\n", name)
    assert isinstance(message, InboundMessage)
    assert isinstance(letter, DeadLetter)
    assert message.source == "import:cb\\xff\\n.jsonl:1"
    assert letter.topic == "import:cb\\xff\\n.jsonl:2"
    letter.topic.encode("utf-8")  # PostgreSQL text: no lone surrogates
