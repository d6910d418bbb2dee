"""``coverwatch demo`` end to end, as a user runs it: real processes, real services.

Each run replays simulated hours of a 320-village province through the real agent,
broker, collector and database, then checks the summary against the simulator's ground
truth, the files it writes, and that nothing is left running. Two runs replay 6 hours
of daylight (``--now`` at the last 06:00 UTC, 13:00 in Vietnam): replaying 6 hours of
night would leave the off-grid villages honestly unmeasured, and the precision/recall
thresholds would then depend on the hour the test runs. One replays the full day
``make demo`` replays, up to a fixed night hour, so that off-grid kits start dark.
tests/test_simulator_fleet.py checks the fleet itself at many hours of the day.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from coverwatch.localservices import mosquitto_binary
from tests.conftest import skip_unless_ci

BIN = Path(sys.executable).parent


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COVERWATCH_DATABASE_URL"}
    env["COLUMNS"] = "200"  # one summary fact per line, unwrapped
    return env


def leftovers(marker: str) -> list[str]:
    """Processes whose command line mentions this run's scratch or output directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if marker in cmdline:
            found.append(cmdline)
    return found


def check_summary(output: str, out_dir: Path) -> None:
    scores = re.search(r"precision ([0-9.]+), recall ([0-9.]+)", output)
    assert scores, output
    precision, recall = float(scores[1]), float(scores[2])
    assert precision >= 0.95, output
    assert recall >= 0.95, output
    stored = re.search(r"readings: ([0-9,]+) taken, ([0-9,]+) stored", output)
    assert stored, output
    assert int(stored[2].replace(",", "")) > 10_000
    dead = re.search(r"(\d+) malformed payloads dead-lettered", output)
    assert dead, output
    assert int(dead[1]) >= 1
    outages = re.search(r"villages with power outages: (\d+)", output)
    assert outages, output
    assert int(outages[1]) >= 1
    html = (out_dir / "coverage-map.html").read_text(encoding="utf-8")
    assert "L.map" in html or "leaflet" in html.lower()
    assert "https://cdn" not in html
    report = (out_dir / "uncovered-villages.csv").read_text(encoding="utf-8")
    assert report.startswith("rank,")
    assert len(report.splitlines()) > 5


def run_until_live_then_ctrl_c(argv: list[str], log_path: Path, timeout_s: float) -> str:
    """Start the interactive demo, wait until the replay is over, press Ctrl-C."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=demo_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            text = log_path.read_text(errors="replace")
            found = re.search(r"open (http://\S+/map)", text)
            if found and "live" in text.split(found[0], 1)[1]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                "the demo did not go live:\n" + log_path.read_text(errors="replace")
            )
        process.send_signal(signal.SIGINT)
        assert process.wait(120) == 0, log_path.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return log_path.read_text(errors="replace")


def last_daylight_now() -> str:
    """The latest 06:00 UTC (13:00 in Vietnam) not in the future, for ``--now``."""
    now = datetime.now(UTC)
    moment = now.replace(hour=6, minute=0, second=0, microsecond=0)
    if moment > now:
        moment -= timedelta(days=1)
    return moment.isoformat()


def run_demo(out_dir: Path, *extra: str) -> str:
    result = subprocess.run(
        [
            str(BIN / "coverwatch"),
            "demo",
            "--now",
            last_daylight_now(),
            "--duration",
            "30",
            "--history-hours",
            "6",
            "--http-port",
            "0",
            "--out",
            str(out_dir),
            *extra,
        ],
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.slow
def test_demo_on_embedded_defaults(tmp_path: Path) -> None:
    """Nothing but Python: embedded PostgreSQL and the pure-Python amqtt broker."""
    out_dir = tmp_path / "demo-out"
    output = run_demo(out_dir, "--amqtt")
    assert "embedded PostgreSQL" in output
    assert "broker: amqtt" in output
    check_summary(output, out_dir)
    assert leftovers(str(out_dir)) == []


@pytest.mark.slow
@pytest.mark.mosquitto
def test_demo_with_mosquitto_until_ctrl_c(tmp_path: Path) -> None:
    """The interactive demo: map served live, Ctrl-C stops everything cleanly."""
    if mosquitto_binary() is None:
        skip_unless_ci("mosquitto is not installed (Debian: apt-get install mosquitto)")
    out_dir = tmp_path / "demo-out"
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "coverwatch"),
                "demo",
                "--now",
                last_daylight_now(),
                "--history-hours",
                "6",
                "--http-port",
                "0",
                "--out",
                str(out_dir),
            ],
            env=demo_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        map_url = None
        while time.monotonic() < deadline and process.poll() is None:
            text = log_path.read_text(errors="replace")
            found = re.search(r"open (http://\S+/map)", text)
            if found and "live" in text.split(found[0], 1)[1]:
                map_url = found[1]
                break
            time.sleep(0.5)
        assert map_url, log_path.read_text(errors="replace")
        with urllib.request.urlopen(map_url, timeout=30) as response:  # noqa: S310 - loopback
            page = response.read().decode()
        assert response.status == 200
        assert "leaflet" in page.lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    output = log_path.read_text(errors="replace")
    assert "broker: mosquitto" in output
    check_summary(output, out_dir)
    assert leftovers(str(out_dir)) == []


@pytest.mark.slow
@pytest.mark.mosquitto
def test_demo_replays_a_full_day_up_to_a_night_hour(tmp_path: Path) -> None:
    """``make demo`` started at 13:00 UTC (20:00 in Vietnam) replays the whole day.

    The replay begins at 20:00 local the day before, when every off-grid kit is dark: it
    used to crash when the first of them came up at sunrise (``make demo`` failed when
    started between 12:00 and 23:30 UTC). Mosquitto keeps the day's replay under a minute.
    """
    if mosquitto_binary() is None:
        skip_unless_ci("mosquitto is not installed (Debian: apt-get install mosquitto)")
    out_dir = tmp_path / "demo-out"
    output = run_until_live_then_ctrl_c(
        [
            str(BIN / "coverwatch"),
            "demo",
            "--now",
            "2026-11-30T13:00:00Z",
            "--http-port",
            "0",
            "--out",
            str(out_dir),
        ],
        tmp_path / "demo.log",
        timeout_s=200,  # about 40 s on an idle machine; the replay is the long part
    )
    assert "Traceback" not in output, output
    # --now sets the clock: the replay starts 24 h before it (the first 5-minute step).
    assert "replaying history 29 Nov 13:05 UTC" in output, output
    simulated = re.search(r"(\d+) h simulated", output)
    assert simulated, output
    assert int(simulated[1]) >= 24, output
    check_summary(output, out_dir)
    # Accounting: nothing stored that was not taken; what was not stored waits in the
    # outboxes of the few kits whose link was down when their power went.
    counts = re.search(r"readings: ([0-9,]+) taken, ([0-9,]+) stored", output)
    assert counts, output
    taken, stored = (int(counts[i].replace(",", "")) for i in (1, 2))
    assert taken > 100_000, output  # a day of 320 kits, off-grid ones by day only
    assert taken * 0.99 <= stored <= taken, output
    assert leftovers(str(out_dir)) == []
