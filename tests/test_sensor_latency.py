"""The latency sensor against real loopback sockets; a fake ping socket only where the
kernel forbids unprivileged ICMP (the fake stands in for the socket, nothing else)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sensors import registered
from agent.sensors.base import SensorContext
from agent.sensors.latency import (
    LatencySensor,
    Settings,
    echo_request,
    icmp_checksum,
    jitter_ms,
    ping_socket_allowed,
)
from coverwatch.protocol import LatencyReading
from tests.conftest import skip_unless_ci
from tests.sensor_fakes import stamp


def fake_proc(tmp_path: Path, ping_group_range: str) -> Path:
    ipv4 = tmp_path / "proc" / "sys" / "net" / "ipv4"
    ipv4.mkdir(parents=True)
    (ipv4 / "ping_group_range").write_text(f"{ping_group_range}\n")
    return tmp_path / "proc"


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener on loopback; the kernel completes handshakes from the backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def only_reading(sensor: LatencySensor) -> LatencyReading:
    readings = sensor.read(stamp())
    assert len(readings) == 1
    reading = readings[0]
    assert isinstance(reading, LatencyReading)
    return reading


def test_tcp_fallback_when_ping_sockets_are_not_allowed(tmp_path: Path, listener: int) -> None:
    settings = Settings(targets=["127.0.0.1"], count=5, packet_interval_s=0, tcp_port=listener)
    sensor = LatencySensor(settings, proc=fake_proc(tmp_path, "1\t0"), groups=lambda: [0])
    reading = only_reading(sensor)
    assert reading.target == "127.0.0.1"
    assert reading.method == "tcp"
    assert reading.packets_sent == 5
    assert reading.packets_received == 5
    assert reading.loss_pct == 0
    assert reading.rtt_min_ms is not None
    assert reading.rtt_max_ms is not None
    assert reading.rtt_avg_ms is not None
    assert reading.rtt_median_ms is not None
    assert 0 < reading.rtt_min_ms <= reading.rtt_median_ms <= reading.rtt_max_ms < 1000
    assert reading.rtt_min_ms <= reading.rtt_avg_ms <= reading.rtt_max_ms
    assert reading.jitter_ms is not None
    assert reading.jitter_ms >= 0
    assert reading.dns_ms is None  # an address needs no resolution


def test_unreachable_target_is_full_loss_not_an_error(tmp_path: Path, closed_port: int) -> None:
    settings = Settings(targets=["127.0.0.1"], count=3, packet_interval_s=0, tcp_port=closed_port)
    sensor = LatencySensor(settings, proc=fake_proc(tmp_path, "1 0"), groups=lambda: [0])
    reading = only_reading(sensor)
    assert reading.method == "tcp"
    assert reading.packets_sent == 3
    assert reading.packets_received == 0
    assert reading.loss_pct == 100
    assert reading.rtt_min_ms is None
    assert reading.rtt_avg_ms is None
    assert reading.rtt_median_ms is None
    assert reading.rtt_max_ms is None
    assert reading.jitter_ms is None


def test_hostname_is_resolved_and_timed(listener: int) -> None:
    settings = Settings(targets=["localhost"], count=2, packet_interval_s=0, tcp_port=listener)
    reading = only_reading(LatencySensor(settings, resolve=lambda host: "127.0.0.1"))
    assert reading.target == "localhost"
    assert reading.dns_ms is not None
    assert reading.dns_ms >= 0
    assert reading.packets_received == 2


def test_name_that_does_not_resolve_counts_as_lost(tmp_path: Path) -> None:
    def no_dns(host: str) -> str:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    settings = Settings(targets=["vnexpress.net"], count=4, method="tcp")
    reading = only_reading(LatencySensor(settings, resolve=no_dns))
    assert reading.target == "vnexpress.net"
    assert (reading.packets_sent, reading.packets_received, reading.loss_pct) == (4, 0, 100)
    assert reading.dns_ms is None


def test_one_reading_per_target(listener: int) -> None:
    settings = Settings(
        targets=["127.0.0.1", "127.0.0.2"],
        count=2,
        packet_interval_s=0,
        method="tcp",
        tcp_port=listener,
    )
    readings = LatencySensor(settings).read(stamp())
    assert all(isinstance(reading, LatencyReading) for reading in readings)
    assert [getattr(reading, "target", None) for reading in readings] == [
        "127.0.0.1",
        "127.0.0.2",
    ]


def test_no_ping_group_range_file_means_no_icmp() -> None:
    assert ping_socket_allowed(Path("/nonexistent"), [0]) is False


@pytest.mark.parametrize(
    ("range_text", "groups", "allowed"),
    [("1\t0", [0], False), ("0\t2147483647", [1000], True), ("100 200", [50, 150], True)],
)
def test_ping_group_range_values(
    tmp_path: Path, range_text: str, groups: list[int], allowed: bool
) -> None:
    assert ping_socket_allowed(fake_proc(tmp_path, range_text), groups) is allowed


class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


class FakePingSocket:
    """Stands in for the kernel's ping socket: answers echo requests after a scripted
    delay, drops the ones scripted as lost, and sends a stale reply first once."""

    def __init__(self, clock: FakeClock, delays_ms: list[float | None]) -> None:
        self.clock = clock
        self.delays_ms = delays_ms
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []
        self.timeout = 0.0

    def __enter__(self) -> FakePingSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def sendto(self, packet: bytes, address: tuple[str, int]) -> int:
        assert address == ("192.0.2.1", 0)
        assert icmp_checksum(packet) == 0  # a valid checksum sums to zero
        self.sent.append(packet)
        kind, code, _, _identifier, sequence = struct.unpack("!BBHHH", packet[:8])
        assert (kind, code) == (8, 0)
        if len(self.sent) == 2:  # a late answer to probe 1 arrives before probe 2's
            self.queue.append(struct.pack("!BBHHH", 0, 0, 0, 77, sequence - 1))
        self.queue.append(struct.pack("!BBHHH", 0, 0, 0, 77, sequence) + packet[8:])
        return len(packet)

    def recv(self, size: int) -> bytes:
        delay = self.delays_ms[len(self.sent) - 1]
        if delay is None:
            self.clock.ns += int(self.timeout * 1e9)
            self.queue.clear()
            raise TimeoutError
        self.clock.ns += int(delay * 1e6)
        return self.queue.pop(0)


def test_icmp_round_statistics_with_a_scripted_ping_socket(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakePingSocket(clock, [20.0, 30.0, None, 25.0])
    created: list[tuple[int, int, int]] = []

    def socket_factory(family: int, kind: int, proto: int) -> Any:
        created.append((family, kind, proto))
        return fake

    sensor = LatencySensor(
        Settings(targets=["192.0.2.1"], count=4, timeout_s=1.0, packet_interval_s=0.5),
        proc=fake_proc(tmp_path, "0 2147483647"),
        groups=lambda: [1000],
        socket_factory=socket_factory,
        clock_ns=clock,
        sleep=lambda seconds: None,
    )
    reading = only_reading(sensor)
    assert created == [(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)]
    assert reading.method == "icmp"
    assert (reading.packets_sent, reading.packets_received) == (4, 3)
    assert reading.loss_pct == 25
    # Probe 2 waited 30 ms twice: once for the stale reply it skipped, once for its own.
    assert reading.rtt_min_ms == 20.0
    assert reading.rtt_max_ms == 60.0
    assert reading.rtt_median_ms == 25.0
    assert reading.rtt_avg_ms == pytest.approx(35.0)
    assert reading.jitter_ms == pytest.approx((40 + 35) / 2)
    sequences = [struct.unpack("!H", packet[6:8])[0] for packet in fake.sent]
    assert sequences == [1, 2, 3, 4]


def test_icmp_against_real_loopback_when_the_kernel_allows_it() -> None:
    sensor = LatencySensor(Settings(targets=["127.0.0.1"], count=3, packet_interval_s=0))
    if sensor.method() != "icmp":
        skip_unless_ci(
            "net.ipv4.ping_group_range does not include our groups "
            "(sysctl -w net.ipv4.ping_group_range='0 2147483647', as deploy/pi/install.sh does)"
        )
    reading = only_reading(sensor)
    assert reading.method == "icmp"
    assert reading.packets_received == 3
    assert reading.rtt_max_ms is not None
    assert reading.rtt_max_ms < 1000


def test_jitter_is_mean_absolute_difference_of_consecutive_rtts() -> None:
    assert jitter_ms([10.0, 20.0, 15.0]) == 7.5
    assert jitter_ms([10.0]) is None


def test_echo_request_layout() -> None:
    packet = echo_request(0x1234, 7, b"abcd")
    assert packet[:2] == b"\x08\x00"
    assert struct.unpack("!HH", packet[4:8]) == (0x1234, 7)
    assert icmp_checksum(packet) == 0


def test_bad_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method must be one of auto, icmp, tcp"):
        LatencySensor(Settings(method="udp"))


def test_registered_as_a_plugin(tmp_path: Path) -> None:
    plugin = registered()["latency"]
    assert plugin.enabled_by_default
    assert plugin.create(plugin.settings_type(), SensorContext(tmp_path)).name == "latency"
