"""Hostile input for the wire protocol's entry points (hypothesis).

Every decoder (``decode_readings``, ``decode_status``, ``decode_ack``) and ``parse_topic``
is fed deep nesting, numbers no float or bigint holds, odd Unicode, NUL bytes, random
bytes and mutations of valid messages. The promise under test, from the module's
docstring: a :class:`ProtocolError` and nothing else escapes, a bad reading costs only
itself, and the error names the problem.

The tests at the end pin the defects this fuzzing found (each names its input); the one
marked ``xfail`` is a known limitation: a reading nested past the interpreter's stack
costs its whole batch (dead-lettered with the raw payload), not only itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coverwatch import protocol
from coverwatch.protocol import ProtocolError, decode_ack, decode_readings, decode_status
from tests.helpers import signal

READINGS_TOPIC = "coverwatch/v1/cb-001/readings"
STATUS_TOPIC = "coverwatch/v1/cb-001/status"
ACK_TOPIC = "coverwatch/v1/cb-001/ack"
OUTBOX_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"

# Deterministic and bounded: the whole file runs in a few seconds on one core.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------- hostile pieces


def deep(depth: int, *, closed: bool = True, kind: str = "[") -> bytes:
    opening = b"[" if kind == "[" else b'{"a":'
    closing = b"]" if kind == "[" else b"}"
    inner = b"1" if kind == "{" else b""
    return opening * depth + inner + (closing * depth if closed else b"")


HUGE_NUMBERS = st.sampled_from(
    [
        b"1e400",
        b"-1e400",
        b"1e-400",
        b"1" + b"0" * 5000,
        b"-" + b"9" * 400,
        b"18446744073709551616",
        b"9223372036854775808",
        b"0.0000000000000000000000000000000000000000001",
        b"1E+99999999999",
    ]
)
# Valid JSON strings a probe would never send: escapes of NUL and of lone surrogates,
# right-to-left marks, non-characters, a BOM, Vietnamese with combining marks, emoji.
ODD_STRINGS = st.sampled_from(
    [
        rb'"\u0000"',
        rb'"a\u0000b"',
        rb'"\ud800"',
        rb'"\udfff"',
        rb'"\ud800\u0041"',
        rb'"\udc00\ud800"',
        '"\u202ecb-001"'.encode(),
        '"\uffff\ufffe"'.encode(),
        '"\ufeff"'.encode(),
        '"Vie\u0323\u0302t Nam"'.encode(),
        '"\U0001f4f6"'.encode(),
        b'"' + b"a" * 3000 + b'"',
    ]
)
# Bytes that are not UTF-8: Windows-1258 Vietnamese, UTF-16, lone continuation bytes,
# an overlong encoding, an encoded surrogate.
BAD_BYTES = st.sampled_from(
    [
        '"Vi\u1ec7t"'.encode("utf-16-le"),
        b'"\xd0i\xd2n"',
        b'"\x80"',
        b'"\xc0\xaf"',
        b'"\xed\xa0\x80"',
        b'"\xff\xfe"',
        b"\x00",
        b'"a\x00b"',
    ]
)
DEEP = st.builds(
    deep,
    st.sampled_from([50, 500, 999, 1000, 1001, 5000, 50_000]),
    closed=st.booleans(),
    kind=st.sampled_from(["[", "{"]),
)
# Values that are valid JSON: one of them in a reading must not cost the other readings.
VALID_HOSTILE_VALUES = st.one_of(
    HUGE_NUMBERS,
    ODD_STRINGS.filter(lambda s: b"\\ud8" not in s and b"\\udc" not in s and b"\\udf" not in s),
    st.builds(deep, st.integers(1, 200), kind=st.sampled_from(["[", "{"])),
    st.sampled_from([b"null", b"true", b"[]", b"{}", b"-0", b'""']),
)
HOSTILE_FRAGMENTS = st.one_of(HUGE_NUMBERS, ODD_STRINGS, BAD_BYTES, DEEP, st.binary(max_size=64))


def readings_batch(count: int, **envelope: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "probe_id": "cb-001",
        "readings": [signal(seq) for seq in range(count)],
        **envelope,
    }


VALID_PAYLOADS = {
    READINGS_TOPIC: json.dumps(readings_batch(3, outbox_id=OUTBOX_ID)).encode(),
    STATUS_TOPIC: json.dumps(
        {"v": 1, "probe_id": "cb-001", "state": "online", "at": "2026-11-22T08:15:00Z"}
    ).encode(),
    ACK_TOPIC: json.dumps(
        {"v": 1, "probe_id": "cb-001", "outbox_id": OUTBOX_ID, "committed": [[1, 5], [7, 7]]}
    ).encode(),
}
DECODERS = {READINGS_TOPIC: decode_readings, STATUS_TOPIC: decode_status, ACK_TOPIC: decode_ack}


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """A valid message with hostile fragments spliced in, bytes cut out or replaced."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "replace", "truncate", "flip"]))
        fragment = draw(HOSTILE_FRAGMENTS)
        if action == "insert":
            data[position:position] = fragment
        elif action == "replace":
            data[position : position + draw(st.integers(1, 40))] = fragment
        elif action == "truncate":
            del data[position:]
        elif data:
            data[min(position, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def hostile_payloads(topic: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        HOSTILE_FRAGMENTS,
        st.binary(max_size=2000),
        mutated(VALID_PAYLOADS[topic]),
        # a valid envelope whose every value is replaced by something hostile
        st.builds(
            lambda values: b'{"v": %s, "probe_id": %s, "readings": %s, "state": %s}' % values,
            st.tuples(*[HOSTILE_FRAGMENTS] * 4),
        ),
    )


def assert_names_a_problem(error: ProtocolError) -> None:
    """A reason a person can act on: some words, on one line, not a Python repr of bytes."""
    assert error.reason.strip(), "empty reason"
    assert len(error.reason) < 600, f"reason too long: {error.reason[:200]}..."
    assert "Traceback" not in error.reason
    if error.field is not None:
        assert re.fullmatch(r"[A-Za-z_][\w]*(\[\d+\]|\.[A-Za-z_]\w*)*|readings\[\d+\]", error.field)


# -------------------------------------------------------------------- decoders


@pytest.mark.parametrize("topic", list(DECODERS))
@FUZZ
@given(data=st.data())
def test_hostile_payloads_only_ever_raise_protocol_error(topic: str, data: st.DataObject) -> None:
    payload = data.draw(hostile_payloads(topic))
    try:
        decoded = DECODERS[topic](topic, payload)
    except ProtocolError as error:
        assert_names_a_problem(error)
        return
    if isinstance(decoded, protocol.DecodedBatch):
        for rejected in decoded.rejected:
            assert_names_a_problem(rejected.error)
            assert str(rejected.error).startswith(f"readings[{rejected.index}]")


@FUZZ
@given(
    index=st.integers(0, 3),
    field=st.sampled_from(["rsrp_dbm", "seq", "taken_at", "operator_name", "kind", "extra"]),
    value=VALID_HOSTILE_VALUES,
)
def test_a_hostile_value_in_one_reading_costs_only_that_reading(
    index: int, field: str, value: bytes
) -> None:
    readings = [json.dumps(signal(seq)).encode() for seq in range(4)]
    marker = b'"__hostile__"'
    victim = json.loads(readings[index])
    victim[field] = "__hostile__"
    readings[index] = json.dumps(victim).encode().replace(marker, value)
    payload = b'{"v": 1, "probe_id": "cb-001", "readings": [%s]}' % b", ".join(readings)
    decoded = decode_readings(READINGS_TOPIC, payload)
    kept = {reading.seq for reading in decoded.batch.readings}
    assert kept >= {seq for seq in range(4) if seq != index}, "a good reading was lost"
    for rejected in decoded.rejected:
        assert rejected.index == index
        assert_names_a_problem(rejected.error)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "JSON"),
        (b"\x00", "JSON"),
        (b'{"v": 1, "probe_id": "\xd0i\xd2n", "readings": []}', "UTF-8"),
        ('{"v": 1}'.encode("utf-16"), "JSON"),
        (b'{"v": 1, "probe_id": "cb-001", "readings": ' + deep(5000) + b"}", "nested too deeply"),
        (b"{" + b" " * protocol.MAX_PAYLOAD_BYTES + b"}", "limit"),
        (b'{"v": 1e400, "probe_id": "cb-001", "readings": []}', "out of range"),
        (b'{"v": 2, "probe_id": "cb-001", "readings": []}', "version"),
    ],
)
def test_whole_message_errors_name_the_problem(payload: bytes, words: str) -> None:
    for topic, decode in DECODERS.items():
        with pytest.raises(ProtocolError) as caught:
            decode(topic, payload)
        assert words in str(caught.value), (topic, str(caught.value))


# ---------------------------------------------------------------------- topics

TOPIC_PARTS = st.one_of(
    st.from_regex(protocol.PROBE_ID_RE, fullmatch=True),
    st.sampled_from(["+", "#", "$share", "", " ", "cb-001\x00", "cb-001\n", "CB-001", "..", "v1"]),
    st.text(max_size=20),
    st.text(alphabet="ạếễđ/+#\x00\u202e\ufeff", max_size=10),
    st.just("a" * 500),
)


@st.composite
def topics(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    prefix = draw(st.sampled_from(["coverwatch", "coverwatch/", "Coverwatch", "", "+", "#"]))
    version = draw(st.sampled_from(["v1", "v2", "+", "v1\x00", "V1"]))
    channel = draw(st.sampled_from(["readings", "status", "ack", "#", "+", "readings\x00", ""]))
    return f"{prefix}/{version}/{draw(TOPIC_PARTS)}/{channel}"


@FUZZ
@given(topics())
def test_parse_topic_accepts_only_well_formed_topics(topic: str) -> None:
    refused: ProtocolError | None = None
    try:
        address = protocol.parse_topic(topic)
    except ProtocolError as error:
        refused = error
    if refused is not None:
        assert refused.field == "topic"
        assert_names_a_problem(refused)
        return
    assert topic == f"coverwatch/v1/{address.probe_id}/{address.channel}"
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", address.probe_id)
    assert not {"+", "#", "\x00", "/"} & set(address.probe_id)


@FUZZ
@given(topics(), st.sampled_from(list(VALID_PAYLOADS.values())))
def test_decoders_refuse_hostile_topics_with_protocol_error(topic: str, payload: bytes) -> None:
    for decode in DECODERS.values():
        try:
            decode(topic, payload)
        except ProtocolError as error:
            assert_names_a_problem(error)


# ------------------------------------- defects found by fuzzing (one known limitation left)


@pytest.mark.parametrize("where", ["topic", "payload"])
def test_a_probe_id_with_a_trailing_newline_is_refused(where: str) -> None:
    if where == "topic":
        with pytest.raises(ProtocolError):
            protocol.parse_topic("coverwatch/v1/cb-001\n/readings")
        return
    payload = json.dumps(readings_batch(1) | {"probe_id": "cb-001\n"}).encode()
    with pytest.raises(ProtocolError):
        decode_readings("coverwatch/v1/cb-001\n/readings", payload)


def test_an_enormous_topic_gives_a_short_message() -> None:
    for topic in (f"coverwatch/v1/{'a' * 65_000}/readings", "x" * 65_000):
        with pytest.raises(ProtocolError) as caught:
            protocol.parse_topic(topic)
        assert len(str(caught.value)) < 600


@pytest.mark.xfail(
    reason="KNOWN LIMITATION: a batch whose reading holds JSON nested >= ~1000 deep (e.g. "
    '{"kind":"signal",...,"x":[[[...]]]}) is rejected whole: the envelope decodes readings '
    "as msgspec.Raw, which recurses too, so 'one deep reading costs only itself' "
    "(protocol.py) does not hold and the good readings beside it are lost",
)
def test_a_deeply_nested_reading_costs_only_itself() -> None:
    readings = [json.dumps(signal(seq)).encode() for seq in range(3)]
    readings[1] = readings[1].replace(b'"home"', b'"home", "x": ' + deep(5000), 1)
    payload = b'{"v": 1, "probe_id": "cb-001", "readings": [%s]}' % b", ".join(readings)
    decoded = decode_readings(READINGS_TOPIC, payload)
    assert [reading.seq for reading in decoded.batch.readings] == [0, 2]


@pytest.mark.parametrize("payload", [deep(1000), b"[1e400]"])
def test_a_deep_or_out_of_range_array_is_named_as_such(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_readings(READINGS_TOPIC, payload)
    assert "null" not in str(caught.value)


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udfff", rb"\ud800\u0041"])
def test_a_lone_surrogate_is_named_as_such(escape: bytes) -> None:
    reading = json.dumps(signal(1)).encode()
    payload = b'{"v": 1, "probe_id": "cb-001", "readings": [%s], "x": "%s"}' % (reading, escape)
    with pytest.raises(ProtocolError) as caught:
        decode_readings(READINGS_TOPIC, payload)
    assert "surrogate" in str(caught.value)
