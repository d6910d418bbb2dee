"""Survey mode: signal readings tagged with gpsd's fix, written as a survey the server imports.

The GPS receiver is the hardware edge: a fake gpsd on a real TCP socket speaks gpsd's
JSON protocol with report lines captured from real gpsd (tests/data/README.md, "gps");
the agent reads it through the real gpsdclient library. The modems are the kit's
captured ModemManager output (tests/modem_kit.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import main as probe_main
from agent.clock import Clock
from agent.gps import GpsWatcher, fix_of
from agent.outbox import Outbox
from agent.scheduler import Agent
from agent.survey import COLUMNS, SurveyLog, survey_round
from geo import survey as geo_survey
from tests.modem_kit import KIT_TOML, kit_config, kit_runner, kit_sensors

GPS = Path(__file__).parent / "data" / "gps"


def captured(name: str) -> list[str]:
    return (GPS / name).read_text(encoding="utf-8").splitlines()


def test_a_fix_from_real_gpsd_reports() -> None:
    version, _devices, _watch, tpv, sky = captured("gpsd-3.25-ublox.jsonl")
    assert fix_of(json.loads(version), 0.0) is None
    assert fix_of(json.loads(sky), 0.0) is None
    fix = fix_of(json.loads(tpv), 7.0)
    assert fix is not None
    assert (fix.lon, fix.lat, fix.accuracy_m, fix.received_at) == (
        11.0709848,
        49.4307846,
        3.863,
        7.0,
    )
    (silicom,) = captured("gpsd-timing-card.jsonl")
    assert fix_of(json.loads(silicom), 0.0).accuracy_m == 0.956  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": 1}, "no fix"),
        ({"mode": 0}, "no mode seen yet"),
        ({"lat": None}, "no latitude"),
        ({"lon": "106.2"}, "a string"),
        ({"lat": 0, "lon": 0}, "0, 0: a receiver without a fix"),
        ({"lat": 95.0}, "out of range"),
        ({"lon": True}, "a boolean"),
    ],
)
def test_reports_without_a_usable_position_are_no_fix(
    change: dict[str, object], reason: str
) -> None:
    report = json.loads(captured("gpsd-3.25-ublox.jsonl")[3]) | change
    assert fix_of(report, 0.0) is None, reason


def test_accuracy_from_epx_and_epy_when_gpsd_gives_no_eph() -> None:
    report = json.loads(captured("gpsd-3.25-ublox.jsonl")[3])
    del report["eph"]
    fix = fix_of(report, 0.0)
    assert fix is not None
    assert fix.accuracy_m == pytest.approx((2.766**2 + 2.365**2) ** 0.5)
    report["epx"] = float("nan")
    assert fix_of(report, 0.0).accuracy_m is None  # type: ignore[union-attr]


class FakeGpsd:
    """gpsd's socket protocol on 127.0.0.1: the banner, then the lines it is told to send."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        self.sent = threading.Event()
        self.watch_requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            self.watch_requests.append(connection.recv(1024))
            for line in self.lines:
                connection.sendall(line.encode() + b"\n")
            self.sent.set()
            time.sleep(30)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def gpsd() -> Iterator[FakeGpsd]:
    fake = FakeGpsd()
    yield fake
    fake.close()


def test_the_watcher_follows_gpsd_and_forgets_an_old_fix(gpsd: FakeGpsd) -> None:
    gpsd.lines = captured("gpsd-3.25-ublox.jsonl")
    now = [100.0]
    watcher = GpsWatcher("127.0.0.1", gpsd.port, clock=lambda: now[0]).start()
    try:
        assert gpsd.sent.wait(10)
        deadline = time.monotonic() + 10
        while watcher.latest(5.0) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        fix = watcher.latest(5.0)
        assert fix is not None
        assert (fix.lat, fix.lon) == (49.4307846, 11.0709848)
        assert fix.gps_time == datetime(2025, 6, 25, 19, 9, 40, tzinfo=UTC)
        assert gpsd.watch_requests == [b'?WATCH={"enable":true,"json":true}\n']
        now[0] += 5.5  # the receiver has said nothing since: no position any more
        assert watcher.latest(5.0) is None
    finally:
        watcher.stop()


def test_without_gpsd_the_status_says_what_to_check() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    watcher = GpsWatcher("127.0.0.1", port).start()
    try:
        deadline = time.monotonic() + 10
        while "no gpsd" not in watcher.status and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.status.startswith(f"no gpsd at 127.0.0.1:{port}")
        assert "is gpsd running and the receiver plugged in?" in watcher.status
        assert watcher.latest(60) is None
    finally:
        watcher.stop()


def test_a_survey_of_a_kit_is_a_file_the_server_imports_as_such(
    gpsd: FakeGpsd, tmp_path: Path
) -> None:
    """Three modems, one without service: three points at the fix, the server reads them
    back as survey points (serving, serving, none) with the SIM's operator for the last."""
    gpsd.lines = captured("gpsd-3.25-ublox.jsonl")
    config = kit_config()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    agent = Agent(kit_sensors(config, kit_runner()), clock=Clock(), outbox=outbox)
    agent.schedule = [s for s in agent.schedule if s.sensor.name != "outbox"]
    watcher = GpsWatcher("127.0.0.1", gpsd.port).start()
    path = tmp_path / "walk.csv"
    log = SurveyLog(path).open()
    try:
        deadline = time.monotonic() + 10
        while watcher.latest(60) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        result = survey_round(agent.take_round, lambda: watcher.latest(60), log, "cb-kit")
        without = survey_round(agent.take_round, lambda: None, log, "cb-kit")
    finally:
        watcher.stop()
        log.close()
        outbox.close()
    assert (result.points, result.without_fix) == (3, False)
    assert (without.points, without.without_fix, without.signal_readings) == (0, True, 3)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 4

    # The captured fix is in Germany: the server imports it with --allow-outside-vietnam.
    parsed = geo_survey.parse_survey(
        path.read_text(encoding="utf-8"), timezone="UTC", allow_outside_vietnam=True
    )
    assert all(p.severity == "warning" for p in parsed.problems)
    parsed.problems.clear()
    assert parsed.problems == []
    by_device = {p.device: p for p in parsed.points}
    assert sorted(by_device) == ["cb-kit/mobifone", "cb-kit/viettel", "cb-kit/vinaphone"]
    viettel, mobifone = by_device["cb-kit/viettel"], by_device["cb-kit/mobifone"]
    assert (viettel.lon, viettel.lat, viettel.accuracy_m) == (11.0709848, 49.4307846, 3.9)
    assert (viettel.service, viettel.operator_code) == ("serving", "45204")
    assert viettel.rsrp_dbm is not None
    assert (mobifone.service, mobifone.operator_code, mobifone.rsrp_dbm) == ("none", "45201", None)


def test_the_log_is_appended_and_its_header_written_once(tmp_path: Path) -> None:
    path = tmp_path / "walk.csv"
    for _ in range(2):
        SurveyLog(path).open().close()
    assert path.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"


def test_the_survey_command_without_gpsd_writes_nothing_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "probe.toml"
    config.write_text(KIT_TOML, encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    output = tmp_path / "walk.csv"
    code = probe_main(
        [
            *("survey", "--config", str(config), "-o", str(output)),
            *("--gpsd", f"127.0.0.1:{port}", "--rounds", "1", "--interval-s", "0.1"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "round 1: no GPS position:" in out
    assert f"wrote 0 survey point(s) in 1 round(s), 1 without a GPS position, to {output}" in out
    assert output.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gpsd", ":2947"], "--gpsd ':2947' is not HOST:PORT"),
        (["--gpsd", "host:99999"], "--gpsd 'host:99999' is not HOST:PORT"),
        (["--interval-s", "nan"], "nan is out of range: give 0.1 to 3600 seconds"),
        (["--interval-s", "soon"], "'soon' is not a number of seconds"),
    ],
)
def test_bad_survey_options_say_how_to_fix_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    config = tmp_path / "probe.toml"
    config.write_text(KIT_TOML, encoding="utf-8")
    try:
        code = probe_main(
            ["survey", "--config", str(config), "-o", str(tmp_path / "w.csv"), *arguments]
        )
    except SystemExit as stop:
        code = int(stop.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
