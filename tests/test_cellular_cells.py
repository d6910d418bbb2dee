"""Cells: the serving and neighbour cells a modem sees, one ``cell`` reading each.

Parsers against captured replies (tests/data/README.md says where each comes from), and
the cellular sensor's cells round end to end with the hardware edge faked by captures:
its cadence (kept across restarts), and that a failing cell list never costs the
signal reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent.sensors import registered
from agent.sensors.base import SensorContext, SensorError
from agent.sensors.cellular import CellularSensor, Settings, check_entries
from agent.sensors.cellular.at_parsers.fibocom_cells import parse_gtccinfo_cells
from agent.sensors.cellular.at_parsers.quectel_cells import (
    parse_qeng_cells,
    parse_qeng_neighbours,
    parse_qeng_serving_cells,
    serving_technology,
)
from agent.sensors.cellular.at_parsers.simcom_cells import parse_cpsi_cells
from agent.sensors.cellular.at_session import AtReply
from agent.sensors.cellular.cells import (
    MAX_CELLS,
    STATE_FILE,
    CellInfo,
    CellsSchedule,
    CellsUnsupported,
    chosen_cells,
)
from agent.sensors.cellular.mmcli_cells import check_cell_info_error, parse_mmcli_cell_info
from agent.sensors.cellular.state import CellularState
from coverwatch import protocol
from coverwatch.protocol import CellReading, Reading, SensorErrorReading, SignalReading
from tests.sensor_fakes import DATA, CapturedRunner, ReplayedSerialPort, load_transcript, stamp

MMCLI = DATA / "mmcli"
AT = DATA / "at"
LATER = stamp().taken_at + timedelta(minutes=15)


def reply(*lines: str, error: str | None = None, timed_out: bool = False) -> AtReply:
    return AtReply("AT+QENG", tuple(lines), error=error, timed_out=timed_out)


def transcript_reply(transcript: str, command: str, occurrence: int = 0) -> AtReply:
    lines = list(load_transcript(AT / transcript)[command])[occurrence]
    final = lines[-1] if lines else ""
    body = tuple(line for line in lines[:-1] if line)
    return AtReply(command, body, error=None if final == "OK" else final)


def decoded(readings: Sequence[Reading]) -> list[Reading]:
    """What the collector's decoder makes of the readings (they must all pass)."""
    return [msgspec.json.decode(msgspec.json.encode(r), type=protocol.Reading) for r in readings]


REGISTERED_LTE = CellularState(
    registration="home", technology="lte", operator_code="21401", cell_id=124217865, tac=1539
)

# ------------------------------------------------------------------- Quectel AT+QENG


def test_quectel_lte_serving_cell_has_its_pci_and_earfcn() -> None:
    serving = transcript_reply("quectel-lte-cells.txt", 'AT+QENG="servingcell"')
    (cell,) = parse_qeng_serving_cells(serving)
    assert cell == CellInfo(
        serving=True,
        technology="lte",
        operator_code="21401",
        cell_id=0x7676A09,
        tac=0x603,
        pci=188,
        channel=6300,
        rsrp_dbm=-104,
        rsrq_db=-9,
        rssi_dbm=-78,
        sinr_db=11,
    )
    assert serving_technology(serving) == "lte"


def test_quectel_lte_neighbour_list_keeps_only_cells_seen() -> None:
    serving = transcript_reply("quectel-lte-cells.txt", 'AT+QENG="servingcell"')
    neighbours = transcript_reply("quectel-lte-cells.txt", 'AT+QENG="neighbourcell"')
    cells = parse_qeng_cells(serving, neighbours)
    # Everything the modem listed is parsed ...
    assert [(c.serving, c.technology, c.channel, c.pci) for c in cells] == [
        (True, "lte", 6300, 188),
        (False, "lte", 6300, 188),
        (False, "lte", 1501, None),
        (False, "lte", 3250, None),
        (False, "umts", 3062, None),
        (False, "umts", 10713, None),
    ]
    assert cells[1].rsrq_db == -12
    assert cells[1].rsrp_dbm == -105
    assert cells[1].sinr_db == -20
    # ... but the intra-frequency "neighbour" is the serving cell itself, and the others
    # are frequencies to watch with '-' for every value: one cell is sent.
    assert chosen_cells(cells, REGISTERED_LTE) == [cells[0]]


def test_quectel_lte_mode_neighbours_of_other_technologies() -> None:
    neighbours = reply(
        '+QENG: "neighbourcell intra","LTE",1415,249,-10,-104,-74,-20,19,7,6,6,44',
        '+QENG: "neighbourcell inter","LTE",39150,-,-,-,-,-,-,0,14,6',
        '+QENG: "neighbourcell","GSM",565,1,4,62,255,0,0,-1920,0',
        '+QENG: "neighbourcell","WCDMA",10713,3,16,2,302,-97,-9,12',
    )
    cells = parse_qeng_neighbours(neighbours, "lte")
    assert cells[0] == CellInfo(
        serving=False,
        technology="lte",
        channel=1415,
        pci=249,
        rsrq_db=-10,
        rsrp_dbm=-104,
        rssi_dbm=-74,
        sinr_db=-20,
    )
    gsm = cells[2]
    assert (gsm.technology, gsm.channel, gsm.pci, gsm.rssi_dbm) == ("gsm", 565, 0, -1920)
    assert (cells[3].technology, cells[3].pci, cells[3].rscp_dbm) == ("umts", 302, -97)
    chosen = chosen_cells(cells, REGISTERED_LTE)
    # -1920 dBm is no level: that GSM neighbour was not measured, so it is not sent; nor
    # is the inter-frequency EARFCN without a PCI. The strongest neighbour comes first.
    assert [(c.serving, c.technology, c.pci) for c in chosen] == [
        (True, "lte", None),
        (False, "umts", 302),
        (False, "lte", 249),
    ]
    # Neighbours named without a network are the serving network's.
    assert {c.operator_code for c in chosen} == {"21401"}
    readings = decoded([c.to_reading(stamp()) for c in chosen])
    assert all(isinstance(r, CellReading) for r in readings)


def test_quectel_gsm_mode_neighbours_carry_their_cell_id() -> None:
    serving = reply(
        '+QENG: "servingcell","NOCONN","GSM",460,00,247C,1327,35,82,-,-52,255,255,0,53,179,1,'
        '-,-,-,-,-,-,-,-,-,"-"'
    )
    neighbours = reply(
        '+QENG: "neighbourcell","GSM",460,00,24A5,1241,33,33,-83,22,146,0,0',
        '+QENG: "neighbourcell","GSM",460,00,2495,11C8,60,614,-87,12,128,0,0',
        '+QENG: "neighbourcell","GSM",460,00,247C,1326,58,16,-92,13,139,0,0',
        '+QENG: "neighbourcell","GSM",460,00,24A5,FCB,3,616,-90,9,125,0,0',
        '+QENG: "neighbourcell","GSM",460,00,2495,14B7,24,622,-93,6,124,0,0',
    )
    cells = parse_qeng_cells(serving, neighbours)
    assert cells[0].serving
    assert (cells[0].pci, cells[0].channel, cells[0].cell_id) == (
        35,
        82,
        0x1327,
    )
    assert cells[1] == CellInfo(
        serving=False,
        technology="gsm",
        operator_code="46000",
        tac=0x24A5,
        cell_id=0x1241,
        pci=33,
        channel=33,
        rssi_dbm=-83,
    )
    assert [c.cell_id for c in cells[1:]] == [0x1241, 0x11C8, 0x1326, 0xFCB, 0x14B7]


def test_quectel_wcdma_mode_layouts_differ_from_lte_mode() -> None:
    neighbours = reply(
        '+QENG: "neighbourcell","WCDMA",10737,0,305,-85,-6,0,0,22',
        '+QENG: "neighbourcell","LTE",1650,12,-95,-11,20',
    )
    umts, lte = parse_qeng_neighbours(neighbours, "umts")
    assert (umts.channel, umts.pci, umts.rscp_dbm, umts.ecio_db) == (10737, 305, -85, -6)
    assert (lte.channel, lte.pci, lte.rsrp_dbm, lte.rsrq_db) == (1650, 12, -95, -11)
    # Read in the LTE-mode layout the same WCDMA line would give another PSC: the
    # serving technology decides, and without one these lines are not guessed at.
    assert parse_qeng_neighbours(neighbours, "lte")[0].pci != 305
    assert parse_qeng_neighbours(neighbours, None) == []


def test_quectel_en_dc_has_two_serving_cells() -> None:
    serving = transcript_reply("quectel-rm520n-5g-nsa.txt", 'AT+QENG="servingcell"')
    anchor, nr = parse_qeng_serving_cells(serving)
    assert (anchor.technology, anchor.pci, anchor.channel, anchor.cell_id) == (
        "lte",
        427,
        1350,
        0x4940206,
    )
    assert (nr.technology, nr.pci, nr.channel, nr.rsrp_dbm, nr.sinr_db, nr.rsrq_db) == (
        "nr5g",
        920,
        648768,
        -96,
        18,
        -10,
    )
    assert serving_technology(serving) == "lte"
    # The registration names the LTE anchor's cell: it completes the anchor, not the NR leg.
    state = CellularState(registration="home", technology="nr5g", cell_id=77, tac=88)
    chosen = chosen_cells([anchor, nr], state)
    assert chosen[0].cell_id == 0x4940206
    assert chosen[1].cell_id is None


@pytest.mark.parametrize(
    "bad",
    [
        '+QENG: "neighbourcell intra","LTE",6300',  # truncated line
        '+QENG: "neighbourcell intra","LTE",abc,0x1F,-12,-105,-75,-20',  # garbage numbers
        '+QENG: "neighbourcell intra","NR5G",6300,188,-12,-105,-75,-20',  # no such layout
        '+QENG: "neighbourcell sideways","LTE",6300,188,-12,-105,-75,-20',
        "+QENG: ",
        '+QENG: "neighbourcell',
        "garbage \x00\xff line",
    ],
)
def test_a_bad_neighbour_line_costs_only_itself(bad: str) -> None:
    good = '+QENG: "neighbourcell intra","LTE",1415,249,-10,-104,-74,-20,19,7,6,6,44'
    cells = parse_qeng_neighbours(reply(good, bad, good), "lte")
    measured = [c for c in cells if c.identified() and c.measured()]
    assert [c.pci for c in measured] == [249, 249]


def test_an_unfinished_or_refused_qeng_reply_lists_no_cells() -> None:
    line = '+QENG: "neighbourcell intra","LTE",1415,249,-10,-104,-74,-20,19,7,6,6,44'
    assert parse_qeng_neighbours(reply(line, timed_out=True, error="no final result"), "lte") == []
    assert parse_qeng_neighbours(reply(error="ERROR"), "lte") == []
    assert parse_qeng_serving_cells(reply('+QENG: "servingcell","SEARCH"')) == []


# --------------------------------------------------------------------- SIMCom AT+CPSI?


def test_simcom_serving_cell_has_its_pci_and_earfcn() -> None:
    cpsi = transcript_reply("simcom-sim7600-lte-home.txt", "AT+CPSI?")
    (cell,) = parse_cpsi_cells(cpsi)
    assert (cell.technology, cell.operator_code, cell.cell_id, cell.tac) == (
        "lte",
        "46692",
        134534710,
        0x639D,
    )
    assert (cell.pci, cell.channel, cell.rsrp_dbm) == (430, 3050, -99.8)
    gsm = AtReply("AT+CPSI?", ("+CPSI: GSM,Online,262-03,0xe2d1,8926,754 DCS 1800,-88,0,18-18",))
    (cell,) = parse_cpsi_cells(gsm)
    assert (cell.technology, cell.channel, cell.pci, cell.cell_id) == ("gsm", 754, None, 8926)
    assert parse_cpsi_cells(AtReply("AT+CPSI?", ("+CPSI: NO SERVICE,Online",))) == []


# ------------------------------------------------------------ mmcli --get-cell-info


def test_mmcli_cell_info_lists_serving_and_neighbour_cells() -> None:
    cells = parse_mmcli_cell_info((MMCLI / "telit-le910c4-cell-info.json").read_text())
    assert cells[0] == CellInfo(
        serving=True,
        technology="lte",
        operator_code="26202",
        tac=0xC945,
        cell_id=0x197763E,
        pci=0x1A7,
        channel=6300,
        rsrp_dbm=-95,
        rsrq_db=-11,
    )
    assert [(c.serving, c.technology, c.pci, c.channel) for c in cells[1:]] == [
        (False, "lte", 0x1A8, 6300),
        (False, "lte", 0x4F, 1300),
        (False, "umts", 302, 10713),
        (False, "gsm", 35, 64),
    ]
    assert (cells[3].rscp_dbm, cells[3].ecio_db) == (-97, -9)
    # GSM "rx level" is the 0-63 RXLEV of TS 45.008: -110 dBm + the level.
    assert cells[4].rssi_dbm == -85
    assert cells[4].cell_id == 0x1A2B


def test_mmcli_cell_info_skips_what_it_cannot_read() -> None:
    text = msgspec.json.encode(
        {
            "modem": {
                "generic": {
                    "cell-info": [
                        "cell type: cdma, serving: yes, nid: 1",
                        "garbage",
                        42,
                        "cell type: lte, serving: no, physical ci: ZZ, earfcn: -5, rsrp: nan",
                        "cell type: 5gnr, serving: yes, physical ci: 131, nrarfcn: 648768, "
                        "rsrp: -96.000000, sinr: 18.000000, rsrq: -1.79769e+308",
                    ]
                }
            }
        }
    ).decode()
    garbled, nr = parse_mmcli_cell_info(text)
    assert (garbled.pci, garbled.channel, garbled.rsrp_dbm) == (None, None, None)
    assert (nr.technology, nr.pci, nr.channel, nr.sinr_db, nr.rsrq_db) == (
        "nr5g",
        0x131,
        648768,
        18,
        None,
    )
    for bad in ("not json", "[]", '{"modem": {"generic": {}}}'):
        with pytest.raises(SensorError):
            parse_mmcli_cell_info(bad)


def test_mmcli_unsupported_is_told_from_a_fault() -> None:
    unsupported = SensorError((MMCLI / "cell-info-unsupported.txt").read_text())
    assert isinstance(check_cell_info_error(unsupported), CellsUnsupported)
    assert isinstance(check_cell_info_error(SensorError("timed out")), SensorError)


# ------------------------------------------------------------- the sensor's cells round


def mmcli_runner(cell_info: str | Exception | None) -> CapturedRunner:
    answers: dict[tuple[str, ...], str | Path] = {
        ("mmcli", "-L", "-J"): MMCLI / "list-one.json",
        ("mmcli", "-m", "0", "-J"): MMCLI / "telit-le910c4-lte-roaming.json",
        ("mmcli", "-i", "0", "-J"): MMCLI / "telit-le910c4-sim.json",
        ("mmcli", "-m", "0", "--signal-get", "-J"): MMCLI / "telit-le910c4-signal.json",
        ("mmcli", "-m", "0", "--location-get", "-J"): MMCLI / "telit-le910c4-location.json",
    }
    if isinstance(cell_info, str):
        answers["mmcli", "-m", "0", "--get-cell-info", "-J"] = MMCLI / cell_info
    runner = CapturedRunner(answers)
    if isinstance(cell_info, Exception):
        failing = cell_info

        def run(argv: Sequence[str], timeout_s: float) -> str:
            if "--get-cell-info" in argv:
                runner.calls.append(tuple(argv))
                raise failing
            return runner(argv, timeout_s)

        return run  # type: ignore[return-value]
    return runner


def test_cells_come_one_interval_after_the_first_round(tmp_path: Path) -> None:
    runner = mmcli_runner("telit-le910c4-cell-info.json")
    sensor = CellularSensor(Settings(backend="mmcli"), run=runner, state_dir=tmp_path)
    (first,) = sensor.read(stamp())  # starts the clock: the signal reading alone
    assert isinstance(first, SignalReading)
    assert sensor.read(stamp(LATER - timedelta(minutes=1)))[1:] == []
    signal, *cells = decoded(sensor.read(stamp(LATER)))
    assert isinstance(signal, SignalReading)
    assert signal.registration == "roaming"
    assert all(isinstance(c, CellReading) for c in cells)
    assert [(c.serving, c.technology, c.pci) for c in cells] == [  # type: ignore[union-attr]
        (True, "lte", 0x1A7),
        (False, "gsm", 35),
        (False, "umts", 302),
        (False, "lte", 0x1A8),
        (False, "lte", 0x4F),
    ]
    serving = cells[0]
    assert isinstance(serving, CellReading)
    assert (serving.operator_code, serving.cell_id, serving.channel) == ("26202", 0x197763E, 6300)
    # Strongest neighbours first (-85 dBm RSSI, -97 RSCP, -101 and -108 RSRP), each
    # tagged with the network it belongs to.
    assert {c.operator_code for c in cells} == {"26202"}  # type: ignore[union-attr]
    # The next interval starts now.
    assert len(sensor.read(stamp(LATER + timedelta(minutes=14)))) == 1
    assert ("mmcli", "-m", "0", "--get-cell-info", "-J") in runner.calls


def test_the_cadence_holds_across_a_restart(tmp_path: Path) -> None:
    def sensor() -> CellularSensor:
        runner = mmcli_runner("telit-le910c4-cell-info.json")
        return CellularSensor(Settings(backend="mmcli"), run=runner, state_dir=tmp_path)

    assert len(sensor().read(stamp())) == 1
    assert len(sensor().read(stamp(LATER - timedelta(minutes=1)))) == 1
    assert len(sensor().read(stamp(LATER))) > 1
    assert len(sensor().read(stamp(LATER + timedelta(minutes=5)))) == 1
    # A clock that went back (no RTC before NTP) makes the cells due.
    assert len(sensor().read(stamp(stamp().taken_at - timedelta(days=300)))) > 1


def test_cells_off_is_never_asked(tmp_path: Path) -> None:
    runner = mmcli_runner(None)  # would fail the test if --get-cell-info were run
    sensor = CellularSensor(
        Settings(backend="mmcli", cells_interval_minutes=0), run=runner, state_dir=tmp_path
    )
    for minutes in (0, 15, 30, 600):
        assert len(sensor.read(stamp(stamp().taken_at + timedelta(minutes=minutes)))) == 1


def test_a_failing_cell_list_keeps_the_signal_and_reports_once() -> None:
    runner = mmcli_runner(SensorError("`mmcli -m 0 --get-cell-info -J` failed: timed out"))
    sensor = CellularSensor(Settings(backend="mmcli"), run=runner)
    sensor.read(stamp())
    signal, serving, error = decoded(sensor.read(stamp(LATER)))
    assert isinstance(signal, SignalReading)
    assert signal.rsrp_dbm is not None
    # The round's own serving cell still goes out.
    assert isinstance(serving, CellReading)
    assert serving.serving
    assert (serving.cell_id, serving.tac, serving.operator_code) == (0x197763E, 0xC945, "26202")
    assert isinstance(error, SensorErrorReading)
    assert error.sensor == "cellular"
    assert error.error.startswith("cells: ")
    # The same failure again: no second sensor_error.
    again = sensor.read(stamp(LATER + timedelta(minutes=15)))
    assert [type(r) for r in again] == [SignalReading, CellReading]


def test_an_unexpected_exception_in_the_cell_list_never_escapes() -> None:
    sensor = CellularSensor(Settings(backend="mmcli"), run=mmcli_runner(RuntimeError("boom")))
    sensor.read(stamp())
    kinds = [type(r) for r in sensor.read(stamp(LATER))]
    assert kinds == [SignalReading, CellReading, SensorErrorReading]


def test_unsupported_cell_info_is_a_note_not_an_error() -> None:
    unsupported = SensorError((MMCLI / "cell-info-unsupported.txt").read_text())
    sensor = CellularSensor(Settings(backend="mmcli"), run=mmcli_runner(unsupported))
    sensor.read(stamp())
    kinds = [type(r) for r in sensor.read(stamp(LATER))]
    assert kinds == [SignalReading, CellReading]


def at_sensor(
    transcript: str, tmp_path: Path, *, at_timeout_s: float = 5.0
) -> tuple[CellularSensor, list[ReplayedSerialPort]]:
    """A sensor on a replayed modem; every open of the port replays the transcript."""
    ports: list[ReplayedSerialPort] = []

    def open_port(name: str, baud: int, timeout_s: float) -> ReplayedSerialPort:
        ports.append(ReplayedSerialPort(AT / transcript))
        return ports[-1]

    settings = Settings(backend="at", at_timeout_s=at_timeout_s)
    return CellularSensor(settings, open_port=open_port, state_dir=tmp_path), ports


def test_quectel_cells_round_on_the_at_port(tmp_path: Path) -> None:
    sensor, ports = at_sensor("quectel-lte-cells.txt", tmp_path)
    (signal,) = sensor.read(stamp())
    assert isinstance(signal, SignalReading)
    assert signal.operator_code == "21401"
    readings = decoded(sensor.read(stamp(LATER)))
    assert [type(r) for r in readings] == [SignalReading, CellReading]
    cell = readings[1]
    assert isinstance(cell, CellReading)
    assert (cell.serving, cell.pci, cell.channel, cell.cell_id, cell.operator_code) == (
        True,
        188,
        6300,
        0x7676A09,
        "21401",
    )
    assert (cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db) == (-104, -9, 11)
    # The cells round has a port of its own, closed again, and asks only for the cells.
    assert len(ports) == 3
    assert ports[-1].sent == ['AT+QENG="servingcell"', 'AT+QENG="neighbourcell"']
    assert all(port.closed for port in ports)


def test_a_cut_short_cell_list_is_reported_and_the_round_goes_on(tmp_path: Path) -> None:
    sensor, _ports = at_sensor("quectel-lte-cells.txt", tmp_path, at_timeout_s=0.2)
    sensor.read(stamp())
    original = ReplayedSerialPort.write

    def mute_neighbours(port: ReplayedSerialPort, data: bytes, /) -> int:
        written = original(port, data)
        if b"neighbourcell" in data:
            port.pending.clear()
            port.pending.append(b'+QENG: "neighbourcell intra","LTE",6300\r\n')
        return written

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReplayedSerialPort, "write", mute_neighbours)
        readings = sensor.read(stamp(LATER))
    kinds = [type(r) for r in readings]
    assert kinds == [SignalReading, CellReading, SensorErrorReading]
    error = readings[-1]
    assert isinstance(error, SensorErrorReading)
    assert "neighbourcell" in error.error


def test_a_modem_without_a_cell_report_sends_its_registered_cell(tmp_path: Path) -> None:
    sensor, ports = at_sensor("fibocom-fm150-creg2.txt", tmp_path)
    sensor.read(stamp())
    for command, queue in load_transcript(AT / "fibocom-fm150-creg2.txt").items():
        ports[0].replies[command] = queue
    signal, cell = decoded(sensor.read(stamp(LATER)))
    assert isinstance(signal, SignalReading)
    assert isinstance(cell, CellReading)
    assert (cell.serving, cell.cell_id, cell.tac) == (True, signal.cell_id, signal.tac)
    assert cell.cell_id == 0x01BC7511
    assert cell.pci is None
    assert len(ports) == 2  # no port opened for a cell list this modem does not have


def test_at_most_max_cells_strongest_first() -> None:
    many = [
        CellInfo(serving=False, technology="lte", channel=6300, pci=n, rsrp_dbm=-140 + n)
        for n in range(40)
    ]
    chosen = chosen_cells(many, REGISTERED_LTE)
    assert len(chosen) == MAX_CELLS
    assert chosen[0].serving
    assert chosen[0].cell_id == REGISTERED_LTE.cell_id
    assert [c.pci for c in chosen[1:]] == list(range(39, 39 - MAX_CELLS + 1, -1))


def test_out_of_range_values_are_dropped_not_sent() -> None:
    cell = CellInfo(
        serving=False,
        technology="lte",
        operator_code="4520",
        cell_id=2**40,
        tac=-1,
        pci=5000,
        channel=-3,
        rsrp_dbm=30,
        rsrq_db=-99,
        sinr_db=99,
        rssi_dbm=5,
        rscp_dbm=0,
        ecio_db=3,
    )
    reading = cell.to_reading(stamp(), modem="x" * 300)
    assert decoded([reading]) == [reading]
    assert reading.modem == "x" * 255
    assert all(
        getattr(reading, name) is None
        for name in ("operator_code", "cell_id", "tac", "pci", "channel", "rsrp_dbm", "rsrq_db")
    )


def test_kit_modems_keep_their_own_cadence_and_name(tmp_path: Path) -> None:
    settings = Settings(backend="mmcli", name="viettel")
    sensor = CellularSensor(
        settings, run=mmcli_runner("telit-le910c4-cell-info.json"), state_dir=tmp_path
    )
    other = CellularSensor(
        Settings(backend="mmcli", name="mobifone"),
        run=mmcli_runner("telit-le910c4-cell-info.json"),
        state_dir=tmp_path,
    )
    sensor.read(stamp())
    assert len(sensor.read(stamp(LATER))) > 1
    assert len(other.read(stamp(LATER))) == 1  # its own clock starts now
    cells = [
        r for r in sensor.read(stamp(LATER + timedelta(minutes=15))) if isinstance(r, CellReading)
    ]
    assert cells
    assert {c.modem for c in cells} == {"viettel"}


def test_a_negative_interval_is_refused_with_a_hint() -> None:
    problems = check_entries([("[sensors.cellular]", {}, Settings(cells_interval_minutes=-5))])
    assert any("cells_interval_minutes -5" in p and "0 to read no cells" in p for p in problems)


def test_the_plugin_keeps_the_schedule_in_the_state_dir(tmp_path: Path) -> None:
    plugin = registered()["cellular"]
    sensor = plugin.create(Settings(backend="mmcli"), SensorContext(state_dir=tmp_path))
    assert isinstance(sensor, CellularSensor)
    sensor._modemmanager._run = mmcli_runner("telit-le910c4-cell-info.json")
    sensor.read(stamp())
    assert (tmp_path / STATE_FILE).exists()


# ------------------------------------------------------------- Fibocom AT+GTCCINFO?


def test_fibocom_gtccinfo_serving_and_neighbours() -> None:
    cells = parse_gtccinfo_cells(transcript_reply("fibocom-fm350-gtccinfo.txt", "AT+GTCCINFO?"))
    assert cells[0] == CellInfo(
        serving=True,
        technology="lte",
        operator_code="26202",
        tac=0x1A2B,
        cell_id=0x12345AB,
        channel=100,
        pci=42,
        rsrp_dbm=-112,  # index 29: -141 + 29
        rsrq_db=-18,  # index 4: -20 + 4/2
        sinr_db=-3.5,  # RSSNR -7 in 0.5 dB
    )
    # The neighbours' FFFF / 00FFFFFFF are "not known", not cell 0xFFFFFFF.
    assert [(c.serving, c.tac, c.cell_id, c.channel, c.pci, c.rsrp_dbm) for c in cells[1:]] == [
        (False, None, None, 9460, 71, -98),
        (False, None, None, 6300, 207, -99),
    ]
    nr = AtReply("AT+GTCCINFO?", ("+GTCCINFO:", "2,9,,,FFFFFF,00FFFFFFF,648768,920,57,50,52,75"))
    (cell,) = parse_gtccinfo_cells(nr)
    assert (cell.technology, cell.channel, cell.pci) == ("nr5g", 648768, 920)
    assert (cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db) == (-105, -6, 5)


@pytest.mark.parametrize(
    "bad",
    [
        "1,4,262,2,1A2B,0012345AB,100,42",  # truncated
        "2,4,262,2,1A2B,0012345AB,100,42,,,-7,29,29,4",  # a neighbour in the serving layout
        "1,2,262,2,1A2B,0012345AB,100,42,,,-7,29,29,4",  # WCDMA: another layout
        "3,4,,,FFFF,00FFFFFFF,9460,71,,43,43,10",
        "2,4,,,ZZZZ,garbage,x,y,,43,255,10",
    ],
)
def test_a_bad_gtccinfo_line_costs_only_itself(bad: str) -> None:
    good = "2,4,,,FFFF,00FFFFFFF,9460,71,,43,43,10"
    cells = parse_gtccinfo_cells(AtReply("AT+GTCCINFO?", ("+GTCCINFO:", good, bad, good)))
    assert [c.pci for c in cells if c.identified()] == [71, 71]
    assert parse_gtccinfo_cells(AtReply("AT+GTCCINFO?", (good,), error="ERROR")) == []


def test_fibocom_cells_round_on_the_at_port(tmp_path: Path) -> None:
    sensor, ports = at_sensor("fibocom-fm350-gtccinfo.txt", tmp_path)
    (signal,) = sensor.read(stamp())
    assert isinstance(signal, SignalReading)
    assert (signal.operator_code, signal.cell_id) == ("26202", 0x12345AB)
    readings = decoded(sensor.read(stamp(LATER)))
    cells = [r for r in readings if isinstance(r, CellReading)]
    assert [(c.serving, c.channel, c.pci, c.operator_code) for c in cells] == [
        (True, 100, 42, "26202"),
        (False, 9460, 71, "26202"),
        (False, 6300, 207, "26202"),
    ]
    assert ports[-1].sent == ["AT+GTCCINFO?"]


def test_a_cells_round_rewrites_one_sector_in_place_not_a_file(tmp_path: Path) -> None:
    """Every cells round (15 minutes, per modem) keeps the schedule: in place, one sector
    (agent.statefile), never a replaced file (~18 KB on the card each time)."""
    schedule = CellsSchedule(15, "cellular", tmp_path)
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert not schedule.due(now)  # starts the clock
    seen = set()
    for _ in range(4):
        now += timedelta(minutes=15)
        assert schedule.due(now)
        schedule.done(now)
        stat = (tmp_path / STATE_FILE).stat()
        seen.add((stat.st_ino, stat.st_size))
    assert len(seen) == 1  # the same file, the same size: written in place
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]
    # And it holds across a restart.
    again = CellsSchedule(15, "cellular", tmp_path)
    assert not again.due(now + timedelta(minutes=14))
    assert again.due(now + timedelta(minutes=15))


@pytest.mark.parametrize(
    ("mcc", "mnc", "code"),
    [
        ("452", "4", "45204"),  # Vietnam: 2-digit MNCs
        ("262", "2", "26202"),
        ("302", "720", "302720"),
        ("338", "50", None),  # Jamaica not in the table: 50 or 050? not guessed
        ("405", "25", None),
        ("405", "025", "405025"),  # printed with its zero: as printed
        ("338", "180", "338180"),
        ("452", "x", None),
    ],
)
def test_fibocom_networks_are_never_guessed(mcc: str, mnc: str, code: str | None) -> None:
    from agent.sensors.cellular.at_parsers.fibocom_cells import _network

    assert _network(mcc, mnc) == code
