"""Drive a real collector (in a thread or as a process) and a real publisher in tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from collector.ingest import Collector, IngestOptions
from collector.storage import Store
from coverwatch import protocol
from coverwatch.settings import MqttUrl
from tests.helpers import connect_client
from tests.helpers import signal as signal_reading

BIN = Path(sys.executable).parent


def batch_payload(probe_id: str, seqs: range | list[int]) -> bytes:
    readings = [signal_reading(seq, rsrp_dbm=-90 - seq % 40) for seq in seqs]
    return json.dumps({"v": 1, "probe_id": probe_id, "readings": readings}).encode()


def publish_batches(
    url: MqttUrl, probe_id: str, batches: int, size: int, *, first_seq: int = 0
) -> int:
    """Publish at QoS 1, each acknowledged by the broker; returns readings published."""
    client = connect_client(url)
    try:
        for number in range(batches):
            start = first_seq + number * size
            info = client.publish(
                protocol.readings_topic(probe_id),
                batch_payload(probe_id, range(start, start + size)),
                qos=1,
            )
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return batches * size


def stored_counts(database_url: str, probe_id: str) -> tuple[int, int]:
    """(rows, distinct (probe, seq)) in readings_signal for one probe."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*), count(DISTINCT seq) FROM readings_signal WHERE probe_id = %s",
            (probe_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_for_rows(
    database_url: str, probe_id: str, expected: int, timeout_s: float = 60
) -> tuple[int, int]:
    deadline = time.monotonic() + timeout_s
    counts = (0, 0)
    while time.monotonic() < deadline:
        try:
            counts = stored_counts(database_url, probe_id)
        except psycopg.OperationalError:
            counts = (-1, -1)
        if counts[1] >= expected:
            time.sleep(0.3)  # let any duplicate that would appear, appear
            return stored_counts(database_url, probe_id)
        time.sleep(0.1)
    return counts


@contextmanager
def running_collector(
    database_url: str, url: MqttUrl, *, options: IngestOptions | None = None
) -> Iterator[Collector]:
    """A collector in a thread of this process, stopped cleanly at the end."""
    collector = Collector(
        url, Store(database_url), options or IngestOptions(client_id=f"c-{uuid.uuid4().hex[:8]}")
    )
    collector.connect()
    thread = threading.Thread(target=collector.run, name="collector", daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.stop()
        thread.join(30)


class CollectorProcess:
    """``coverwatch collector run`` as a child process that can be killed -9."""

    def __init__(
        self,
        database_url: str,
        url: MqttUrl,
        log_path: Path,
        *,
        client_id: str,
        extra: list[str] | None = None,
    ) -> None:
        self.argv = [
            str(BIN / "coverwatch"),
            "collector",
            "run",
            "--database-url",
            database_url,
            "--client-id",
            client_id,
            "--metrics-port",
            "0",
            "--batch-age-s",
            "0.2",
            *(extra or []),
        ]
        self.env = {**os.environ, "COVERWATCH_MQTT_URL": url.with_credentials()}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "collector running" in self.log_path.read_text(errors="replace")[offset:]:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"collector did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(60)
        return self.process.returncode
