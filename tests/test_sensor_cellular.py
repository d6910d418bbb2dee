"""The cellular sensor against captured mmcli JSON and AT transcripts (tests/data/)."""

from __future__ import annotations

import json
import os
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
from agent.sensors.cellular.state import CellularState
from coverwatch import protocol
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
        ("mmcli", "-i", "0", "-J"): MMCLI / "telit-le910c4-sim.json",
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
    # The SIM's home network (from `mmcli -i 0 -J`), not the network it roams on.
    assert reading.sim_operator_code == "29505"
    assert reading.modem is None  # a one-modem probe's readings name no modem
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


# ------------------------------------------- issue 13 item 4: decoder defects, real captures


def test_at_quectel_5g_standalone_reads_the_17_field_serving_cell() -> None:
    # RM5xx NR5G-SA line (4IceG/luci-app-3ginfo-lite#47): 17 fields, SINR the 15th.
    sensor, _ = at_sensor("quectel-rm5xx-5g-sa.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "nr5g"
    assert reading.operator_code == "310260"
    assert reading.cell_id == 0x14758F12F  # a 36-bit NR cell identity
    assert reading.tac == 0x59E700
    assert (reading.rsrp_dbm, reading.rsrq_db, reading.sinr_db) == (-89.0, -11.0, 19.0)


@pytest.mark.parametrize(
    ("line", "cell_id", "tac", "radio"),
    [
        # 4IceG/luci-app-3ginfo-lite#48: FDD n71, T-Mobile US.
        (
            '+QENG: "servingcell","NOCONN","NR5G-SA","FDD",310,260,939204254,24,60AA00,'
            "126490,71,1,-104,-13,11,0,-",
            0x939204254,
            0x60AA00,
            (-104.0, -13.0, 11.0),
        ),
        # NVlabs/sionna-rk#18: RM520N-GL camped with limited service on a test network.
        (
            '+QENG: "servingcell","LIMSRV","NR5G-SA","TDD",262,99,000BC614E,0,1,640320,77,'
            "1,-72,-10,29,1,57",
            0xBC614E,
            0x1,
            (-72.0, -10.0, 29.0),
        ),
    ],
)
def test_qeng_nr5g_sa_captures(
    line: str, cell_id: int, tac: int, radio: tuple[float, float, float]
) -> None:
    cell = cellular.parse_qeng(AtReply('AT+QENG="servingcell"', (line,)))
    assert cell is not None
    assert cell.technology == "nr5g"
    assert (cell.cell_id, cell.tac) == (cell_id, tac)
    assert (cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db) == radio


def test_at_simcom_sim7000_catm1_values_are_plain_db() -> None:
    # LilyGO-T-SIM7000G#16: a -113 dBm CAT-M1 cell, not an excellent one.
    sensor, port = at_sensor("simcom-sim7000g-catm1.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "lte"
    assert reading.operator_code == "310410"
    assert reading.cell_id == 111159055
    assert reading.tac == 0x9709
    assert reading.rsrp_dbm == -113.0
    assert reading.rsrq_db == -16.0
    assert reading.rssi_dbm == -83.0  # CPSI wins over CSQ 17 (-79 dBm)
    assert reading.sinr_db == 10.0
    assert "AT+CPSI?" in port.sent


def test_cpsi_gsm_line_from_a_sim7000() -> None:
    # botletics/SIM7000-LTE-Shield#129: the SIM7000 fell back to GSM (o2-de 262-03).
    reply = AtReply("AT+CPSI?", ("+CPSI: GSM,Online,262-03,0xe2d1,8926,754 DCS 1800,-88,0,18-18",))
    cell = cellular.parse_cpsi(reply)
    assert cell == cellular.ServingCell(
        technology="gsm", operator_code="26203", tac=0xE2D1, cell_id=8926, rssi_dbm=-88.0
    )


def test_at_generic_modem_reads_cell_id_and_lac_from_creg_n2() -> None:
    # Fibocom FM150 (4IceG/luci-app-3ginfo-lite#32): no vendor report, +CREG with <n>=2.
    sensor, port = at_sensor("fibocom-fm150-creg2.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "nr5g"  # <AcT> 13: E-UTRA-NR dual connectivity
    assert reading.operator_code == "26201"
    assert reading.operator_name == "Telekom.de"
    assert reading.cell_id == 0x01BC7511
    assert reading.tac == 0x5D4  # the LAC
    assert reading.rssi_dbm == -79.0
    assert "AT+CREG=2" in port.sent
    assert "AT+CEREG=2" in port.sent


@pytest.mark.parametrize(
    ("prefix", "line", "expected"),
    [
        # Sierra 312U (gammu/gammu#336): roaming on UMTS.
        ("+CREG", '+CREG: 2,5,"2AF5","0B88E350",2', ("roaming", 0x2AF5, 0x0B88E350, "umts")),
        # Fibocom L850-GL (4IceG/luci-app-3ginfo-lite#82): <stat> 6, home SMS only.
        ("+CREG", '+CREG: 2,6,"7D08","04E23C04",7', ("home", 0x7D08, 0x04E23C04, "lte")),
        # Sequans Monarch GMS01Q (vshymanskyy/TinyGSM#503).
        ("+CEREG", '+CEREG: 2,1,"3982","00DF3B03",7', ("home", 0x3982, 0x00DF3B03, "lte")),
        # SIMCom SIM7000 on GSM (botletics/SIM7000-LTE-Shield#129).
        ("+CREG", '+CREG: 2,5,"E2D1","22DE",0', ("roaming", 0xE2D1, 0x22DE, "gsm")),
        # Fibocom FM350-GL (4IceG/luci-app-3ginfo-lite#70): +CGREG adds <rac>.
        ("+CGREG", '+CGREG: 2,1,"1234","00123456",7,"FF"', ("home", 0x1234, 0x123456, "lte")),
        # Quectel BG96 (particle-iot/cloud-debug): <n> = 2 while still searching.
        ("+CGREG", "+CGREG: 2,0", ("idle", None, None, None)),
    ],
)
def test_registration_with_location_captures(
    prefix: str, line: str, expected: tuple[str, int | None, int | None, str | None]
) -> None:
    info = cellular.parse_registration_info(AtReply(f"AT{prefix}?", (line,)), prefix)
    assert info is not None
    assert (info.registration, info.area, info.cell_id, info.technology) == expected


def test_registration_skips_an_unsolicited_report_before_the_answer() -> None:
    # Quectel BG96 (particle-iot/cloud-debug): URCs arrive between a command and its
    # answer; '+CREG: 1,"D0B",...' is a URC (quoted second field), not <n>=1,<stat>=D0B.
    reply = AtReply("AT+CREG?", ('+CREG: 1,"D0B","C45C010",8', '+CREG: 2,1,"D0B","C45C010",8'))
    info = cellular.parse_registration_info(reply, "+CREG")
    assert info == cellular.RegistrationInfo("home", 0xD0B, 0xC45C010, "gsm")
    urc_only = AtReply("AT+CREG?", ("+CREG: 2",))
    assert cellular.parse_registration(urc_only, "+CREG") == "searching"


def test_at_quectel_bg96_qcsq_gives_sinr_and_the_cell_from_cereg() -> None:
    # particle-iot/cloud-debug BG96 trace: no +QENG, so +QCSQ carries the radio values.
    sensor, port = at_sensor("quectel-bg96-catm1-qcsq.txt")
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.technology == "lte"  # "CAT-M1", though +COPS <AcT> 8 reads as GSM
    assert reading.operator_code == "310410"
    assert reading.operator_name is None  # the numeric code is no name
    assert reading.cell_id == 205897744  # the log's own "cid=205897744 lac=3339"
    assert reading.tac == 3339
    assert reading.rssi_dbm == -62.0
    assert reading.rsrp_dbm == -101.0
    assert reading.rsrq_db == -20.0
    assert reading.sinr_db == pytest.approx(-5.8)  # 71 in 1/5 dB from -20 dB
    assert "AT+QCSQ" in port.sent


def test_qcsq_fills_what_qeng_lacks_but_never_overrides_it() -> None:
    qeng = cellular.parse_qeng(
        AtReply(
            'AT+QENG="servingcell"',
            (
                '+QENG: "servingcell","NOCONN","LTE","FDD",310,260,1452808,315,5035,12,2,2,'
                "3AFD,-104,-11,-78,-,20",
            ),
        )
    )
    qcsq = cellular.parse_qcsq(AtReply("AT+QCSQ", ('+QCSQ: "CAT-M1",-62,-101,71,-20',)))
    assert qeng is not None
    merged = qeng.filled_from(qcsq)
    assert merged.rsrp_dbm == -104.0
    assert merged.sinr_db == pytest.approx(-5.8)
    assert cellular.parse_qcsq(AtReply("AT+QCSQ", ('+QCSQ: "NOSERVICE"',))) is None


def test_at_truncated_reply_is_an_error_never_a_value() -> None:
    # +CSQ cut short ("+CSQ: 2", no final OK): not -109 dBm.
    port = ReplayedSerialPort(AT / "generic-csq-truncated.txt")
    ticks = iter(range(1_000_000))
    sensor = CellularSensor(
        Settings(backend="at"), open_port=lambda *_: port, clock=lambda: float(next(ticks))
    )
    reading = read_one(sensor)
    assert reading.registration == "home"
    assert reading.rssi_dbm is None
    assert reading.rsrp_dbm == -91.0  # the complete +CESQ still counts


def test_at_session_marks_a_reply_without_final_result_code() -> None:
    port = ReplayedSerialPort(AT / "generic-csq-truncated.txt")
    ticks = iter(range(1_000_000))
    session = cellular.AtSession(port, timeout_s=5, clock=lambda: float(next(ticks)))
    reply = session.command("AT+CSQ")
    assert reply.lines == ("+CSQ: 2",)
    assert reply.timed_out
    assert not reply.ok
    assert reply.fields("+CSQ") is None
    assert cellular.csq_rssi_dbm(reply) is None


def test_at_truncated_registration_is_an_error(tmp_path: Path) -> None:
    text = (AT / "generic-cesq-only.txt").read_text()
    transcript = tmp_path / "cut.txt"
    transcript.write_text(text.replace("+CEREG: 0,1\n\nOK\n", "+CEREG: 0,1\n"))
    port = ReplayedSerialPort(transcript)
    ticks = iter(range(1_000_000))
    sensor = CellularSensor(
        Settings(backend="at"), open_port=lambda *_: port, clock=lambda: float(next(ticks))
    )
    with pytest.raises(SensorError, match=r"did not finish answering AT\+CEREG\?"):
        sensor.read(stamp())
    assert port.closed


def test_at_sim_not_ready_is_explained() -> None:
    sensor, _ = at_sensor("quectel-sim-not-ready.txt")
    with pytest.raises(SensorError) as caught:
        sensor.read(stamp())
    message = str(caught.value)
    assert "not ready" in message
    assert "+CPIN: NOT READY" in message
    assert "needs NOT READY" not in message
    assert "PIN" not in message.replace("+CPIN", "")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("SIM PIN", r"asks for its PIN.*\(\+CPIN: SIM PIN\)"),
        ("SIM PUK", r"blocked.*PUK"),
        ("PH-NET PIN", r"locked to another SIM or network"),
        ("NOT INSERTED", r"no SIM card detected"),
    ],
)
def test_cpin_states_have_their_own_hint(status: str, expected: str) -> None:
    with pytest.raises(SensorError, match=expected):
        cellular.check_sim(AtReply("AT+CPIN?", (f"+CPIN: {status}",)))


def fake_mmcli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """An ``mmcli`` executable on PATH: the real runner, the real subprocess, captured
    output (the hardware edge is the only fake)."""
    binary = tmp_path / "bin"
    binary.mkdir()
    mmcli = binary / "mmcli"
    mmcli.write_text("#!/bin/sh\n" + script)
    mmcli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary}{os.pathsep}{os.environ['PATH']}")


def test_auto_falls_back_to_at_when_modemmanager_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mmcli's own message when the daemon is not on the bus (ModemManager cli/mmcli.c).
    fake_mmcli(
        tmp_path,
        monkeypatch,
        'echo "error: couldn\'t find the ModemManager process in the bus" >&2\nexit 1\n',
    )
    port = ReplayedSerialPort(AT / "quectel-ec25-lte-home.txt")
    sensor = CellularSensor(
        Settings(backend="auto"),
        open_port=lambda name, baud, timeout: port,
        port_exists=lambda name: name == "/dev/ttyUSB2",
    )
    reading = read_one(sensor)
    assert reading.technology == "lte"
    assert reading.cell_id == 0x1452808
    assert port.closed


def test_mmcli_backend_says_modemmanager_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mmcli(
        tmp_path,
        monkeypatch,
        'echo "error: couldn\'t find the ModemManager process in the bus" >&2\nexit 1\n',
    )
    with pytest.raises(SensorError, match=r"ModemManager does not answer.*systemctl start"):
        CellularSensor(Settings(backend="mmcli")).read(stamp())


def test_mmcli_output_with_an_invalid_utf8_byte_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mmcli(
        tmp_path,
        monkeypatch,
        f"""case "$*" in
  "-L -J") cat {MMCLI / "list-one.json"} ;;
  "-m 0 -J") cat {MMCLI / "huawei-e173-latin1-operator.json"} ;;
  "-m 0 --signal-get -J") cat {MMCLI / "signal-decimal-comma.json"} ;;
  *) echo "error: location not enabled" >&2; exit 1 ;;
esac
""",
    )
    reading = read_one(CellularSensor(Settings(backend="mmcli")))
    assert reading.registration == "home"
    assert reading.operator_code == "63102"
    assert reading.operator_name == "UNIT\ufffdL"
    assert reading.signal_quality_pct == 67.0


def test_mmcli_prefers_the_modem_with_a_sim() -> None:
    runner = CapturedRunner(
        {
            ("mmcli", "-L", "-J"): MMCLI / "list-two.json",
            ("mmcli", "-m", "0", "-J"): MMCLI / "sim-missing.json",
            ("mmcli", "-m", "2", "-J"): MMCLI / "telit-le910c4-lte-roaming.json",
            ("mmcli", "-m", "2", "--signal-get", "-J"): MMCLI / "telit-le910c4-signal.json",
            ("mmcli", "-m", "2", "--location-get", "-J"): MMCLI / "telit-le910c4-location.json",
            ("mmcli", "-i", "0", "-J"): MMCLI / "telit-le910c4-sim.json",
        }
    )
    reading = read_one(CellularSensor(Settings(backend="mmcli"), run=runner))
    assert reading.registration == "roaming"
    assert reading.operator_code == "26202"
    assert ("mmcli", "-m", "0", "--signal-get", "-J") not in runner.calls


def test_mmcli_without_any_sim_reports_the_first_modem() -> None:
    runner = CapturedRunner(
        {
            ("mmcli", "-L", "-J"): MMCLI / "list-two.json",
            ("mmcli", "-m", "0", "-J"): MMCLI / "sim-missing.json",
            ("mmcli", "-m", "2", "-J"): MMCLI / "sim-missing.json",
        }
    )
    with pytest.raises(SensorError, match=r"modem 0 failed \(sim-missing\)"):
        CellularSensor(Settings(backend="mmcli"), run=runner).read(stamp())


@pytest.mark.parametrize(
    ("sim", "has_sim"),
    [("/org/freedesktop/ModemManager1/SIM/0", True), ("/", False), ("--", False), (None, False)],
)
def test_mmcli_sim_path_says_whether_a_sim_is_there(sim: str | None, has_sim: bool) -> None:
    document = json.loads((MMCLI / "telit-le910c4-lte-roaming.json").read_text())
    if sim is None:
        del document["modem"]["generic"]["sim"]
    else:
        document["modem"]["generic"]["sim"] = sim
    assert cellular.parse_mmcli_modem(json.dumps(document)).has_sim is has_sim


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        ("VN Mob\x00ifone", "VN Mobifone"),
        ("Viettel\x07\x1b[0m", "Viettel[0m"),
        ("Vina\u00a0Phone", "Vina Phone"),
        ("\udcff\udcfeMobiFone", "MobiFone"),  # undecodable bytes kept as surrogates
        ("\x00\x00", None),
        ("", None),
        ("Ω" * 300, "Ω" * 255),
    ],
)
def test_operator_names_are_sent_printable(raw: str, sent: str | None) -> None:
    reading = CellularState(registration="home", operator_name=raw).to_reading(stamp())
    assert isinstance(reading, SignalReading)
    assert reading.operator_name == sent
    protocol.encode(protocol.ReadingsBatch(v=1, probe_id="cb-001", readings=[reading]))
