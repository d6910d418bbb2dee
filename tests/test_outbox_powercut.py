"""Power cuts on LazyFS: nothing ``Outbox.add`` returned is ever lost.

The outbox promises that a round is fsynced before ``add`` returns. A kill -9 cannot test
that (unsynced data survives in the page cache: see the last test), so these tests run
the real outbox in its own process on LazyFS, let it die at awkward moments, throw away
every byte that was not fsynced (``lazyfs::clear-cache``, or LazyFS killing itself in
the middle of a commit), "reboot" (remount) and reopen the outbox from a new process.

What must hold (``tests.lazyfs_harness.problems``): every seq ``add`` returned is there
with the reading stored under it; the database passes ``PRAGMA integrity_check``; seqs
keep growing and are never reused; the reopened outbox adds and removes as before.
Removes are deliberately not fsynced: removed readings may come back (they are re-sent
and deduplicated) — unless a later ``add`` returned, whose commit syncs them too.

With ``durable=False`` (synchronous=OFF) the same scenarios must report lost readings:
the harness has teeth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.lazyfs_harness import (
    Inspection,
    LazyFS,
    Ledger,
    OutboxProcess,
    inspect_outbox,
    problems,
)

DB_NAME = "outbox.sqlite3"
WAL = r"outbox\.sqlite3-wal"
ROUNDS = r"outbox\.sqlite3-rounds"
# Durable writers: the default outbox (rounds appended to the round log) and the outbox
# with round_log = false (rounds committed to SQLite).
DURABLE_MODES = ("round-log", "sqlite")


def _commit_file(writer: OutboxProcess) -> str:
    """The file an add writes and syncs: the round log, or SQLite's WAL."""
    return WAL if writer.mode in ("sqlite", "not-durable") else ROUNDS


# -------------------------------------------------------------------- scenarios


def _seqs(seqs: list[int]) -> str:
    return " ".join(str(seq) for seq in seqs)


def exit_right_after_add(fs: LazyFS, writer: OutboxProcess) -> None:
    """Three rounds; the process dies (os._exit) the instant the last add returns."""
    writer.send("add 3 4; die")
    writer.finish()


def sigkill_mid_stream(fs: LazyFS, writer: OutboxProcess) -> None:
    """Rounds back to back, SIGKILL while one is being added. 500 rounds write about
    1000 WAL frames, so SQLite's auto-checkpoint has run by then."""
    writer.send("stream 4")
    writer.wait_rounds(500)
    writer.kill()


def die_after_removes(fs: LazyFS, writer: OutboxProcess) -> None:
    """Removes (not fsynced), an add that syncs them, then a batch nobody syncs."""
    writer.send("add 8 4")
    writer.wait_rounds(8)
    round_ = writer.ledger.seqs_of_round
    writer.send(
        f"remove {_seqs(round_(0))}; remove {_seqs(round_(1))}; add 1 4; "
        f"remove {_seqs(round_(2))}; remove {_seqs(round_(3))}; "
        f"remove {_seqs(round_(4) + round_(5))}; die"
    )
    writer.finish()
    assert writer.ledger.removed_synced
    assert writer.ledger.removed_unsynced


def crash_before_wal_write(fs: LazyFS, writer: OutboxProcess) -> None:
    """Power fails as the next add starts writing its commit to the WAL."""
    writer.send("add 3 4")
    writer.wait_rounds(3)
    fs.arm_crash("write", _commit_file(writer))
    writer.send("add 1 4")
    writer.expect(lambda line: line.startswith(("error", "added")))
    fs.wait_dead()


def crash_before_wal_fsync(fs: LazyFS, writer: OutboxProcess) -> None:
    """Power fails between the commit's WAL write and its fsync: the add never returns.
    (synchronous=OFF never fsyncs, so there the add returns and clear-cache cuts.)"""
    writer.send("add 3 4")
    writer.wait_rounds(3)
    fs.arm_crash("fsync", _commit_file(writer))
    writer.send("add 1 4")
    writer.expect(lambda line: line.startswith(("error", "added")))
    if writer.ledger.errors:
        fs.wait_dead()


@dataclass(frozen=True)
class Scenario:
    run: Callable[[LazyFS, OutboxProcess], None]
    crashes_lazyfs: bool = False


SCENARIOS = {
    "exit-right-after-add": Scenario(exit_right_after_add),
    "sigkill-mid-stream": Scenario(sigkill_mid_stream),
    "die-after-removes": Scenario(die_after_removes),
    "crash-before-wal-write": Scenario(crash_before_wal_write, crashes_lazyfs=True),
    "crash-before-wal-fsync": Scenario(crash_before_wal_fsync, crashes_lazyfs=True),
}


def run_writer(
    fs: LazyFS,
    scenario: Callable[[LazyFS, OutboxProcess], None],
    *,
    durable: bool,
    ledger: Ledger | None = None,
    mode: str = "round-log",
) -> Ledger:
    writer = OutboxProcess(fs.mnt / DB_NAME, durable=durable, ledger=ledger, mode=mode)
    try:
        scenario(fs, writer)
        writer.kill()  # if the scenario left it alive: it dies with the power
    finally:
        writer.close()
    return writer.ledger


def power_cut_and_reboot(fs: LazyFS) -> Inspection:
    if fs.alive():  # a crash scenario's LazyFS is already dead: that was the cut
        fs.power_cut()
    fs.reboot()
    return inspect_outbox(fs.mnt / DB_NAME)


def describe(ledger: Ledger, found: Inspection) -> str:
    return (
        f"add returned {len(ledger.acked)} seqs in {ledger.rounds} rounds "
        f"(up to {max(ledger.acked, default=None)}), removed {len(ledger.removed_synced)} "
        f"synced + {len(ledger.removed_unsynced)} unsynced, errors {ledger.errors}; after "
        f"the cut: {len(found.readings)} readings, integrity {found.integrity}"
    )


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize("mode", DURABLE_MODES)
@pytest.mark.parametrize("name", SCENARIOS)
def test_nothing_add_returned_is_lost_in_a_power_cut(lazyfs: LazyFS, name: str, mode: str) -> None:
    scenario = SCENARIOS[name]
    ledger = run_writer(lazyfs, scenario.run, durable=True, mode=mode)
    found = power_cut_and_reboot(lazyfs)
    issues = problems(ledger, found)
    assert not issues, "\n".join([describe(ledger, found), *issues])
    assert ledger.acked, "the scenario stored nothing"
    if scenario.crashes_lazyfs:
        assert ledger.errors, "LazyFS did not cut the power in the middle of the add"


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_harness_detects_loss_without_fsync(lazyfs: LazyFS, name: str) -> None:
    """synchronous=OFF: the same scenario must be caught losing what add returned."""
    ledger = run_writer(lazyfs, SCENARIOS[name].run, durable=False)
    found = power_cut_and_reboot(lazyfs)
    found_problems = problems(ledger, found)
    assert any(problem.startswith("lost ") for problem in found_problems), (
        f"{describe(ledger, found)}; problems: {found_problems}"
    )


@pytest.mark.parametrize("name", ["exit-right-after-add", "sigkill-mid-stream"])
def test_the_round_log_without_its_fdatasync_loses_readings(lazyfs: LazyFS, name: str) -> None:
    """The round log's fdatasync made a no-op: the same scenarios must be caught losing
    what add returned. (Not the crash scenarios, which need the fsync to crash on, nor
    die-after-removes, whose removes move every unconfirmed reading into SQLite with a
    synchronous=FULL commit, so there is nothing left for the missing fdatasync to lose.)"""
    ledger = run_writer(lazyfs, SCENARIOS[name].run, durable=True, mode="round-log-no-fsync")
    found = power_cut_and_reboot(lazyfs)
    found_problems = problems(ledger, found)
    assert any(problem.startswith("lost ") for problem in found_problems), (
        f"{describe(ledger, found)}; problems: {found_problems}"
    )


def test_the_harness_pins_the_loss_on_the_rounds_stored_without_fsync(lazyfs: LazyFS) -> None:
    """A durable writer, then a synchronous=OFF one on the same file: after the cut,
    exactly the second writer's readings are missing."""

    def three_rounds(fs: LazyFS, writer: OutboxProcess) -> None:
        writer.send("add 3 4; die")
        writer.finish()

    ledger = run_writer(lazyfs, three_rounds, durable=True)
    durable_seqs = set(ledger.acked)
    ledger = run_writer(lazyfs, three_rounds, durable=False, ledger=ledger)
    unsynced_seqs = set(ledger.acked) - durable_seqs
    found = power_cut_and_reboot(lazyfs)
    assert len(durable_seqs) == len(unsynced_seqs) == 12
    assert found.integrity == ["ok"]
    assert set(found.readings) == durable_seqs, describe(ledger, found)
    assert any(p.startswith("lost 12 readings") for p in problems(ledger, found))


def test_kill_9_alone_cannot_tell_fsync_from_no_fsync(lazyfs: LazyFS) -> None:
    """Why the power cut is needed: without it, synchronous=OFF loses nothing."""
    ledger = run_writer(lazyfs, exit_right_after_add, durable=False)
    found = inspect_outbox(lazyfs.mnt / DB_NAME)  # a new process, but the "machine" kept running
    issues = problems(ledger, found)
    assert not issues, "\n".join([describe(ledger, found), *issues])
