"""LazyFS power cuts for the outbox, and the outbox process that lives through them.

LazyFS (github.com/dsrhaslab/lazyfs) is a FUSE file system that keeps every written
byte in its own cache until the application fsyncs it; ``lazyfs::clear-cache`` then
throws away everything not fsynced, which is exactly what a power cut does to a Pi's SD
card. A kill -9 alone cannot show that: unsynced data survives in the page cache.

Two halves:

- :class:`LazyFS` mounts one LazyFS with a config and FIFOs of its own (see
  ../shared/lazyfs/README.md): the completion FIFO is opened before mounting, and fault
  commands are sent one at a time, each waited for.
- ``python -m tests.lazyfs_harness write|inspect DB`` is the outbox side, always run as
  a separate process: ``write`` drives the real :class:`agent.outbox.Outbox` from
  commands on stdin and reports on stdout what ``add`` returned, so the test knows what
  must survive; ``inspect`` reopens the outbox after the cut (a new process, as after a
  reboot) and reports what is there as JSON.

The binary is ``$COVERWATCH_LAZYFS``, else ``/opt/lazyfs-*/bin/lazyfs`` (where .ci/run
extracts ../shared/lazyfs/lazyfs-bin.tar.gz), else ``lazyfs`` on PATH.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agent import roundlog
from agent.outbox import Outbox
from coverwatch.protocol import Reading
from tests.agent_harness import power_reading, system_reading

LAZYFS_ENV = "COVERWATCH_LAZYFS"
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------- LazyFS


def lazyfs_binary() -> Path | None:
    configured = os.environ.get(LAZYFS_ENV)
    if configured:
        return Path(configured)
    installed = sorted(Path("/opt").glob("lazyfs-*/bin/lazyfs"))
    if installed:
        return installed[-1]
    found = shutil.which("lazyfs")
    return Path(found) if found else None


def missing_requirement() -> str | None:
    """Why LazyFS cannot run here, or None when it can."""
    binary = lazyfs_binary()
    if binary is None or not os.access(binary, os.X_OK):
        where = f"${LAZYFS_ENV}={binary}" if os.environ.get(LAZYFS_ENV) else "/opt/lazyfs-*"
        return (
            f"LazyFS is not installed ({where}): "
            "tar -xzf ../shared/lazyfs/lazyfs-bin.tar.gz -C /opt"
        )
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is missing or not accessible (containers: --device /dev/fuse)"
    return None


class LazyFSError(RuntimeError):
    pass


class LazyFS:
    """One LazyFS process: data lives in ``work/root``, the application uses ``work/mnt``."""

    def __init__(self, binary: Path, work: Path, *, cache_size: str = "64mb") -> None:
        self.binary = binary
        work = work.resolve()
        self.root = work / "root"
        self.mnt = work / "mnt"
        self.fifo = work / "faults.fifo"
        self.done = work / "done.fifo"
        self.log = work / "lazyfs.log"
        self.output = work / "lazyfs.out"
        self.config = work / "lazyfs.toml"
        for directory in (self.root, self.mnt):
            directory.mkdir(parents=True, exist_ok=True)
        for fifo in (self.fifo, self.done):
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)
        # The cache must hold every unsynced byte: when it is full (and eviction is off)
        # writes go straight to the backing file and would survive the cut.
        self.config.write_text(
            "[faults]\n"
            f"fifo_path = {json.dumps(str(self.fifo))}\n"
            f"fifo_path_completed = {json.dumps(str(self.done))}\n"
            "[cache]\n"
            "apply_eviction = false\n"
            "[cache.simple]\n"
            f"custom_size = {json.dumps(cache_size)}\n"
            "blocks_per_page = 1\n"
            "[filesystem]\n"
            "log_all_operations = false\n"
            f"logfile = {json.dumps(str(self.log))}\n",
            encoding="utf-8",
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._done_fd: int | None = None

    # ---------------------------------------------------------------- mounting

    def mounted(self) -> bool:
        with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
            return any(line.split()[4] == str(self.mnt) for line in mountinfo)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def mount(self, timeout_s: float = 20.0) -> None:
        if self.mounted():
            raise LazyFSError(f"{self.mnt} is already mounted")
        # Open the read end of the completion FIFO first: LazyFS's fault thread blocks
        # opening its write end and reads no command until it can.
        self._done_fd = os.open(self.done, os.O_RDONLY | os.O_NONBLOCK)
        # LazyFS truncates its log when it starts: keep the last mount's for diagnosis.
        if self.log.exists():
            self.log.replace(self.log.with_suffix(".previous.log"))
        with self.output.open("ab") as output:
            # `ulimit -c 0`: LazyFS 0.3.0 aborts on unmount, which is harmless but would
            # leave a core file behind on machines that keep them.
            self._process = subprocess.Popen(
                [
                    "sh",
                    "-c",
                    'ulimit -c 0; exec "$0" "$@"',
                    str(self.binary),
                    str(self.mnt),
                    "--config-path",
                    self.config.name,  # relative: see below
                    "-f",
                    "-o",
                    "modules=subdir",
                    "-o",
                    f"subdir={self.root}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # LazyFS 0.3.0 ignores a --config-path containing "-o" (as every pytest
                # tmp_path does: /tmp/pytest-of-root/...) and falls back to
                # config/default.toml; the config's own name, from its folder, is safe.
                cwd=self.config.parent,
            )
        self._wait(
            lambda: self.mounted() and "waiting for fault commands" in self._log(),
            "mount",
            timeout_s,
        )

    def unmount(self) -> None:
        """Unmount (itself a power cut: LazyFS's unsynced cache goes with it)."""
        if self.mounted():
            result = subprocess.run(
                ["fusermount3", "-u", str(self.mnt)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise LazyFSError(f"fusermount3 -u {self.mnt}: {result.stderr.strip()}")
        self._reap()

    def reboot(self) -> None:
        """Unmount and mount again, as a probe does when power comes back."""
        self.unmount()
        self.mount()

    def cleanup(self) -> None:
        """Best effort, for finally blocks: nothing mounted, no LazyFS process left."""
        if self.mounted():
            subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
        if self.mounted():
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True, check=False)
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(20)  # 0.3.0 aborts (SIGABRT) on unmount: harmless
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None

    # ------------------------------------------------------------------ faults

    def power_cut(self, timeout_s: float = 20.0) -> None:
        """``lazyfs::clear-cache``: every byte not fsynced is gone. Waits for the ack."""
        assert self._done_fd is not None, "not mounted"
        self._send("lazyfs::clear-cache")
        ready, _, _ = select.select([self._done_fd], [], [], timeout_s)
        if not ready:
            raise LazyFSError(f"no ack for lazyfs::clear-cache in {timeout_s}s{self._tail()}")
        ack = os.read(self._done_fd, 100)
        if not ack.startswith(b"finished::clear-cache"):
            raise LazyFSError(f"unexpected ack {ack!r} for lazyfs::clear-cache")

    def arm_crash(self, op: str, path_regex: str, *, timing: str = "before") -> None:
        """Make LazyFS kill itself (a power cut mid-operation) at the next matching op."""
        self._command(
            f"lazyfs::crash::timing={timing}::op={op}::from_rgx={path_regex}",
            "crash: from regex path",
        )
        # Crash arming has no ack; the fault thread is serial, so once the next command
        # is answered the crash is armed.
        self._command("lazyfs::display-cache-usage", "cache usage")

    def wait_dead(self, timeout_s: float = 20.0) -> int:
        assert self._process is not None, "not mounted"
        self._wait(lambda: not self.alive(), "LazyFS to crash", timeout_s)
        return self._process.returncode

    def _send(self, command: str) -> None:
        # One command per open-write-close: the fault thread reads 100-byte chunks, so
        # two commands written back to back may merge and be ignored.
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            os.write(fd, (command + "\n").encode())
        finally:
            os.close(fd)

    def _command(self, command: str, ack_in_log: str, timeout_s: float = 20.0) -> None:
        before = self._log().count(ack_in_log)
        self._send(command)
        self._wait(lambda: self._log().count(ack_in_log) > before, command, timeout_s)

    def _log(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self) -> str:
        lines = (self._log() + self.output.read_text(errors="replace")).splitlines()
        return "\n" + "\n".join(lines[-15:]) if lines else ""

    def _wait(self, done: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if what != "LazyFS to crash" and not self.alive():
                code = None if self._process is None else self._process.returncode
                raise LazyFSError(f"LazyFS exited ({code}) waiting for {what}{self._tail()}")
            if time.monotonic() > deadline:
                raise LazyFSError(f"timed out after {timeout_s}s waiting for {what}{self._tail()}")
            time.sleep(0.01)


# ----------------------------------------------------------- the outbox process


@dataclass
class Ledger:
    """What the outbox process reported, in order: the truth a power cut must respect.

    A line is printed only after the call returned, so ``acked`` holds exactly the seqs
    ``add`` returned (with the marker stored under each); an add that was cut short may
    have committed seqs the ledger never heard of, all above ``max(acked)``.
    """

    acked: dict[int, int] = field(default_factory=dict)
    # Removes are not fsynced: they may come back after a cut, unless a later ``add``
    # returned, whose FULL commit syncs the WAL up to and including them. A remove is
    # announced before the call ("removing"), since it may commit and then die.
    removed_unsynced: set[int] = field(default_factory=set)
    removed_synced: set[int] = field(default_factory=set)
    outbox_id: str | None = None
    errors: list[str] = field(default_factory=list)
    rounds: int = 0
    _removing: set[int] = field(default_factory=set)
    _removes_returned: set[int] = field(default_factory=set)

    def note(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        if verb == "added":
            for pair in rest.split():
                seq, marker = pair.split(":")
                self.acked[int(seq)] = int(marker)
            self.rounds += 1
            self.removed_synced |= self._removes_returned
            self.removed_unsynced -= self._removes_returned
            self._removes_returned.clear()
        elif verb == "removing":
            self._removing = {int(seq) for seq in rest.split()}
            self.removed_unsynced |= self._removing
        elif verb == "removed":
            self._removes_returned |= self._removing
        elif verb == "ready":
            self.outbox_id = rest or None
        elif verb == "error":
            self.errors.append(rest)

    def seqs_of_round(self, index: int) -> list[int]:
        """The seqs of the index-th round ``add`` returned (0 is the first)."""
        rounds: dict[int, list[int]] = {}
        for seq, marker in self.acked.items():
            rounds.setdefault(marker // ROUND_STRIDE, []).append(seq)
        return sorted(rounds[sorted(rounds)[index]])


ROUND_STRIDE = 1000  # markers of round r are r*1000 + i: one marker per reading


class OutboxProcess:
    """``python -m tests.lazyfs_harness write DB``: the real outbox in its own process."""

    def __init__(
        self, db: Path, *, durable: bool, ledger: Ledger | None = None, mode: str = "round-log"
    ) -> None:
        """``mode`` of a durable writer: "round-log" (the default outbox), "sqlite"
        (``round_log=False``) or "round-log-no-fsync" (the round log with its fdatasync
        made a no-op: must lose readings). A writer that is not durable has no round log."""
        self.db = db
        self.mode = mode if durable else "not-durable"
        self.ledger = ledger if ledger is not None else Ledger()
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.lazyfs_harness", "write", str(db), f"--{self.mode}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect(lambda line: line.startswith("ready"))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _take(self, timeout_s: float) -> str | None:
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"the outbox process said nothing for {timeout_s}s:\n" + "\n".join(self.output)
            ) from None
        if line is None:
            self._ended = True
        else:
            self.output.append(line)
            self.ledger.note(line)
        return line

    def send(self, commands: str) -> None:
        """One line of ``;``-separated commands, run back to back without a round trip."""
        assert self.process.stdin is not None
        self.process.stdin.write(commands + "\n")
        self.process.stdin.flush()

    def expect(self, until: Callable[[str], bool], timeout_s: float = 30.0) -> None:
        while True:
            line = self._take(timeout_s)
            if line is None:
                raise AssertionError("the outbox process ended early:\n" + "\n".join(self.output))
            if until(line):
                return

    def wait_rounds(self, rounds: int, timeout_s: float = 30.0) -> None:
        if self.ledger.rounds < rounds:
            self.expect(lambda _: self.ledger.rounds >= rounds, timeout_s)

    def finish(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to die by itself; read everything it said."""
        while self._take(timeout_s) is not None:
            pass
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL (if still alive), then read what it managed to say before dying."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.finish()

    def close(self) -> None:
        with suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(30)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()


@dataclass
class Inspection:
    """The outbox as a new process finds it after the cut (``inspect`` prints this)."""

    integrity: list[str]
    tables: list[str]
    readings: dict[int, int]  # seq -> marker
    outbox_id: str | None
    new_seqs: list[int]  # two rounds added after reopening
    removed_new: int  # the first of them removed again
    pending_after: list[int]
    newest_after: int | None
    open_error: str | None = None


def inspect_outbox(db: Path) -> Inspection:
    result = subprocess.run(
        [sys.executable, "-m", "tests.lazyfs_harness", "inspect", str(db)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"inspect failed ({result.returncode}):\n{result.stderr}")
    raw: dict[str, Any] = json.loads(result.stdout)
    raw["readings"] = {int(seq): marker for seq, marker in raw["readings"].items()}
    return Inspection(**raw)


def problems(ledger: Ledger, found: Inspection) -> list[str]:
    """Every way the reopened outbox breaks the outbox's promises; [] when it keeps them."""
    issues: list[str] = []
    if found.open_error is not None:
        issues.append(f"outbox does not open: {found.open_error}")
    if found.integrity != ["ok"]:
        issues.append(f"integrity_check: {found.integrity}")
    if "readings" not in found.tables:
        issues.append(f"table readings is gone (tables: {found.tables})")
    removed = ledger.removed_unsynced | ledger.removed_synced
    lost = sorted(seq for seq in ledger.acked if seq not in found.readings and seq not in removed)
    if lost:
        issues.append(f"lost {len(lost)} readings add had returned, seqs {_span(lost)}")
    changed = sorted(
        seq
        for seq, marker in found.readings.items()
        if seq in ledger.acked and ledger.acked[seq] != marker
    )
    if changed:
        issues.append(f"{len(changed)} seqs hold other readings than add stored: {_span(changed)}")
    back = sorted(ledger.removed_synced & found.readings.keys())
    if back:
        issues.append(f"readings removed before a later add returned came back: {_span(back)}")
    newest_acked = max(ledger.acked, default=0)
    strangers = sorted(s for s in found.readings if s not in ledger.acked and s <= newest_acked)
    if strangers:
        issues.append(f"seqs no add returned: {_span(strangers)}")
    seen = max([newest_acked, *found.readings, *removed])
    reused = sorted(seq for seq in found.new_seqs if seq <= seen)
    if reused:
        issues.append(f"seqs reused after the cut (highest before: {seen}): {_span(reused)}")
    if found.open_error is None:
        half = len(found.new_seqs) // 2
        expected = sorted(found.readings.keys() | set(found.new_seqs[half:]))
        if (
            found.pending_after != expected
            or found.removed_new != half
            or found.newest_after != max(found.new_seqs, default=None)
        ):
            issues.append(
                "the reopened outbox misbehaves: after adding two rounds and removing the "
                f"first, pending {_span(found.pending_after)} (expected {_span(expected)}), "
                f"removed {found.removed_new} (expected {half}), newest {found.newest_after}"
            )
    if ledger.outbox_id and found.outbox_id and ledger.outbox_id != found.outbox_id:
        issues.append(f"outbox id changed: {ledger.outbox_id} -> {found.outbox_id}")
    return issues


def _span(seqs: list[int]) -> str:
    return str(seqs) if len(seqs) <= 8 else f"[{seqs[0]}..{seqs[-1]}] ({len(seqs)})"


# ------------------------------------------------- the outbox side (subprocesses)


def _readings(first_marker: int, size: int) -> list[Reading]:
    """A round like a probe's: power and system readings, each carrying its marker."""
    return [
        power_reading(monotonic_ms=first_marker + i)
        if i % 2 == 0
        else msgspec.structs.replace(system_reading(), monotonic_ms=first_marker + i)
        for i in range(size)
    ]


def _say(*words: object) -> None:
    sys.stdout.write(" ".join(str(word) for word in words) + "\n")
    sys.stdout.flush()


def _write(db: Path, *, mode: str) -> None:
    """Run commands from stdin against the outbox; report each call once it returned.

    ``add ROUNDS SIZE``, ``stream SIZE`` (add rounds until killed), ``remove SEQ...``,
    ``die`` (os._exit: the process dies with the power, the database is never closed).
    """
    if mode == "round-log-no-fsync":
        roundlog.datasync = lambda _fd: None  # the teeth: what the tests must catch
    outbox = Outbox(db, durable=mode != "not-durable", round_log=mode != "sqlite")
    _say("ready", getattr(outbox, "outbox_id", "") or "")
    # Round numbers only need to differ from any earlier writer's: there were at most
    # as many rounds as seqs.
    next_round = (outbox.stats().newest_seq or 0) + 1

    def add_round(size: int) -> None:
        nonlocal next_round
        readings = _readings(next_round * ROUND_STRIDE, size)
        next_round += 1
        seqs = outbox.add(readings)
        _say("added", *(f"{seq}:{r.monotonic_ms}" for seq, r in zip(seqs, readings, strict=True)))

    for line in sys.stdin:
        for command in line.split(";"):
            verb, *args = command.split() or [""]
            numbers = [int(arg) for arg in args]
            try:
                if verb == "add":
                    rounds, size = numbers
                    for _ in range(rounds):
                        add_round(size)
                elif verb == "stream":
                    while True:
                        add_round(numbers[0])
                elif verb == "remove":
                    _say("removing", *numbers)
                    _say("removed", outbox.remove(numbers))
                elif verb == "die":
                    os._exit(0)
                elif verb:
                    raise ValueError(f"unknown command {command!r}")
            except (sqlite3.Error, OSError) as error:  # OSError: the round log's file
                _say("error", f"{type(error).__name__}: {error}")


def _inspect(db: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"integrity": [], "tables": [], "readings": {}, "outbox_id": None}
    report |= {"new_seqs": [], "removed_new": 0, "pending_after": [], "newest_after": None}
    if not db.exists():
        report["open_error"] = f"{db} does not exist"
        return report
    # Raw SQLite first: opening the Outbox would recreate whatever the cut destroyed.
    raw = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    try:
        report["integrity"] = [row[0] for row in raw.execute("PRAGMA integrity_check")]
        report["tables"] = sorted(
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
    except sqlite3.DatabaseError as error:
        report["integrity"] = [f"{type(error).__name__}: {error}"]
    finally:
        raw.close()
    try:
        outbox = Outbox(db)
    except sqlite3.DatabaseError as error:
        report["open_error"] = f"{type(error).__name__}: {error}"
        return report
    report["readings"] = {str(seq): marker for seq, marker in _markers(outbox)}
    report["outbox_id"] = getattr(outbox, "outbox_id", None)
    # The outbox keeps working: two more rounds, the first one acknowledged and removed.
    first = outbox.add(_readings(900_000 * ROUND_STRIDE, 4))
    second = outbox.add(_readings(900_001 * ROUND_STRIDE, 4))
    report["new_seqs"] = first + second
    report["removed_new"] = outbox.remove(first)
    report["pending_after"] = [seq for seq, _ in _markers(outbox)]
    report["newest_after"] = outbox.stats().newest_seq
    outbox.close()
    return report


def _markers(outbox: Outbox) -> Iterator[tuple[int, int]]:
    after = 0
    while batch := outbox.pending(after_seq=after, limit=1000):
        for reading in batch:
            yield reading.seq, reading.monotonic_ms
        after = batch[-1].seq


def main(argv: list[str]) -> None:
    command, db = argv[0], Path(argv[1])
    if command == "write":
        modes = [arg.removeprefix("--") for arg in argv[2:] if arg.startswith("--")]
        _write(db, mode=modes[0] if modes else "round-log")
    elif command == "inspect":
        print(json.dumps(_inspect(db)))
    else:
        raise SystemExit(f"usage: python -m tests.lazyfs_harness write|inspect DB: {argv}")


if __name__ == "__main__":
    main(sys.argv[1:])
