"""A whole data path to break: real agents, Mosquitto with persistence, the collector
process and PostgreSQL, each of which a test can kill -9, then count every reading.

Nothing here is simulated except the one hardware edge a test cannot reach on this
machine: the agents' view of the kernel's NTP state and of the wall clock (so a test
can start a probe with a clock 9 hours wrong and let "NTP" set it). The agents are
``coverwatch-probe run`` with a probe.toml; the collector is ``coverwatch collector
run``; the broker is Mosquitto with the deployment's persistence settings; the
database is a PostgreSQL server of the test's own.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psycopg

from agent import roundlog
from collector import schema
from collector.storage import COLUMNS
from coverwatch.localservices import LocalPostgres, MosquittoBroker
from tests.agent_harness import AgentProcess, write_probe_config
from tests.collector_harness import CollectorProcess
from tests.helpers import REPO

# The agent exactly as `coverwatch-probe run` starts it, with the NTP state and wall
# clock read from a flag file (the hardware edge).
_AGENT_LAUNCHER = """
import os, sys, time
import agent.daemon as daemon
from agent.clock import Clock

flag = os.environ["CHAOS_NTP_FLAG"]
offset_ns = int(float(os.environ["CHAOS_UNSYNCED_OFFSET_S"]) * 1e9)


def synced():
    return os.path.exists(flag)


def wall_ns():
    return time.time_ns() + (0 if synced() else offset_ns)


class ChaosClock(Clock):
    def __init__(self, **_):
        super().__init__(wall_ns=wall_ns, ntp_synced=synced)


daemon.Clock = ChaosClock
from agent.cli import main

sys.exit(main(["run", "--config", sys.argv[1]]))
"""

READING_TABLES = tuple(f"readings_{kind}" for kind in COLUMNS)


class ChaosAgent(AgentProcess):
    """One probe: its own state directory, outbox, config and process."""

    def __init__(self, root: Path, probe_id: str, rig: ChaosRig) -> None:
        super().__init__(root / "probe.toml", root / "agent.log")
        self.probe_id = probe_id
        self.rig = rig
        self.state_dir = root / "state"
        self.ntp_flag = root / "ntp-synced"
        self.ntp_flag.touch()
        self.write_config(interval_s=1)

    def write_config(self, *, interval_s: int) -> None:
        write_probe_config(
            self.config_path,
            probe_id=self.probe_id,
            url=self.rig.broker.url,
            state_dir=self.state_dir,
            interval_s=interval_s,
            confirm_grace_s=self.rig.confirm_grace_s,
        )

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite3"

    def start(self, *, unsynced_offset_s: float = 0.0) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "CHAOS_NTP_FLAG": str(self.ntp_flag),
            "CHAOS_UNSYNCED_OFFSET_S": str(unsynced_offset_s),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _AGENT_LAUNCHER, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )

    def set_ntp_synced(self, synced: bool) -> None:
        if synced:
            self.ntp_flag.touch()
        else:
            self.ntp_flag.unlink(missing_ok=True)

    def outbox_state(self) -> tuple[int, int, int]:
        """(highest seq ever given out, readings still in the outbox, dropped total)."""
        if not self.outbox_path.exists():
            return 0, 0, 0
        with sqlite3.connect(self.outbox_path, timeout=10) as outbox:
            row = outbox.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
            ).fetchone()
            pending = outbox.execute("SELECT count(*) FROM readings").fetchone()[0]
            dropped = outbox.execute(
                "SELECT coalesce(max(value), 0) FROM counters WHERE name = 'dropped_total'"
            ).fetchone()[0]
            meta = outbox.execute("SELECT value FROM meta WHERE name = 'outbox_id'").fetchone()
        stored_up_to = int(row[0]) if row else 0
        # The round log (agent.roundlog): rounds not in SQLite, and the seq high-water mark.
        log = self.outbox_path.with_name(self.outbox_path.name + "-rounds")
        outbox_id = str(meta[0]) if meta else ""
        logged = [
            entry[0]
            for payload in roundlog.read_records(log, outbox_id)
            for entry in msgspec.json.decode(roundlog.inflate(payload))
            if entry[0] > stored_up_to
        ]
        highest = max(stored_up_to, roundlog.read_header(log, outbox_id)[1], *logged)
        return highest, int(pending) + len(logged), int(dropped)


@dataclass
class Figures:
    """What happened to every reading the agents took."""

    generated: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    left_in_outboxes: int = 0
    dropped_by_outboxes: int = 0
    dead_letters: int = 0
    recovery_s: dict[str, float] = field(default_factory=dict)

    def line(self, name: str) -> str:
        recovery = " ".join(f"recovery_{k}_s={v:.1f}" for k, v in self.recovery_s.items())
        return (
            f"CHAOS {name}: generated={self.generated} stored={self.stored} lost={self.lost} "
            f"duplicated={self.duplicated} left_in_outboxes={self.left_in_outboxes} "
            f"dead_letters={self.dead_letters} {recovery}"
        ).strip()


class ChaosRig:
    """PostgreSQL, Mosquitto, a collector and ``agents`` probes, all killable."""

    def __init__(
        self,
        root: Path,
        *,
        agents: int = 3,
        autosave_interval_s: int = 60,
        confirm_grace_s: float = 2.0,
    ) -> None:
        self.root = root
        self.confirm_grace_s = confirm_grace_s
        self.postgres = LocalPostgres(root / "pg")
        # The deployment's persistence settings (deploy/mosquitto/mosquitto.conf), with
        # the autosave interval the scenario needs; the last setting read wins.
        self.broker = MosquittoBroker(
            root / "broker",
            extra_config=f"autosave_interval {autosave_interval_s}\nautosave_on_changes false",
        )
        run = root.name[-12:].replace("_", "-").lower().strip("-")
        self.agents = [
            ChaosAgent(_mkdir(root / f"agent-{i}"), f"chaos-{run}-{i}", self) for i in range(agents)
        ]
        self.collector: CollectorProcess | None = None

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    def start(self) -> None:
        self.postgres.start()
        schema.upgrade(self.database_url)
        self.broker.start()
        self.collector = CollectorProcess(
            self.database_url,
            self.broker.url,
            self.root / "collector.log",
            client_id="chaos-collector",
        )
        self.collector.start()
        for agent in self.agents:
            agent.start()

    def close(self) -> None:
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.kill()
        collector = self.collector.process if self.collector is not None else None
        if collector is not None and collector.poll() is None:
            collector.kill()
            collector.wait(10)
        self.broker.stop()
        self.postgres.stop()

    def __enter__(self) -> ChaosRig:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ counting

    def generated_so_far(self) -> dict[str, int]:
        return {agent.probe_id: agent.outbox_state()[0] for agent in self.agents}

    def stored_seqs(self, probe_id: str) -> list[int]:
        union = " UNION ALL ".join(
            f"SELECT seq FROM {table} WHERE probe_id = %(probe)s"  # noqa: S608 - fixed names
            for table in READING_TABLES
        )
        with psycopg.connect(self.database_url, connect_timeout=5) as connection:
            return [int(row[0]) for row in connection.execute(union, {"probe": probe_id})]

    def wait_until_stored(self, seqs_by_probe: dict[str, int], *, timeout_s: float = 120) -> float:
        """Wait until every probe's seqs 1..n are stored; return the seconds it took."""
        started = time.monotonic()
        while True:
            missing = 0
            for probe_id, highest in seqs_by_probe.items():
                try:
                    stored = set(self.stored_seqs(probe_id))
                except psycopg.OperationalError:
                    missing = -1
                    break
                missing += sum(1 for seq in range(1, highest + 1) if seq not in stored)
            if missing == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"{missing} readings still not stored after {timeout_s} s; "
                    f"collector log:\n{_tail(self.root / 'collector.log')}"
                )
            time.sleep(0.25)

    def wait_for_traffic(self, readings_per_agent: int = 6, timeout_s: float = 60) -> None:
        self.wait_until_stored(
            {agent.probe_id: readings_per_agent for agent in self.agents}, timeout_s=timeout_s
        )

    def finish(self) -> Figures:
        """Quiesce, then count every reading generated against what was stored.

        The agents are stopped, restarted with an hour between rounds (so they generate
        almost nothing more) until the database holds every seq they ever gave out,
        then stopped cleanly, which deletes what the collector confirmed: an outbox
        left non-empty would mean a reading the collector never confirmed.
        """
        for agent in self.agents:
            agent.stop()
            agent.write_config(interval_s=3600)
            agent.set_ntp_synced(True)
            agent.start()
        time.sleep(1.0)  # the first round of each restarted agent
        self.wait_until_stored(self.generated_so_far(), timeout_s=180)
        time.sleep(1.0)
        for agent in self.agents:
            assert agent.stop() == 0, agent.log()[-3000:]
        figures = Figures()
        for agent in self.agents:
            generated, pending, dropped = agent.outbox_state()
            stored = self.stored_seqs(agent.probe_id)
            distinct = set(stored)
            figures.generated += generated
            figures.stored += len(distinct)
            figures.lost += sum(1 for seq in range(1, generated + 1) if seq not in distinct)
            figures.duplicated += len(stored) - len(distinct)
            figures.left_in_outboxes += pending
            figures.dropped_by_outboxes += dropped
        with psycopg.connect(self.database_url) as connection:
            row = connection.execute(
                "SELECT count(*) FROM dead_letters WHERE probe_id = ANY(%s)",
                ([agent.probe_id for agent in self.agents],),
            ).fetchone()
        figures.dead_letters = int(row[0]) if row else 0
        return figures

    def timed_recovery(
        self,
        name: str,
        figures: Figures,
        *,
        kill: Callable[[], None],
        restart: Callable[[], None],
        down_s: float,
    ) -> None:
        """Kill a part, keep it down a while, restart it, then time until everything the
        agents generated up to the restart is stored: the recovery time."""
        kill()
        time.sleep(down_s)
        restart()
        figures.recovery_s[name] = self.wait_until_stored(self.generated_so_far())


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
