"""Fakes for the hardware edge only: a command runner that answers with captured output
and a serial port that replays captured AT transcripts. Everything above them is real."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.sensors.base import Stamp

DATA = Path(__file__).resolve().parent / "data"
BOOT_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
OTHER_BOOT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def stamp(
    taken_at: datetime = datetime(2026, 11, 22, 8, 15, tzinfo=UTC),
    *,
    boot_id: str = BOOT_ID,
    ntp_synced: bool = True,
) -> Stamp:
    return Stamp(boot_id=boot_id, taken_at=taken_at, monotonic_ms=5_400_120, ntp_synced=ntp_synced)


class CapturedRunner:
    """Answers each argv with a captured file's text; records what was run.

    An argv without an answer raises FileNotFoundError when ``missing`` says the
    program is not installed, else AssertionError: the sensor asked for something
    the test did not expect.
    """

    def __init__(
        self, answers: dict[tuple[str, ...], str | Path], *, missing: Sequence[str] = ()
    ) -> None:
        self.answers = answers
        self.missing = set(missing)
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> str:
        key = tuple(argv)
        self.calls.append(key)
        if key[0] in self.missing:
            raise FileNotFoundError(key[0])
        answer = self.answers.get(key)
        if answer is None:
            raise AssertionError(f"unexpected command {key}")
        return answer.read_text() if isinstance(answer, Path) else answer


def load_transcript(path: Path) -> dict[str, deque[list[str]]]:
    """An AT transcript: a line starting with AT is a command (unless it repeats the
    command just sent, which is the modem's echo); the lines after it are the reply."""
    replies: dict[str, deque[list[str]]] = {}
    command: str | None = None
    reply: list[str] = []

    def flush() -> None:
        if command is not None:
            replies.setdefault(command, deque()).append(reply)

    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("AT") and not (line == command and not reply):
            flush()
            command, reply = line, []
        else:
            reply.append(line)
    flush()
    return replies


class ReplayedSerialPort:
    """A serial port whose modem answers from a captured transcript; a command the
    transcript lacks gets ERROR, as a real modem answers commands it does not know."""

    def __init__(self, transcript: Path) -> None:
        self.replies = load_transcript(transcript)
        self.sent: list[str] = []
        self.pending: deque[bytes] = deque()
        self.closed = False

    def write(self, data: bytes, /) -> int:
        command = data.decode("ascii").rstrip("\r")
        self.sent.append(command)
        queue = self.replies.get(command)
        reply = queue.popleft() if queue else ["ERROR"]
        self.pending.extend(f"{line}\r\n".encode() for line in reply)
        return len(data)

    def readline(self) -> bytes:
        return self.pending.popleft() if self.pending else b""

    def reset_input_buffer(self) -> None:
        self.pending.clear()

    def close(self) -> None:
        self.closed = True
