"""Property tests of the protocol codec (hypothesis).

Valid messages are generated from the protocol's own type declarations (so a new
field is covered the day it is added): every one must round-trip. Garbage and
mutated payloads must be rejected with ProtocolError and nothing else.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coverwatch import protocol
from coverwatch.protocol import ProtocolError, ReadingsBatch, decode_readings, decode_status

inspect = msgspec.inspect

TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2040, 1, 1),
    timezones=st.just(timezone(timedelta(hours=7))),  # Indochina Time, as a probe may send
)


def strategy_for(info: Any) -> st.SearchStrategy[Any]:
    """A strategy of Python values that satisfy a msgspec type (with its constraints)."""
    if isinstance(info, inspect.Metadata):
        return strategy_for(info.type)
    if isinstance(info, inspect.NoneType):
        return st.none()
    if isinstance(info, inspect.BoolType):
        return st.booleans()
    if isinstance(info, inspect.IntType):
        low = info.ge if info.ge is not None else -(2**63)
        high = info.le if info.le is not None else 2**63 - 1
        return st.integers(low, high)
    if isinstance(info, inspect.FloatType):
        return st.floats(info.ge, info.le, allow_nan=False, allow_infinity=False)
    if isinstance(info, inspect.StrType):
        if info.pattern:
            return st.from_regex(info.pattern, fullmatch=True)
        return st.text(max_size=info.max_length if info.max_length is not None else 40)
    if isinstance(info, inspect.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, inspect.DateTimeType):
        return TIMES
    if isinstance(info, inspect.UnionType):
        return st.one_of([strategy_for(member) for member in info.types])
    if isinstance(info, inspect.StructType):
        return struct_strategy(info)
    raise NotImplementedError(f"no strategy for {info!r}")


def struct_strategy(info: inspect.StructType) -> st.SearchStrategy[Any]:
    fields = {field.name: strategy_for(field.type) for field in info.fields}

    def build(values: dict[str, Any]) -> Any:
        try:
            return msgspec.convert(values, info.cls)
        except msgspec.ValidationError:
            return None  # a cross-field rule (e.g. received > sent) said no

    return st.fixed_dictionaries(fields).map(build).filter(lambda value: value is not None)


READING = st.one_of(
    [strategy_for(inspect.type_info(kind)) for kind in protocol.READING_TYPES.values()]
)
PROBE_IDS = st.from_regex(protocol.PROBE_ID_RE, fullmatch=True)


@st.composite
def batches(draw: st.DrawFn) -> ReadingsBatch:
    return ReadingsBatch(
        v=1,
        probe_id=draw(PROBE_IDS),
        readings=draw(st.lists(READING, min_size=1, max_size=20)),
        sent_at=draw(st.none() | TIMES),
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)

COMMON = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(batches())
def test_every_valid_batch_round_trips(batch: ReadingsBatch) -> None:
    topic = protocol.readings_topic(batch.probe_id)
    decoded = decode_readings(topic, protocol.encode(batch))
    assert decoded.rejected == ()
    assert decoded.batch == batch


@COMMON
@given(st.binary(max_size=2000))
def test_garbage_bytes_only_ever_raise_protocol_error(payload: bytes) -> None:
    try:
        decoded = decode_readings("coverwatch/v1/cb-001/readings", payload)
    except ProtocolError:
        return
    # Random bytes are never a valid batch, but if they were, they must be a real one.
    assert decoded.batch.probe_id == "cb-001"


@COMMON
@given(JSON_VALUES)
def test_garbage_json_only_ever_raises_protocol_error(value: Any) -> None:
    payload = json.dumps(value).encode()
    for decode, topic in (
        (decode_readings, "coverwatch/v1/cb-001/readings"),
        (decode_status, "coverwatch/v1/cb-001/status"),
    ):
        with contextlib.suppress(ProtocolError):
            decode(topic, payload)


@COMMON
@given(batches(), st.data())
def test_mutated_bytes_decode_or_raise_protocol_error(
    batch: ReadingsBatch, data: st.DataObject
) -> None:
    payload = bytearray(protocol.encode(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            payload[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "delete":
            del payload[position]
        elif action == "insert":
            payload.insert(position, data.draw(st.integers(0, 255)))
        else:
            del payload[position:]
        if not payload:
            payload = bytearray(b"{")
    try:
        decoded = decode_readings(protocol.readings_topic(batch.probe_id), bytes(payload))
    except ProtocolError:
        return
    for rejected in decoded.rejected:
        assert rejected.error.field is not None
        assert rejected.error.field.startswith("readings[")
    assert len(decoded.batch.readings) + len(decoded.rejected) <= len(batch.readings) + 4


@COMMON
@given(batches(), st.data())
def test_a_corrupted_field_rejects_only_its_reading(
    batch: ReadingsBatch, data: st.DataObject
) -> None:
    document = msgspec.to_builtins(batch)
    index = data.draw(st.integers(0, len(document["readings"]) - 1))
    victim = document["readings"][index]
    field = data.draw(st.sampled_from(sorted(victim)))
    victim[field] = data.draw(JSON_VALUES)
    topic = protocol.readings_topic(batch.probe_id)
    decoded = decode_readings(topic, json.dumps(document).encode())
    kept = [reading for i, reading in enumerate(batch.readings) if i != index]
    survivors = [reading for reading in decoded.batch.readings if reading not in kept]
    # Every other reading survives untouched; the corrupted one is either still
    # valid (the new value happened to fit) or rejected with a path inside it.
    assert [r for r in decoded.batch.readings if r in kept] == kept
    if decoded.rejected:
        assert [rejected.index for rejected in decoded.rejected] == [index]
        assert str(decoded.rejected[0].error).startswith(f"readings[{index}]")
        assert survivors == []
    else:
        assert len(survivors) == 1
