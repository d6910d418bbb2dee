"""Simulated probes: the real agent (scheduler, outbox, publisher, protocol) with
simulated sensors and a simulated clock, many of them driven from one thread.

Each village of the province gets a probe kit with one modem per operator (survey kits
carry one SIM per network, which is how per-operator coverage is measured). A kit is
described exactly as a real one is: a probe.toml (:func:`kit_config_text`) with one
``[[sensors.cellular]]`` table per modem, bound to it by IMEI, read by the agent's own
config loader; each table becomes a simulated modem found by that IMEI among the kit's
hardware (:class:`KitModem`), and the schedule is the file's. What a modem sees comes
from the radio model plus fast fading. Off-grid villages run on a solar
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

from agent import config as probe_config
from agent.clock import Clock
from agent.outbox import Outbox
from agent.publisher import Publisher, PublisherOptions
from agent.scheduler import Agent, ScheduledSensor
from agent.sensors.base import Sensor, SensorError, Stamp, plugin_of
from agent.sensors.cellular import CellularState
from agent.sensors.cellular import Settings as CellularSettings
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


# ---------------------------------------------------------------------- the kit


@dataclass(frozen=True, slots=True)
class KitModem:
    """One modem of a kit, as the hardware is: its IMEI and the SIM in it."""

    name: str  # the label its probe.toml table gives it
    imei: str
    sim_operator_code: str  # the SIM's home network (MCC-MNC of its IMSI)


def _luhn_digit(digits: str) -> str:
    """The IMEI check digit (Luhn) of the first 14 digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def kit_modems(village: Village) -> list[KitModem]:
    """The village kit's modems: one per operator, each with its own SIM and IMEI."""
    modems = []
    for number, (code, (name, _)) in enumerate(OPERATORS.items()):
        # A Quectel EC25 type allocation code, then a serial unique to village and slot.
        body = f"86153603{village.village_id * 10 + number:06d}"
        modems.append(KitModem(name.lower(), body + _luhn_digit(body), code))
    return modems


def kit_config_text(village: Village, url: MqttUrl, state_dir: Path) -> str:
    """The kit's probe.toml: what a technician would install on this village's Pi."""
    fast, slow = int(SIGNAL_EVERY.total_seconds()), int(SLOW_EVERY.total_seconds())
    lines = [
        "[probe]",
        f'id = "{village.probe_id}"',
        f'state_dir = "{state_dir}"',
        "",
        "[mqtt]",
        f'url = "{url.with_credentials()}"',
    ]
    for modem in kit_modems(village):
        lines += [
            "",
            "[[sensors.cellular]]",
            f'name = "{modem.name}"',
            f'imei = "{modem.imei}"',
            f"interval_s = {fast}",
        ]
    for name, interval in (("power", fast), ("latency", slow), ("system", slow)):
        lines += ["", f"[sensors.{name}]", f"interval_s = {interval}"]
    return "\n".join(lines) + "\n"


def load_kit_config(village: Village, url: MqttUrl, state_dir: Path) -> probe_config.ProbeConfig:
    """The kit's probe.toml parsed by the agent's own loader (every check a probe makes)."""
    source = f"{village.probe_id}/probe.toml"
    text = kit_config_text(village, url, state_dir)
    return probe_config.from_mapping(
        probe_config.parse_toml(text.encode(), source), source=Path(source), environ={}
    )


class SimulatedModem:
    """One modem of the kit, found by its table's identity; its SIM's network's signal
    comes from the radio model. Readings go through the agent's own CellularState, so
    they carry what a real modem's would: the modem's name and the SIM's network."""

    def __init__(
        self,
        name: str,
        settings: CellularSettings,
        hardware: list[KitModem],
        village: Village,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.settings = settings
        self.hardware = hardware
        self.village = village
        self.rng = rng

    def read(self, stamp: Stamp) -> Iterable[protocol.Reading]:
        modem = next((m for m in self.hardware if m.imei == self.settings.imei), None)
        if modem is None:
            raise SensorError(f"no modem with IMEI {self.settings.imei} in this kit")
        code = modem.sim_operator_code
        rsrp = self.village.median_rsrp_dbm[code] + self.rng.gauss(0, radio.FAST_FADING_SIGMA_DB)
        if rsrp < radio.REGISTRATION_FLOOR_DBM:
            # No service: the SIM's home network is still known from its IMSI.
            state = CellularState(registration="searching", sim_operator_code=code)
        else:
            state = CellularState(
                registration="home",
                technology="lte",
                operator_code=code,
                operator_name=OPERATORS[code][0],
                rsrp_dbm=round(max(-140.0, min(-44.0, rsrp)), 1),
                rsrq_db=round(max(-19.5, min(-3.0, -8 + (rsrp + 90) / 8)), 1),
                sinr_db=round(max(-10.0, min(30.0, (rsrp + 112) / 1.5)), 1),
                sim_operator_code=code,
            )
        return [state.to_reading(stamp, modem=self.settings.name or None)]


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
    config: probe_config.ProbeConfig | None = None

    def __post_init__(self) -> None:
        self.config = load_kit_config(self.village, self.url, self.state_dir)

    @property
    def probe_id(self) -> str:
        return self.village.probe_id

    def _sensors(self) -> list[ScheduledSensor]:
        """The kit's sensors as its probe.toml declares them, each simulated."""
        assert self.config is not None
        hardware = kit_modems(self.village)
        scheduled = []
        for name, (schedule, settings) in self.config.sensors.items():
            if not schedule.enabled:
                continue
            plugin = plugin_of(name)
            sensor: Sensor
            if plugin == "cellular":
                sensor = SimulatedModem(name, settings, hardware, self.village, self.rng)
            elif plugin == "power":
                sensor = SimulatedPower(self)
            elif plugin == "latency":
                sensor = SimulatedLatency(self.village, self.rng)
            elif plugin == "system":
                sensor = SimulatedSystem(self.rng)
            else:
                raise ValueError(f"the simulator has no {plugin} sensor ({name} is enabled)")
            scheduled.append(ScheduledSensor(sensor, float(schedule.interval_s)))
        return scheduled

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
        self.agent = Agent(
            self._sensors(),
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
        # The kit's probe.toml runs its sensors at two cadences: the modems and power
        # every SIGNAL_EVERY, latency and system every SLOW_EVERY.
        if now >= self.next_signal:
            due.extend(s.sensor for s in self.agent.schedule if s.interval_s < SLOW_EVERY.seconds)
            self.next_signal += SIGNAL_EVERY
        if now >= self.next_slow:
            due.extend(s.sensor for s in self.agent.schedule if s.interval_s >= SLOW_EVERY.seconds)
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
