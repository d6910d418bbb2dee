"""Multi-modem kits: ``[[sensors.cellular]]`` tables, each bound to one modem by a stable
identity, each reading tagged with its modem and its SIM's home network.

The hardware edge is the only fake: mmcli answers are the captured Telit JSON
(tests/data/mmcli) with the identity, SIM and operator of each of three modems changed
(tests/data/README.md says what), AT replies are a captured Quectel transcript. The
config loader, the sensors, the scheduler and the outbox are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from agent import config as probe_config
from agent.cli import main as probe_main
from agent.clock import Clock
from agent.outbox import Outbox
from agent.scheduler import Agent, ScheduledSensor, build_sensors
from agent.sensors.base import SensorContext, SensorError, plugin_of
from agent.sensors.cellular import (
    CellularSensor,
    Settings,
    home_network,
    parse_mmcli_modem,
    parse_mmcli_sim,
)
from coverwatch import protocol
from coverwatch.protocol import SensorErrorReading, SignalReading
from tests.modem_kit import (
    KIT_TOML,
    MOBIFONE_ID,
    VIETTEL_IMEI,
    VINAPHONE_USB,
    kit_config,
    kit_runner,
    kit_sensors,
)
from tests.sensor_fakes import DATA, CapturedRunner, ReplayedSerialPort, stamp

MMCLI = DATA / "mmcli"
AT = DATA / "at"
SAMPLE = Path(__file__).resolve().parent.parent / "agent" / "probe.sample.toml"


def read_all(sensors: list[ScheduledSensor]) -> dict[str, SignalReading]:
    readings: dict[str, SignalReading] = {}
    for scheduled in sensors:
        (reading,) = scheduled.sensor.read(stamp())
        assert isinstance(reading, SignalReading)
        # Whatever the sensor builds must pass the collector's decoder.
        assert msgspec.json.decode(msgspec.json.encode(reading), type=SignalReading) == reading
        readings[scheduled.sensor.name] = reading
    return readings


# ----------------------------------------------------------------------- the config


def test_a_three_modem_kit_is_three_cellular_sensors(tmp_path: Path) -> None:
    config = kit_config()
    cellular = {name: s for name, s in config.sensors.items() if plugin_of(name) == "cellular"}
    assert sorted(cellular) == ["cellular.mobifone", "cellular.viettel", "cellular.vinaphone"]
    assert cellular["cellular.viettel"][1].imei == VIETTEL_IMEI
    assert cellular["cellular.vinaphone"][1].usb_path == VINAPHONE_USB
    assert cellular["cellular.mobifone"][1].device_id == MOBIFONE_ID
    assert all(schedule.interval_s == 60 for schedule, _ in cellular.values())
    # The daemon's own factory: one sensor per table, each with its name.
    built = build_sensors(config.sensors, SensorContext(state_dir=tmp_path))
    names = [s.sensor.name for s in built]
    assert [n for n in names if n.startswith("cellular")] == sorted(cellular)
    assert {"latency", "power", "system"} <= set(names)


def test_one_cellular_table_keeps_todays_behaviour() -> None:
    config = kit_config(KIT_TOML.split("[[sensors.cellular]]")[0] + "[sensors.cellular]\n")
    _schedule, settings = config.sensors["cellular"]
    assert settings == Settings()
    assert CellularSensor(settings).name == "cellular"


def test_every_kit_mistake_is_listed_with_its_fix() -> None:
    text = """
[probe]
id = "cb-017"
[mqtt]
url = "mqtt://127.0.0.1:1883"

[[sensors.cellular]]
name = "viettel"
modem_index = 0

[[sensors.cellular]]
name = "viettel"
imei = "86153603019600"

[[sensors.cellular]]
imei = "861536030196001"

[[sensors.cellular]]
name = "Mobi Fone"
usb_path = "usb1"
imei = "861536030196001"

[[sensors.cellular]]
name = "at1"
backend = "at"

[[sensors.cellular]]
name = "at2"
backend = "at"
port = "/dev/serial/by-id/usb-Quectel_EC25-if02-port0"

[[sensors.cellular]]
name = "at3"
backend = "at"
port = "/dev/serial/by-id/usb-Quectel_EC25-if02-port0"
"""
    with pytest.raises(probe_config.ProbeConfigError) as caught:
        kit_config(text)
    problems = caught.value.problems
    expected = [
        "#1 (viettel) modem_index: not allowed with several modems",
        "#1 (viettel) needs the modem's identity: set imei",
        "#2 (viettel) name 'viettel' is used by an earlier table",
        "#2 (viettel) imei '86153603019600': an IMEI is 15 digits",
        "#3 name is required",
        "#4 (Mobi Fone) name 'Mobi Fone': use 1-32 lowercase letters",
        "#4 (Mobi Fone) usb_path 'usb1': write the USB port part",
        "#4 (Mobi Fone) imei '861536030196001': [[sensors.cellular]] #3 has the same IMEI",
        "#5 (at1) port: with several modems each AT modem needs its own port",
        "#7 (at3) port '/dev/serial/by-id/usb-Quectel_EC25-if02-port0' is also the port of "
        "[[sensors.cellular]] #6 (at2)",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert len(problems) == len(expected), problems
    assert all(problem.startswith("[[sensors.cellular]] #") for problem in problems)


def test_the_sample_shows_a_three_modem_kit_that_loads() -> None:
    sample = SAMPLE.read_text(encoding="utf-8")
    example = sample.split("\n## [[sensors.cellular]]\n", 1)[1].split("\n[sensors.", 1)[0]
    tables = "[[sensors.cellular]]\n" + "\n".join(
        line.removeprefix("##").removeprefix(" ") for line in example.splitlines()
    )
    config = kit_config(KIT_TOML.split("[[sensors.cellular]]")[0] + tables)
    assert sorted(n for n in config.sensors if plugin_of(n) == "cellular") == [
        "cellular.mobifone",
        "cellular.viettel",
        "cellular.vinaphone",
    ]


# ------------------------------------------------------------------ the sensors


def test_each_modem_is_read_by_its_identity_and_tagged() -> None:
    readings = read_all(kit_sensors(kit_config(), kit_runner()))
    viettel = readings["cellular.viettel"]
    assert (viettel.modem, viettel.registration, viettel.operator_code) == (
        "viettel",
        "home",
        "45204",
    )
    assert viettel.sim_operator_code == "45204"
    assert viettel.rsrp_dbm == -104.0
    vinaphone = readings["cellular.vinaphone"]
    assert (vinaphone.modem, vinaphone.operator_code, vinaphone.sim_operator_code) == (
        "vinaphone",
        "45202",
        "45202",
    )
    # No service: no radio values, no network, but the SIM says whose coverage is missing
    # (MCC 452 has 2-digit MNCs: 45201, from IMSI 452011122334455).
    mobifone = readings["cellular.mobifone"]
    assert mobifone.registration == "searching"
    assert (mobifone.modem, mobifone.operator_code, mobifone.sim_operator_code) == (
        "mobifone",
        None,
        "45201",
    )


def test_modems_renumbered_after_a_reboot_are_still_found() -> None:
    """ModemManager's index changes when modems re-enumerate; the identity does not."""
    sensors = kit_sensors(kit_config(), kit_runner((0, 1, 2)))
    before = {name: r.sim_operator_code for name, r in read_all(sensors).items()}
    for scheduled in sensors:
        assert isinstance(scheduled.sensor, CellularSensor)
        scheduled.sensor._modemmanager._run = kit_runner((7, 3, 5))
    after = {name: r.sim_operator_code for name, r in read_all(sensors).items()}
    assert (
        before
        == after
        == {
            "cellular.viettel": "45204",
            "cellular.vinaphone": "45202",
            "cellular.mobifone": "45201",
        }
    )


def test_an_unplugged_modem_is_an_error_for_it_alone(tmp_path: Path) -> None:
    sensors = kit_sensors(kit_config(), kit_runner(absent="vinaphone"))
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        agent = Agent(sensors, clock=Clock(ntp_synced=lambda: True), outbox=outbox)
        readings = agent.take_round([s.sensor for s in sensors])
    finally:
        outbox.close()
    signals = {r.modem for r in readings if isinstance(r, SignalReading)}
    assert signals == {"viettel", "mobifone"}
    (error,) = [r for r in readings if isinstance(r, SensorErrorReading)]
    assert error.sensor == "cellular.vinaphone"
    assert "modem 'vinaphone' (USB path 1-1.3) is not among the 2 modem(s)" in error.error
    assert "IMEI 861536030196001" in error.error  # what ModemManager does list
    # Each reading of the round is its own: distinct seqs.
    assert len({r.seq for r in readings}) == len(readings)


def test_auto_does_not_fall_back_to_an_unverifiable_at_port() -> None:
    runner = CapturedRunner({}, missing=["mmcli"])
    sensor = CellularSensor(Settings(name="vinaphone", usb_path="1-1.3"), run=runner)
    with pytest.raises(SensorError, match="has no imei set, so the AT port cannot be checked"):
        sensor.read(stamp())


# ---------------------------------------------------------------------- the SIM


def test_the_captured_sim_says_its_home_network() -> None:
    sim = parse_mmcli_sim((MMCLI / "telit-le910c4-sim.json").read_text())
    assert (sim.imsi, sim.iccid, sim.operator_code) == (
        "295050905643977",
        "89883030000111825060",
        "29505",
    )
    modem = parse_mmcli_modem((MMCLI / "telit-le910c4-lte-roaming.json").read_text())
    assert (modem.imei, modem.sim_index) == ("353338976168895", 0)
    assert modem.device == "/sys/devices/platform/bus@0/3610000.usb/usb1/1-2"
    assert modem.device_id == "e867aad23fc10dc614959ad025a9d1049b3ad213"


@pytest.mark.parametrize(
    ("sim_code", "imsi", "registered_home", "expected"),
    [
        ("45204", "452041234567890", None, "45204"),  # the SIM's own word wins
        (None, "452041234567890", None, "45204"),  # Vietnam: 2-digit MNC
        (None, "310260123456789", None, "310260"),  # United States: 3-digit MNC
        (None, "722310123456789", "722310", "722310"),  # unknown MCC: the home network
        (None, "722310123456789", None, None),  # unknown MCC, roaming: no guess
        (None, "722310123456789", "72207", None),  # home network not the IMSI's
        (None, "not-an-imsi", "45204", None),
        (None, None, "45204", None),
    ],
)
def test_home_network_from_the_imsi(
    sim_code: str | None, imsi: str | None, registered_home: str | None, expected: str | None
) -> None:
    assert home_network(sim_code, imsi, registered_home=registered_home) == expected


def at_transcript(tmp_path: Path, *, imei: str, imsi: str) -> Path:
    """The captured Quectel transcript, with the modem's IMEI and the SIM's IMSI."""
    captured = (AT / "quectel-ec25-lte-home.txt").read_text()
    path = tmp_path / "quectel-with-identity.txt"
    path.write_text(captured + f"AT+CGSN\n{imei}\n\nOK\nAT+CIMI\n{imsi}\n\nOK\n")
    return path


def test_at_modem_is_checked_by_imei_and_tagged_with_its_sim(tmp_path: Path) -> None:
    transcript = at_transcript(tmp_path, imei="866758040123456", imsi="310260123456789")
    port = "/dev/serial/by-id/usb-Quectel_EC25-if02-port0"
    opened: list[str] = []

    def open_port(name: str, baud: int, timeout_s: float) -> ReplayedSerialPort:
        opened.append(name)
        return ReplayedSerialPort(transcript)

    settings = Settings(name="tmobile", backend="at", port=port, imei="866758040123456")
    (reading,) = CellularSensor(settings, open_port=open_port).read(stamp())
    assert isinstance(reading, SignalReading)
    assert opened == [port]
    assert (reading.modem, reading.operator_code, reading.sim_operator_code) == (
        "tmobile",
        "310260",
        "310260",
    )
    other = Settings(name="other", backend="at", port=port, imei="866758040999999")
    with pytest.raises(SensorError, match="has IMEI 866758040123456, not 866758040999999"):
        CellularSensor(other, open_port=open_port).read(stamp())


# ------------------------------------------------------------------ the protocol


def test_readings_of_a_kit_survive_the_wire() -> None:
    readings = read_all(kit_sensors(kit_config(), kit_runner()))
    batch = protocol.ReadingsBatch(v=1, probe_id="cb-017", readings=list(readings.values()))
    decoded = protocol.decode_readings(protocol.readings_topic("cb-017"), protocol.encode(batch))
    assert [r.modem for r in decoded.batch.readings if isinstance(r, SignalReading)] == [
        "mobifone",
        "viettel",
        "vinaphone",
    ]
    assert decoded.rejected == ()


# ------------------------------------------------------------------ the commands


def test_config_check_lists_every_modem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(KIT_TOML, encoding="utf-8")
    assert probe_main(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "sensors: cellular.mobifone every 60s, cellular.viettel every 60s, "
        "cellular.vinaphone every 60s, latency every 300s" in out
    )
    path.write_text(KIT_TOML.replace('name = "vinaphone"\n', "modem_index = 1\n"), "utf-8")
    assert probe_main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "[[sensors.cellular]] #2 name is required" in err
    assert "[[sensors.cellular]] #2 modem_index: not allowed with several modems" in err


def test_once_names_a_modem_or_the_whole_kit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(KIT_TOML, encoding="utf-8")
    assert probe_main(["once", "--config", str(path), "--sensor", "cellular.telcel"]) == 2
    err = capsys.readouterr().err
    assert "unknown sensor(s) cellular.telcel" in err
    assert "cellular, cellular.mobifone, cellular.viettel, cellular.vinaphone" in err
