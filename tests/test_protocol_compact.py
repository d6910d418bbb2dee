"""The compact encoding (0x02 + DEFLATE against a frozen dictionary): every batch and ack
round-trips, the collector validates it exactly like JSON, and no compact payload, however
hostile, raises anything but ProtocolError."""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coverwatch import protocol
from coverwatch.protocol import ProtocolError, ReadingsBatch, decode_ack, decode_readings
from tests.helpers import signal
from tests.test_protocol_properties import COMMON, JSON_VALUES, batches

TOPIC = "coverwatch/v1/cb-001/readings"
ACK_TOPIC = "coverwatch/v1/cb-001/ack"
OUTBOX_ID = "0b9c6a52-4a63-4c8e-9d0f-6b7d1f2e3a4b"
HUGE_SEQ = (
    json.dumps({"v": 1, "probe_id": "cb-001", "readings": [signal(1)]})
    .encode()
    .replace(b'"seq": 1', b'"seq": ' + b"9" * 5000)
)
DEEP_READING = (
    json.dumps({"v": 1, "probe_id": "cb-001", "readings": [signal(1, operator_name="x")]})
    .encode()
    .replace(b'"x"', b"[" * 5000 + b"]" * 5000)
)


BASE: dict[str, Any] = {
    "boot_id": "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "taken_at": datetime(2026, 12, 1, 8, 15, tzinfo=UTC),
    "monotonic_ms": 5_400_120,
    "ntp_synced": True,
}


def compact_json(document: object) -> bytes:
    return protocol.compress(json.dumps(document).encode())


def test_the_dictionary_is_frozen() -> None:
    """Changing one byte of it makes every older probe's compact messages unreadable."""
    assert len(protocol.COMPACT_DICTIONARY) == 1654
    assert hashlib.sha256(protocol.COMPACT_DICTIONARY).hexdigest()[:16] == "d81533fe8343820c"


@COMMON
@given(batches())
def test_every_valid_batch_round_trips_compact(batch: ReadingsBatch) -> None:
    """Every reading kind, every optional field (the strategy draws them all)."""
    payload = protocol.encode_as(batch, "compact")
    assert protocol.is_compact(payload)
    decoded = decode_readings(protocol.readings_topic(batch.probe_id), payload)
    assert decoded.rejected == ()
    assert decoded.batch == batch


def test_a_batch_with_every_reading_kind_round_trips_and_is_much_smaller() -> None:
    readings: list[protocol.Reading] = [
        protocol.SignalReading(
            **BASE, seq=1, registration="home", technology="lte", operator_code="45204",
            operator_name="Viettel", cell_id=27449610, tac=12801, rsrp_dbm=-109.0,
            rsrq_db=-14.0, sinr_db=2.5, rssi_dbm=-79.0,
        ),
        protocol.LatencyReading(
            **BASE, seq=2, target="8.8.8.8", method="icmp", packets_sent=10,
            packets_received=9, loss_pct=10.0, rtt_min_ms=41.2, rtt_avg_ms=57.9,
            rtt_median_ms=55.0, rtt_max_ms=98.3, jitter_ms=7.7, dns_ms=21.0,
        ),
        protocol.PowerReading(**BASE, seq=3, uptime_s=5400.12, undervoltage_now=False),
        protocol.OutageReading(
            **BASE, seq=4, previous_boot_id=str(uuid.uuid4()),
            outage_started_at=BASE["taken_at"], outage_ended_at=BASE["taken_at"],
            outage_duration_s=0.0,
        ),
        protocol.ThroughputReading(**BASE, seq=5, skipped_reason="monthly data budget spent"),
        protocol.SystemReading(**BASE, seq=6, cpu_temp_c=51.2, disk_free_bytes=2_000_000),
        protocol.SensorErrorReading(**BASE, seq=7, sensor="cellular", error="no modem"),
        protocol.OperatorScanReading(
            **BASE, seq=8, scan_started_at=BASE["taken_at"], scan_method="qscan",
            networks_found=1, operator_code="45201", operator_name="VN Mobifone",
            technology="lte", status="available", cell_id=27449611, tac=12801,
            rsrp_dbm=-97.0, rsrq_db=-11.0,
        ),
        protocol.CellReading(
            **BASE, seq=9, serving=False, technology="lte", operator_code="45204", pci=188,
            channel=6300, rsrp_dbm=-105.0, rsrq_db=-12.0, rssi_dbm=-75.0,
        ),
    ]  # fmt: skip
    assert {type(r) for r in readings} == set(protocol.READING_TYPES.values())
    batch = ReadingsBatch(v=1, probe_id="cb-001", readings=readings, outbox_id=OUTBOX_ID)
    compact = protocol.encode_as(batch, "compact")
    assert decode_readings(TOPIC, compact).batch == batch
    assert protocol.encode_as(batch, "json") == protocol.encode(batch)
    assert len(compact) * 3 < len(protocol.encode(batch))


def test_acks_round_trip_compact_and_json() -> None:
    ack = protocol.CommitAck(
        v=1, probe_id="cb-001", outbox_id=OUTBOX_ID, committed=[(1041, 1044), (1050, 1050)]
    )
    for encoding in protocol.ENCODINGS:
        assert decode_ack(ACK_TOPIC, protocol.encode_as(ack, encoding)) == ack
    assert len(protocol.encode_as(ack, "compact")) < 70  # JSON: 111 bytes, 150 with "at"


def test_a_compact_batch_gets_the_same_validation_as_json() -> None:
    bad = {
        "v": 1,
        "probe_id": "cb-001",
        "readings": [signal(1), signal(2, rsrp_dbm="abc"), signal(3, kind="wifi")],
    }
    from_json = decode_readings(TOPIC, json.dumps(bad).encode())
    from_compact = decode_readings(TOPIC, compact_json(bad))
    assert from_compact.batch == from_json.batch
    assert [(r.index, str(r.error), r.raw) for r in from_compact.rejected] == [
        (r.index, str(r.error), r.raw) for r in from_json.rejected
    ]
    assert [r.error.field for r in from_compact.rejected] == [
        "readings[1].rsrp_dbm",
        "readings[2].kind",
    ]
    assert [r.seq for r in from_compact.batch.readings] == [1]
    other = {"v": 1, "probe_id": "cb-002", "readings": [signal(1)]}
    with pytest.raises(ProtocolError, match="does not match the topic"):
        decode_readings(TOPIC, compact_json(other))
    with pytest.raises(ProtocolError, match="unsupported protocol version 2"):
        decode_readings(TOPIC, compact_json({**bad, "v": 2}))
    huge = decode_readings(TOPIC, protocol.compress(HUGE_SEQ))  # a number of 5,000 digits
    assert [r.error.field for r in huge.rejected] == ["readings[0].seq"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x02", "truncated"),
        (b"\x02not deflate at all", "not valid DEFLATE"),
        (protocol.compress(b'{"v":1}')[:-3], "truncated"),
        (protocol.compress(b'{"v":1}') + b"tail", "after its DEFLATE stream"),
        (protocol.compress(b" " * (protocol.MAX_PAYLOAD_BYTES + 1)), "inflates to more than"),
        (protocol.compress(DEEP_READING), "nested too deeply"),
        (protocol.compress(b"[" * 100_000 + b"]" * 100_000), ""),
        (protocol.compress(b'{"v":1,"probe_id":"cb-001\\u0000","readings":[{}]}'), "probe id"),
        (protocol.compress(b'{"v":1,"probe_id":"cb-001\x00","readings":[{}]}'), "JSON"),
        (protocol.compress(b'{"v":1,"probe_id":"\xff\xfe","readings":[]}'), "UTF-8"),
        (b"\x02" + zlib.compress(b"{}")[2:], ""),
    ],
)  # fmt: skip
def test_bad_compact_payloads_are_protocol_errors(payload: bytes, reason: str) -> None:
    """Zip bombs, truncation, trailing bytes, deep nesting, NUL, bad UTF-8, huge numbers."""
    with pytest.raises(ProtocolError) as error:
        decode_readings(TOPIC, payload)
    assert reason in str(error.value)
    with pytest.raises(ProtocolError):
        decode_ack(ACK_TOPIC, payload)


@COMMON
@given(st.binary(max_size=2000))
def test_garbage_after_the_marker_only_ever_raises_protocol_error(garbage: bytes) -> None:
    for payload in (b"\x02" + garbage, protocol.compress(garbage)):
        try:
            decode_readings(TOPIC, payload)
        except ProtocolError:
            continue


@COMMON
@given(JSON_VALUES)
def test_compact_garbage_json_only_ever_raises_protocol_error(value: object) -> None:
    payload = compact_json(value)
    for decode, topic in ((decode_readings, TOPIC), (decode_ack, ACK_TOPIC)):
        try:
            decode(topic, payload)
        except ProtocolError:
            continue
