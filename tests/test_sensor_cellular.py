"""The cellular sensor against captured mmcli JSON and AT transcripts (tests/data/)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from agent.sensors import cellular, registered
from agent.sensors.base import SensorContext, SensorError
from agent.sensors.cellular import (
    AtReply,
    CellularSensor,
    Settings,
    parse_cesq,
    parse_mmcli_signal,
)
from coverwatch.protocol import SignalReading
from tests.sensor_fakes import DATA, CapturedRunner, ReplayedSerialPort, stamp

MMCLI = DATA / "mmcli"
AT = DATA / "at"


def mmcli_runner(
    modem: str,
    signal: str | None = None,
    location: str | None = "telit-le910c4-location.json",
    *,
    signal_after_setup: str | None = None,
) -> CapturedRunner:
    answers: dict[tuple[str, ...], str | Path] = {
        ("mmcli", "-L", "-J"): MMCLI / "list-one.json",
        ("mmcli", "-m", "0", "-J"): MMCLI / modem,
    }
    if signal is not None:
        answers["mmcli", "-m", "0", "--signal-get", "-J"] = MMCLI / signal
    if location is not None:
        answers["mmcli", "-m", "0", "--location-get", "-J"] = MMCLI / location
    if signal_after_setup is not None:
        answers["mmcli", "-m", "0", "--signal-setup=30"] = "successfully setup signal polling\n"
    return CapturedRunner(answers)


def read_one(sensor: CellularSensor) -> SignalReading:
    readings = list(sensor.read(stamp()))
    assert len(readings) == 1
    reading = readings[0]
    assert isinstance(reading, SignalReading)
    # Whatever the sensor builds must pass the collector's decoder.
    encoded = msgspec.json.encode(reading)
    assert msgspec.json.decode(encoded, type=SignalReading) == reading
    return reading


def at_sensor(transcript: str) -> tuple[CellularSensor, ReplayedSerialPort]:
    port = ReplayedSerialPort(AT / transcript)

    def open_port(name: str, baud: int, timeout_s: float) -> ReplayedSerialPort:
        assert (name, baud) == ("/dev/ttyUSB2", 115200)
        return port

    return CellularSensor(Settings(backend="at"), open_port=open_port), port


# ------------------------------------------------------------------------- mmcli


def test_mmcli_lte_roaming_reads_every_field() -> None:
    runner = mmcli_runner("telit-le910c4-lte-roaming.json", "telit-le910c4-signal.json")
    reading = read_one(CellularSensor(Settings(backend="mmcli"), run=runner))
    assert reading.registration == "roaming"
    assert reading.technology == "lte"
    assert reading.operator_code == "26202"
    assert reading.operator_name == "vodafone.de"
    assert reading.cell_id == 0x0197763E
    assert reading.tac == 0x00C945
    assert reading.rsrp_dbm == -104.0
    assert reading.rsrq_db is None  # "--" in the lte block (the 5g block's -14 is not LTE)
    assert reading.sinr_db == 2.0
    assert reading.rssi_dbm is None
    assert reading.rscp_dbm is None
    assert reading.ecio_db is None
    assert reading.signal_quality_pct == 75.0
    assert reading.boot_id == stamp().boot_id
    assert reading.seq == 0


def test_mmcli_umts_home_without_extended_values() -> None:
    runner = mmcli_runner("huawei-e173-umts-home.json", "signal-decimal-comma.json", location=None)
    runner.answers["mmcli", "-m", "0", "--location-get", "-J"] = "not json: location disabled"
    reading = read_one(CellularSensor(Settings(backend="mmcli"), run=runner))
    assert reading.registration == "home"
    assert reading.technology == "umts"
    assert reading.operator_code == "63102"
    assert reading.operator_name == "UNITEL"
    assert reading.signal_quality_pct == 67.0
    # The umts block is all "--": no invented RSCP; an unreadable location leaves no cell.
    assert reading.rscp_dbm is None
    assert reading.ecio_db is None
    assert reading.cell_id is None
    assert reading.tac is None


def test_mmcli_numbers_with_a_decimal_comma_parse() -> None:
    signal = parse_mmcli_signal((MMCLI / "signal-decimal-comma.json").read_text())
    assert signal.values["gsm"]["rssi"] == -67.0
    assert signal.values["lte"]["rsrp"] is None
    assert signal.refresh_s == 300.0


def test_mmcli_5g_nsa_reports_nr5g_with_the_nr_leg() -> None:
    runner = mmcli_runner("lte-5gnr-nsa-home.json", "lte-5gnr-nsa-signal.json")
    reading = read_one(CellularSensor(Settings(backend="mmcli"), run=runner))
    assert reading.registration == "home"
    assert reading.technology == "nr5g"
    assert reading.operator_code == "45204"
    assert reading.operator_name == "Viettel"
    assert (reading.rsrp_dbm, reading.rsrq_db, reading.sinr_db) == (-96.0, -10.0, 18.0)
    assert reading.rssi_dbm is None
    assert reading.signal_quality_pct == 81.0


@pytest.mark.parametrize(
    ("capture", "registration"),
    [("searching.json", "searching"), ("denied.json", "denied")],
)
def test_mmcli_no_service_is_a_reading_without_radio_values(
    capture: str, registration: str
) -> None:
    runner = mmcli_runner(capture, location=None)
    reading = read_one(CellularSensor(Settings(backend="mmcli"), run=runner))
    assert reading.registration == registration
    assert not reading.registered
    for name in ("technology", "operator_code", "operator_name", "cell_id", "tac", "rsrp_dbm"):
        assert getattr(reading, name) is None, name
    assert reading.signal_quality_pct is None
    # Not registered: the sensor does not even ask for signal values.
    assert ("mmcli", "-m", "0", "--signal-get", "-J") not in runner.calls


def test_mmcli_sets_up_signal_polling_once_when_it_is_off() -> None:
    runner = mmcli_runner(
        "telit-le910c4-lte-roaming.json",
        "signal-polling-off.json",
        signal_after_setup="telit-le910c4-signal.json",
    )
    sensor = CellularSensor(Settings(backend="mmcli"), run=runner)
    first = read_one(sensor)
    assert first.rsrp_dbm is None  # the capture after setup is still empty here
    second = read_one(sensor)
    assert second.registration == "roaming"
    assert runner.calls.count(("mmcli", "-m", "0", "--signal-setup=30")) == 1


def test_mmcli_sim_missing_is_an_error_with_a_hint() -> None:
    runner = mmcli_runner("sim-missing.json", location=None)
    with pytest.raises(SensorError, match=r"modem 0 failed \(sim-missing\).*insert or reseat"):
        CellularSensor(Settings(backend="mmcli"), run=runner).read(stamp())


def test_mmcli_disabled_modem_says_how_to_enable_it() -> None:
    runner = mmcli_runner("disabled.json", location=None)
    with pytest.raises(SensorError, match=r"modem 0 is disabled.*mmcli -m 0 --enable"):
        CellularSensor(Settings(backend="mmcli"), run=runner).read(stamp())


def test_mmcli_unknown_modem_index_is_explained() -> None:
    runner = mmcli_runner("telit-le910c4-lte-roaming.json")
    with pytest.raises(SensorError, match=r"no modem 3 \(it lists \[0\]\)"):
        CellularSensor(Settings(backend="mmcli", modem_index=3), run=runner).read(stamp())


def test_auto_falls_back_to_at_when_modemmanager_has_no_modem() -> None:
    runner = CapturedRunner({("mmcli", "-L", "-J"): MMCLI / "list-none.json"})
    port = ReplayedSerialPort(AT / "quectel-ec25-lte-home.txt")
    sensor = CellularSensor(
        Settings(backend="auto"),
        run=runner,
        open_port=lambda name, baud, timeout: port,
        port_exists=lambda name: name == "/dev/ttyUSB2",
    )
    assert read_one(sensor).technology == "lte"
    assert port.closed


def test_auto_without_mmcli_or_port_says_what_to_check() -> None:
    runner = CapturedRunner({}, missing=["mmcli"])
    sensor = CellularSensor(Settings(), run=runner, port_exists=lambda name: False)
    with pytest.raises(SensorError, match=r"mmcli is not installed.*no AT port /dev/ttyUSB2"):
        sensor.read(stamp())


# ---------------------------------------------------------------------------- AT


def test_at_quectel_lte_home() -> None:
    sensor, port = at_sensor("quectel-ec25-lte-home.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "lte"
    assert reading.operator_code == "310260"
    assert reading.operator_name == "T-Mobile"
    assert reading.cell_id == 0x1452808  # Quectel prints the cell id in hex
    assert reading.tac == 0x3AFD
    assert reading.rsrp_dbm == -104.0
    assert reading.rsrq_db == -11.0
    assert reading.rssi_dbm == -78.0
    assert reading.sinr_db == 12.0
    assert reading.rscp_dbm is None
    assert reading.signal_quality_pct is None
    assert 'AT+QENG="servingcell"' in port.sent
    assert port.closed


def test_at_quectel_wcdma_roaming() -> None:
    sensor, _ = at_sensor("quectel-wcdma-roaming.txt")
    reading = read_one(sensor)
    assert reading.registration == "roaming"
    assert reading.technology == "umts"
    assert reading.operator_code == "44010"
    assert reading.operator_name == "NTT DOCOMO"
    assert reading.cell_id == 0x6FE0090
    assert reading.tac == 0x75  # the LAC
    assert reading.rscp_dbm == -78.0
    assert reading.ecio_db == -3.0
    assert reading.rssi_dbm is None  # CSQ 99 and CESQ 99 both mean "not known"
    assert reading.rsrp_dbm is None


def test_at_quectel_gsm_home() -> None:
    sensor, _ = at_sensor("quectel-gsm-home.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "gsm"
    assert reading.operator_code == "51503"
    assert reading.operator_name == "SMART"
    assert reading.cell_id == 0x162C
    assert reading.tac == 0x2BC6
    assert reading.rssi_dbm == -81.0  # QENG's rxlev wins over CSQ 15 (-83 dBm)
    assert reading.rsrp_dbm is None


def test_at_quectel_5g_nsa() -> None:
    sensor, _ = at_sensor("quectel-rm520n-5g-nsa.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "nr5g"
    assert reading.operator_code == "22201"
    assert reading.operator_name == "WINDTRE"
    assert reading.cell_id == 0x4940206  # from the LTE anchor
    assert reading.tac == 0xBFF
    assert reading.rsrp_dbm == -96.0  # the NR leg
    assert reading.sinr_db == 18.0
    assert reading.rsrq_db == -10.0
    # The NR leg has no RSSI; the CSQ value is the LTE anchor's, so it stays.
    assert reading.rssi_dbm == -65.0


def test_at_searching_is_a_reading_not_an_error() -> None:
    sensor, port = at_sensor("quectel-searching.txt")
    reading = read_one(sensor)
    assert reading.registration == "searching"
    assert reading.technology is None
    assert reading.rsrp_dbm is None
    assert reading.rssi_dbm is None
    assert "AT+COPS?" not in port.sent


def test_at_no_service_denied() -> None:
    sensor, _ = at_sensor("simcom-no-service-denied.txt")
    reading = read_one(sensor)
    assert reading.registration == "denied"
    assert reading.operator_code is None
    assert reading.cell_id is None


def test_at_sim_missing_is_an_error() -> None:
    sensor, port = at_sensor("quectel-sim-missing.txt")
    with pytest.raises(SensorError, match=r"no SIM card detected \(\+CME ERROR: 10\)"):
        sensor.read(stamp())
    assert port.closed


def test_at_simcom_lte_home_with_echo_on() -> None:
    sensor, port = at_sensor("simcom-sim7600-lte-home.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "lte"
    assert reading.operator_code == "46692"
    assert reading.operator_name == "Chunghwa Telecom"
    assert reading.cell_id == 134534710  # decimal in CPSI
    assert reading.tac == 0x639D
    assert reading.rsrq_db == pytest.approx(-10.3)
    assert reading.rsrp_dbm == pytest.approx(-99.8)
    assert reading.rssi_dbm == pytest.approx(-72.2)
    assert reading.sinr_db == 13.0
    assert "AT+CPSI?" in port.sent
    assert 'AT+QENG="servingcell"' not in port.sent


def test_at_cesq_only_modem() -> None:
    sensor, _ = at_sensor("generic-cesq-only.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "lte"  # from +COPS AcT 7
    assert reading.operator_code == "45204"
    assert reading.operator_name == "Viettel"
    assert reading.rsrp_dbm == -91.0  # 50 - 141
    assert reading.rsrq_db == -7.0  # 26 / 2 - 20
    assert reading.rssi_dbm is None  # CSQ 99, CESQ rxlev 99
    assert reading.cell_id is None


def test_cesq_unknown_values_are_none() -> None:
    cesq = parse_cesq(AtReply("AT+CESQ", ("+CESQ: 99,99,255,255,255,255",)))
    assert (cesq.rssi_dbm, cesq.rscp_dbm, cesq.ecio_db, cesq.rsrq_db, cesq.rsrp_dbm) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_out_of_range_values_are_dropped_not_sent() -> None:
    # SIMCom's manual example prints raw indices (12,36,42) where dB values belong.
    state = cellular.state_from_at(
        ["home"],
        None,
        "46011",
        None,
        None,
        cellular.Cesq(),
        cellular.parse_cpsi(
            AtReply(
                "AT+CPSI?",
                ("+CPSI: LTE,Online,460-11,0x774B,126375687,303,EUTRAN-BAND1,100,5,0,12,36,42,5",),
            )
        ),
    )
    reading = state.to_reading(stamp())
    assert reading.rsrq_db == pytest.approx(1.2)  # in range, so kept
    assert reading.rsrp_dbm is None  # +3.6 dBm is impossible
    assert reading.rssi_dbm is None
    assert reading.sinr_db == 5.0
    assert reading.cell_id == 126375687


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of auto, mmcli, at"):
        CellularSensor(Settings(backend="qmi"))


def test_registered_as_a_plugin(tmp_path: Path) -> None:
    plugin = registered()["cellular"]
    assert plugin.enabled_by_default
    sensor = plugin.create(plugin.settings_type(), SensorContext(state_dir=tmp_path))
    assert sensor.name == "cellular"


def test_qeng_search_has_no_serving_cell() -> None:
    reply = AtReply('AT+QENG="servingcell"', ('+QENG: "servingcell","SEARCH"',))
    assert cellular.parse_qeng(reply) is None
