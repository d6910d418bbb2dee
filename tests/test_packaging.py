"""The probe installs lean: `pip install .[agent]` in a clean venv, as on a Pi."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.helpers import REPO

SERVER_ONLY = [
    "psycopg",
    "psycopg_pool",
    "shapely",
    "folium",
    "litestar",
    "uvicorn",
    "grafana_client",
    "numpy",
]


@pytest.mark.slow
def test_agent_extra_installs_without_server_libraries(tmp_path: Path) -> None:
    # Build from a copy so the install cannot see (or write into) the working tree.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "*.egg-info", "build", "__pycache__", ".*cache"
        ),
    )
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{source}[agent]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "import importlib.util, json\n"
        "import agent.cli, coverwatch.protocol, paho.mqtt.client, psutil, speedtest\n"
        f"print(json.dumps([m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)]))\n"
    )
    check = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "[]", f"server-side libraries on the probe: {check.stdout}"
    version = subprocess.run(
        [str(target / "bin" / "coverwatch-probe"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.stdout.startswith("coverwatch-probe ")
    # The server's commands are there, and say what to install instead of a traceback.
    server = subprocess.run(
        [str(target / "bin" / "coverwatch"), "db", "upgrade", "--database-url", "postgresql://x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert server.returncode == 2, server.stderr
    assert server.stderr == (
        "error: this command needs the server extra (psycopg is not installed): "
        "pip install '.[server]'\n"
    )
