"""The AT port: send a command, collect its lines up to the final result code.

A reply counts only with its final result code (V.250 / TS 27.007 §9.2): ``OK``, or
``ERROR`` / ``+CME ERROR: <err>`` / ``+CMS ERROR: <err>`` (and ``NO CARRIER``). A reply
cut short by the timeout is an error, never a value: :meth:`AtReply.fields` gives nothing
for it, so a truncated ``+CSQ: 2`` (of ``+CSQ: 21,99``) never becomes -109 dBm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from agent.sensors.base import SensorError

FINAL_OK: Final = "OK"
FINAL_ERRORS: Final = ("ERROR", "+CME ERROR", "+CMS ERROR", "NO CARRIER")


@dataclass(frozen=True)
class AtReply:
    command: str
    lines: tuple[str, ...]
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """The modem answered with its final ``OK``."""
        return self.error is None and not self.timed_out

    def fields(self, prefix: str) -> list[str] | None:
        """The comma-separated fields of the first ``prefix:`` line, quotes removed; None
        unless the reply ended in ``OK``."""
        found = self.all_fields(prefix)
        return found[0] if found else None

    def all_fields(self, prefix: str) -> list[list[str]]:
        if not self.ok:
            return []
        return [split_at_fields(body) for body in self.bodies(prefix)]

    def bodies(self, prefix: str) -> list[str]:
        """The text after ``prefix:`` of each line that has it (only for a complete reply)."""
        if not self.ok:
            return []
        return [line[len(prefix) + 1 :] for line in self.lines if line.startswith(prefix + ":")]


def split_at_fields(text: str) -> list[str]:
    """Split an AT response body on commas outside quotes and strip the quotes."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text.strip():
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    fields.append("".join(current).strip())
    return fields


class SerialPort(Protocol):
    """The slice of ``serial.Serial`` the AT backend uses (a fake replays captures)."""

    def write(self, data: bytes, /) -> int | None: ...

    def readline(self) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


SerialOpener = Callable[[str, int, float], SerialPort]


def open_serial(port: str, baud: int, read_timeout_s: float) -> SerialPort:
    """Open the modem's AT port with pyserial (imported here: only this backend needs it)."""
    import serial

    try:
        return serial.Serial(port, baud, timeout=read_timeout_s)
    except (serial.SerialException, OSError) as error:
        raise SensorError(
            f"cannot open the modem's AT port {port}: {error}; is the modem plugged in "
            f"and is ModemManager (which holds the port) stopped?"
        ) from error


class AtSession:
    """Send AT commands and collect the lines up to the final result code."""

    def __init__(
        self,
        port: SerialPort,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._port = port
        self._timeout_s = timeout_s
        self._clock = clock

    def command(self, command: str) -> AtReply:
        self._port.reset_input_buffer()
        self._port.write(command.encode("ascii") + b"\r")
        deadline = self._clock() + self._timeout_s
        lines: list[str] = []
        while self._clock() < deadline:
            raw = self._port.readline()
            if not raw:
                continue  # read timeout; keep waiting until the deadline
            line = raw.decode("ascii", errors="replace").strip()
            if not line or line == command:  # blank separator or the modem's echo
                continue
            if line == FINAL_OK:
                return AtReply(command, tuple(lines))
            if line.startswith(FINAL_ERRORS):
                return AtReply(command, tuple(lines), error=line)
            lines.append(line)
        return AtReply(
            command,
            tuple(lines),
            error=f"no final result code within {self._timeout_s:g} s",
            timed_out=True,
        )


def require_complete(reply: AtReply) -> AtReply:
    """Raise when the modem stopped answering mid-reply (a fact the round cannot do without)."""
    if reply.timed_out:
        got = f" (got {' / '.join(reply.lines)!r})" if reply.lines else ""
        raise SensorError(
            f"the modem did not finish answering {reply.command}{got}: {reply.error}; "
            f"it may be rebooting or the port may be shared (is ModemManager stopped?)"
        )
    return reply
