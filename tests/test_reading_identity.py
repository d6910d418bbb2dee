"""One identity per reading: (probe_id, outbox_id, seq), whatever its taken_at became.

Each case runs on both storage layouts, plain PostgreSQL and TimescaleDB hypertables
(whose unique indexes must contain the time column, so the readings tables' key
(probe_id, seq, taken_at) alone cannot tell a clock-corrected re-send from a new
reading: the reading ledger does).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from collector import schema
from collector.storage import InboundMessage, Store, TemporaryStoreError
from coverwatch import protocol
from tests.helpers import signal

OUTBOX_A = "0b9c6a52-4a63-4c8e-9d0f-6b7d1f2e3a4b"
OUTBOX_B = "7e1f0c33-2b4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def store(layout_database_url: str) -> Any:
    schema.upgrade(layout_database_url)
    store = Store(layout_database_url)
    yield store
    store.close()


def message(
    probe_id: str, readings: list[dict[str, object]], outbox_id: str | None = OUTBOX_A
) -> InboundMessage:
    body: dict[str, object] = {"v": 1, "probe_id": probe_id, "readings": readings}
    if outbox_id is not None:
        body["outbox_id"] = outbox_id
    return InboundMessage(
        protocol.readings_topic(probe_id), json.dumps(body).encode(), datetime.now(UTC)
    )


def rows(database_url: str, probe_id: str) -> list[tuple[int, datetime]]:
    with psycopg.connect(database_url) as connection:
        return [
            (int(seq), taken_at)
            for seq, taken_at in connection.execute(
                "SELECT seq, taken_at FROM readings_signal WHERE probe_id = %s ORDER BY seq",
                (probe_id,),
            )
        ]


def test_a_clock_corrected_resend_is_stored_once(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    unsynced = [signal(seq, taken_at="2026-11-22T08:15:00Z", ntp_synced=False) for seq in (1, 2)]
    corrected = [signal(seq, taken_at="2026-11-22T17:15:00Z") for seq in (1, 2, 3)]
    first = store.write([message(probe_id, unsynced)])
    again = store.write([message(probe_id, corrected)])
    assert (first.stored_total, first.duplicates) == (2, 0)
    assert (again.stored_total, again.duplicates) == (1, 2)
    stored = rows(layout_database_url, probe_id)
    assert [seq for seq, _ in stored] == [1, 2, 3]
    # The first stored version of a reading is the one kept.
    assert stored[0][1] == datetime(2026, 11, 22, 8, 15, tzinfo=UTC)
    # Every seq the probe sent is confirmed, the duplicates too (it may forget them).
    assert again.committed == {(probe_id, OUTBOX_A): {1, 2, 3}}


def test_a_new_outbox_starts_seq_again_without_being_taken_for_duplicates(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    """A probe whose SD card was replaced sends seq 1, 2, … again under a new outbox id."""
    store.write([message(probe_id, [signal(seq) for seq in (1, 2)], OUTBOX_A)])
    later = [signal(seq, taken_at="2026-11-29T08:15:00Z") for seq in (1, 2)]
    result = store.write([message(probe_id, later, OUTBOX_B)])
    assert (result.stored_total, result.duplicates) == (2, 0)
    assert len(rows(layout_database_url, probe_id)) == 4
    assert result.committed == {(probe_id, OUTBOX_B): {1, 2}}


def test_repeats_within_one_batch_and_across_messages_are_dropped(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    batch = [
        message(probe_id, [signal(1), signal(2)]),
        message(probe_id, [signal(2, taken_at="2026-11-22T09:00:00Z"), signal(3)]),
        message(probe_id, [signal(3)]),
    ]
    result = store.write(batch)
    assert (result.stored_total, result.duplicates) == (3, 2)
    assert [seq for seq, _ in rows(layout_database_url, probe_id)] == [1, 2, 3]


def test_batches_without_an_outbox_id_keep_the_old_identity(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    """Probes older than the ledger send no outbox id. A plain re-send is still stored
    once (by the key (probe_id, seq, taken_at)), and such a probe whose outbox was wiped
    and restarted seq at 1 loses nothing: its new readings are not taken for re-sends."""
    first = [signal(seq, taken_at="2026-11-22T08:15:00Z") for seq in (1, 2, 3)]
    store.write([message(probe_id, first, outbox_id=None)])
    again = store.write([message(probe_id, first, outbox_id=None)])
    assert (again.stored_total, again.duplicates) == (0, 3)
    after_wipe = [signal(seq, taken_at="2026-11-29T10:00:00Z") for seq in (1, 2)]
    wiped = store.write([message(probe_id, after_wipe, outbox_id=None)])
    assert (wiped.stored_total, wiped.duplicates) == (2, 0)
    assert len(rows(layout_database_url, probe_id)) == 5
    # Confirmed all the same (such probes do not listen; this version's never send nil).
    assert wiped.committed == {(probe_id, protocol.NIL_OUTBOX_ID): {1, 2}}
    with psycopg.connect(layout_database_url) as connection:
        ledger = connection.execute(
            "SELECT count(*) FROM reading_ledger WHERE probe_id = %s", (probe_id,)
        ).fetchone()
    assert ledger == (0,)


def test_a_resent_invalid_reading_is_dead_lettered_once(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    batch = [signal(1), signal(2, rsrp_dbm=99)]
    store.write([message(probe_id, batch)])
    again = store.write([message(probe_id, batch)])
    assert (again.stored_total, again.duplicates, again.dead_letters) == (0, 2, 0)
    assert again.committed == {(probe_id, OUTBOX_A): {1, 2}}
    with psycopg.connect(layout_database_url) as connection:
        letters = connection.execute(
            "SELECT count(*) FROM dead_letters WHERE probe_id = %s", (probe_id,)
        ).fetchone()
    assert letters == (1,)


def test_a_rejected_reading_is_confirmed_so_the_probe_stops_sending_it(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    result = store.write([message(probe_id, [signal(1), signal(2, rsrp_dbm=99), signal(3)])])
    assert result.stored_total == 2
    assert result.committed == {(probe_id, OUTBOX_A): {1, 2, 3}}
    with psycopg.connect(layout_database_url) as connection:
        letter = connection.execute(
            "SELECT reading_index, field FROM dead_letters WHERE probe_id = %s", (probe_id,)
        ).fetchone()
    assert letter == (1, "readings[1].rsrp_dbm")


def test_a_status_from_the_far_future_does_not_freeze_the_probe(
    store: Store, layout_database_url: str, probe_id: str
) -> None:
    topic = protocol.status_topic(probe_id)
    now = datetime.now(UTC)

    def status(state: str, at: datetime) -> InboundMessage:
        body = {"v": 1, "probe_id": probe_id, "state": state, "at": at.isoformat()}
        return InboundMessage(topic, json.dumps(body).encode(), now)

    first = store.write([status("online", datetime(9999, 12, 31, tzinfo=UTC))])
    assert first.dead_letters == 1
    assert first.rejected[0].field == "at"
    store.write([status("offline", now + timedelta(seconds=1))])
    with psycopg.connect(layout_database_url) as connection:
        state, changed_at = connection.execute(
            "SELECT state, state_changed_at FROM probe_status WHERE probe_id = %s", (probe_id,)
        ).fetchone() or (None, None)
    assert state == "offline"
    assert changed_at is not None
    assert changed_at.year == now.year


def test_two_collectors_with_crossing_probes_do_not_deadlock(
    layout_database_url: str, probe_id: str
) -> None:
    """Collector A stores readings of P1 and a status of P2 while collector B stores
    readings of P2 and a status of P1 (a shared group after a regional power-up): each
    batch locks its probes in one order, so neither waits for the other in a cycle."""
    schema.upgrade(layout_database_url)
    first, second = f"{probe_id}-a", f"{probe_id}-b"
    retried: list[str] = []
    barrier = threading.Barrier(2)

    def batch(readings_of: str, status_of: str, seq: int) -> list[InboundMessage]:
        status = {"v": 1, "probe_id": status_of, "state": "online"}
        return [
            message(readings_of, [signal(seq)]),
            InboundMessage(
                protocol.status_topic(status_of), json.dumps(status).encode(), datetime.now(UTC)
            ),
        ]

    def collector(readings_of: str, status_of: str) -> None:
        store = Store(layout_database_url)
        try:
            for seq in range(150):
                barrier.wait()
                while True:
                    try:
                        store.write(batch(readings_of, status_of, seq))
                        break
                    except TemporaryStoreError as error:
                        retried.append(str(error).splitlines()[0])
        finally:
            store.close()

    threads = [
        threading.Thread(target=collector, args=pair) for pair in ((first, second), (second, first))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert retried == []
    assert len(rows(layout_database_url, first)) == len(rows(layout_database_url, second)) == 150
