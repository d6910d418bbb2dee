"""Helpers the sensors share at the OS edge: running a command, reading a small file,
dropping a value that falls outside the protocol's range.

Kept here (not in base.py) because they are implementation details of the built-in
sensors, not part of the sensor interface.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.sensors.base import SensorError

# (argv, timeout in seconds) -> stdout. Raises FileNotFoundError when the program is not
# installed and SensorError when it fails, so a sensor can tell "not here" from "broken".
CommandRunner = Callable[[Sequence[str], float], str]


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run ``argv`` in the C locale and return its stdout.

    The C locale matters: mmcli prints numbers with the locale's decimal separator
    ("-67,00" under a Czech or Vietnamese locale), which would not parse as a float.
    Output is decoded leniently: an operator name or firmware string that is not valid
    UTF-8 (modems that send Latin-1 or GSM 7-bit names) becomes U+FFFD instead of
    raising UnicodeDecodeError out of the round.
    """
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        raise SensorError(f"`{' '.join(argv)}` did not answer within {timeout_s:g} s") from error
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise SensorError(f"`{' '.join(argv)}` failed: {detail}")
    return done.stdout


def read_text(path: Path) -> str | None:
    """A small sysfs/procfs file's stripped content, or None when it is absent or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def within(value: float | None, low: float, high: float) -> float | None:
    """``value`` if it lies in [low, high], else None: an impossible value is never sent."""
    if value is None or not low <= value <= high:
        return None
    return value


def printable(text: str | None, limit: int = 255) -> str | None:
    """Text fit to send: control characters (a NUL from line noise on the AT port, which
    PostgreSQL refuses in text), lone surrogates (which cannot be encoded) and other
    unprintables removed, other whitespace as spaces, at most ``limit`` characters;
    None when nothing is left."""
    if not text:
        return None
    cleaned = "".join(
        char if char.isprintable() else " " if char.isspace() else "" for char in text
    ).strip()
    return cleaned[:limit] or None
