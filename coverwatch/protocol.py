"""The probe <-> collector wire protocol, version 1: topics, messages, codec.

This module is the single definition of what travels over MQTT. The agent encodes
with it and the collector decodes with it; docs/protocol.md explains it for people.

Decoding is the collector's hot path, so it uses msgspec typed structs: a valid batch
is decoded and validated in one C pass. Only when that fails do we take the slow
path, which decodes the envelope and each reading on its own so that one bad reading
never costs the good ones beside it (the bad one is reported with its index and raw
JSON). Every failure is a :class:`ProtocolError` whose message names the field and
what was wrong, e.g. ``readings[3].rsrp_dbm: expected number between -160 and -20,
got "abc"``; no other exception escapes the decoder.

Schema evolution: new *optional* fields may be added to any message within version 1
(decoders ignore fields they do not know, so old collectors keep working with newer
probes). Renaming or removing a field, changing a unit or range, or making a field
required needs version 2 (new topic prefix ``coverwatch/v2`` and ``"v": 2``). A new
reading kind is additive too, but collectors must be upgraded before probes send it:
an unknown kind is rejected (and dead-lettered), never silently dropped.

Encodings: a readings batch or an ack is JSON, or the same JSON deflated against
:data:`COMPACT_DICTIONARY` behind the byte 0x02 (:func:`compress`, ``encoding =
"compact"``). The decoders take either: a compact payload is inflated (bounded) and then
goes through exactly the same validation.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, ParamSpec, TypeAlias, TypeVar

import msgspec

PROTOCOL_VERSION: Final = 1
TOPIC_PREFIX: Final = f"coverwatch/v{PROTOCOL_VERSION}"
READINGS_CHANNEL: Final = "readings"
STATUS_CHANNEL: Final = "status"
# Collector -> probe: the seqs the collector has committed to the database. Only the
# probe itself may read its ack topic and only collectors may write it (deploy ACL).
ACK_CHANNEL: Final = "ack"
# Filters the collector subscribes to (one level for the probe id).
READINGS_TOPIC_FILTER: Final = f"{TOPIC_PREFIX}/+/{READINGS_CHANNEL}"
STATUS_TOPIC_FILTER: Final = f"{TOPIC_PREFIX}/+/{STATUS_CHANNEL}"

# A backlog flush of 2,000 readings is about 500 KB of JSON; anything bigger is
# refused before parsing so one broken probe cannot make the collector allocate
# without bound. Agents split their backlog below both limits.
MAX_PAYLOAD_BYTES: Final = 1024 * 1024
MAX_READINGS_PER_BATCH: Final = 2000

# \Z, not $: "$" also matches before a trailing newline, and "cb-001\n" is not a probe id.
PROBE_ID_RE: Final = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
_PROBE_ID_MATCH = re.compile(PROBE_ID_RE).match
BOOT_ID_RE: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
# The outbox id of readings sent by probes that predate it (and of offline imports
# without one): the nil UUID.
NIL_OUTBOX_ID: Final = "00000000-0000-0000-0000-000000000000"
# An ack names at most this many seq ranges; a batch of 2,000 readings has at most
# 2,000, and a collector splits anything longer over several acks.
MAX_ACK_RANGES: Final = 2000

# Encodings of a readings batch or an ack on the wire (docs/protocol.md, "Compact
# encoding"). "json" is the UTF-8 JSON of version 1. "compact" is the same JSON document,
# deflated (raw DEFLATE, RFC 1951) against the preset dictionary below and prefixed by
# the byte 0x02, which no JSON text can start with: the first byte tells a decoder which
# it got, on the same topics. The schema (fields, ranges, "v": 1) is the same, so a
# compact message is validated by exactly the same code once inflated.
ENCODINGS: Final = ("compact", "json")
DEFAULT_ENCODING: Final = "compact"
COMPACT_MARKER: Final = 0x02
# The compact encoding's preset dictionary, version 2. Frozen: changing one byte makes
# every compact message of older probes unreadable (tests/test_protocol_compact.py
# holds its digest). New fields need no change here; they only compress a little less.
COMPACT_DICTIONARY: Final = (
    b'{"v":1,"probe_id":"cb-001","outbox_id":"","committed":[[1,1]],"at":"2026-'
    b'{"kind":"sensor_error","sensor":"cellular","error":"mmcli is not installed, and '
    b'there is no AT port /dev/ttyUSB2","seq":{"kind":"outage","previous_boot_id":"",'
    b'"outage_started_at":"2026-","outage_ended_at":"2026-","outage_duration_s":'
    b'{"kind":"throughput","download_bps":,"upload_bps":,"ping_ms":,"server_name":"",'
    b'"bytes_used":,"skipped_reason":"monthly data budget of  MB spent","seq":'
    b'{"kind":"system","cpu_temp_c":,"load_1m":0.,"memory_used_pct":,"disk_free_bytes":,'
    b'"outbox_pending":0,"outbox_dropped_total":0,"seq":{"kind":"power","uptime_s":,'
    b'"undervoltage_now":false,"undervoltage_since_boot":false,"on_mains":true,'
    b'"battery_pct":,"battery_charging":false,"seq":{"kind":"latency","target":"1.1.1.1",'
    b'"method":"icmp","packets_sent":10,"packets_received":10,"loss_pct":0.0,"rtt_min_ms":,'
    b'"rtt_avg_ms":,"rtt_median_ms":,"rtt_max_ms":,"jitter_ms":,"dns_ms":,"seq":'
    b'{"kind":"latency","target":"8.8.8.8","method":"tcp","packets_sent":10,'
    b'"packets_received":10,"loss_pct":100.0,"seq":{"kind":"signal","registration":'
    b'"searching","registration":"roaming","technology":"umts","technology":"gsm",'
    b'"technology":"nr5g","operator_code":"45201","operator_name":"MobiFone",'
    b'"operator_code":"45202","operator_name":"VinaPhone","rscp_dbm":-,"ecio_db":-,'
    b'"signal_quality_pct":,"seq":{"kind":"signal","registration":"home","technology":'
    b'"lte","operator_code":"45204","operator_name":"Viettel","cell_id":,"tac":,'
    b'"rsrp_dbm":-1,"rsrq_db":-1,"sinr_db":,"rssi_dbm":-,"seq":,"boot_id":"","taken_at":'
    b'"2026-","monotonic_ms":,"ntp_synced":true},{"v":1,"probe_id":"cb-001","readings":'
    b'[],"sent_at":"2026-","outbox_id":"'
)


def _expects(text: str, **constraints: Any) -> msgspec.Meta:
    """A constraint plus the words an error message uses to describe it."""
    return msgspec.Meta(**constraints, extra={"expects": text})


ProbeId: TypeAlias = Annotated[
    str,
    _expects(
        "probe id of 1-64 lowercase letters, digits, '-' or '_' (e.g. cb-001)",
        pattern=PROBE_ID_RE,
    ),
]
BootId: TypeAlias = Annotated[
    str,
    _expects(
        "boot id in the form of /proc/sys/kernel/random/boot_id "
        "(lowercase UUID, e.g. 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f)",
        pattern=BOOT_ID_RE,
    ),
]
OutboxId: TypeAlias = Annotated[
    str,
    _expects(
        "outbox id: a lowercase UUID made when the probe's outbox was created "
        "(e.g. 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f)",
        pattern=BOOT_ID_RE,
    ),
]
# seq is a bigint in the database, and the ledger keeps ranges [first, last + 1): the
# largest seq is one below PostgreSQL's largest bigint.
MAX_SEQ: Final = 2**63 - 2
Sequence: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
UtcTime: TypeAlias = Annotated[
    datetime,
    _expects("RFC 3339 date-time with a timezone, e.g. 2026-11-22T08:15:00Z", tz=True),
]
NonNegativeInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
Percent: TypeAlias = Annotated[float, msgspec.Meta(ge=0, le=100)]
DurationMs: TypeAlias = Annotated[float, msgspec.Meta(ge=0, le=600_000)]
ShortText: TypeAlias = Annotated[str, msgspec.Meta(max_length=255)]
LongText: TypeAlias = Annotated[str, msgspec.Meta(max_length=2000)]

# Radio ranges: the 3GPP reporting ranges with a margin, so an odd modem is not
# refused for a plausible value while garbage (e.g. +40 dBm RSRP) is.
RsrpDbm: TypeAlias = Annotated[float, msgspec.Meta(ge=-160, le=-20)]
RsrqDb: TypeAlias = Annotated[float, msgspec.Meta(ge=-40, le=20)]
SinrDb: TypeAlias = Annotated[float, msgspec.Meta(ge=-30, le=50)]
RssiDbm: TypeAlias = Annotated[float, msgspec.Meta(ge=-130, le=0)]
RscpDbm: TypeAlias = Annotated[float, msgspec.Meta(ge=-130, le=-20)]
EcioDb: TypeAlias = Annotated[float, msgspec.Meta(ge=-40, le=0)]
OperatorCode: TypeAlias = Annotated[
    str, _expects("MCC-MNC of 5 or 6 digits, e.g. 45204", pattern=r"^[0-9]{5,6}$")
]

Registration: TypeAlias = Literal["home", "roaming", "searching", "denied", "idle", "unknown"]
Technology: TypeAlias = Literal["gsm", "umts", "lte", "nr5g"]
REGISTERED_STATES: Final = frozenset({"home", "roaming"})


class ReadingBase(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, tag_field="kind"):
    """Fields every reading carries, whatever its kind.

    ``seq`` only grows per probe, across reboots (the agent persists it); together
    with the probe id it identifies a reading, which is what makes redelivery
    idempotent. Pis have no real-time clock, so besides the wall time the reading
    carries the boot it was taken in, the monotonic clock, and whether NTP had
    synchronised the wall clock at that moment.
    """

    seq: Sequence
    boot_id: BootId
    taken_at: UtcTime
    monotonic_ms: NonNegativeInt
    ntp_synced: bool


class SignalReading(ReadingBase, frozen=True, tag="signal"):
    """Cellular signal. "Not registered / no service" is a valid reading, not an error."""

    registration: Registration
    technology: Technology | None = None
    operator_code: OperatorCode | None = None
    operator_name: ShortText | None = None
    cell_id: Annotated[int, msgspec.Meta(ge=0, le=2**36 - 1)] | None = None
    tac: Annotated[int, msgspec.Meta(ge=0, le=2**24 - 1)] | None = None
    rsrp_dbm: RsrpDbm | None = None
    rsrq_db: RsrqDb | None = None
    sinr_db: SinrDb | None = None
    rssi_dbm: RssiDbm | None = None
    rscp_dbm: RscpDbm | None = None
    ecio_db: EcioDb | None = None
    signal_quality_pct: Percent | None = None
    # Added within v1 (optional, so readings of older probes still decode): which modem
    # of a multi-modem kit took the reading (its [[sensors.cellular]] name), and the home
    # network of the SIM in it (MCC-MNC from the IMSI), known even without service.
    modem: ShortText | None = None
    sim_operator_code: OperatorCode | None = None

    @property
    def registered(self) -> bool:
        return self.registration in REGISTERED_STATES


# A cell's identity on the air: LTE/NR physical cell id (0-503 / 0-1007), UMTS primary
# scrambling code (0-511) or GSM BSIC (0-63); and its channel number: EARFCN (LTE, up
# to 262143), NR-ARFCN (up to 3279165), UARFCN (UMTS) or ARFCN (GSM), by technology.
PhysicalCellId: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=1007)]
ChannelNumber: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=3_279_165)]


class CellReading(ReadingBase, frozen=True, tag="cell"):
    """One cell a modem saw in a round: its serving cell or a neighbour, one reading each.

    A cell is known by its cell id (and TAC/LAC) where the modem names it, and always
    by its technology, channel and ``pci`` (neighbours rarely carry more). Which cells
    every probe near a tower sees, round after round, is what lets the server tell a
    tower that went off the air from a village whose power (and probes) went out.
    """

    serving: bool
    technology: Technology | None = None
    operator_code: OperatorCode | None = None
    cell_id: Annotated[int, msgspec.Meta(ge=0, le=2**36 - 1)] | None = None
    tac: Annotated[int, msgspec.Meta(ge=0, le=2**24 - 1)] | None = None
    pci: PhysicalCellId | None = None
    channel: ChannelNumber | None = None
    rsrp_dbm: RsrpDbm | None = None
    rsrq_db: RsrqDb | None = None
    sinr_db: SinrDb | None = None
    rssi_dbm: RssiDbm | None = None
    rscp_dbm: RscpDbm | None = None
    ecio_db: EcioDb | None = None
    modem: ShortText | None = None


class LatencyReading(ReadingBase, frozen=True, tag="latency"):
    """One round of probes to one target; RTTs are absent when every packet was lost."""

    target: ShortText
    method: Literal["icmp", "tcp"]
    packets_sent: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    packets_received: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    loss_pct: Percent
    rtt_min_ms: DurationMs | None = None
    rtt_avg_ms: DurationMs | None = None
    rtt_median_ms: DurationMs | None = None
    rtt_max_ms: DurationMs | None = None
    jitter_ms: DurationMs | None = None
    dns_ms: DurationMs | None = None

    def __post_init__(self) -> None:
        if self.packets_received > self.packets_sent:
            raise ValueError(
                f"packets_received ({self.packets_received}) cannot exceed "
                f"packets_sent ({self.packets_sent})"
            )


class PowerReading(ReadingBase, frozen=True, tag="power"):
    """Power state; ``None`` where the hardware cannot tell (no UPS, not a Pi)."""

    uptime_s: Annotated[float, msgspec.Meta(ge=0)]
    undervoltage_now: bool | None = None
    undervoltage_since_boot: bool | None = None
    on_mains: bool | None = None
    battery_pct: Percent | None = None
    battery_charging: bool | None = None


class OutageReading(ReadingBase, frozen=True, tag="outage"):
    """A power outage found after boot: the previous boot ended without a clean stop."""

    previous_boot_id: BootId
    outage_started_at: UtcTime
    outage_ended_at: UtcTime
    outage_duration_s: Annotated[float, msgspec.Meta(ge=0)]


class ThroughputReading(ReadingBase, frozen=True, tag="throughput"):
    """A speed test, or the reason it was skipped (e.g. monthly data budget spent)."""

    download_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    upload_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    ping_ms: DurationMs | None = None
    server_name: ShortText | None = None
    bytes_used: NonNegativeInt | None = None
    skipped_reason: ShortText | None = None


class SystemReading(ReadingBase, frozen=True, tag="system"):
    """Health of the probe itself, including its outbox (so lost data is visible)."""

    cpu_temp_c: Annotated[float, msgspec.Meta(ge=-60, le=150)] | None = None
    load_1m: Annotated[float, msgspec.Meta(ge=0)] | None = None
    memory_used_pct: Percent | None = None
    disk_free_bytes: NonNegativeInt | None = None
    outbox_pending: NonNegativeInt | None = None
    outbox_dropped_total: NonNegativeInt | None = None


ScanStatus: TypeAlias = Literal["available", "current", "forbidden", "unknown"]
ScanMethod: TypeAlias = Literal["cops", "qscan", "mmcli"]
MAX_SCAN_NETWORKS: Final = 1000


class OperatorScanReading(ReadingBase, frozen=True, tag="operator_scan"):
    """One operator on one technology that a network scan of a modem found.

    A scan (``AT+COPS=?``, Quectel ``AT+QSCAN``, ``mmcli --3gpp-scan``) lists every
    network the modem can hear, not only its SIM's, so a one-modem probe also sees the
    other operators. One scan gives one reading per operator and technology, all with the
    same ``scan_started_at`` and ``networks_found`` (how many readings the scan gave). A
    scan that found nothing gives exactly one reading with ``networks_found`` 0 and no
    operator: "nothing heard" is a result, distinct from "no scan" (no reading at all)
    and from a failed scan (a ``sensor_error`` reading). ``status`` is the 27.007
    ``<stat>`` (``current`` is the network the modem is registered on); the best cell and
    its signal are there when the modem reports them (Quectel ``AT+QSCAN``).
    """

    scan_started_at: UtcTime
    scan_method: ScanMethod
    networks_found: Annotated[int, msgspec.Meta(ge=0, le=MAX_SCAN_NETWORKS)]
    operator_code: OperatorCode | None = None
    operator_name: ShortText | None = None
    technology: Technology | None = None
    status: ScanStatus | None = None
    cell_id: Annotated[int, msgspec.Meta(ge=0, le=2**36 - 1)] | None = None
    tac: Annotated[int, msgspec.Meta(ge=0, le=2**24 - 1)] | None = None
    rsrp_dbm: RsrpDbm | None = None
    rsrq_db: RsrqDb | None = None
    rssi_dbm: RssiDbm | None = None
    modem: ShortText | None = None

    def __post_init__(self) -> None:
        if self.networks_found == 0:
            if self.operator_code is not None or self.status is not None:
                raise ValueError(
                    "a scan that found no network (networks_found 0) names no operator "
                    "and no status"
                )
        elif self.operator_code is None or self.status is None:
            raise ValueError(
                "a scan result names its operator_code and status (networks_found > 0)"
            )


class SensorErrorReading(ReadingBase, frozen=True, tag="sensor_error"):
    """A sensor failed this round; the reason travels so the failure is visible."""

    sensor: ShortText
    error: LongText


Reading: TypeAlias = (
    SignalReading
    | LatencyReading
    | PowerReading
    | OutageReading
    | ThroughputReading
    | SystemReading
    | SensorErrorReading
    | OperatorScanReading
    | CellReading
)
READING_TYPES: Final[dict[str, type[ReadingBase]]] = {
    "signal": SignalReading,
    "latency": LatencyReading,
    "power": PowerReading,
    "outage": OutageReading,
    "throughput": ThroughputReading,
    "system": SystemReading,
    "sensor_error": SensorErrorReading,
    "operator_scan": OperatorScanReading,
    "cell": CellReading,
}


class ReadingsBatch(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a probe publishes on ``coverwatch/v1/<probe_id>/readings``.

    ``outbox_id`` names the outbox the readings' seqs come from: a probe whose outbox
    was lost (a new SD card) starts seq again at 1 under a new outbox id, so the pair
    (outbox_id, seq) identifies a reading of a probe. Absent means the nil UUID.
    """

    v: Literal[1]
    probe_id: ProbeId
    readings: Annotated[
        list[Reading], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_BATCH)
    ]
    sent_at: UtcTime | None = None
    outbox_id: OutboxId | None = None


class ProbeStatus(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a probe publishes, retained, on ``coverwatch/v1/<probe_id>/status``.

    "online" is the birth message after each connect; "offline" is both the clean
    goodbye and the last will the broker publishes when the probe vanishes.
    """

    v: Literal[1]
    probe_id: ProbeId
    state: Literal["online", "offline"]
    at: UtcTime | None = None
    boot_id: BootId | None = None
    agent_version: ShortText | None = None
    reason: ShortText | None = None


SeqRange: TypeAlias = tuple[Sequence, Sequence]


class CommitAck(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a collector publishes on ``coverwatch/v1/<probe_id>/ack`` after a commit.

    ``committed`` lists inclusive ``[first, last]`` seq ranges of ``outbox_id`` that
    are now durable in the database (stored, already stored before, or kept as dead
    letters): the probe may forget them. Acks are QoS 0, not retained and not queued
    for an absent probe; a lost ack only means the probe sends the readings
    again, which the collector stores once and acknowledges again.
    """

    v: Literal[1]
    probe_id: ProbeId
    outbox_id: OutboxId
    committed: Annotated[list[SeqRange], msgspec.Meta(min_length=1, max_length=MAX_ACK_RANGES)]
    at: UtcTime | None = None


class _Envelope(msgspec.Struct, kw_only=True, frozen=True):
    """The batch with its readings left undecoded, for the slow (error) path."""

    v: int
    probe_id: ProbeId
    readings: Annotated[
        list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_BATCH)
    ]
    sent_at: UtcTime | None = None
    outbox_id: OutboxId | None = None


class _VersionOnly(msgspec.Struct):
    v: int | None = None


class ProtocolError(ValueError):
    """A message that does not follow the protocol.

    ``field`` is the JSON path of the offending value (``readings[3].rsrp_dbm``),
    or ``None`` when the message as a whole is wrong (not JSON, too large, wrong topic).
    """

    def __init__(self, reason: str, *, field: str | None = None, undecodable: bool = False) -> None:
        self.reason = reason
        self.field = field
        # True when no JSON decoder could read the bytes at all (nested past the stack,
        # too large for memory): not a wrong message, but input no tool can take.
        self.undecodable = undecodable
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True)
class RejectedReading:
    """One reading of a batch that failed validation while its neighbours passed."""

    index: int
    error: ProtocolError
    raw: bytes


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A readings batch: the valid readings, and the rejected ones with their reasons."""

    batch: ReadingsBatch
    rejected: tuple[RejectedReading, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicAddress:
    probe_id: str
    channel: Literal["readings", "status"]


# --------------------------------------------------------------------------- topics


def readings_topic(probe_id: str) -> str:
    _check_probe_id(probe_id)
    return f"{TOPIC_PREFIX}/{probe_id}/{READINGS_CHANNEL}"


def status_topic(probe_id: str) -> str:
    _check_probe_id(probe_id)
    return f"{TOPIC_PREFIX}/{probe_id}/{STATUS_CHANNEL}"


def ack_topic(probe_id: str) -> str:
    _check_probe_id(probe_id)
    return f"{TOPIC_PREFIX}/{probe_id}/{ACK_CHANNEL}"


def parse_topic(topic: str) -> TopicAddress:
    """Split ``coverwatch/v1/<probe_id>/<channel>``; raise ProtocolError otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "coverwatch":
        raise ProtocolError(
            f"topic {_brief(topic)} is not of the form coverwatch/v{PROTOCOL_VERSION}/<probe_id>/"
            f"{READINGS_CHANNEL}|{STATUS_CHANNEL}",
            field="topic",
        )
    version, probe_id, channel = parts[1], parts[2], parts[3]
    if version != f"v{PROTOCOL_VERSION}":
        raise ProtocolError(
            f"unsupported topic version {_brief(version)}: this side speaks v{PROTOCOL_VERSION}; "
            "upgrade the collector before the probes",
            field="topic",
        )
    _check_probe_id(probe_id, field="topic")
    if channel == READINGS_CHANNEL:
        return TopicAddress(probe_id, "readings")
    if channel == STATUS_CHANNEL:
        return TopicAddress(probe_id, "status")
    raise ProtocolError(
        f"unknown channel {_brief(channel)}: expected {READINGS_CHANNEL!r} or {STATUS_CHANNEL!r}",
        field="topic",
    )


def _brief(text: str, limit: int = 80) -> str:
    """repr() of a value from the wire, cut so a 64 KB topic cannot make a 64 KB error."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}...' ({len(text)} chars)"


def _check_probe_id(probe_id: str, *, field: str = "probe_id") -> None:
    if not _PROBE_ID_MATCH(probe_id):
        raise ProtocolError(
            f"expected probe id of 1-64 lowercase letters, digits, '-' or '_' "
            f"(e.g. cb-001), got {_brief(probe_id)}",
            field=field,
        )


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` ranges covering these seqs, sorted and merged."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


# --------------------------------------------------------------------------- codec

_batch_encoder = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(ReadingsBatch)
_status_decoder = msgspec.json.Decoder(ProbeStatus)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_version_decoder = msgspec.json.Decoder(_VersionOnly)
_ack_decoder = msgspec.json.Decoder(CommitAck)
_reading_decoder: msgspec.json.Decoder[Reading] = msgspec.json.Decoder(Reading)
_generic_decoder = msgspec.json.Decoder()
# msgspec.ValidationError is a DecodeError; invalid UTF-8 inside a string surfaces
# as UnicodeDecodeError; JSON nested past the interpreter's stack as RecursionError
# (caught here so one deep reading costs only itself). Nothing else may escape the
# decoder (see _never_raises_other_errors).
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def encode(message: ReadingsBatch | ProbeStatus | CommitAck) -> bytes:
    """Compact UTF-8 JSON; fields left at their default (None) are omitted."""
    return _batch_encoder.encode(message)


def compress(json_payload: bytes) -> bytes:
    """The compact encoding of an encoded JSON message (0x02 + DEFLATE with the dictionary)."""
    deflater = zlib.compressobj(
        9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, COMPACT_DICTIONARY
    )
    return bytes((COMPACT_MARKER,)) + deflater.compress(json_payload) + deflater.flush()


def encode_as(message: ReadingsBatch | CommitAck, encoding: str) -> bytes:
    """``message`` in one of ENCODINGS ("compact" or "json")."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: expected one of {ENCODINGS}")
    payload = encode(message)
    return compress(payload) if encoding == "compact" else payload


def is_compact(payload: bytes) -> bool:
    """Whether a payload is in the compact encoding (its first byte says so)."""
    return payload[:1] == bytes((COMPACT_MARKER,))


def _inflate(payload: bytes) -> bytes:
    """The JSON inside a compact payload; refused past MAX_PAYLOAD_BYTES (a zip bomb)."""
    inflater = zlib.decompressobj(-15, COMPACT_DICTIONARY)
    try:
        text = inflater.decompress(payload[1:], MAX_PAYLOAD_BYTES + 1)
    except zlib.error as error:
        raise ProtocolError(f"compact payload is not valid DEFLATE data ({error})") from None
    if len(text) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
        raise ProtocolError(
            f"compact payload inflates to more than {MAX_PAYLOAD_BYTES} bytes; "
            f"send at most {MAX_READINGS_PER_BATCH} readings per message"
        )
    if not inflater.eof:
        raise ProtocolError("compact payload is truncated (the DEFLATE stream does not end)")
    if inflater.unused_data:
        raise ProtocolError(
            f"compact payload has {len(inflater.unused_data)} bytes after its DEFLATE stream"
        )
    return text


def _json_of(payload: bytes) -> bytes:
    """A payload as JSON: compact ones inflated (size-checked both before and after)."""
    _check_size(payload)
    return _inflate(payload) if is_compact(payload) else payload


_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def _never_raises_other_errors(
    decode: Callable[_Params, _Result],
) -> Callable[_Params, _Result]:
    """Turn anything but a ProtocolError escaping a decoder into a ProtocolError.

    msgspec raises RecursionError for JSON nested deeper than the interpreter's stack
    (a 2 KB document of 1000 brackets does it), MemoryError for absurd sizes, and a
    future version may raise something new: one hostile message must be a rejected
    message, never an exception that stops the collector's loop.
    """

    @functools.wraps(decode)
    def guarded(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        try:
            return decode(*args, **kwargs)
        except ProtocolError:
            raise
        except RecursionError:
            raise ProtocolError(
                "JSON is nested too deeply to decode; the protocol's messages are "
                "at most 3 levels deep",
                undecodable=True,
            ) from None
        except MemoryError:
            raise ProtocolError(
                "payload is too large to decode in memory", undecodable=True
            ) from None
        except Exception as error:  # the decoder's promise: only ProtocolError escapes
            raise ProtocolError(
                f"payload could not be decoded ({type(error).__name__}: {error})",
                undecodable=True,
            ) from None

    return guarded


@_never_raises_other_errors
def decode_readings(topic: str, payload: bytes) -> DecodedBatch:
    """Decode a readings message received on ``topic``.

    Raises ProtocolError when the message as a whole is unusable (wrong topic,
    size, JSON, version, envelope, or probe id differing from the topic). Readings
    that fail on their own come back in ``DecodedBatch.rejected``; the batch keeps
    every valid reading. No other exception escapes, whatever the bytes.
    """
    address = _expect_channel(topic, READINGS_CHANNEL)
    payload = _json_of(payload)
    try:
        batch = _batch_decoder.decode(payload)
    except _DECODE_ERRORS:
        decoded = _decode_readings_slowly(payload)
    else:
        decoded = DecodedBatch(batch)
    _check_probe_matches(address, decoded.batch.probe_id)
    return decoded


@_never_raises_other_errors
def decode_status(topic: str, payload: bytes) -> ProbeStatus:
    """Decode a status (birth / last will) message received on ``topic``."""
    address = _expect_channel(topic, STATUS_CHANNEL)
    _check_size(payload)
    try:
        status = _status_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        _check_version(payload)
        raise _explain(error, payload, ProbeStatus) from None
    _check_probe_matches(address, status.probe_id)
    return status


@_never_raises_other_errors
def decode_ack(topic: str, payload: bytes) -> CommitAck:
    """Decode a commit acknowledgement received on ``topic`` (the probe side)."""
    expected_prefix = f"{TOPIC_PREFIX}/"
    suffix = f"/{ACK_CHANNEL}"
    if not (topic.startswith(expected_prefix) and topic.endswith(suffix)):
        raise ProtocolError(
            f"expected an {ACK_CHANNEL!r} topic, got {_brief(topic)}", field="topic"
        )
    probe_id = topic[len(expected_prefix) : -len(suffix)]
    _check_probe_id(probe_id, field="topic")
    payload = _json_of(payload)
    try:
        ack = _ack_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        _check_version(payload)
        raise _explain(error, payload, CommitAck) from None
    if ack.probe_id != probe_id:
        raise ProtocolError(
            f"probe id {_brief(ack.probe_id)} does not match the topic's probe id "
            f"{_brief(probe_id)}",
            field="probe_id",
        )
    for index, (first, last) in enumerate(ack.committed):
        if first > last:
            raise ProtocolError(
                f"range starts after it ends ({first} > {last})", field=f"committed[{index}]"
            )
    return ack


def _expect_channel(topic: str, channel: str) -> TopicAddress:
    address = parse_topic(topic)
    if address.channel != channel:
        raise ProtocolError(
            f"expected a {_brief(channel)} topic, got {_brief(topic)}",
            field="topic",
        )
    return address


def _check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            f"payload is {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}; "
            f"send at most {MAX_READINGS_PER_BATCH} readings per message"
        )


def _check_probe_matches(address: TopicAddress, probe_id: str) -> None:
    if address.probe_id != probe_id:
        raise ProtocolError(
            f"probe id {_brief(probe_id)} does not match the topic's probe id "
            f"{_brief(address.probe_id)}; a probe may publish only under its own topic",
            field="probe_id",
        )


def _check_version(payload: bytes) -> None:
    """Give an unknown schema version its own clear message."""
    try:
        version = _version_decoder.decode(payload).v
    except _DECODE_ERRORS:
        return
    if version is not None and version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version}: this collector understands "
            f"version {PROTOCOL_VERSION}; upgrade the collector before the probes",
            field="v",
        )


def _decode_readings_slowly(payload: bytes) -> DecodedBatch:
    _check_version(payload)
    try:
        envelope = _envelope_decoder.decode(payload)
    except _DECODE_ERRORS as error:
        raise _explain(error, payload, ReadingsBatch) from None
    valid: list[Reading] = []
    rejected: list[RejectedReading] = []
    for index, raw in enumerate(envelope.readings):
        try:
            valid.append(_reading_decoder.decode(raw))
        except _DECODE_ERRORS as error:
            reason = _explain(error, bytes(raw), Reading, prefix=f"readings[{index}]")
            rejected.append(RejectedReading(index, reason, bytes(raw)))
    batch = ReadingsBatch(
        v=PROTOCOL_VERSION,
        probe_id=envelope.probe_id,
        readings=valid,
        sent_at=envelope.sent_at,
        outbox_id=envelope.outbox_id,
    )
    return DecodedBatch(batch, tuple(rejected))


# ------------------------------------------------------- human-readable validation errors

_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_AT_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_ONE_OF_KINDS = "one of " + ", ".join(json.dumps(kind) for kind in READING_TYPES)


def _explain(
    error: msgspec.DecodeError | UnicodeDecodeError | RecursionError,
    payload: bytes,
    schema: Any,
    *,
    prefix: str = "",
) -> ProtocolError:
    """Turn a msgspec error into a ProtocolError naming the field, the rule and the value."""
    if isinstance(error, RecursionError):
        return ProtocolError(
            "JSON is nested too deeply to decode; the protocol's messages are at most "
            "3 levels deep",
            field=prefix or None,
            undecodable=True,
        )
    if not isinstance(error, msgspec.ValidationError):
        if _LONE_SURROGATE.search(payload):
            return ProtocolError(
                "JSON holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not "
                "valid Unicode; escape whole characters or send UTF-8",
                field=prefix or None,
            )
        return ProtocolError(f"payload is not valid UTF-8 JSON ({error})", field=prefix or None)
    text = str(error)
    match = _AT_PATH.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    steps: list[str | int] = [key or int(index) for key, index in _PATH_TOKEN.findall(path)]
    missing = _MISSING_FIELD.match(message)
    if missing:
        steps.append(missing["name"])
    field = (prefix + _format_path(steps)).removeprefix(".") or None
    if missing:
        expectation = _describe_expected(schema, payload, steps)
        hint = f" ({expectation})" if expectation else ""
        return ProtocolError(f"required field is missing{hint}", field=field)
    document = _generic_value(payload)
    found, value = _value_at(document, steps)
    got = f", got {_show(value)}" if found else ""
    if message.startswith(("Invalid value", "Invalid enum value")):
        expectation = _describe_expected(schema, payload, steps)
        return ProtocolError(f"expected {expectation or 'a known value'}{got}", field=field)
    if message.startswith("Expected"):
        expectation = _describe_expected(schema, payload, steps)
        if expectation:
            return ProtocolError(f"expected {expectation}{got}", field=field)
        return ProtocolError(f"{message[0].lower()}{message[1:]}{got}", field=field)
    # __post_init__ checks and anything else msgspec reports: keep its words.
    return ProtocolError(message, field=field)


def _format_path(steps: list[str | int]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in steps)


_UNDECODABLE: Final = object()  # a document the generic decoder cannot read either


def _generic_value(payload: bytes) -> Any:
    try:
        return _generic_decoder.decode(payload)
    except _DECODE_ERRORS:
        return _UNDECODABLE


def _value_at(document: Any, steps: list[str | int]) -> tuple[bool, Any]:
    if document is _UNDECODABLE:
        return False, None
    node = document
    for step in steps:
        if isinstance(step, int):
            if not (isinstance(node, list) and step < len(node)):
                return False, None
            node = node[step]
            continue
        if not (isinstance(node, dict) and step in node):
            return False, None
        node = node[step]
    return True, node


def _show(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _describe_expected(schema: Any, payload: bytes, steps: list[str | int]) -> str | None:
    """Walk the schema along the error path and describe what was expected there."""
    info: Any = _type_info(schema)
    node = _generic_value(payload)
    for step in steps:
        info = _resolve_union(_strip_optional(info), node)
        if isinstance(step, int):
            if not isinstance(info, msgspec.inspect.ListType):
                return None
            info = info.item_type
            node = node[step] if isinstance(node, list) and step < len(node) else None
            continue
        if isinstance(info, msgspec.inspect.StructType) and step == info.tag_field:
            return _ONE_OF_KINDS
        if isinstance(info, msgspec.inspect.UnionType) and all(
            isinstance(member, msgspec.inspect.StructType) for member in info.types
        ):
            first_member: Any = info.types[0]
            return _ONE_OF_KINDS if step == first_member.tag_field else None
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        fields = {field.encode_name: field for field in info.fields}
        if step not in fields:
            return None
        info = fields[step].type
        node = node.get(step) if isinstance(node, dict) else None
    return _describe_type(_strip_optional(info))


@functools.cache
def _type_info(schema: Any) -> Any:
    return msgspec.inspect.type_info(schema)


def _strip_optional(info: Any) -> Any:
    if isinstance(info, msgspec.inspect.UnionType):
        members = [m for m in info.types if not isinstance(m, msgspec.inspect.NoneType)]
        if len(members) == 1:
            return members[0]
    return info


def _resolve_union(info: Any, node: Any) -> Any:
    """Pick the member of a tagged union of structs that the raw JSON names."""
    if not isinstance(info, msgspec.inspect.UnionType):
        return info
    structs = [m for m in info.types if isinstance(m, msgspec.inspect.StructType)]
    if not structs or structs[0].tag_field is None or not isinstance(node, dict):
        return info
    tag = node.get(structs[0].tag_field)
    for member in structs:
        if member.tag == tag:
            return member
    return info


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _describe_bounds(noun: str, info: Any) -> str:
    low = info.ge if info.ge is not None else info.gt
    high = info.le if info.le is not None else info.lt
    if low is not None and high is not None:
        return f"{noun} between {_number(low)} and {_number(high)}"
    if low is not None:
        return f"{noun} >= {_number(low)}" if info.gt is None else f"{noun} > {_number(low)}"
    if high is not None:
        return f"{noun} <= {_number(high)}" if info.lt is None else f"{noun} < {_number(high)}"
    return noun


def _describe_type(info: Any) -> str | None:
    inspect = msgspec.inspect
    if isinstance(info, inspect.Metadata):
        extra = info.extra or {}
        if "expects" in extra:
            return str(extra["expects"])
        return _describe_type(info.type)
    if isinstance(info, inspect.IntType):
        return _describe_bounds("integer", info)
    if isinstance(info, inspect.FloatType):
        return _describe_bounds("number", info)
    if isinstance(info, inspect.BoolType):
        return "true or false"
    if isinstance(info, inspect.LiteralType):
        return "one of " + ", ".join(json.dumps(value) for value in info.values)
    if isinstance(info, inspect.StrType):
        if info.max_length is not None:
            return f"string of at most {info.max_length} characters"
        return "string"
    if isinstance(info, inspect.DateTimeType):
        return "RFC 3339 date-time with a timezone, e.g. 2026-11-22T08:15:00Z"
    if isinstance(info, inspect.ListType):
        low, high = info.min_length, info.max_length
        if low is not None and high is not None:
            return f"array of {low} to {high} items"
        return "array"
    if isinstance(info, inspect.StructType | inspect.UnionType):
        return "object"
    return None
