"""The simulated fleet replays a day of history from any hour of the day.

``make demo`` replays the 24 hours before "now". Off-grid kits run on a solar battery
that is flat from 19:00 to 06:30 Vietnam time (UTC+7), so when the replay starts in
that night (the demo started between 12:00 and 23:30 UTC) those kits begin dark. These
tests drive the fleet layer directly (no broker, no database: the probes' broker
refuses connections, so every reading stays in its probe's outbox, where it can be
counted and inspected) over the demo's default 24 hours, ending at several hours of
the day, and check the accounting against an independent reading of the rules: a dark
kit takes nothing, boots once per daylight stretch, and never reports anything from
before the replay began.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from agent.sensors.base import SensorError, plugin_of
from agent.sensors.cellular import Settings as CellularSettings
from coverwatch import protocol
from coverwatch.localservices.ports import LOOPBACK, free_port
from coverwatch.settings import MqttUrl
from simulator.demo import TICK
from simulator.fleet import (
    FAKE_HWCLOCK_LAG,
    SIGNAL_EVERY,
    Fleet,
    SimulatedModem,
    SimulatedProbe,
    kit_config_text,
    kit_modems,
    load_kit_config,
)
from simulator.province import Village, generate
from tests.sensor_fakes import stamp

VIETNAM = timedelta(hours=7)
SUNRISE, SUNSET = time(6, 30), time(19, 0)  # local; the battery is flat in between
DEFAULT_HISTORY = timedelta(hours=24)  # what `make demo` replays
SEED = 7


def villages_under_test() -> list[Village]:
    """Every off-grid village, the malformed senders, and some grid villages.

    Each kit's behaviour depends only on the seed and its village, so a subset of the
    demo's province behaves exactly as it does in the demo, in a fraction of the time.
    """
    villages = generate(SEED).villages
    off_grid = [v for v in villages if not v.grid_power]
    grid = [v for v in villages if v.grid_power]
    flaky = [v for v in grid if v.flaky_link]
    chosen = {v.village_id: v for v in [*off_grid, *grid[:16], *flaky[:4]]}
    chosen.update((v.village_id, v) for v in grid if v.malformed_sender)
    assert len(off_grid) >= 20, "the province should have off-grid villages to test"
    return sorted(chosen.values(), key=lambda v: v.village_id)


VILLAGES = villages_under_test()


def dark(moment: datetime) -> bool:
    """The README's rule, independently: flat from 19:00 to 06:30 Vietnam time."""
    local = (moment + VIETNAM).time()
    return not (SUNRISE <= local < SUNSET)


def ticks(start: datetime, end: datetime) -> Iterator[datetime]:
    """The moments the demo's replay advances the fleet to (start excluded)."""
    moment = start
    while moment < end:
        moment = min(moment + TICK, end)
        yield moment


def sunrises(start: datetime, end: datetime) -> list[datetime]:
    """When an off-grid kit should boot in the replay from start to end (start if lit)."""
    boots, was_dark = [], True
    for moment in [start, *ticks(start, end)]:
        if was_dark and not dark(moment):
            boots.append(moment)
        was_dark = dark(moment)
    return boots


def true_time(reading: protocol.Reading) -> datetime:
    """When the reading was really taken: an unsynchronised clock runs 9 h behind."""
    return reading.taken_at if reading.ntp_synced else reading.taken_at + FAKE_HWCLOCK_LAG


@dataclass
class Replay:
    start: datetime
    end: datetime
    fleet: Fleet
    readings: dict[str, list[protocol.Reading]] = field(default_factory=dict)
    powered_while_dark: list[tuple[str, datetime]] = field(default_factory=list)

    def probe(self, village: Village) -> SimulatedProbe:
        return next(p for p in self.fleet.probes if p.village is village)


def replay(state_dir: Path, end: datetime, history: timedelta = DEFAULT_HISTORY) -> Replay:
    """Run the fleet as the demo's replay does, from ``end - history`` to ``end``."""
    nobody_listens = MqttUrl.parse(f"mqtt://probe:secret@{LOOPBACK}:{free_port()}")
    fleet = Fleet(VILLAGES, nobody_listens, state_dir, seed=SEED)
    result = Replay(end - history, end, fleet)
    try:
        fleet.start(result.start)
        for moment in ticks(result.start, end):
            fleet.advance_to(moment)
            result.powered_while_dark.extend(
                (p.probe_id, moment)
                for p in fleet.probes
                if not p.village.grid_power and dark(moment) and p.powered
            )
        for probe in fleet.probes:
            assert probe.outbox is not None
            result.readings[probe.probe_id] = list(probe.outbox.all())
        # Before close: what the fleet believes is waiting to be sent.
        assert fleet.unsent() == sum(len(r) for r in result.readings.values())
    finally:
        fleet.close()
    return result


# The "now" the demo replays up to, in UTC; Vietnam is UTC+7, so the replay of the 24 h
# before it starts at 07:00, 13:00, 19:00 (sunset), 20:00, 00:33, 06:00 and 06:30
# (sunrise) local time. Started between 12:00 and 23:30 UTC the demo used to crash.
DEMO_NOW = [
    datetime(2026, 11, 30, 0, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 6, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 13, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 17, 33, 20, tzinfo=UTC),  # not on the replay's 5-minute grid
    datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
]


def check_accounting(run: Replay) -> None:
    """Every reading taken is in an outbox, once; every boot took a round; nothing else."""
    stats = run.fleet.stats
    assert stats.readings == sum(len(r) for r in run.readings.values())
    for probe_id, readings in run.readings.items():
        assert len({r.seq for r in readings}) == len(readings), probe_id
    boots = {(probe_id, r.boot_id) for probe_id, rs in run.readings.items() for r in rs}
    assert stats.boots == len(boots), "every boot takes a round at once; none is invented"
    assert all(boot_id for _, boot_id in boots)


def starts_within_a_tick_of(moment: datetime, local: time) -> bool:
    """``moment`` (UTC) is the first tick at or after ``local`` Vietnam time."""
    at = moment + VIETNAM
    boundary = datetime.combine(at.date(), local, tzinfo=UTC)
    return boundary <= at < boundary + TICK


@pytest.mark.parametrize("end", DEMO_NOW, ids=[f"now-{m:%H%M}Z" for m in DEMO_NOW])
def test_a_day_of_history_replays_at_any_hour(tmp_path: Path, end: datetime) -> None:
    run = replay(tmp_path / "probes", end)
    check_accounting(run)
    assert run.fleet.stats.readings > 10_000

    # Nothing from outside the replay, nothing from a dark kit.
    assert run.powered_while_dark == []
    for village in VILLAGES:
        moments = [true_time(r) for r in run.readings[village.probe_id]]
        assert moments, f"{village.probe_id} measured nothing in a day"
        assert all(run.start < m <= run.end for m in moments), village.probe_id
        if not village.grid_power:
            assert not [m for m in moments if dark(m)], f"{village.probe_id} measured in the dark"
            probe = run.probe(village)
            assert probe.powered is not dark(run.end), village.probe_id
            assert (probe.publisher is None) is dark(run.end), village.probe_id

    # Off-grid kits boot once per daylight stretch. Each boot after the first reports
    # the night before it once NTP has set its clock (its second power round, 15 min
    # in); the first reports nothing, as the replay knows no earlier boot.
    boot_times = sunrises(run.start, run.end)
    reported = [m for m in boot_times[1:] if m + SIGNAL_EVERY <= run.end]
    for village in (v for v in VILLAGES if not v.grid_power):
        readings = run.readings[village.probe_id]
        own_boots = list(dict.fromkeys(r.boot_id for r in readings))  # in boot order
        assert len(own_boots) == len(boot_times), village.probe_id
        outages = [r for r in readings if isinstance(r, protocol.OutageReading)]
        if village.flaky_link:  # a boot whose link is down may not get to report
            assert len(outages) <= len(reported), village.probe_id
        else:
            assert len(outages) == len(reported), village.probe_id
        for outage in outages:
            assert outage.boot_id != own_boots[0], "a kit's first boot has no outage to report"
            assert outage.previous_boot_id in own_boots, village.probe_id
            assert outage.previous_boot_id != outage.boot_id, village.probe_id
            assert run.start < outage.outage_started_at < outage.outage_ended_at <= run.end
            assert starts_within_a_tick_of(outage.outage_started_at, SUNSET), outage
            assert starts_within_a_tick_of(outage.outage_ended_at, SUNRISE), outage


def test_kits_dark_for_the_whole_replay_leave_no_trace(tmp_path: Path) -> None:
    """Six hours of night (19:00 to 01:00 local): off-grid kits never come up."""
    run = replay(tmp_path / "probes", datetime(2026, 11, 30, 18, 0, tzinfo=UTC), timedelta(hours=6))
    check_accounting(run)
    assert run.powered_while_dark == []
    for village in VILLAGES:
        probe = run.probe(village)
        if village.grid_power:
            assert run.readings[village.probe_id], village.probe_id
            continue
        assert run.readings[village.probe_id] == [], village.probe_id
        assert not probe.powered
        assert probe.boot_id == ""
        assert probe.publisher is None


def test_grid_kits_take_nothing_during_their_power_cuts(tmp_path: Path) -> None:
    run = replay(tmp_path / "probes", datetime(2026, 11, 30, 13, 0, tzinfo=UTC))
    checked = 0
    for village in (v for v in VILLAGES if v.grid_power):
        readings = run.readings[village.probe_id]
        own_boots = {r.boot_id for r in readings}
        for outage in (r for r in readings if isinstance(r, protocol.OutageReading)):
            assert outage.previous_boot_id in own_boots, village.probe_id
            inside = [
                r
                for r in readings
                if outage.outage_started_at < true_time(r) < outage.outage_ended_at
            ]
            assert inside == [], village.probe_id
            checked += 1
    assert checked, "no power cut in a day of 20+ grid villages: nothing was checked"


# ------------------------------------------------------------------- the kits' config


def test_each_kit_runs_a_probe_toml_a_real_probe_could_run(tmp_path: Path) -> None:
    """The kit is its probe.toml, parsed by the agent's loader: one [[sensors.cellular]]
    table per operator's SIM, bound by IMEI; the simulated modems are made from exactly
    those tables, and their readings carry the modem and the SIM's network."""
    village = next(v for v in VILLAGES if v.grid_power and not v.flaky_link)
    nobody_listens = MqttUrl.parse(f"mqtt://probe:secret@{LOOPBACK}:{free_port()}")
    config = load_kit_config(village, nobody_listens, tmp_path)
    modems = kit_modems(village)
    cellular = {n: s for n, s in config.sensors.items() if plugin_of(n) == "cellular"}
    assert sorted(cellular) == sorted(f"cellular.{m.name}" for m in modems)
    assert [m.name for m in modems] == ["viettel", "vinaphone", "mobifone"]
    for modem in modems:
        schedule, settings = cellular[f"cellular.{modem.name}"]
        assert settings.imei == modem.imei
        assert schedule.interval_s == SIGNAL_EVERY.total_seconds()
    assert len({m.imei for m in modems}) == 3
    assert "[[sensors.cellular]]" in kit_config_text(village, nobody_listens, tmp_path)

    start = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # 10:00 in Vietnam: daylight
    fleet = Fleet([village], nobody_listens, tmp_path / "probes", seed=SEED)
    try:
        fleet.start(start)
        for moment in ticks(start, start + timedelta(hours=2)):
            fleet.advance_to(moment)
        (probe,) = fleet.probes
        assert probe.agent is not None
        scheduled = [s.sensor.name for s in probe.agent.schedule]
        assert sorted(n for n in scheduled if plugin_of(n) == "cellular") == sorted(cellular)
        assert {n for n in scheduled if plugin_of(n) != "cellular"} == {
            "latency",
            "power",
            "system",
        }
        assert probe.outbox is not None
        signals = [r for r in probe.outbox.all() if isinstance(r, protocol.SignalReading)]
    finally:
        fleet.close()
    rounds = len(signals) // 3
    assert rounds >= 8
    for modem in modems:
        mine = [r for r in signals if r.modem == modem.name]
        assert len(mine) == rounds
        assert {r.sim_operator_code for r in mine} == {modem.sim_operator_code}
        for reading in mine:
            # On its own network, or without service and without a network code.
            assert reading.operator_code == (
                modem.sim_operator_code if reading.registered else None
            )


def test_a_kit_table_naming_a_modem_the_kit_lacks_is_a_sensor_error() -> None:
    village = VILLAGES[0]
    wrong = CellularSettings(name="viettel", imei="861536039999999")
    modem = SimulatedModem(
        "cellular.viettel", wrong, kit_modems(village), village, random.Random(1)
    )
    with pytest.raises(SensorError, match="no modem with IMEI 861536039999999"):
        list(modem.read(stamp()))
