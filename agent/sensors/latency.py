"""Latency: round-trip times, loss and jitter to a few targets, plus DNS time.

Each round sends ``count`` probes per target, one every ``packet_interval_s``, and emits one
:class:`LatencyReading` per target. ICMP echo goes through an unprivileged ping socket
(``SOCK_DGRAM``/``IPPROTO_ICMP``), which Linux allows to the groups in
``net.ipv4.ping_group_range``; the agent needs no root and no setuid ping binary. When
the kernel does not allow it the sensor times TCP handshakes to ``tcp_port`` instead
(the reading says ``method="tcp"``).

Jitter is the mean absolute difference between consecutive RTTs of the answered
probes (RFC 3550's idea without its smoothing), so it is None with fewer than two
answers. A target that never answers is a reading with ``loss_pct=100`` and no RTTs:
that *is* the measurement. So is a name that does not resolve (no DNS, no coverage).
IPv4 only for now.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from agent.sensors._system import read_text
from agent.sensors.base import Sensor, SensorContext, SensorPlugin, Stamp, register
from coverwatch.protocol import LatencyReading, Reading

METHODS: Final = ("auto", "icmp", "tcp")
_ICMP_ECHO_REQUEST: Final = 8
_ICMP_ECHO_REPLY: Final = 0
_MAX_RTT_MS: Final = 600_000.0


@dataclass(frozen=True)
class Settings:
    targets: list[str] = field(
        default_factory=lambda: ["1.1.1.1", "8.8.8.8", "vnexpress.net"],
        metadata={
            "help": "Hosts to probe: IPv4 addresses, or names (their DNS resolution is "
            "timed too; vnexpress.net is hosted in Vietnam)."
        },
    )
    count: int = field(default=10, metadata={"help": "Probes per target per round."})
    timeout_s: float = field(
        default=2.0, metadata={"help": "Seconds to wait for each probe's answer."}
    )
    packet_interval_s: float = field(
        default=0.2,
        metadata={
            "help": "Seconds between the probes to one target (how often the sensor runs "
            "is interval_s)."
        },
    )
    method: str = field(
        default="auto",
        metadata={
            "help": "'icmp' (unprivileged ping socket), 'tcp' (handshake timing) or 'auto' "
            "(ICMP when net.ipv4.ping_group_range allows it, else TCP)."
        },
    )
    tcp_port: int = field(
        default=443,
        metadata={"help": "Port whose TCP handshake is timed when ICMP is not allowed."},
    )


# ---------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RoundResult:
    """The probes of one target in one round; ``rtts_ms`` holds the answered ones in order."""

    target: str
    method: Literal["icmp", "tcp"]
    sent: int
    rtts_ms: tuple[float, ...]
    dns_ms: float | None = None

    def to_reading(self, stamp: Stamp) -> LatencyReading:
        received = len(self.rtts_ms)
        rtts = [min(rtt, _MAX_RTT_MS) for rtt in self.rtts_ms]
        summary: dict[str, Any] = {}
        if rtts:
            summary = {
                "rtt_min_ms": min(rtts),
                "rtt_avg_ms": statistics.fmean(rtts),
                "rtt_median_ms": statistics.median(rtts),
                "rtt_max_ms": max(rtts),
                "jitter_ms": jitter_ms(rtts),
            }
        return LatencyReading(
            **stamp.base(),
            target=self.target[:255],
            method=self.method,
            packets_sent=self.sent,
            packets_received=received,
            loss_pct=100.0 * (self.sent - received) / self.sent,
            dns_ms=None if self.dns_ms is None else min(self.dns_ms, _MAX_RTT_MS),
            **summary,
        )


def jitter_ms(rtts_ms: Sequence[float]) -> float | None:
    """Mean absolute difference of consecutive RTTs; None with fewer than two."""
    if len(rtts_ms) < 2:
        return None
    return statistics.fmean(abs(b - a) for a, b in itertools.pairwise(rtts_ms))


# ------------------------------------------------------------------- the OS edge

SocketFactory = Callable[[int, int, int], socket.socket]
Resolver = Callable[[str], str]


def resolve_ipv4(host: str) -> str:
    """The first IPv4 address of ``host``; raises OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    return str(infos[0][4][0])


def ping_socket_allowed(proc: Path, groups: Sequence[int]) -> bool:
    """Whether one of ``groups`` lies in ``net.ipv4.ping_group_range`` ("1 0" = nobody)."""
    text = read_text(proc / "sys" / "net" / "ipv4" / "ping_group_range")
    if text is None:
        return False
    try:
        low, high = (int(part) for part in text.split())
    except ValueError:
        return False
    return any(low <= group <= high for group in groups)


def _own_groups() -> list[int]:
    return sorted({os.getgid(), os.getegid(), *os.getgroups()})


def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(identifier: int, sequence: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    checksum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, checksum, identifier, sequence) + payload


# --------------------------------------------------------------------- the sensor


class LatencySensor:
    name = "latency"

    def __init__(
        self,
        settings: Settings,
        *,
        proc: Path = Path("/proc"),
        groups: Callable[[], Sequence[int]] = _own_groups,
        socket_factory: SocketFactory = socket.socket,
        resolve: Resolver = resolve_ipv4,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings.method not in METHODS:
            raise ValueError(
                f"sensors.latency.method must be one of {', '.join(METHODS)}, "
                f"got {settings.method!r}"
            )
        if settings.count < 1:
            raise ValueError(f"sensors.latency.count must be at least 1, got {settings.count}")
        self.settings = settings
        self._proc = proc
        self._groups = groups
        self._socket = socket_factory
        self._resolve = resolve
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._sequence = 0

    def read(self, stamp: Stamp) -> list[Reading]:
        method = self.method()
        return [self.probe(target, method).to_reading(stamp) for target in self.settings.targets]

    def method(self) -> Literal["icmp", "tcp"]:
        """ICMP when configured or allowed; the kernel decides, not our uid."""
        if self.settings.method == "icmp":
            return "icmp"
        if self.settings.method == "tcp":
            return "tcp"
        return "icmp" if ping_socket_allowed(self._proc, self._groups()) else "tcp"

    def probe(self, target: str, method: Literal["icmp", "tcp"]) -> RoundResult:
        count = self.settings.count
        dns_ms: float | None = None
        try:
            address = str(ipaddress.IPv4Address(target))
        except ValueError:
            started = self._clock_ns()
            try:
                address = self._resolve(target)
            except OSError:
                # No answer from DNS is no connectivity: every probe counts as lost.
                return RoundResult(target, method, count, ())
            dns_ms = (self._clock_ns() - started) / 1e6
        if method == "icmp":
            try:
                rtts = self._icmp_round(address)
            except PermissionError:
                # ping_group_range changed under us, or a policy forbids it: fall back.
                method = "tcp"
                rtts = self._tcp_round(address)
        else:
            rtts = self._tcp_round(address)
        return RoundResult(target, method, count, tuple(rtts), dns_ms)

    def _icmp_round(self, address: str) -> list[float]:
        settings = self.settings
        rtts: list[float] = []
        with self._socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as sock:
            sock.settimeout(settings.timeout_s)
            payload = b"coverwatch-latency".ljust(32, b"\0")
            for index in range(settings.count):
                if index:
                    self._sleep(settings.packet_interval_s)
                self._sequence = (self._sequence + 1) & 0xFFFF
                sequence = self._sequence
                started = self._clock_ns()
                # The kernel replaces the identifier with the socket's own and delivers
                # only replies to it, so matching on the sequence number is enough.
                sock.sendto(echo_request(0, sequence, payload), (address, 0))
                rtt = self._await_reply(sock, sequence, started)
                if rtt is not None:
                    rtts.append(rtt)
        return rtts

    def _await_reply(self, sock: socket.socket, sequence: int, started: int) -> float | None:
        deadline = started + int(self.settings.timeout_s * 1e9)
        while True:
            remaining = (deadline - self._clock_ns()) / 1e9
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            try:
                packet = sock.recv(2048)
            except TimeoutError:
                return None
            except OSError as error:
                if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                    return None  # an ICMP error came back instead of the echo
                raise
            now = self._clock_ns()
            if len(packet) >= 8:
                kind, _, _, _, reply_sequence = struct.unpack("!BBHHH", packet[:8])
                if kind == _ICMP_ECHO_REPLY and reply_sequence == sequence:
                    return (now - started) / 1e6
            # A late reply to an earlier probe: keep waiting for ours.

    def _tcp_round(self, address: str) -> list[float]:
        settings = self.settings
        rtts: list[float] = []
        for index in range(settings.count):
            if index:
                self._sleep(settings.packet_interval_s)
            with self._socket(socket.AF_INET, socket.SOCK_STREAM, 0) as sock:
                sock.settimeout(settings.timeout_s)
                started = self._clock_ns()
                try:
                    sock.connect((address, settings.tcp_port))
                except OSError:
                    continue  # refused, unreachable or timed out: no handshake, lost
                rtts.append((self._clock_ns() - started) / 1e6)
        return rtts


def create(settings: Settings, context: SensorContext) -> Sensor:
    return LatencySensor(settings)


register(
    SensorPlugin(name="latency", settings_type=Settings, create=create, enabled_by_default=True)
)
