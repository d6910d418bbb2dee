"""A child process that can be stopped gracefully or killed like a crashed server."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class ServiceProcess:
    """Runs one server binary with its output in a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        run_as: Mapping[str, Any] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.run_as = dict(run_as or {})
        self.stop_signal = stop_signal
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            # A session of its own: Ctrl-C in a terminal reaches the demo, which then
            # stops its services in order, instead of killing them all at once.
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.run_as,
            )

    def exited_early(self) -> int | None:
        """The exit code if the process has already died, for start-up error messages."""
        return None if self._process is None else self._process.poll()

    def stop(self, timeout_s: float = 30) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(self.stop_signal)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
