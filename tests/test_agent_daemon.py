"""The real agent process against a real broker and collector: publishing, kill -9,
last will, stop. Readings leave the outbox only once the collector committed them."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from agent.outbox import Outbox
from collector import schema
from collector.ingest import IngestOptions
from coverwatch import protocol
from coverwatch.localservices import MosquittoBroker
from tests.agent_harness import AgentProcess, power_reading, write_probe_config
from tests.collector_harness import running_collector
from tests.helpers import subscribed


def stored_power_seqs(database_url: str, probe_id: str) -> tuple[int, set[int]]:
    """(rows, distinct seqs) of a probe's stored power readings."""
    with psycopg.connect(database_url) as connection:
        seqs = [
            int(row[0])
            for row in connection.execute(
                "SELECT seq FROM readings_power WHERE probe_id = %s", (probe_id,)
            )
        ]
    return len(seqs), set(seqs)


def decoded(payload: bytes, topic: str) -> protocol.ReadingsBatch:
    result = protocol.decode_readings(topic, payload)
    assert not result.rejected
    return result.batch


@pytest.mark.slow
@pytest.mark.mosquitto
def test_agent_publishes_and_stops_cleanly(
    mosquitto_broker: MosquittoBroker, probe_id: str, tmp_path: Path, database_url: str
) -> None:
    url = mosquitto_broker.url
    schema.upgrade(database_url)
    config = write_probe_config(
        tmp_path / "probe.toml", probe_id=probe_id, url=url, state_dir=tmp_path / "state"
    )
    agent = AgentProcess(config, tmp_path / "agent.log")
    topic = protocol.readings_topic(probe_id)
    status_topic = protocol.status_topic(probe_id)
    with (
        running_collector(
            database_url, url, options=IngestOptions(client_id=f"c-{probe_id}", batch_age_s=0.1)
        ),
        subscribed(url, f"coverwatch/v1/{probe_id}/#") as inbox,
    ):
        agent.start()
        inbox.wait_for(3, topic=topic, timeout_s=30)
        inbox.wait_for(1, topic=protocol.ack_topic(probe_id), timeout_s=30)
        assert agent.stop() == 0, agent.log()
        statuses = inbox.wait_for(2, topic=status_topic)
    readings = [
        r for m in inbox.messages if m.topic == topic for r in decoded(m.payload, topic).readings
    ]
    kinds = {type(r).__struct_config__.tag for r in readings}
    assert {"power", "system"} <= kinds
    system = next(r for r in readings if isinstance(r, protocol.SystemReading))
    assert system.outbox_pending is not None  # the outbox reports itself
    states = [protocol.decode_status(status_topic, s.payload).state for s in statuses]
    assert states == ["online", "offline"]
    assert "stopped cleanly" in agent.log()
    assert Outbox(tmp_path / "state" / "outbox.sqlite3").stats().pending == 0


@pytest.mark.slow
@pytest.mark.mosquitto
def test_kill_9_mid_flush_loses_nothing(
    mosquitto_broker: MosquittoBroker, probe_id: str, tmp_path: Path, database_url: str
) -> None:
    """A probe back from a long outage flushes its backlog; kill -9 half-way; restart."""
    url = mosquitto_broker.url
    schema.upgrade(database_url)
    state = tmp_path / "state"
    backlog_outbox = Outbox(state / "outbox.sqlite3")
    backlog = backlog_outbox.add([power_reading(uptime_s=float(i)) for i in range(60_000)])
    backlog_outbox.close()
    config = write_probe_config(
        tmp_path / "probe.toml",
        probe_id=probe_id,
        url=url,
        state_dir=state,
        interval_s=5,
        extra="",
    )
    topic = protocol.readings_topic(probe_id)
    status_topic = protocol.status_topic(probe_id)
    agent = AgentProcess(config, tmp_path / "agent.log")
    with (
        running_collector(
            database_url, url, options=IngestOptions(client_id=f"c-{probe_id}", batch_age_s=0.1)
        ),
        subscribed(url, f"coverwatch/v1/{probe_id}/#") as inbox,
    ):
        agent.start()
        inbox.wait_for(6, topic=topic, timeout_s=60)
        agent.kill()  # mid-flush: 60,000 readings are 120 messages
        received_before_kill = len([m for m in inbox.messages if m.topic == topic])
        wills = inbox.wait_for(2, topic=status_topic, timeout_s=30)
        will = protocol.decode_status(status_topic, wills[-1].payload)
        assert (will.state, will.reason) == ("offline", "connection lost")
        remaining = Outbox(state / "outbox.sqlite3").stats().pending
        assert 0 < remaining < 60_000 + 10, "the kill should land mid-flush"
        agent.start()
        deadline = time.monotonic() + 180
        while True:
            rows, stored = stored_power_seqs(database_url, probe_id)
            if set(backlog) <= stored or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while Outbox(state / "outbox.sqlite3").stats().pending > 50:
            assert time.monotonic() < deadline, "confirmed readings were not deleted"
            time.sleep(0.5)
        assert agent.stop() == 0, agent.log()
    assert set(backlog) <= stored, f"lost {len(set(backlog) - stored)} readings"
    rows, stored = stored_power_seqs(database_url, probe_id)
    assert rows == len(stored), f"{rows - len(stored)} readings stored twice"
    assert received_before_kill < 120
