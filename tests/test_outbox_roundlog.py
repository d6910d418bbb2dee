"""The outbox's round log: a round is appended and fdatasynced before ``add`` returns,
readings confirmed in time never reach SQLite, and what a crash leaves in the log is
replayed into SQLite when the outbox is opened again. (Power cuts: test_outbox_powercut.)"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path

import pytest

from agent import roundlog
from agent.outbox import Outbox
from tests.agent_harness import power_reading, system_reading


def rows_in_sqlite(path: Path) -> int:
    with sqlite3.connect(path) as raw:
        return int(raw.execute("SELECT count(*) FROM readings").fetchone()[0])


def log_of(path: Path) -> Path:
    return path.with_name(path.name + "-rounds")


def test_each_round_is_in_the_log_and_fdatasynced_before_add_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    synced_with: list[int] = []  # rounds in the log file each time it was synced

    def datasync(fd: int, /) -> None:
        synced_with.append(len(list(roundlog.read_records(log_of(path), outbox.outbox_id))))

    monkeypatch.setattr(roundlog, "datasync", datasync)
    for round_ in range(3):
        outbox.add([power_reading(float(round_)), system_reading()])
        assert synced_with[-1] == round_ + 1  # synced, with this round written, before return
    assert synced_with == [1, 2, 3]
    assert rows_in_sqlite(path) == 0  # SQLite did not write a thing
    outbox.close()


def test_a_crash_leaves_the_rounds_in_the_log_and_reopening_moves_them_to_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    seqs = outbox.add([power_reading(1.0), system_reading()]) + outbox.add([power_reading(2.0)])
    outbox.close()  # like a crash: nothing is flushed at close
    assert rows_in_sqlite(path) == 0
    reopened = Outbox(path)
    assert rows_in_sqlite(path) == 3
    assert [r.seq for r in reopened.pending()] == seqs == [1, 2, 3]
    assert reopened.add([power_reading()]) == [4]
    reopened.close()
    again = Outbox(path)  # the replayed rounds are not replayed twice
    assert [r.seq for r in again.pending()] == [1, 2, 3, 4]
    again.close()


def test_confirmed_readings_never_reach_sqlite_and_do_not_come_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    first = outbox.add([power_reading(), system_reading()])
    second = outbox.add([power_reading()])
    assert outbox.remove(first + second) == 3
    log = outbox.round_log
    assert log is not None
    assert log.records == 0  # a new generation: the rounds are void
    assert outbox.stats().pending == 0
    outbox.close()
    assert rows_in_sqlite(path) == 0
    reopened = Outbox(path)
    assert reopened.stats().pending == 0
    assert reopened.add([power_reading()]) == [4]  # seqs still never reused
    reopened.close()


def test_a_removal_that_leaves_some_unconfirmed_moves_them_to_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    first = outbox.add([power_reading()])
    second = outbox.add([power_reading(), system_reading()])
    outbox.remove(first)
    assert rows_in_sqlite(path) == 2
    assert [r.seq for r in outbox.pending()] == second
    outbox.close()
    assert [r.seq for r in Outbox(path).pending()] == second


def test_a_torn_last_record_ends_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    rounds = [outbox.add([power_reading(float(i))]) for i in range(3)]
    log = outbox.round_log
    assert log is not None
    sector = log.sector
    outbox.close()
    third = roundlog.RECORDS_AT + 2 * sector
    with log_of(path).open("r+b") as file:  # a write torn by a power cut: bad CRC
        file.seek(third + 25)
        byte = file.read(1)
        file.seek(third + 25)
        file.write(bytes([byte[0] ^ 0xFF]))
    reopened = Outbox(path)
    assert [r.seq for r in reopened.pending()] == rounds[0] + rounds[1]
    reopened.close()


def test_a_full_log_moves_what_is_unconfirmed_to_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roundlog, "LOG_BYTES", 8 * 4096)
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    seqs = [seq for i in range(100) for seq in outbox.add([power_reading(float(i))])]
    assert seqs == list(range(1, 101))
    assert 0 < rows_in_sqlite(path) < 100  # the log filled up, more than once
    assert [r.seq for r in outbox.pending(limit=1000)] == seqs
    assert [getattr(r, "uptime_s", None) for r in outbox.get([1, 100])] == [0.0, 99.0]
    outbox.close()
    assert [r.seq for r in Outbox(path).pending(limit=1000)] == seqs


def test_a_second_outbox_on_the_file_reads_the_rounds_and_leaves_the_log_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    owner = Outbox(path)
    seqs = owner.add([power_reading(), system_reading()])
    reader = Outbox(path)  # doctor, export
    assert reader.round_log is None
    assert reader.stats().pending == 2
    assert [r.seq for r in reader.pending()] == seqs
    reader.close()
    assert owner.add([power_reading()]) == [3]
    owner.close()
    assert [r.seq for r in Outbox(path).pending()] == [1, 2, 3]


def test_round_log_false_stores_every_round_in_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, round_log=False)
    outbox.add([power_reading()])
    assert outbox.round_log is None
    assert rows_in_sqlite(path) == 1
    assert not log_of(path).exists()
    outbox.close()


def test_an_outbox_opened_without_the_round_log_takes_over_its_rounds_and_seqs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    confirmed = outbox.add([power_reading()])
    outbox.remove(confirmed)  # confirmed in the log: never in SQLite
    left = outbox.add([power_reading(), system_reading()])
    outbox.close()
    plain = Outbox(path, round_log=False)
    assert [r.seq for r in plain.pending()] == left == [2, 3]
    assert plain.add([power_reading()]) == [4]  # not 1 again
    plain.close()


def _tear_newest_header(log: Path, outbox_id: str) -> None:
    """A power cut in the middle of the last header write: its slot fails its CRC."""
    generation, _ = roundlog.read_header(log, outbox_id)
    slot = (0, 4096)[generation % 2]
    with log.open("r+b") as file:
        file.seek(slot + 20)
        byte = file.read(1)
        file.seek(slot + 20)
        file.write(bytes([byte[0] ^ 0xFF]))


def test_a_torn_header_leaves_the_one_before_and_no_seq_is_given_out_twice(
    tmp_path: Path,
) -> None:
    """The header is rewritten at every reset (every batched delete); a torn write must
    not lose the seq high-water mark (readings confirmed while in the log never reach
    SQLite's counter): the header of the generation before stands, with its records."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    given = [seq for i in range(5) for seq in outbox.add([power_reading(float(i))])]
    outbox.remove(given)  # confirmed in time: a new generation, a new header
    later = outbox.add([system_reading()])
    outbox.remove(later)  # and another
    outbox_id = outbox.outbox_id
    outbox.close()
    before = roundlog.read_header(log_of(path), outbox_id)
    _tear_newest_header(log_of(path), outbox_id)
    after = roundlog.read_header(log_of(path), outbox_id)
    assert after[0] == before[0] - 1  # the header before the torn one
    reopened = Outbox(path)
    assert reopened.add([power_reading()]) == [max(given + later) + 1]
    # The older generation's records come back: re-sent, and the collector drops repeats.
    assert {r.seq for r in reopened.pending()} <= set(given + later) | {max(later) + 1}
    reopened.close()


def test_a_log_of_the_single_header_layout_is_replayed_after_an_upgrade(
    tmp_path: Path,
) -> None:
    """Logs written before the two header slots (one header in sector 0, records from
    sector 1) still replay, so an upgrade loses no unconfirmed round."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox_id = outbox.outbox_id
    seqs = outbox.add([power_reading(3.0), system_reading()])
    outbox.close()  # like a crash: the round is only in the log
    [payload] = roundlog.read_records(log_of(path), outbox_id)
    # The same round as the version before wrote it: header in sector 0, record after it.
    generation, sector = 7, 512
    body = struct.pack("<8sQI36sQ", b"CWRLOG02", generation, sector, outbox_id.encode(), 0)
    head = struct.pack(
        "<4sQII",
        b"CWRR",
        generation,
        len(payload),
        roundlog._crc(generation, len(payload), payload),
    )
    old = bytearray(log_of(path).stat().st_size)
    old[: len(body) + 4] = body + struct.pack("<I", zlib.crc32(body))
    old[sector : sector + len(head) + len(payload)] = head + payload
    log_of(path).write_bytes(bytes(old))
    assert roundlog.read_header(log_of(path), outbox_id) == (generation, 0)
    reopened = Outbox(path)
    assert [r.seq for r in reopened.pending()] == seqs
    assert reopened.add([power_reading()]) == [seqs[-1] + 1]
    reopened.close()
    # Rewritten in the new layout, which the next opening reads.
    assert roundlog.read_header(log_of(path), outbox_id)[0] > generation
    assert [r.seq for r in Outbox(path).pending()] == [*seqs, seqs[-1] + 1]
