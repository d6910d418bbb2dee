"""Kill -9 every part of the data path at awkward moments; count every reading.

Real agents (``coverwatch-probe run`` with a probe.toml) publish through Mosquitto
with persistence into ``coverwatch collector run`` and PostgreSQL. Each scenario kills
one part with SIGKILL, lets the system recover, then counts every (probe, seq) the
agents ever generated against what the database holds: nothing may be lost, nothing
stored twice. Each scenario prints a ``CHAOS`` line with its figures (``pytest -s``).

Before end-to-end acknowledgement, the broker scenarios lost readings (the probe
deleted them on the broker's PUBACK, and Mosquitto writes its store only every
``autosave_interval``), and the NTP scenario stored readings twice (the re-send after
the clock correction carried another taken_at).
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.chaos_harness import ChaosRig, Figures

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    from coverwatch.localservices import mosquitto_binary
    from tests.conftest import skip_unless_ci

    if mosquitto_binary() is None:
        skip_unless_ci("mosquitto is not installed (Debian: apt-get install mosquitto)")


def check(name: str, figures: Figures) -> None:
    print(figures.line(name))  # the figures the closing note quotes
    assert figures.generated > 0
    assert figures.lost == 0, figures.line(name)
    assert figures.duplicated == 0, figures.line(name)
    assert figures.left_in_outboxes == 0, figures.line(name)
    assert figures.dropped_by_outboxes == 0
    assert figures.dead_letters == 0


@pytest.mark.parametrize(
    ("when", "collector_present"),
    [
        ("before-autosave", True),
        ("before-autosave", False),
        ("after-autosave", True),
        ("after-autosave", False),
    ],
)
def test_broker_killed(tmp_path: Path, when: str, collector_present: bool) -> None:
    """kill -9 of Mosquitto before or after it saved its store, with or without
    messages queued for a collector that is away."""
    autosave_s = 3600 if when == "before-autosave" else 2
    figures = Figures()
    with ChaosRig(tmp_path, autosave_interval_s=autosave_s) as rig:
        rig.wait_for_traffic()
        assert rig.collector is not None
        if not collector_present:
            rig.collector.kill()  # its persistent session queues in the broker meanwhile
        time.sleep(4.0)  # after-autosave: at least one autosave happened in here
        rig.broker.kill()
        time.sleep(1.0)
        rig.broker.start()
        restarted = time.monotonic()
        if not collector_present:
            time.sleep(1.0)
            rig.collector.start()
        rig.wait_until_stored(rig.generated_so_far())
        figures.recovery_s["broker"] = time.monotonic() - restarted
        final = rig.finish()
    final.recovery_s = figures.recovery_s
    check(f"broker-killed-{when}-collector-{'present' if collector_present else 'away'}", final)


def test_collector_killed(tmp_path: Path) -> None:
    with ChaosRig(tmp_path) as rig:
        rig.wait_for_traffic()
        assert rig.collector is not None
        figures = Figures()
        rig.timed_recovery(
            "collector", figures, kill=rig.collector.kill, restart=rig.collector.start, down_s=3
        )
        final = rig.finish()
    final.recovery_s = figures.recovery_s
    check("collector-killed", final)


def test_postgres_killed(tmp_path: Path) -> None:
    with ChaosRig(tmp_path) as rig:
        rig.wait_for_traffic()
        figures = Figures()
        # Readings keep coming while the database is down; the collector retries.
        rig.timed_recovery(
            "postgres", figures, kill=rig.postgres.kill, restart=rig.postgres.start, down_s=3
        )
        final = rig.finish()
    final.recovery_s = figures.recovery_s
    check("postgres-killed", final)


def test_agents_killed_mid_flight(tmp_path: Path) -> None:
    """Each agent dies with confirmed-but-not-yet-deleted readings in its outbox (they are
    deleted in batches), and with readings in flight; it sends them all again."""
    with ChaosRig(tmp_path) as rig:
        rig.wait_for_traffic()
        for agent in rig.agents:
            agent.kill()
            agent.start()
            time.sleep(1.5)
        final = rig.finish()
    check("agents-killed", final)


def unsynced_power_readings(database_url: str, probe_id: str) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM readings_power WHERE probe_id = %s AND NOT ntp_synced",
            (probe_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_agent_killed_right_after_ntp_sync(tmp_path: Path) -> None:
    """A probe boots with its clock 9 hours behind; its readings are stored with that
    time (marked unsynchronised). NTP sets the clock, the agent anchors the boot and
    corrects the times of the readings still in its outbox — which include readings
    already committed but not yet deleted — and is killed at once. On restart it sends
    them with their corrected taken_at: each must still be stored exactly once."""
    with ChaosRig(tmp_path, agents=2) as rig:
        unsynced = rig.agents[0]
        unsynced.kill()
        unsynced.set_ntp_synced(False)
        unsynced.start(unsynced_offset_s=-9 * 3600)
        time.sleep(5.0)
        rig.wait_until_stored({unsynced.probe_id: 4})
        # Seqs 1..4 may include readings of other kinds: wait for four power readings
        # stored unsynchronised, whatever the machine's load did to the rounds' timing.
        deadline = time.monotonic() + 60
        while unsynced_power_readings(rig.database_url, unsynced.probe_id) < 4:
            assert time.monotonic() < deadline, "no 4 unsynchronised power readings stored"
            time.sleep(0.25)
        unsynced.set_ntp_synced(True)
        time.sleep(1.5)  # a round or two: the anchor is recorded, times get corrected
        unsynced.kill()
        unsynced.start()
        time.sleep(2.0)
        final = rig.finish()
        with psycopg.connect(rig.database_url) as connection:
            row = connection.execute(
                "SELECT count(*) FILTER (WHERE NOT ntp_synced), count(*) "
                "FROM readings_power WHERE probe_id = %s",
                (unsynced.probe_id,),
            ).fetchone()
    assert row is not None
    # The scenario did what it says: readings were stored unsynchronised (9 h off) and
    # kept in that first version, so their corrected re-sends were the duplicates.
    assert row[0] >= 4, row
    check("agent-killed-after-ntp-sync", final)
