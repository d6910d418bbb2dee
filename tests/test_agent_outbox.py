"""The outbox on a real SQLite file: order, bounds, clock correction, kill -9."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from agent.clock import ClockAnchor
from agent.outbox import Outbox
from coverwatch import protocol
from tests.agent_harness import power_reading
from tests.helpers import BOOT_ID, REPO


def test_sequence_numbers_only_grow_across_reopen_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    first = outbox.add([power_reading(), power_reading()])
    outbox.remove(first)
    outbox.close()
    reopened = Outbox(path)
    second = reopened.add([power_reading()])
    assert first == [1, 2]
    assert second == [3]  # never reused, even though 1 and 2 were deleted
    assert [r.seq for r in reopened.pending()] == [3]


def test_pending_is_oldest_first_with_seq_filled_in(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.add([power_reading(uptime_s=float(i)) for i in range(5)])
    pending = outbox.pending(after_seq=2, limit=2)
    assert [(r.seq, getattr(r, "uptime_s", None)) for r in pending] == [(3, 2.0), (4, 3.0)]
    assert [r.seq for r in outbox.get([5, 1])] == [1, 5]


def test_full_outbox_drops_oldest_and_counts_the_drop(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_readings=100)
    outbox.add([power_reading(uptime_s=float(i)) for i in range(150)])
    stats = outbox.stats()
    assert stats.pending == 100
    assert stats.dropped_total == 50
    assert stats.oldest_seq == 51  # the oldest went, the newest stayed
    outbox.add([power_reading()] * 10)
    assert outbox.stats().dropped_total == 60  # the counter accumulates and persists
    outbox.close()
    assert Outbox(tmp_path / "o.sqlite3", max_readings=100).stats().dropped_total == 60


def test_readings_older_than_the_age_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    now = [1_000_000.0]
    outbox = Outbox(tmp_path / "o.sqlite3", max_age_s=3600, wall_clock=lambda: now[0])
    outbox.add([power_reading()] * 3)
    now[0] += 3601
    outbox.add([power_reading()])
    stats = outbox.stats()
    assert (stats.pending, stats.dropped_total, stats.oldest_seq) == (1, 3, 4)


def test_unsynchronised_readings_are_corrected_from_the_boot_anchor(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    wrong_time = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)  # a Pi after a cold boot
    unsynced = msgspec.structs.replace(
        power_reading(monotonic_ms=90_000), ntp_synced=False, taken_at=wrong_time
    )
    other_boot = msgspec.structs.replace(unsynced, boot_id="00000000-0000-4000-8000-000000000000")
    outbox.add([unsynced, other_boot])
    boot_at = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    outbox.record_anchor(ClockAnchor(BOOT_ID, int(boot_at.timestamp() * 1e9)))
    corrected, untouched = outbox.pending()
    assert corrected.taken_at == datetime(2026, 11, 22, 6, 1, 30, tzinfo=UTC)
    assert corrected.ntp_synced is True
    assert (untouched.taken_at, untouched.ntp_synced) == (wrong_time, False)


def test_a_stored_round_survives_kill_9(tmp_path: Path) -> None:
    """What add() returned is on disk, even if the process dies the next instant."""
    path = tmp_path / "o.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from agent.outbox import Outbox
        from tests.agent_harness import power_reading
        outbox = Outbox(__import__("pathlib").Path({str(path)!r}))
        for round_number in range(50):
            seqs = outbox.add([power_reading(uptime_s=float(round_number))] * 8)
            print(seqs[-1], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == -9
    last_acknowledged = int(result.stdout.split()[-1])
    reopened = Outbox(path)
    assert reopened.stats().pending == last_acknowledged == 400


def test_readings_stored_before_ntp_sync_are_not_aged_out_when_the_clock_jumps(
    tmp_path: Path,
) -> None:
    """A Pi booted from an old image stores months-old wall times until NTP answers."""
    now = [1_000_000.0]  # the Pi's idea of "now" before NTP: long ago
    outbox = Outbox(tmp_path / "o.sqlite3", max_age_s=3600, wall_clock=lambda: now[0])
    unsynced = msgspec.structs.replace(power_reading(), ntp_synced=False)
    outbox.add([unsynced] * 3)
    now[0] += 90 * 86_400  # NTP sets the clock three months forward
    outbox.add([power_reading()])
    stats = outbox.stats()
    assert (stats.pending, stats.dropped_total) == (4, 0)


def test_an_outbox_gets_one_id_for_life_and_an_old_one_gets_a_new_id(tmp_path: Path) -> None:
    """An outbox file from before outbox ids (no meta table) gets a fresh random id, not
    the nil one: the collector keeps no ledger for nil, so a reset seq is never hidden."""
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as legacy:
        legacy.execute(
            "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, boot_id TEXT NOT NULL,"
            " monotonic_ms INTEGER NOT NULL, ntp_synced INTEGER NOT NULL,"
            " stored_at REAL NOT NULL, body BLOB NOT NULL)"
        )
    first = Outbox(old)
    outbox_id = first.outbox_id
    first.close()
    assert outbox_id != protocol.NIL_OUTBOX_ID
    assert str(uuid.UUID(outbox_id)) == outbox_id
    assert Outbox(old).outbox_id == outbox_id  # kept for the file's life
    assert Outbox(tmp_path / "new.sqlite3").outbox_id not in (outbox_id, protocol.NIL_OUTBOX_ID)
