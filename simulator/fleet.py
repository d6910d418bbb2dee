"""Simulated probes: the real agent (scheduler, outbox, publisher, protocol) with
simulated sensors and a simulated clock, many of them driven from one thread.

Each village of the province gets a probe kit with one modem per operator (survey kits
carry one SIM per network, which is how per-operator coverage is measured). What the
kit sees comes from the radio model plus fast fading. Off-grid villages run on a solar
battery that goes flat at night, grid villages suffer the odd power cut; when the power
goes the probe vanishes without a goodbye (the broker publishes its last will), when it
returns it boots with a new boot id, a wall clock restored from fake-hwclock (wrong
until NTP syncs, which needs the link) and reports the outage. Some probes' backhaul
drops for hours and their backlog flushes when it returns; a few send malformed
payloads now and then.

Time is simulated and nothing here reads the wall clock: :meth:`Fleet.start` puts every
probe at the moment the caller gives (the demo's ``--now`` minus its history) and
:meth:`Fleet.advance_to` moves them on, taking the rounds that fell due, so a day of
readings takes seconds. The simulation knows nothing from before its start: a kit that
is dark then (an off-grid kit at night) is simply off until the sun comes up, and its
first boot reports no outage, as there is no earlier boot of it to report on.

The network side is the real paho client of each probe, stepped in turn
(``Publisher.network_step`` and ``pump_step``) instead of two threads per probe, so
thousands of probes fit in one process.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.clock import Clock
from agent.outbox import Outbox
from agent.publisher import Publisher, PublisherOptions
from agent.scheduler import Agent, ScheduledSensor
from agent.sensors.base import Sensor, Stamp
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from simulator import radio
from simulator.province import OPERATORS, Village

SIGNAL_EVERY = timedelta(minutes=15)
SLOW_EVERY = timedelta(hours=1)  # latency and system health
LOCAL_UTC_OFFSET = timedelta(hours=7)
NTP_AFTER_LINK = timedelta(minutes=2)
FAKE_HWCLOCK_LAG = timedelta(hours=9)  # how far behind a cold-booted Pi's clock is


# A probe's time until Fleet.start gives it the simulation's: never the wall clock.
NOT_STARTED = datetime.fromtimestamp(0, UTC)


def _epoch_ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


# ------------------------------------------------------------------------ sensors


class SimulatedModems:
    """One signal reading per operator's SIM, from the radio model."""

    name = "cellular"

    def __init__(self, village: Village, rng: random.Random) -> None:
        self.village = village
        self.rng = rng

    def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
        readings: list[protocol.Reading] = []
        for code, (name, _) in OPERATORS.items():
            median = self.village.median_rsrp_dbm[code]
            rsrp = median + self.rng.gauss(0, radio.FAST_FADING_SIGMA_DB)
            if rsrp < radio.REGISTRATION_FLOOR_DBM:
                # The SIM's home network is known from its IMSI even without service.
                readings.append(
                    protocol.SignalReading(
                        **stamp.base(), registration="searching", operator_code=code
                    )
                )
                continue
            readings.append(
                protocol.SignalReading(
                    **stamp.base(),
                    registration="home",
                    technology="lte",
                    operator_code=code,
                    operator_name=name,
                    rsrp_dbm=round(max(-140.0, min(-44.0, rsrp)), 1),
                    rsrq_db=round(max(-19.5, min(-3.0, -8 + (rsrp + 90) / 8)), 1),
                    sinr_db=round(max(-10.0, min(30.0, (rsrp + 112) / 1.5)), 1),
                )
            )
        return readings


class SimulatedLatency:
    name = "latency"

    def __init__(self, village: Village, rng: random.Random) -> None:
        self.village = village
        self.rng = rng

    def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
        best = max(self.village.median_rsrp_dbm.values())
        weak = best < -110
        loss = min(100.0, max(0.0, self.rng.gauss(25 if weak else 2, 5)))
        received = round(10 * (1 - loss / 100))
        rtt = max(20.0, self.rng.gauss(140 if weak else 55, 15))
        return [
            protocol.LatencyReading(
                **stamp.base(),
                target="1.1.1.1",
                method="icmp",
                packets_sent=10,
                packets_received=received,
                loss_pct=round(100 * (10 - received) / 10, 1),
                rtt_min_ms=round(rtt * 0.8, 1) if received else None,
                rtt_avg_ms=round(rtt, 1) if received else None,
                rtt_median_ms=round(rtt * 0.97, 1) if received else None,
                rtt_max_ms=round(rtt * 1.6, 1) if received else None,
                jitter_ms=round(rtt * 0.12, 1) if received else None,
            )
        ]


class SimulatedPower:
    name = "power"

    def __init__(self, probe: SimulatedProbe) -> None:
        self.probe = probe

    def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
        probe = self.probe
        readings: list[protocol.Reading] = []
        outage = probe.pending_outage
        # Like the real power sensor: report the outage once the clock can be trusted.
        if outage is not None and stamp.ntp_synced:
            previous_boot, started, ended = outage
            readings.append(
                protocol.OutageReading(
                    **stamp.base(),
                    previous_boot_id=previous_boot,
                    outage_started_at=started,
                    outage_ended_at=ended,
                    outage_duration_s=(ended - started).total_seconds(),
                )
            )
            probe.pending_outage = None
        grid = probe.village.grid_power
        readings.append(
            protocol.PowerReading(
                **stamp.base(),
                uptime_s=stamp.monotonic_ms / 1000,
                undervoltage_now=False,
                on_mains=grid,
                battery_pct=None if grid else probe.battery_pct(),
                battery_charging=None if grid else probe.is_daytime(),
            )
        )
        return readings


class SimulatedSystem:
    name = "system"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
        return [
            protocol.SystemReading(
                **stamp.base(),
                cpu_temp_c=round(self.rng.uniform(38, 62), 1),
                load_1m=round(self.rng.uniform(0.02, 0.4), 2),
                memory_used_pct=round(self.rng.uniform(18, 30), 1),
                disk_free_bytes=11_500_000_000,
            )
        ]


# ------------------------------------------------------------------------- probes


@dataclass
class FleetStats:
    rounds: int = 0
    readings: int = 0
    boots: int = 0
    power_cuts: int = 0
    link_drops: int = 0
    malformed_sent: int = 0


@dataclass
class SimulatedProbe:
    village: Village
    url: MqttUrl
    state_dir: Path
    rng: random.Random
    stats: FleetStats
    powered: bool = False
    link_up: bool = True
    boot_started: datetime | None = None
    link_returned: datetime | None = None
    # When the last boot of this simulation lost its power; None while there was none.
    last_alive: datetime | None = None
    pending_outage: tuple[str, datetime, datetime] | None = None
    cut_until: datetime | None = None
    link_down_until: datetime | None = None
    next_signal: datetime | None = None
    next_slow: datetime | None = None
    next_malformed: datetime | None = None
    now: datetime = NOT_STARTED
    boot_id: str = ""
    synced_boot: str = ""
    clock: Clock | None = None
    agent: Agent | None = None
    publisher: Publisher | None = None
    outbox: Outbox | None = None

    @property
    def probe_id(self) -> str:
        return self.village.probe_id

    # -- environment

    def is_daytime(self) -> bool:
        local_hour = (self.now + LOCAL_UTC_OFFSET).hour + (self.now.minute / 60)
        return 6.5 <= local_hour < 19.0

    def battery_pct(self) -> float:
        local_hour = (self.now + LOCAL_UTC_OFFSET).hour + (self.now.minute / 60)
        if 6.5 <= local_hour < 19.0:
            return round(min(100.0, 20 + (local_hour - 6.5) * 9), 1)
        return 5.0

    def should_have_power(self) -> bool:
        if self.cut_until is not None and self.now < self.cut_until:
            return False
        if not self.village.grid_power:
            return self.is_daytime()  # the solar battery is flat at night
        return True

    # -- lifecycle

    def _boot(self) -> None:
        assert self.outbox is not None
        self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.boot_started = self.now
        self.powered = True
        self.stats.boots += 1
        self.clock = Clock(
            boot_id=self.boot_id,
            wall_ns=self._wall_ns,
            monotonic_ns=self._monotonic_ns,
            ntp_synced=self._ntp_synced,
        )
        self.publisher = Publisher(
            PublisherOptions(
                probe_id=self.probe_id,
                url=self.url,
                boot_id=self.boot_id,
                backoff_min_s=0.5,
                backoff_max_s=5.0,
                batch_readings=500,
                max_inflight_messages=8,
            ),
            self.outbox,
        )
        sensors = [
            ScheduledSensor(SimulatedModems(self.village, self.rng), SIGNAL_EVERY.seconds),
            ScheduledSensor(SimulatedPower(self), SIGNAL_EVERY.seconds),
            ScheduledSensor(SimulatedLatency(self.village, self.rng), SLOW_EVERY.seconds),
            ScheduledSensor(SimulatedSystem(self.rng), SLOW_EVERY.seconds),
        ]
        self.agent = Agent(
            sensors,
            clock=self.clock,
            outbox=self.outbox,
            on_stored=self.publisher.notify_live,
            unsent_readings=self.publisher.unsent_readings,
        )
        self.next_signal = self.now
        self.next_slow = self.now

    def _power_off(self) -> None:
        if self.publisher is not None:
            self.publisher.drop_connection()  # no goodbye: the broker sends the will
        self.powered = False
        self.last_alive = self.now
        self.publisher = None
        self.agent = None
        self.stats.power_cuts += 1

    def _wall_s(self) -> float:
        """The probe's wall clock in seconds, as the outbox stamps ``stored_at``."""
        return self._wall_ns() / 1e9 if self.powered else self.now.timestamp()

    def _wall_ns(self) -> int:
        if self._ntp_synced():
            return _epoch_ns(self.now)
        # fake-hwclock restored the time of the last shutdown; it runs on from there.
        assert self.boot_started is not None
        return _epoch_ns(self.now - FAKE_HWCLOCK_LAG)

    def _monotonic_ns(self) -> int:
        assert self.boot_started is not None
        return _epoch_ns(self.now) - _epoch_ns(self.boot_started) + 5_000_000_000

    def _ntp_synced(self) -> bool:
        # Once NTP has disciplined the clock in this boot it stays synchronised (a
        # link drop does not unset the kernel's clock); before that it needs the link.
        if self.synced_boot == self.boot_id:
            return True
        assert self.boot_started is not None
        online_since = max(self.link_returned or self.now, self.boot_started)
        if self.link_up and self.now >= online_since + NTP_AFTER_LINK:
            self.synced_boot = self.boot_id
            return True
        return False

    def start(self, now: datetime) -> None:
        """Put the kit at the simulation's first moment; powered only if it has power then.

        A kit dark at ``now`` (an off-grid kit at night) stays off, without a boot, until
        its power comes: it never measured anything before the simulation began.
        """
        self.now = now
        self.outbox = Outbox(
            self.state_dir / f"{self.probe_id}.sqlite3",
            durable=False,
            wall_clock=self._wall_s,  # stored_at in simulated time, like the readings
        )
        self.link_returned = now - NTP_AFTER_LINK
        self.next_malformed = now + timedelta(hours=self.rng.uniform(1, 6))
        if self.should_have_power():
            self._boot()

    def advance(self, now: datetime) -> None:
        """Move to ``now``: power and link events, then the rounds that fell due."""
        elapsed_h = max(0.0, (now - self.now).total_seconds() / 3600)
        self.now = now
        self._maybe_cut_power(elapsed_h)
        self._maybe_drop_link(elapsed_h)
        if self.powered and not self.should_have_power():
            self._power_off()
        elif not self.powered and self.should_have_power():
            if self.last_alive is not None:
                # Power is back after a boot of this simulation lost it: report that
                # outage. A kit that was dark from the start has no such boot (its first
                # boot is at sunrise), and nothing from before the start may appear.
                self.pending_outage = (self.boot_id, self.last_alive, now)
            self._boot()
        if not self.powered or self.agent is None:
            return
        due: list[Sensor] = []
        assert self.next_signal is not None
        assert self.next_slow is not None
        if now >= self.next_signal:
            due.extend(s.sensor for s in self.agent.schedule[:2])
            self.next_signal += SIGNAL_EVERY
        if now >= self.next_slow:
            due.extend(s.sensor for s in self.agent.schedule[2:4])
            self.next_slow += SLOW_EVERY
        if due:
            taken = self.agent.take_round(due)
            self.stats.rounds += 1
            self.stats.readings += len(taken)

    def _maybe_cut_power(self, elapsed_h: float) -> None:
        if not self.village.grid_power or (
            self.cut_until is not None and self.now < self.cut_until
        ):
            return
        # About one cut every four days per grid village, lasting 1-5 hours.
        if self.rng.random() < elapsed_h / (4 * 24):
            self.cut_until = self.now + timedelta(hours=self.rng.uniform(1, 5))

    def _maybe_drop_link(self, elapsed_h: float) -> None:
        if self.link_down_until is not None:
            if self.now >= self.link_down_until:
                self.link_up = True
                self.link_down_until = None
                self.link_returned = self.now
            return
        # Flaky backhauls drop about every eight hours, for half an hour to four hours.
        if self.village.flaky_link and self.rng.random() < elapsed_h / 8:
            self.link_up = False
            self.link_down_until = self.now + timedelta(hours=self.rng.uniform(0.5, 4))
            self.stats.link_drops += 1

    def network(self) -> None:
        """Let the real MQTT client talk, if there is power and a link."""
        if not self.powered or not self.link_up or self.publisher is None:
            return
        self.publisher.network_step(0.0)
        self.publisher.pump_step()
        if (
            self.village.malformed_sender
            and self.next_malformed is not None
            and self.now >= self.next_malformed
            and self.publisher.connected.is_set()
        ):
            self._send_malformed()

    def _send_malformed(self) -> None:
        """A firmware bug: what a broken probe might put on the wire."""
        assert self.publisher is not None
        assert self.next_malformed is not None
        topic = protocol.readings_topic(self.probe_id)
        payloads = [
            b'{"v":1,"probe_id":"' + self.probe_id.encode() + b'","readings":[{"kind":"sig',
            b'{"v":1,"probe_id":"someone-else","readings":[]}',
            b"\xff\xfe garbage from a serial console",
        ]
        self.publisher._client.publish(topic, self.rng.choice(payloads), qos=1)
        self.stats.malformed_sent += 1
        self.next_malformed += timedelta(hours=self.rng.uniform(4, 10))

    def unsent(self) -> int:
        if self.publisher is not None:
            return self.publisher.unsent_readings()
        return self.outbox.stats().pending if self.outbox is not None else 0

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.stop(drain_timeout_s=0.0, reason="simulation ended")
        if self.outbox is not None:
            self.outbox.close()


class Fleet:
    """Every village's probe, advanced together through simulated time."""

    def __init__(
        self, villages: list[Village], url: MqttUrl, state_dir: Path, *, seed: int
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.stats = FleetStats()
        self.probes = [
            SimulatedProbe(
                v,
                url,
                state_dir,
                random.Random(seed * 100_003 + v.village_id),  # noqa: S311 - simulation
                self.stats,
            )
            for v in villages
        ]

    def start(self, now: datetime) -> None:
        for probe in self.probes:
            probe.start(now)
            probe.network()

    def advance_to(self, now: datetime) -> None:
        for probe in self.probes:
            probe.advance(now)
        self.network()

    def network(self) -> None:
        for probe in self.probes:
            probe.network()

    def online(self) -> int:
        return sum(
            1
            for p in self.probes
            if p.powered and p.publisher is not None and p.publisher.connected.is_set()
        )

    def unsent(self) -> int:
        return sum(probe.unsent() for probe in self.probes)

    def powered(self) -> int:
        return sum(1 for probe in self.probes if probe.powered)

    def reachable_unsent(self) -> int:
        """Unsent readings of probes that have power and a link (the rest must wait)."""
        return sum(p.unsent() for p in self.probes if p.powered and p.link_up)

    def close(self) -> None:
        for probe in self.probes:
            probe.close()
