"""The wire protocol: topics, validation messages, partial batches, limits."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime

import pytest

from coverwatch import protocol
from coverwatch.protocol import (
    DecodedBatch,
    ProtocolError,
    ReadingsBatch,
    SignalReading,
    decode_readings,
    decode_status,
)
from tests.helpers import BOOT_ID, reading_fields, signal

TOPIC = "coverwatch/v1/cb-001/readings"
STATUS_TOPIC = "coverwatch/v1/cb-001/status"


def batch_payload(*readings: object, probe_id: str = "cb-001", **envelope: object) -> bytes:
    return json.dumps(
        {"v": 1, "probe_id": probe_id, "readings": list(readings), **envelope}
    ).encode()


def rejected_messages(decoded: DecodedBatch) -> list[str]:
    return [str(rejected.error) for rejected in decoded.rejected]


def test_valid_batch_decodes_on_the_fast_path() -> None:
    decoded = decode_readings(TOPIC, batch_payload(signal(1, rsrp_dbm=-95), signal(2)))
    assert decoded.rejected == ()
    first = decoded.batch.readings[0]
    assert isinstance(first, SignalReading)
    assert first.rsrp_dbm == -95
    assert first.registered
    assert first.taken_at == datetime(2026, 11, 22, 8, 15, tzinfo=UTC)


def test_no_service_is_a_reading_not_an_error() -> None:
    no_service = reading_fields(7, kind="signal", registration="searching")
    decoded = decode_readings(TOPIC, batch_payload(no_service))
    reading = decoded.batch.readings[0]
    assert isinstance(reading, SignalReading)
    assert not reading.registered
    assert reading.rsrp_dbm is None


def test_error_names_field_rule_and_value() -> None:
    readings = [signal(i) for i in range(3)] + [signal(3, rsrp_dbm="abc")]
    decoded = decode_readings(TOPIC, batch_payload(*readings))
    assert rejected_messages(decoded) == [
        'readings[3].rsrp_dbm: expected number between -160 and -20, got "abc"'
    ]
    assert decoded.rejected[0].error.field == "readings[3].rsrp_dbm"


def test_one_bad_reading_keeps_its_neighbours() -> None:
    readings = [
        signal(1),
        signal(2, rsrp_dbm=-300),
        reading_fields(3, kind="wifi"),
        signal(4),
        "not an object",
    ]
    decoded = decode_readings(TOPIC, batch_payload(*readings))
    assert [reading.seq for reading in decoded.batch.readings] == [1, 4]
    assert [rejected.index for rejected in decoded.rejected] == [1, 2, 4]
    assert rejected_messages(decoded) == [
        "readings[1].rsrp_dbm: expected number between -160 and -20, got -300",
        'readings[2].kind: expected one of "signal", "latency", "power", "outage", '
        '"throughput", "system", "sensor_error", "operator_scan", "cell", got "wifi"',
        'readings[4]: expected object, got "not an object"',
    ]
    # The raw JSON of the rejected reading is kept for the dead-letter table.
    assert json.loads(decoded.rejected[0].raw)["rsrp_dbm"] == -300


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (
            {k: v for k, v in signal(1).items() if k != "boot_id"},
            "readings[0].boot_id: required field is missing (boot id in the form of "
            "/proc/sys/kernel/random/boot_id (lowercase UUID, e.g. "
            "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f))",
        ),
        (
            signal(1, taken_at="2026-11-22T08:15:00"),
            "readings[0].taken_at: expected RFC 3339 date-time with a timezone, e.g. "
            '2026-11-22T08:15:00Z, got "2026-11-22T08:15:00"',
        ),
        (signal(-1), "readings[0].seq: expected integer between 0 and 9223372036854775806, got -1"),
        (
            signal(1, registration="connected"),
            'readings[0].registration: expected one of "denied", "home", "idle", '
            '"roaming", "searching", "unknown", got "connected"',
        ),
        (
            signal(1, operator_code="Viettel"),
            "readings[0].operator_code: expected MCC-MNC of 5 or 6 digits, e.g. 45204, "
            'got "Viettel"',
        ),
        (signal(1, ntp_synced="yes"), 'readings[0].ntp_synced: expected true or false, got "yes"'),
        (
            reading_fields(
                1,
                kind="latency",
                target="1.1.1.1",
                method="icmp",
                packets_sent=10,
                packets_received=11,
                loss_pct=0,
            ),
            "readings[0]: packets_received (11) cannot exceed packets_sent (10)",
        ),
    ],
)
def test_validation_messages(reading: dict[str, object], message: str) -> None:
    decoded = decode_readings(TOPIC, batch_payload(signal(100), reading))
    assert rejected_messages(decoded) == [message.replace("readings[0]", "readings[1]")]


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (TOPIC, b"\xff\xfe not json", "payload is not valid UTF-8 JSON"),
        (TOPIC, b"[1, 2]", "expected object, got [1, 2]"),
        (
            TOPIC,
            b'{"v": 2, "probe_id": "cb-001", "readings": [{}]}',
            "v: unsupported protocol version 2: this collector understands version 1; "
            "upgrade the collector before the probes",
        ),
        (
            TOPIC,
            batch_payload(signal(1), probe_id="cb-002"),
            "probe_id: probe id 'cb-002' does not match the topic's probe id 'cb-001'; "
            "a probe may publish only under its own topic",
        ),
        (TOPIC, batch_payload(), "readings: expected array of 1 to 2000 items, got []"),
        (
            "coverwatch/v2/cb-001/readings",
            batch_payload(signal(1)),
            "topic: unsupported topic version 'v2'",
        ),
        ("coverwatch/v1/cb-001/status", batch_payload(signal(1)), "topic: expected a 'readings'"),
        ("coverwatch/v1/CB 1/readings", batch_payload(signal(1)), "topic: expected probe id"),
        ("sensors/cb-001", batch_payload(signal(1)), "topic: topic 'sensors/cb-001' is not"),
        (
            TOPIC,
            b'{"v": 1, "probe_id": "cb-001", "readings": [' + b"{}," * 2000 + b"{}]}",
            "readings: expected array of 1 to 2000 items",
        ),
    ],
)
def test_whole_message_rejections(topic: str, payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_readings(topic, payload)
    assert str(caught.value).startswith(message)


def test_size_limit_is_checked_before_parsing() -> None:
    payload = b" " * (protocol.MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ProtocolError, match="payload is 1048577 bytes, the limit is 1048576"):
        decode_readings(TOPIC, payload)


def test_unknown_fields_are_ignored_for_additive_evolution() -> None:
    newer = signal(1, rsrp_dbm=-90, five_g_band="n78")
    decoded = decode_readings(TOPIC, batch_payload(newer, firmware="2.0"))
    assert decoded.rejected == ()
    assert decoded.batch.readings[0].seq == 1


def test_batch_round_trip_through_encode() -> None:
    batch = ReadingsBatch(
        v=1,
        probe_id="cb-001",
        sent_at=datetime(2026, 11, 22, 8, 15, 3, tzinfo=UTC),
        readings=[
            SignalReading(
                seq=5,
                boot_id=BOOT_ID,
                taken_at=datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
                monotonic_ms=12,
                ntp_synced=False,
                registration="roaming",
                technology="gsm",
                rssi_dbm=-101,
            )
        ],
    )
    payload = protocol.encode(batch)
    assert b"rsrp_dbm" not in payload  # unset optional fields stay off the wire
    assert decode_readings(TOPIC, payload).batch == batch


def test_status_decodes_and_checks_probe() -> None:
    payload = b'{"v": 1, "probe_id": "cb-001", "state": "offline", "reason": "connection lost"}'
    status = decode_status(STATUS_TOPIC, payload)
    assert status.state == "offline"
    assert status.at is None
    with pytest.raises(
        ProtocolError, match='state: expected one of "offline", "online", got "gone"'
    ):
        decode_status(STATUS_TOPIC, payload.replace(b"offline", b"gone"))
    with pytest.raises(ProtocolError, match="does not match the topic's probe id"):
        decode_status("coverwatch/v1/cb-009/status", payload)
    with pytest.raises(ProtocolError, match="unsupported protocol version 3"):
        decode_status(STATUS_TOPIC, b'{"v": 3, "probe_id": "cb-001", "state": "on"}')


@pytest.mark.parametrize("bad", ["", "-abc", "A1", "a/b", "a+b", "#", "x" * 65])
def test_topic_builders_refuse_ids_that_would_escape_the_topic(bad: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.readings_topic(bad)


def test_topic_filters_match_builders() -> None:
    assert protocol.readings_topic("cb-001") == TOPIC
    assert protocol.status_topic("cb-001") == STATUS_TOPIC
    assert protocol.READINGS_TOPIC_FILTER == "coverwatch/v1/+/readings"
    assert protocol.parse_topic(TOPIC) == protocol.TopicAddress("cb-001", "readings")


def test_every_kind_is_registered_once() -> None:
    tags = [t.__struct_config__.tag for t in protocol.READING_TYPES.values()]
    assert tags == list(protocol.READING_TYPES)
    assert set(typing.get_args(protocol.Reading)) == set(protocol.READING_TYPES.values())


def test_modem_and_sim_operator_are_optional_additions_to_v1() -> None:
    """Readings of probes that predate multi-modem kits decode as before; a kit's name
    their modem and SIM network; a SIM code that is no MCC-MNC is refused by name."""
    old = signal(1, rsrp_dbm=-95, operator_code="45204")
    kit = reading_fields(
        2, kind="signal", registration="searching", modem="mobifone", sim_operator_code="45201"
    )
    bad = signal(3, modem="viettel", sim_operator_code="VN-1")
    decoded = decode_readings(TOPIC, batch_payload(old, kit, bad))
    first, second = decoded.batch.readings
    assert isinstance(first, SignalReading)
    assert isinstance(second, SignalReading)
    assert (first.modem, first.sim_operator_code) == (None, None)
    assert (second.modem, second.sim_operator_code, second.operator_code) == (
        "mobifone",
        "45201",
        None,
    )
    assert rejected_messages(decoded) == [
        'readings[2].sim_operator_code: expected MCC-MNC of 5 or 6 digits, e.g. 45204, got "VN-1"'
    ]
    # An old reading encodes exactly as before: no new keys on the wire.
    assert b"modem" not in protocol.encode(ReadingsBatch(v=1, probe_id="cb-001", readings=[first]))
