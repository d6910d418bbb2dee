"""Power cuts on LazyFS: the power sensor's heartbeat is on the card once written.

The heartbeat dates an outage: after a power cut, the last heartbeat of the boot that
died is when the power went. A heartbeat that ``write`` returned must survive the cut
(else the outage would look longer than it was), and with its sync removed the same
scenario must lose it: the test has teeth.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.heartbeat import Heartbeat, HeartbeatFile
from agent.sensors.power import HEARTBEAT_FILE
from tests.lazyfs_harness import LazyFS
from tests.sensor_fakes import BOOT_ID

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def heartbeats(minutes: range) -> list[Heartbeat]:
    return [Heartbeat(BOOT_ID, NOW + timedelta(minutes=minute)) for minute in minutes]


def test_the_last_heartbeat_written_survives_a_power_cut(lazyfs: LazyFS) -> None:
    path = lazyfs.mnt / HEARTBEAT_FILE
    writer = HeartbeatFile(path)
    for heartbeat in heartbeats(range(5)):
        writer.write(heartbeat)
    lazyfs.power_cut()
    lazyfs.reboot()
    assert HeartbeatFile(path).load() == heartbeats(range(5))[-1]


def test_heartbeats_without_their_sync_are_lost_in_a_power_cut(lazyfs: LazyFS) -> None:
    path = lazyfs.mnt / HEARTBEAT_FILE
    [durable] = heartbeats(range(1))
    HeartbeatFile(path).write(durable)
    careless = HeartbeatFile(path, sync=lambda _fd: None)  # the teeth
    for heartbeat in heartbeats(range(1, 5)):
        careless.write(heartbeat)
    assert HeartbeatFile(path).load() == heartbeats(range(1, 5))[-1]  # before the cut
    lazyfs.power_cut()
    lazyfs.reboot()
    assert HeartbeatFile(path).load() == durable
