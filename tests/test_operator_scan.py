"""Operator scan: parsers fed with captured replies, the background scan's schedule and
bound, and the readings it gives (agent side; tests/test_operator_scan_storage.py stores
them in a real database)."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sensors import registered
from agent.sensors._system import CommandRunner
from agent.sensors.base import SensorContext, SensorError
from agent.sensors.cellular import CellularSensor, Settings, check_entries
from agent.sensors.cellular.at_parsers.cops_scan import parse_cops_scan
from agent.sensors.cellular.at_parsers.quectel_scan import parse_qscan
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.mmcli_scan import parse_mmcli_scan
from agent.sensors.cellular.modemmanager import ModemManagerBackend
from agent.sensors.cellular.scan import (
    OVERRUN_GRACE_S,
    OperatorScan,
    scan_over_at,
    scan_over_mmcli,
    scan_state_file,
)
from agent.sensors.cellular.scan_result import ScannedNetwork, ScanResult, scan_readings
from agent.statefile import SlotFile
from coverwatch import protocol
from coverwatch.protocol import OperatorScanReading, SensorErrorReading, SignalReading
from tests.sensor_fakes import DATA, CapturedRunner, ReplayedSerialPort, stamp

MMCLI = DATA / "mmcli"
AT = DATA / "at"
NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class TickingClock:
    """A monotonic clock that moves 1 s per look: an AT deadline passes without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def reply(*lines: str, error: str | None = None, timed_out: bool = False) -> AtReply:
    return AtReply("AT+COPS=?", tuple(lines), error=error, timed_out=timed_out)


def by_key(networks: list[ScannedNetwork]) -> dict[tuple[str, str | None], ScannedNetwork]:
    return {(n.operator_code, n.technology): n for n in networks}


def roundtrip(readings: list[protocol.Reading]) -> list[protocol.Reading]:
    """What the collector decodes of them: every reading must pass the real decoder."""
    batch = protocol.ReadingsBatch(v=1, probe_id="cb-001", readings=readings)
    decoded = protocol.decode_readings(protocol.readings_topic("cb-001"), protocol.encode(batch))
    assert decoded.rejected == ()
    return list(decoded.batch.readings)


# ------------------------------------------------------------------------ AT+COPS=?


def test_cops_scan_of_a_viettel_modem_lists_every_operator_and_technology() -> None:
    port = ReplayedSerialPort(AT / "scan-cops-viettel.txt")
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    assert result.method == "cops"
    assert port.sent == ["AT", "ATE0", "AT+COPS=?", "AT+CGMI"]
    assert port.closed
    readings = scan_readings(result, stamp(NOON), NOON - timedelta(minutes=2), modem="viettel")
    seen = {(r.operator_code, r.technology): r.status for r in readings}
    # Ten groups; VinaPhone's GSM is listed once (AcT 0), the merge keeps one per pair.
    assert seen == {
        ("45204", "lte"): "current",
        ("45204", "umts"): "available",
        ("45204", "gsm"): "available",
        ("45202", "lte"): "available",
        ("45202", "gsm"): "available",
        ("45202", "umts"): "available",
        ("45205", "lte"): "available",
        ("45205", "umts"): "available",
        ("45201", "lte"): "available",
        ("45201", "umts"): "available",
    }
    assert {r.networks_found for r in readings} == {10}
    assert {r.scan_started_at for r in readings} == {NOON - timedelta(minutes=2)}
    assert {r.modem for r in readings} == {"viettel"}
    names = {r.operator_code: r.operator_name for r in readings}
    assert names["45201"] == "VN Mobifone"
    assert roundtrip(list(readings)) == readings


def test_cops_scan_wrapped_over_lines_and_without_act() -> None:
    # Real: a Polish modem's reply wrapped over lines (a blog post's transcript), and an
    # Italian one without <AcT> (a Python modem library's test); see tests/data/README.md.
    polish = parse_cops_scan(
        reply(
            '+COPS: (2,"Plus","PLUS","26001",0),',
            '(1,"Plus","PLUS","26001",2),',
            '(3,"T-Mobile PL","T-Mobile PL","26002",2),',
            '(3,"Orange PL","Orange","26003",2),,(0-4),(0-2)',
        )
    )
    assert [(n.operator_code, n.technology, n.status) for n in polish] == [
        ("26001", "gsm", "current"),
        ("26001", "umts", "available"),
        ("26002", "umts", "forbidden"),
        ("26003", "umts", "forbidden"),
    ]
    italian = parse_cops_scan(
        reply(
            '+COPS: (2,"vodafone","voda IT","22210"),(3,"TELECOM ITALIA MOBILE","TIM","22201"),'
            '(3,"Wind Telecom SpA","I WIND","22288"),,(0-4),(0-2)'
        )
    )
    assert [(n.operator_code, n.technology, n.status) for n in italian] == [
        ("22210", None, "current"),
        ("22201", None, "forbidden"),
        ("22288", None, "forbidden"),
    ]


def test_a_scan_that_heard_nothing_is_one_reading_without_operator() -> None:
    port = ReplayedSerialPort(AT / "scan-cops-nothing.txt")
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    assert result.networks == ()
    readings = roundtrip(list(scan_readings(result, stamp(NOON), NOON)))
    assert len(readings) == 1
    only = readings[0]
    assert isinstance(only, OperatorScanReading)
    assert only.networks_found == 0
    assert only.operator_code is None
    assert only.status is None


def test_a_scan_cut_short_is_an_error_and_the_modem_is_told_to_stop() -> None:
    port = ReplayedSerialPort(AT / "scan-cops-cut-short.txt")
    with pytest.raises(SensorError, match=r"did not finish answering AT\+COPS=\?.*scan_timeout_s"):
        scan_over_at(Settings(backend="at", scan_timeout_s=30), lambda *_: port, TickingClock())
    # Any character aborts a running AT+COPS=?: the modem returns to its cell at once.
    assert port.sent[-1] == "AT"
    assert port.closed


def test_refused_or_garbled_replies() -> None:
    with pytest.raises(SensorError, match=r"refused AT\+COPS=\? \(\+CME ERROR: 3\)"):
        parse_cops_scan(reply(error="+CME ERROR: 3"))
    with pytest.raises(SensorError, match="no \\+COPS: line"):
        parse_cops_scan(reply("\ufffd\ufffd garbage"))
    # One bad group never costs the good ones: a code that is no MCC-MNC, an unknown
    # <stat>, a group too short, a name with characters the port could not decode.
    networks = parse_cops_scan(
        reply(
            '+COPS: (2,"Viettel","Viettel","45204",7),(1,"X","X","4520",7),(9,"Y","Y","45205",7),'
            '(1,"Z"),(1,"Mobif\ufffdne","M","45201",7),(1,"Odd, name","O","45208",2),,(0-4),(0-2)'
        )
    )
    assert [(n.operator_code, n.operator_name) for n in networks] == [
        ("45204", "Viettel"),
        ("45201", "Mobif\ufffdne"),
        ("45208", "Odd, name"),
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=5))
def test_cops_scan_parser_never_raises_anything_else(lines: list[str]) -> None:
    try:
        networks = parse_cops_scan(reply(*lines))
    except SensorError:
        return
    for network in networks:
        assert network.operator_code.isdigit()
        assert 5 <= len(network.operator_code) <= 6


# ---------------------------------------------------------------------- Quectel QSCAN


def test_quectel_scan_adds_each_operators_best_cell() -> None:
    port = ReplayedSerialPort(AT / "scan-quectel-qscan.txt")
    result = scan_over_at(Settings(backend="at"), lambda *_: port, TickingClock())
    assert result.method == "qscan"
    assert port.sent[-2:] == ["AT+QSCAN=?", "AT+QSCAN=3,1"]
    networks = by_key(list(result.networks))
    tmobile_lte = networks["310260", "lte"]
    assert (tmobile_lte.status, tmobile_lte.rsrp_dbm, tmobile_lte.rsrq_db) == ("available", -88, -8)
    assert (tmobile_lte.cell_id, tmobile_lte.tac) == (0x2DED616, 0x2D18)
    tmobile_nr = networks["310260", "nr5g"]  # heard by QSCAN only: status unknown
    assert (tmobile_nr.status, tmobile_nr.rsrp_dbm, tmobile_nr.cell_id, tmobile_nr.tac) == (
        "unknown",
        -76,
        0x105FB012D,
        0xA80000,
    )
    # Verizon's NR cell was heard without a level ("-"): the row stays, its levels None.
    verizon_nr = networks["311480", "nr5g"]
    assert (verizon_nr.rsrp_dbm, verizon_nr.tac, verizon_nr.cell_id) == (None, None, 0x8F46A001A)
    assert networks["311480", "lte"].rsrp_dbm == -99
    assert networks["310410", "lte"].rsrp_dbm is None  # AT&T listed, no cell of it measured
    readings = roundtrip(list(scan_readings(result, stamp(NOON), NOON)))
    assert len(readings) == len(networks) == 10


def test_qscan_rows_that_do_not_parse_are_left_out() -> None:
    cells = parse_qscan(
        AtReply(
            "AT+QSCAN=3,1",
            (
                '+QSCAN: "LTE",452,04,1850,123,-85,-10,30,20,1A2B3C,4D5E,100,3',
                '+QSCAN: "WCDMA",452,04,10700,1,-85',
                '+QSCAN: "LTE",4x2,04,1850,123,-85,-10',
                '+QSCAN: "LTE",452,01',
                '+QSCAN: "NR5G",452,04,627264,249,abc,-11,37,1,zz,C94B00',
            ),
        )
    )
    assert [(c.operator_code, c.technology, c.rsrp_dbm, c.cell_id) for c in cells] == [
        ("45204", "lte", -85, 0x1A2B3C),
        ("45204", "nr5g", None, None),
    ]
    with pytest.raises(SensorError, match="did not complete"):
        parse_qscan(
            AtReply("AT+QSCAN=3,1", ('+QSCAN: "LTE",452',), error="timeout", timed_out=True)
        )


# ------------------------------------------------------------------------------ mmcli


def test_mmcli_scan_json() -> None:
    networks = by_key(parse_mmcli_scan((MMCLI / "scan-pinephone.json").read_text()))
    assert {key: n.status for key, n in networks.items()} == {
        ("26202", "gsm"): "available",
        ("26203", "lte"): "available",
        ("26201", "gsm"): "available",
        ("26202", "lte"): "available",
        ("26201", "lte"): "current",
        ("26203", "gsm"): "available",
    }
    assert networks["26203", "lte"].operator_name == "o2 - de"
    assert parse_mmcli_scan((MMCLI / "scan-empty.json").read_text()) == []


def test_mmcli_scan_odd_entries() -> None:
    document = {
        "modem": {
            "3gpp": {
                "scan-networks": [
                    "operator-code: 45204, operator-name: Viettel, access-technologies: "
                    "gsm, umts, lte, availability: current",
                    "operator-code: --, operator-name: --, access-technologies: lte, "
                    "availability: available",
                    "operator-code: 45201, operator-name: --, access-technologies: unknown, "
                    "availability: forbidden",
                    "garbage",
                ]
            }
        }
    }
    networks = parse_mmcli_scan(json.dumps(document))
    assert [(n.operator_code, n.technology, n.status, n.operator_name) for n in networks] == [
        ("45204", "gsm", "current", "Viettel"),
        ("45204", "umts", "current", "Viettel"),
        ("45204", "lte", "current", "Viettel"),
        ("45201", None, "forbidden", None),
    ]
    with pytest.raises(SensorError, match="did not print JSON"):
        parse_mmcli_scan((MMCLI / "scan-pinephone.txt").read_text())
    with pytest.raises(SensorError, match="no scan-networks"):
        parse_mmcli_scan('{"modem": {"3gpp": {"imei": "1"}}}')


# -------------------------------------------------------- the sensor: schedule and bound


def scanning_mmcli_runner(scan: str | Path = MMCLI / "scan-pinephone.json") -> CapturedRunner:
    return CapturedRunner(
        {
            ("mmcli", "-L", "-J"): MMCLI / "list-one.json",
            ("mmcli", "-m", "0", "-J"): MMCLI / "telit-le910c4-lte-roaming.json",
            ("mmcli", "-m", "0", "--signal-get", "-J"): MMCLI / "telit-le910c4-signal.json",
            ("mmcli", "-m", "0", "--location-get", "-J"): MMCLI / "telit-le910c4-location.json",
            ("mmcli", "-i", "0", "-J"): MMCLI / "telit-le910c4-sim.json",
            ("mmcli", "-m", "0", "--3gpp-scan", "--timeout=240", "-J"): scan,
        }
    )


def scan_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "backend": "mmcli",
        "scan_interval_hours": 24.0,
        "scan_jitter_minutes": 0.0,
        "cells_interval_minutes": 0,  # cells have their own tests (test_cellular_cells)
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def test_scans_are_off_by_default(tmp_path: Path) -> None:
    runner = scanning_mmcli_runner()
    sensor = CellularSensor(Settings(backend="mmcli"), run=runner, state_dir=tmp_path)
    assert sensor.scan is None
    readings = sensor.read(stamp(NOON))
    assert [type(r) for r in readings] == [SignalReading]
    assert not any("--3gpp-scan" in call for call in runner.calls)
    assert list(tmp_path.glob("operator-scan*")) == []  # no schedule kept either


def test_a_due_scan_runs_in_the_background_and_its_readings_follow(tmp_path: Path) -> None:
    runner = scanning_mmcli_runner()
    sensor = CellularSensor(scan_settings(name="viettel"), run=runner, state_dir=tmp_path)
    assert sensor.scan is not None
    # The round that starts the scan takes no signal reading: the modem is scanning.
    assert sensor.read(stamp(NOON)) == []
    assert sensor.scan.wait(10)
    assert ("mmcli", "-m", "0", "--3gpp-scan", "--timeout=240", "-J") in runner.calls
    later = sensor.read(stamp(NOON + timedelta(minutes=3)))
    scans = [r for r in later if isinstance(r, OperatorScanReading)]
    assert len(scans) == 6
    assert {(r.scan_method, r.scan_started_at, r.networks_found, r.modem) for r in scans} == {
        ("mmcli", NOON, 6, "viettel")
    }
    assert isinstance(later[-1], SignalReading)
    assert roundtrip(later) == later
    # Not due again within the interval: signal only, and the scan is not repeated.
    again = sensor.read(stamp(NOON + timedelta(hours=23)))
    assert [type(r) for r in again] == [SignalReading]
    scans_run = [call for call in runner.calls if "--3gpp-scan" in call]
    assert len(scans_run) == 1
    state = SlotFile(tmp_path / "operator-scan-viettel").load()
    assert isinstance(state, dict)
    assert datetime.fromisoformat(state["next_due_at"]) == NOON + timedelta(hours=24)


def test_a_restart_does_not_rescan_and_the_next_scan_waits_for_the_interval(
    tmp_path: Path,
) -> None:
    first = CellularSensor(scan_settings(), run=scanning_mmcli_runner(), state_dir=tmp_path)
    assert first.read(stamp(NOON)) == []
    assert first.scan is not None
    assert first.scan.wait(10)
    runner = scanning_mmcli_runner()
    rebooted = CellularSensor(scan_settings(), run=runner, state_dir=tmp_path)
    assert [type(r) for r in rebooted.read(stamp(NOON + timedelta(hours=1)))] == [SignalReading]
    assert rebooted.read(stamp(NOON + timedelta(hours=24))) == []  # due: scanning
    assert rebooted.scan is not None
    assert rebooted.scan.wait(10)
    assert len([call for call in runner.calls if "--3gpp-scan" in call]) == 1


def test_the_first_scan_waits_for_the_jitter_and_for_ntp(tmp_path: Path) -> None:
    runner = scanning_mmcli_runner()
    sensor = CellularSensor(scan_settings(), run=runner, state_dir=tmp_path)
    # Without NTP the clock of a Pi is not to be trusted: no scan, signal as usual.
    assert [type(r) for r in sensor.read(stamp(NOON, ntp_synced=False))] == [SignalReading]
    assert not any("--3gpp-scan" in call for call in runner.calls)
    scans: list[datetime] = []

    def counted_scan() -> ScanResult:
        scans.append(NOON)
        return ScanResult("cops", ())

    jittered = OperatorScan(
        scan_settings(scan_jitter_minutes=30.0),
        tmp_path / "jitter",
        counted_scan,
        sensor_name="cellular",
        uniform=lambda low, high: 20.0,  # the random delay: 20 of at most 30 minutes
    )
    signal = SignalReading(**stamp(NOON).base(), registration="home")
    assert jittered.around(stamp(NOON), lambda: signal) == [signal]
    assert jittered.around(stamp(NOON + timedelta(minutes=19)), lambda: signal) == [signal]
    assert jittered.around(stamp(NOON + timedelta(minutes=20)), lambda: signal) == []
    assert jittered.wait(10)
    assert len(scans) == 1


def test_a_failed_scan_is_a_sensor_error_beside_the_signal(tmp_path: Path) -> None:
    runner = scanning_mmcli_runner()
    runner.answers.pop(("mmcli", "-m", "0", "--3gpp-scan", "--timeout=240", "-J"))
    sensor = CellularSensor(scan_settings(), run=runner, state_dir=tmp_path)
    assert sensor.read(stamp(NOON)) == []
    assert sensor.scan is not None
    assert sensor.scan.wait(10)
    readings = sensor.read(stamp(NOON + timedelta(minutes=3)))
    assert [type(r) for r in readings] == [SensorErrorReading, SignalReading]
    error = readings[0]
    assert isinstance(error, SensorErrorReading)
    assert error.sensor == "cellular:scan"
    assert error.error.startswith("operator scan failed: unexpected command")


def test_a_failing_signal_reading_never_costs_the_scan_readings(tmp_path: Path) -> None:
    runner = scanning_mmcli_runner()
    sensor = CellularSensor(scan_settings(), run=runner, state_dir=tmp_path)
    assert sensor.read(stamp(NOON)) == []
    assert sensor.scan is not None
    assert sensor.scan.wait(10)
    runner.answers["mmcli", "-m", "0", "-J"] = MMCLI / "sim-missing.json"
    readings = sensor.read(stamp(NOON + timedelta(minutes=3)))
    assert [type(r) for r in readings] == [OperatorScanReading] * 6 + [SensorErrorReading]
    error = readings[-1]
    assert isinstance(error, SensorErrorReading)
    assert error.sensor == "cellular"
    assert "no SIM card" in error.error


def test_a_scan_that_overruns_its_bound_lets_signal_readings_resume(tmp_path: Path) -> None:
    release = threading.Event()
    clock = [0.0]

    def hung_scan() -> ScanResult:
        release.wait(30)
        return ScanResult("cops", ())

    settings_ = scan_settings(scan_timeout_s=60.0)
    scan = OperatorScan(
        settings_, tmp_path, hung_scan, sensor_name="cellular", monotonic=lambda: clock[0]
    )
    signal = SignalReading(**stamp(NOON).base(), registration="home")
    assert scan.around(stamp(NOON), lambda: signal) == []
    clock[0] = 60.0 + OVERRUN_GRACE_S  # at its bound plus the grace: still waiting
    assert scan.around(stamp(NOON), lambda: signal) == []
    clock[0] += 1
    overrun = scan.around(stamp(NOON), lambda: signal)
    assert [type(r) for r in overrun] == [SensorErrorReading, SignalReading]
    assert "still running" in overrun[0].error  # type: ignore[union-attr]
    assert scan.around(stamp(NOON), lambda: signal) == [signal]  # reported once
    release.set()
    assert scan.wait(10)
    finished = scan.around(stamp(NOON), lambda: signal)
    assert [type(r) for r in finished] == [OperatorScanReading, SignalReading]


def test_scan_settings_are_checked_with_their_fix() -> None:
    entries: list[tuple[str, dict[str, object], Settings]] = [
        ("[sensors.cellular]", {}, Settings(scan_interval_hours=0.5, scan_timeout_s=5)),
    ]
    problems = check_entries(entries)
    assert any("scan_interval_hours 0.5: use 0 (no scans) or at least 1" in p for p in problems)
    assert any("scan_timeout_s 5: use 30-900 seconds" in p for p in problems)
    assert check_entries([("[sensors.cellular]", {}, Settings(scan_interval_hours=24))]) == []


def test_the_protocol_refuses_an_inconsistent_scan_reading() -> None:
    base = stamp(NOON).base()
    common = {**base, "kind": "operator_scan", "scan_started_at": NOON, "scan_method": "cops"}
    for bad in (
        {**common, "networks_found": 0, "operator_code": "45204", "status": "available"},
        {**common, "networks_found": 2, "status": "available"},
        {**common, "networks_found": 2, "operator_code": "45204"},
        {**common, "networks_found": 2, "operator_code": "45204", "status": "roaming"},
        {**common, "networks_found": -1},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(bad), type=protocol.Reading)


def test_one_shot_commands_never_start_a_scan(tmp_path: Path) -> None:
    # `coverwatch-probe once` and `doctor` read the sensors once and exit: a scan would
    # cut the connection, die with the process, and push the daemon's next scan a day on.
    plugin = registered()["cellular"]
    daemon = plugin.create(scan_settings(), SensorContext(state_dir=tmp_path))
    one_shot = plugin.create(
        scan_settings(), SensorContext(state_dir=tmp_path, background_work=False)
    )
    assert isinstance(daemon, CellularSensor)
    assert isinstance(one_shot, CellularSensor)
    assert daemon.scan is not None
    assert one_shot.scan is None


def test_mmcli_reports_an_empty_scan_as_a_failure_that_is_read_as_nothing_heard() -> None:
    # mmcli exits 1 when the scan's list is empty (cli/mmcli-modem-3gpp.c takes the NULL
    # list for a failure, with no message of ModemManager's to print); a real failure
    # (here GDBus's own timeout text, mmcli's --timeout spent) stays an error.
    scan_argv = ("mmcli", "-m", "0", "--3gpp-scan", "--timeout=240", "-J")

    def runner_failing_with(stderr: str) -> CommandRunner:
        captured = scanning_mmcli_runner()

        def run(argv: Sequence[str], timeout_s: float) -> str:
            if tuple(argv) == scan_argv:
                raise SensorError(f"`{' '.join(argv)}` failed: {stderr}")
            return captured(argv, timeout_s)

        return run

    settings_ = scan_settings()
    empty = runner_failing_with("error: couldn't scan networks in the modem: 'unknown error'")
    nothing = scan_over_mmcli(settings_, ModemManagerBackend(settings_, empty), empty)
    assert nothing == ScanResult("mmcli", ())
    timeout = runner_failing_with(
        "error: couldn't scan networks in the modem: 'Timeout was reached'"
    )
    with pytest.raises(SensorError, match="Timeout was reached"):
        scan_over_mmcli(settings_, ModemManagerBackend(settings_, timeout), timeout)


def _scan_of(state_dir: Path) -> OperatorScan:
    settings = Settings(backend="mmcli", scan_interval_hours=24.0, scan_jitter_minutes=0.0)
    return OperatorScan(settings, state_dir, lambda: ScanResult("cops", ()), sensor_name="cellular")


def test_a_scan_schedule_the_card_refuses_never_costs_the_signal_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full SD card: the scan's schedule cannot be kept, yet the modem scans once, not
    round after round, and the signal readings go on."""

    def disk_full(self: SlotFile, document: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(SlotFile, "write", disk_full)
    scans: list[int] = []

    def scan_once() -> ScanResult:
        scans.append(1)
        return ScanResult("cops", ())

    settings = Settings(backend="mmcli", scan_interval_hours=24.0, scan_jitter_minutes=0.0)
    scan = OperatorScan(settings, tmp_path, scan_once, sensor_name="cellular")
    signal = SignalReading(**stamp(NOON).base(), registration="home")
    assert scan.around(stamp(NOON), lambda: signal) == []  # the first scan starts
    assert scan.wait(10)
    for minute in range(1, 5):
        readings = scan.around(stamp(NOON + timedelta(minutes=minute)), lambda: signal)
        assert signal in readings
    assert scans == [1]


@pytest.mark.parametrize(
    "document",
    [
        {"next_due_at": "2026-11-23T12:00:00"},  # no time zone
        {"next_due_at": 12},
        {"next_due_at": "tomorrow", "last_started_at": ["x"]},
        ["not", "a", "mapping"],
    ],
)
def test_a_scan_schedule_stored_wrong_never_costs_the_signal_reading(
    tmp_path: Path, document: object
) -> None:
    """Read as no schedule at all (a scan within the jitter), never an error out of the
    sensor; the schedule is written afresh."""
    path = tmp_path / scan_state_file("")
    SlotFile(path).write(document)
    scan = _scan_of(tmp_path)
    signal = SignalReading(**stamp(NOON).base(), registration="home")
    scan.around(stamp(NOON), lambda: signal)  # the scan starts: no reading this round
    assert scan.wait(10)
    assert signal in scan.around(stamp(NOON + timedelta(minutes=3)), lambda: signal)
    stored = SlotFile(path).load()
    assert isinstance(stored, dict)
    assert datetime.fromisoformat(stored["next_due_at"]) == NOON + timedelta(hours=24)
